"""Labels three days late: realized performance fills in by prediction time, pass after pass.

Traffic goes through the real API into real Postgres (the demo runs the same on SQLite),
six-hour windows are checked one after the other as the drift-check DAG does
(`check_and_decide`), and each window's labels arrive three days (twelve windows) after it. From
the third window on, the world's relationship changes (a fifth of the labels disagree with what
the model learnt), which only labels can show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import bindparam, select, update

from api.main import create_app
from data.db import get_engine, performance_reports, prediction_logs, training_runs
from data.settings import get_settings
from data.synthetic import generate_transactions
from monitoring.label_maturity import lag_histogram
from monitoring.prometheus_exporter import MonitoringCollector
from monitoring.retrain.loop import check_and_decide
from tests.test_exporter import scrape
from tools.testkit.traffic import ADMIN, LABELLER, configure, request_features

SLOT = timedelta(hours=6)
ROWS = 300
LAG = timedelta(days=3)
WINDOWS = 16
CHANGED_FROM = 2  # the first window whose labels follow the new relationship


@pytest.fixture
def api(monkeypatch, default_training, tmp_path, postgres_url):
    store, _ = default_training
    configure(
        monkeypatch,
        store,
        postgres_url,
        tmp_path,
        RETRAIN_MIN_LABELLED_ROWS=100,
        RETRAIN_ESTIMATED_ACCURACY_FLOOR=0.0,
        DRIFT_SHARE_THRESHOLD=1.0,
    )
    with TestClient(create_app()) as client:
        yield client


def serve(api, schema, index: int, start: datetime) -> tuple[list[str], list[int], list[int]]:
    """One window of traffic through /predict/batch, moved into [start, start + 6 h) once
    logged; returns the request ids, the answered classes and the labels the world will give."""
    frame = generate_transactions(ROWS, seed=100 + index)
    ids = [f"w{index}-{i}" for i in range(ROWS)]
    instances = [
        {"request_id": rid, "features": row}
        for rid, row in zip(ids, request_features(frame, schema), strict=True)
    ]
    answer = api.post("/predict/batch", json={"instances": instances})
    assert answer.status_code == 200
    answered = [p["predicted_class"] for p in answer.json()["predictions"]]
    assert api.app.state.logger.flush()
    step = SLOT / (ROWS + 1)
    moves = [{"rid": rid, "at": start + step * (i + 1)} for i, rid in enumerate(ids)]
    with get_engine().begin() as conn:
        conn.execute(
            update(prediction_logs)
            .where(prediction_logs.c.request_id == bindparam("rid"))
            .values(predicted_at=bindparam("at")),
            moves,
        )
    truth = frame[schema.target].astype(int).to_numpy()
    if index >= CHANGED_FROM:
        flipped = np.random.default_rng(index).random(ROWS) < 0.2
        truth = np.where(flipped, 1 - truth, truth)
    return ids, answered, truth.tolist()


def test_three_day_lag_fills_in_by_prediction_time_and_triggers_a_late_retrain(api, fraud_schema):
    settings = get_settings()
    engine = get_engine()
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - SLOT * (WINDOWS + 1)
    windows = [(first + SLOT * i, first + SLOT * (i + 1)) for i in range(WINDOWS)]
    served, outcomes, refreshed = {}, [], []
    for index, (start, end) in enumerate(windows):
        served[index] = serve(api, fraud_schema, index, start)
        late = index - int(LAG / SLOT)  # the window whose labels arrive now
        if late >= 0:
            ids, _, truth = served[late]
            labelled_at = (windows[late][1] + LAG).isoformat()
            batch = [
                {"request_id": rid, "label": y, "labelled_at": labelled_at}
                for rid, y in zip(ids, truth, strict=True)
            ]
            answer = api.post("/feedback/batch", json={"labels": batch}, headers=LABELLER)
            assert answer.status_code == 200
        outcomes.append(check_and_decide(start, end, settings))
        refreshed.append(_realized(engine, windows))

    # At its own pass a window has no label; twelve passes later it is fully covered.
    assert refreshed[0][0]["labelled"] == 0 and refreshed[0][0]["accuracy"] is None
    assert refreshed[11][0]["labelled"] == 0
    assert refreshed[12][0]["labelled"] == ROWS and refreshed[12][0]["label_coverage"] == 1.0
    _, answered, truth = served[0]
    expected = np.mean(np.array(answered) == np.array(truth))
    assert refreshed[12][0]["accuracy"] == pytest.approx(expected)
    # Each pass refreshed only the window whose labels came: window 1 at pass 13, not window 0.
    assert refreshed[13][0] == refreshed[12][0]
    assert refreshed[13][1]["labelled"] == ROWS and refreshed[12][1]["labelled"] == 0
    # Still one report row per window.
    with engine.connect() as conn:
        count = conn.execute(select(performance_reports.c.id)).all()
    assert len(count) == WINDOWS

    # The change began in window 2; its labels arrive at pass 14: a retrain, three days late,
    # trained from window 2 on.
    for index in range(CHANGED_FROM + int(LAG / SLOT)):
        assert "accuracy_below_floor" not in outcomes[index]["triggers"], index
    late = outcomes[CHANGED_FROM + int(LAG / SLOT)]
    assert late["triggers"] == ["accuracy_below_floor"] and late["retrain"] is True
    assert "found 72 h after that window closed" in late["reason"]
    assert late["conf"]["data_start"] == windows[CHANGED_FROM][0].isoformat()
    with engine.connect() as conn:
        run = conn.execute(select(training_runs)).one()._mapping
    assert run["data_start"].replace(tzinfo=UTC) == windows[CHANGED_FROM][0]

    # The lag: every label 3 days plus up to the window's six hours after its prediction.
    report = _report(engine, windows[0])
    lag = report["realized"]["label_lag"]
    assert lag["count"] == ROWS and lag["buckets"]["259200"] == 0
    assert lag["buckets"]["604800"] == ROWS

    # What on-call sees: the most recent mature window (window 3, labelled at the last pass) and
    # its accuracy under the floor; the estimate made for it, confidently wrong; the newest
    # three days without labels, the three before them complete.
    samples = scrape(MonitoringCollector(read_registry=False))
    mature = samples[("ml_mature_realized_performance", frozenset({("metric", "accuracy")}))]
    assert mature == pytest.approx(_realized(engine, windows)[3]["accuracy"]) and mature < 0.9
    gap = samples[("ml_estimate_gap", frozenset({("metric", "accuracy")}))]
    estimated = _report(engine, windows[3])["estimated"]["overall"]["accuracy"]
    assert gap == pytest.approx(estimated - mature) and gap > 0.1
    assert samples[("ml_mature_window_label_coverage_ratio", frozenset())] == 1.0
    age = samples[("ml_mature_window_age_seconds", frozenset())]
    assert age == pytest.approx((datetime.now(UTC) - windows[3][1]).total_seconds(), abs=600)
    by_age = {
        dict(labels)["age_days"]: v
        for (name, labels), v in samples.items()
        if name == "ml_label_coverage_by_age_ratio"
    }
    assert by_age == {"0": 0.0, "1": 0.0, "2": 0.0, "3": 1.0}
    assert samples[("ml_label_lag_seconds_count", frozenset())] == 4 * ROWS
    assert samples[("ml_label_lag_seconds_bucket", frozenset({("le", "259200.0")}))] == 0
    assert samples[("ml_label_lag_seconds_bucket", frozenset({("le", "604800.0")}))] == 4 * ROWS
    received = samples[("ml_labels_last_received_timestamp_seconds", frozenset())]
    assert abs(received - datetime.now(UTC).timestamp()) < 600

    # Window 0's labels again, every one flipped: anonymous or with the admin token they change
    # nothing; from a label writer, the next pass refreshes window 0 and only it.
    ids, answered, truth = served[0]
    flipped = [{"request_id": rid, "label": 1 - y} for rid, y in zip(ids, truth, strict=True)]
    for headers in ({}, ADMIN):
        answer = api.post("/feedback/batch", json={"labels": flipped}, headers=headers)
        assert answer.status_code == 401
    after = (windows[-1][1], windows[-1][1] + SLOT)
    check_and_decide(*after, settings)
    assert _realized(engine, windows) == refreshed[-1]
    assert (
        api.post("/feedback/batch", json={"labels": flipped}, headers=LABELLER).status_code == 200
    )
    result = check_and_decide(after[1], after[1] + SLOT, settings)
    now = _realized(engine, windows)
    assert now[0]["accuracy"] == pytest.approx(1 - expected)
    assert now[1:] == refreshed[-1][1:]
    assert result["rows"] == 0


def test_lag_histogram_counts_cumulatively_and_treats_early_labels_as_no_lag():
    hours = np.array([-1.0, 0.5, 5.0, 30.0, 100.0, 1_000.0]) * 3600
    found = lag_histogram(hours)
    assert found["count"] == 6
    assert found["buckets"]["3600"] == 2  # the early label counts as no lag
    assert found["buckets"]["21600"] == 3 and found["buckets"]["86400"] == 3
    assert found["buckets"]["172800"] == 4 and found["buckets"]["604800"] == 5
    assert found["buckets"]["2592000"] == 5  # 1,000 h is past the last bucket: +Inf only
    assert found["sum"] == pytest.approx((0.5 + 5 + 30 + 100 + 1_000) * 3600)


def _report(engine, window):
    with engine.connect() as conn:
        return conn.execute(
            select(performance_reports.c.report).where(
                performance_reports.c.window_start == window[0]
            )
        ).scalar_one()


def _realized(engine, windows) -> list[dict]:
    """Each window's realized overall figures as saved now (None for a window not checked)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(performance_reports.c.window_start, performance_reports.c.report)
        ).all()
    by_start = {start.replace(tzinfo=UTC): report for start, report in rows}
    found = []
    for start, _ in windows:
        report = by_start.get(start)
        found.append(((report or {}).get("realized") or {}).get("overall"))
    return found
