"""A monitoring pass end to end: traffic through the real API, labels through /feedback, then
`check_window` against the champion's stored reference profile, saved and read back from SQLite
and real Postgres."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from data.db import get_engine, init_db
from data.drift_injector import inject_drift
from data.prediction_log import SCORE_COLUMN, read_predictions
from data.settings import get_settings
from data.synthetic import generate_transactions
from monitoring.performance import Calibrator, estimated_performance
from monitoring.quality_report import compute_quality_report
from monitoring.report_store import latest_reports, save_reports
from monitoring.window_checks import CheckError, check_window, main
from tools.testkit.databases import store_settings
from tools.testkit.traffic import ADMIN, LABELLER, configure, request_features
from training.registry import (
    HOLDOUT_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    THRESHOLD_TAG,
    Registry,
    promote,
    rollback,
)
from training.train import train

ROWS = 4_000
LABELLED = 2_000


@pytest.fixture
def api(monkeypatch, default_training, tmp_path, database_url):
    store, _ = default_training
    configure(monkeypatch, store, database_url, tmp_path)
    with TestClient(create_app()) as client:
        yield client


def send(api, frame, schema, prefix: str) -> tuple[list[str], list[int]]:
    """Score `frame` through /predict/batch; the request ids and predicted classes, once logged."""
    features = request_features(frame, schema)
    ids, predicted = [f"{prefix}{i}" for i in range(len(features))], []
    for first in range(0, len(ids), 1_000):
        instances = [
            {"request_id": request_id, "features": row}
            for request_id, row in zip(
                ids[first : first + 1_000], features[first : first + 1_000], strict=True
            )
        ]
        answer = api.post("/predict/batch", json={"instances": instances})
        assert answer.status_code == 200
        predicted += [p["predicted_class"] for p in answer.json()["predictions"]]
    assert api.app.state.logger.flush()
    return ids, predicted


def test_a_pass_over_drifted_traffic_finds_the_drift_and_saves_it(
    api, default_training, fraud_schema, database_url, tmp_path
):
    _, training = default_training
    live = generate_transactions(ROWS, seed=11)
    drifted = inject_drift(live, "mean_shift", schema=fraud_schema, feature="amount", seed=1)
    ids, predicted = send(api, drifted, fraud_schema, "d")
    truth = drifted[fraud_schema.target].astype(int).tolist()
    labels = [{"request_id": i, "label": y} for i, y in zip(ids, truth, strict=True)][:LABELLED]
    answer = api.post("/feedback/batch", json={"labels": labels}, headers=LABELLER)
    assert answer.json()["accepted"] == LABELLED

    end = datetime.now(UTC) + timedelta(seconds=1)
    result = check_window(end=end, hours=1, html=tmp_path / "drift.html", settings=get_settings())

    assert result.rows == ROWS and result.model_version == training.version
    assert [f.name for f in result.drift.drifted_features] == ["amount"]
    assert result.drift.features["amount"].severity == "critical"
    assert result.quality.hard_failures == 0
    realized, estimated = result.realized.overall, result.estimated.overall
    assert realized["label_coverage"] == pytest.approx(LABELLED / ROWS)
    hits = [p == y for p, y in zip(predicted, truth, strict=True)][:LABELLED]
    assert realized["accuracy"] == pytest.approx(sum(hits) / LABELLED)
    assert 0 < estimated["accuracy"] <= 1
    assert "amount" in (tmp_path / "drift.html").read_text()

    latest = latest_reports(get_settings().MODEL_NAME, engine=get_engine(database_url))
    assert latest.drift["id"] == result.saved.drift_id
    assert latest.drift["model_version"] == training.version
    assert latest.drift["window_end"] == end and latest.drift["window_start"] == end - timedelta(
        hours=1
    )
    assert latest.drift["report"]["features"]["amount"]["drifted"] is True
    assert latest.drift["dataset_drift"] is False  # 1 of 13 features
    assert latest.quality["passed"] is True and latest.quality["rows"] == ROWS
    assert latest.performance["labelled"] == LABELLED
    stored = latest.performance["report"]
    assert stored["realized"]["overall"]["accuracy"] == pytest.approx(realized["accuracy"])
    assert stored["estimated"]["overall"]["accuracy"] == pytest.approx(estimated["accuracy"])
    # The champion's own threshold and calibration, stored with it at training.
    assert stored["estimated"]["calibrated"] is True and result.estimated.calibrated
    assert stored["realized"]["threshold"] == stored["estimated"]["threshold"] == 0.5
    store, _ = default_training
    profile = Registry.from_settings(store).reference_profile(training.version)
    scores = window_scores(fraud_schema, database_url, end)
    calibrated = estimated_performance(scores, 0.5, Calibrator.from_dict(profile.calibration))
    assert estimated["accuracy"] == pytest.approx(calibrated["accuracy"], abs=1e-12)
    assert estimated["accuracy"] != pytest.approx(estimated_performance(scores)["accuracy"])


def test_an_empty_window_is_a_quality_failure_not_a_crash(api, database_url):
    end = datetime.now(UTC) - timedelta(days=30)
    result = check_window(end=end, hours=6, settings=get_settings())
    assert result.rows == 0 and result.drift is None and result.realized is None
    assert result.quality.check("volume_freshness").level == "hard"
    assert result.saved.drift_id is None and result.saved.quality_id is not None
    latest = latest_reports(engine=get_engine(database_url))
    assert latest.quality["passed"] is False and latest.drift is None


def test_reports_go_to_the_database_of_the_settings_given(default_training, isolated_settings):
    store, _ = default_training  # its DATABASE_URL is not the environment's
    check_window(settings=store, end=datetime.now(UTC) - timedelta(days=30), hours=1)
    assert latest_reports(engine=get_engine(store.database_url)).quality is not None
    init_db()
    assert latest_reports().quality is None


def test_no_champion_is_one_clear_error(tmp_path, capsys, monkeypatch):
    store = store_settings(tmp_path / "empty")
    with pytest.raises(CheckError, match="no registered model"):
        check_window(settings=store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.MLFLOW_TRACKING_URI)
    get_settings.cache_clear()
    capsys.readouterr()
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no registered model") and "Traceback" not in err


def test_the_command_line_prints_the_pass_and_refuses_a_bad_time(api, capsys):
    assert main(["--end", "yesterday"]) == 2
    assert "yesterday" in capsys.readouterr().err
    assert main(["--hours", "1"]) == 0
    out = capsys.readouterr().out
    assert "0 predictions" in out and "quality FAILED" in out


JAN_1, JAN_2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "with_report", "message"),
    [((JAN_2, JAN_1), True, "not before"), ((JAN_1, JAN_2), False, "nothing to save")],
)
def test_save_reports_refuses_a_reversed_window_or_nothing(
    fraud_schema, window, with_report, message
):
    empty = pd.DataFrame(columns=fraud_schema.feature_names)
    quality = compute_quality_report(empty, fraud_schema, window_start=JAN_1, window_end=JAN_2)
    init_db()
    with pytest.raises(ValueError, match=message):
        save_reports(
            window=window,
            model_name="fraud-detector",
            model_version="1",
            quality=quality if with_report else None,
        )
    assert latest_reports().quality is None  # nothing was written


@pytest.fixture(scope="module")
def trained_at_03(tmp_path_factory):
    """A store whose champion was trained with decision threshold 0.3: (settings, version)."""
    root = tmp_path_factory.mktemp("threshold-store")
    store = store_settings(root)
    trained = train(settings=store, rows=20_000, threshold=0.3, auto_promote=True)
    assert trained.action == "promoted", trained.gates.to_dict()
    return store, trained.version


def window_scores(schema, database: str, end: datetime) -> pd.Series:
    window = read_predictions(schema, end - timedelta(hours=1), end, url=database)
    return window[SCORE_COLUMN]


def test_the_threshold_trained_with_a_version_is_the_one_served_and_monitored(
    monkeypatch, tmp_path, fraud_schema, trained_at_03
):
    """A version trained with threshold 0.3: the API answers class 1 for a score between 0.3
    and 0.5, and the monitoring pass counts realized and estimated performance at 0.3, through
    the version's calibrator (all three were hard-coded to 0.5)."""
    store, version = trained_at_03
    database = f"sqlite:///{tmp_path / 'api.db'}"
    configure(monkeypatch, store, database, tmp_path)
    frame = generate_transactions(3_000, seed=21)
    rows = request_features(frame, fraud_schema)
    with TestClient(create_app()) as client:
        assert client.get("/model").json()["decision_threshold"] == 0.3
        ids, predicted = send(client, frame, fraud_schema, "t")
        answers = client.post(
            "/predict/batch", json={"instances": [{"features": f} for f in rows[:1000]]}
        ).json()["predictions"]
        scores = [a["probabilities"]["1"] for a in answers]
        assert [int(s >= 0.3) for s in scores] == [a["predicted_class"] for a in answers]
        between = [i for i, s in enumerate(scores) if 0.3 <= s < 0.5]
        assert between, "no score between the thresholds to tell them"
        one = client.post("/predict", json={"features": rows[between[0]]}).json()
        assert one["predicted_class"] == 1 and one["probabilities"]["1"] < 0.5
        truth = frame[fraud_schema.target].astype(int).tolist()
        labels = [{"request_id": i, "label": y} for i, y in zip(ids, truth, strict=True)]
        answer = client.post("/feedback/batch", json={"labels": labels}, headers=LABELLER)
        assert answer.json()["accepted"] == 3_000

    end = datetime.now(UTC) + timedelta(seconds=1)
    result = check_window(end=end, hours=1, settings=get_settings())
    assert result.realized.threshold == result.estimated.threshold == 0.3
    hits = [p == y for p, y in zip(predicted, truth, strict=True)]
    assert result.realized.overall["accuracy"] == pytest.approx(sum(hits) / len(hits))
    profile = Registry.from_settings(store).reference_profile(version)
    calibrator = Calibrator.from_dict(profile.calibration)
    scores = window_scores(fraud_schema, database, end)
    expected = estimated_performance(scores, 0.3, calibrator)
    assert result.estimated.calibrated
    assert result.estimated.overall["accuracy"] == pytest.approx(expected["accuracy"])
    assert result.estimated.overall["roc_auc"] == pytest.approx(expected["roc_auc"])


def test_a_version_stored_before_thresholds_and_calibrations_gets_half_and_raw_scores(
    monkeypatch, tmp_path, fraud_schema, trained_at_03, caplog
):
    """An older version: no threshold tag, a reference profile without threshold or
    calibration. The API answers at 0.5, and the monitoring pass estimates from raw scores,
    saying so in the log, the saved report and the summary."""
    store, version = trained_at_03
    registry = Registry.from_settings(store)
    older = registry_older_version(registry, version, tmp_path)
    promote(registry, older, actor="test", reason="an older version", force=True)
    try:
        database = f"sqlite:///{tmp_path / 'api.db'}"
        configure(monkeypatch, store, database, tmp_path)
        frame = generate_transactions(1_000, seed=22)
        with TestClient(create_app()) as client:
            model = client.get("/model").json()
            assert model["model_version"] == older and model["decision_threshold"] == 0.5
            answers = client.post(
                "/predict/batch",
                json={
                    "instances": [{"features": f} for f in request_features(frame, fraud_schema)]
                },
            ).json()["predictions"]
            assert client.app.state.logger.flush()
        scores = [a["probabilities"]["1"] for a in answers]
        assert [int(s >= 0.5) for s in scores] == [a["predicted_class"] for a in answers]

        end = datetime.now(UTC) + timedelta(seconds=1)
        with caplog.at_level(logging.WARNING, logger="monitoring.window_checks"):
            result = check_window(end=end, hours=1, settings=get_settings())
    finally:
        rollback(registry, version, actor="test", reason="back to the calibrated version")
    assert f"model version {older} has no stored calibration" in caplog.text
    assert result.estimated.threshold == 0.5 and result.estimated.calibrated is False
    assert "CBPE on uncalibrated scores" in result.summary()
    raw = estimated_performance(window_scores(fraud_schema, database, end), 0.5)
    assert result.estimated.overall["accuracy"] == pytest.approx(raw["accuracy"])
    stored = latest_reports(store.MODEL_NAME, engine=get_engine(database)).performance["report"]
    assert stored["estimated"]["calibrated"] is False


def registry_older_version(registry: Registry, version: str, tmp_path) -> str:
    """Register `version`'s model again as a version from before thresholds and calibrations
    were stored: no threshold tag, and a profile without either."""
    client, name = registry.client, registry.model_name
    source = client.get_model_version(name, version)
    profile = registry.reference_profile(version).to_dict()
    del profile["threshold"], profile["calibration"]
    holdout = tmp_path / HOLDOUT_ARTIFACT
    registry.holdout(version).to_parquet(holdout, index=False)
    run = client.create_run(client.get_run(source.run_id).info.experiment_id)
    client.log_dict(run.info.run_id, profile, REFERENCE_PROFILE_ARTIFACT)
    client.log_artifact(run.info.run_id, str(holdout))
    client.set_terminated(run.info.run_id)
    older = client.create_model_version(name, source.source, run.info.run_id)
    assert THRESHOLD_TAG not in registry.version(older.version).tags
    return str(older.version)


def test_a_window_that_straddles_a_promotion_reads_each_row_as_its_version_answered(
    monkeypatch, tmp_path, fraud_schema, trained_at_03
):
    """The older version (threshold 0.5, raw scores) answers half the window, the 0.3 version
    the rest after a rollback to it: each half is estimated with its own threshold and
    calibrator, and both reports give the figures per version."""
    store, version = trained_at_03
    registry = Registry.from_settings(store)
    older = registry_older_version(registry, version, tmp_path)
    promote(registry, older, actor="test", reason="an older version", force=True)
    database = f"sqlite:///{tmp_path / 'api.db'}"
    configure(monkeypatch, store, database, tmp_path)
    frame = generate_transactions(1_000, seed=23)
    rows = request_features(frame, fraud_schema)
    try:
        with TestClient(create_app()) as client:
            first = client.post(
                "/predict/batch", json={"instances": [{"features": f} for f in rows[:500]]}
            ).json()["predictions"]
            rollback(registry, version, actor="test", reason="back to the calibrated version")
            reloaded = client.post("/model/reload", headers=ADMIN).json()
            assert reloaded["model_version"] == version
            second = client.post(
                "/predict/batch", json={"instances": [{"features": f} for f in rows[500:]]}
            ).json()["predictions"]
            assert client.app.state.logger.flush()
    finally:
        if registry.alias("champion").version != version:
            rollback(registry, version, actor="test", reason="back to the calibrated version")
    assert {a["model_version"] for a in first} == {older}
    assert {a["model_version"] for a in second} == {version}

    end = datetime.now(UTC) + timedelta(seconds=1)
    result = check_window(end=end, hours=1, settings=get_settings())
    by_version = result.estimated.by_version
    assert set(by_version) == {older, version}
    raw = estimated_performance([a["probabilities"]["1"] for a in first], 0.5)
    assert by_version[older]["accuracy"] == pytest.approx(raw["accuracy"])
    calibrator = Calibrator.from_dict(registry.reference_profile(version).calibration)
    own = estimated_performance([a["probabilities"]["1"] for a in second], 0.3, calibrator)
    assert by_version[version]["accuracy"] == pytest.approx(own["accuracy"])
    assert by_version[older]["predictions"] == by_version[version]["predictions"] == 500
    assert f"v{older} 500 predictions" in result.summary()
