"""The retrain policy without Airflow: each trigger, each guard, one row per window, SQLite and
Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from sqlalchemy import func, insert, select

from data.db import (
    drift_reports,
    get_engine,
    init_db,
    labels,
    performance_reports,
    prediction_logs,
    quality_reports,
    retrain_decisions,
    training_runs,
)
from data.settings import get_settings
from monitoring.retrain.policy import decide_and_record, decisions, find_triggers
from training.runs import finish_training_run, open_training_run, training_run

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SLOT = timedelta(hours=6)
MODEL = "fraud-detector"

CRITICAL_DRIFT = {
    "features": {
        "amount": {"severity": "critical", "drifted": True},
        "hour_of_day": {"severity": "none", "drifted": False},
    },
    "drifted_share": 0.5,
    "dataset_drift": False,
    "prediction": {"drifted": True},
}
NO_DRIFT = {
    "features": {"amount": {"severity": "none", "drifted": False}},
    "drifted_share": 0.0,
    "dataset_drift": False,
    "prediction": {"drifted": False},
}


def performance(realized: float | None, coverage: float, estimated: float | None) -> dict:
    return {
        "realized": {"overall": {"accuracy": realized, "label_coverage": coverage, "labelled": 9}},
        "estimated": {"overall": {"accuracy": estimated}},
    }


@pytest.fixture
def engine(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RETRAIN_MIN_LABELLED_ROWS", "10")
    get_settings.cache_clear()
    engine = get_engine(database_url)
    init_db(engine)
    return engine


def window(k: int) -> tuple[datetime, datetime]:
    return T0 + k * SLOT, T0 + (k + 1) * SLOT


def save(engine, k: int, *, drift=None, quality=None, perf=None) -> tuple[datetime, datetime]:
    """The reports of window k as check_window stores them (only what the policy reads)."""
    start, end = window(k)
    common = {"window_start": start, "window_end": end, "model_name": MODEL, "model_version": "1"}
    with engine.begin() as conn:
        if drift is not None:
            columns = {"rows_reference": 1, "rows_current": 1, "prediction_drift": False,
                       "drifted_share": drift["drifted_share"],
                       "dataset_drift": drift["dataset_drift"]}  # fmt: skip
            conn.execute(insert(drift_reports).values(**common, **columns, report=drift))
        if quality is not None:
            conn.execute(insert(quality_reports).values(
                **common, rows=1, hard_failures=len(quality["failures"]), soft_warnings=0,
                passed=not quality["failures"], report=quality))  # fmt: skip
        if perf is not None:
            conn.execute(insert(performance_reports).values(
                **common, predictions=1, labelled=1, report=perf))  # fmt: skip
    return start, end


def log_labelled(engine, k: int, n: int, *, labelled: bool = True, tag: str = "") -> None:
    """`n` predictions logged in window k, with their labels."""
    start, _ = window(k)
    rows = [
        {"request_id": f"w{k}{tag}-{i}", "predicted_at": start + timedelta(minutes=i % 300),
         "model_name": MODEL, "model_version": "1", "features": {}, "predicted_class": 0,
         "score": 0.1, "latency_ms": 1.0}
        for i in range(n)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), rows)
        if labelled:
            conn.execute(
                insert(labels),
                [{"request_id": r["request_id"], "label": 0, "labelled_at": start} for r in rows],
            )


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


# --- Triggers (pure) --------------------------------------------------------------------------


def test_each_trigger_is_named_with_its_numbers():
    settings = get_settings()
    found, phrases, numbers = find_triggers(CRITICAL_DRIFT, None, None, settings)
    assert found == ["critical_drift"] and "amount" in phrases[0]
    assert numbers["critical_features"] == ["amount"] and numbers["prediction_drift"] is True

    dataset = {**NO_DRIFT, "dataset_drift": True, "drifted_share": 0.4}
    assert find_triggers(dataset, None, None, settings)[0] == ["dataset_drift"]

    broken = {"failures": ["missing_values", "volume_freshness"]}
    found, phrases, _ = find_triggers(None, broken, None, settings)
    assert found == ["quality_hard_failure"] and "volume_freshness" not in phrases[0]
    # An empty or stale window: the feed stopped, which no retrain fixes.
    assert find_triggers(None, {"failures": ["volume_freshness"]}, None, settings)[0] == []

    found, _, numbers = find_triggers(None, None, performance(0.80, 0.5, 0.95), settings)
    assert found == ["accuracy_below_floor"] and numbers["realized_accuracy"] == 0.80
    # Realized accuracy on too few labels is not trusted; the estimate still counts.
    assert find_triggers(None, None, performance(0.80, 0.1, 0.95), settings)[0] == []
    assert find_triggers(None, None, performance(None, 0.0, 0.85), settings)[0] == [
        "estimated_accuracy_below_floor"
    ]
    healthy = find_triggers(NO_DRIFT, {"failures": []}, performance(0.95, 0.5, 0.95), settings)
    assert healthy[0] == [] and healthy[1] == []


def joint_drift_report(schema, kind: str, intensity: float = 1.0) -> dict:
    """A real drift report (as saved) of a 5,000-row fraud window against a 10,000-row reference,
    with `kind` injected into avg_amount_30d ("none": no drift)."""
    from data.drift_injector import inject_drift
    from data.synthetic import generate_transactions
    from monitoring.drift_report import compute_drift_report, profile_from_frame

    profile = profile_from_frame(generate_transactions(10_000, seed=1), schema)
    current = generate_transactions(5_000, seed=2)
    if kind != "none":
        current = inject_drift(
            current, kind, schema=schema, feature="avg_amount_30d", intensity=intensity, seed=3
        )
    return compute_drift_report(profile, current, schema).to_dict()


def test_a_joint_drift_that_no_feature_shows_triggers_a_retrain_with_its_drivers(
    engine, fraud_schema
):
    """A correlation flip of avg_amount_30d (its column holds the values it held): no feature
    drifted, the multivariate check is critical, and the loop retrains on it, saying why."""
    flipped = joint_drift_report(fraud_schema, "correlation_flip")
    assert not any(f["drifted"] for f in flipped["features"].values())
    assert flipped["multivariate"]["severity"] == "critical"
    found, phrases, numbers = find_triggers(flipped, None, None, get_settings())
    assert found == ["multivariate_drift"]
    assert phrases[0].startswith("critical multivariate drift (domain classifier AUC")
    assert "avg_amount_30d" in phrases[0] and "avg_amount_30d" in numbers["multivariate"]["drivers"]

    quiet = joint_drift_report(fraud_schema, "none")
    assert quiet["multivariate"]["available"] and not quiet["multivariate"]["drifted"]
    assert find_triggers(quiet, None, None, get_settings())[0] == []

    log_labelled(engine, 0, 30)
    decide_and_record(save(engine, 0, drift=flipped), settings=get_settings())
    decision = decisions(MODEL)[0]
    assert decision.retrain is True and decision.triggers == ["multivariate_drift"]
    assert decision.reason.startswith("retrain: critical multivariate drift")
    assert training_run(decision.training_run_id)["status"] == "running"


def test_a_warning_level_joint_drift_is_no_trigger():
    """Multivariate drift under MULTIVARIATE_AUC_CRITICAL is the alert's warning only."""
    report = {
        **NO_DRIFT,
        "multivariate": {"available": True, "drifted": True, "severity": "warning",
                         "auc": 0.58, "drivers": ["amount"]},
    }  # fmt: skip
    found, _, numbers = find_triggers(report, None, None, get_settings())
    assert found == [] and numbers["multivariate"]["severity"] == "warning"


# --- Decisions and guards ---------------------------------------------------------------------


def test_a_healthy_window_records_no_retrain(engine):
    decision = decide_and_record(
        save(engine, 0, drift=NO_DRIFT, quality={"failures": []}), settings=get_settings()
    )
    assert decision.retrain is False and decision.triggers == [] and decision.blocked_by is None
    assert decision.reason.startswith("no retrain")
    assert count(engine, retrain_decisions) == 1 and count(engine, training_runs) == 0


def test_drift_with_labels_retrains_and_opens_a_run_for_the_drift_episode(engine):
    log_labelled(engine, 0, 50)  # before the drift: not learnt from
    decide_and_record(save(engine, 0, drift=NO_DRIFT), settings=get_settings())
    log_labelled(engine, 1, 30)
    decide_and_record(
        save(engine, 1, drift=CRITICAL_DRIFT, perf=performance(0.95, 0.5, 0.97)),
        settings=get_settings(),
    )
    decision = decisions(MODEL)[0]
    assert decision.retrain is True and decision.triggers == ["critical_drift"]
    assert decision.reason.startswith("retrain: critical drift in amount")
    assert decision.numbers["new_labelled_rows"] == 30  # window 0's 50 rows are not counted
    run = training_run(decision.training_run_id)
    assert run["status"] == "running" and run["trigger"] == "policy"
    assert (run["data_start"], run["data_end"]) == window(1)


def test_the_episode_spans_consecutive_triggered_windows(engine, monkeypatch):
    monkeypatch.setenv("RETRAIN_MIN_LABELLED_ROWS", "100")
    get_settings.cache_clear()
    for k in (0, 1, 2):
        log_labelled(engine, k, 40)
    decide_and_record(save(engine, 0, drift=NO_DRIFT), settings=get_settings())
    first = decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings())
    assert first.blocked_by == "not_enough_labels" and first.numbers["new_labelled_rows"] == 40
    assert "40 new labelled rows" in first.reason
    # As Airflow hands them to a task: pendulum times (whose arithmetic drops datetime.UTC).
    airflow_window = tuple(pendulum.instance(t) for t in save(engine, 2, drift=CRITICAL_DRIFT))
    second = decide_and_record(airflow_window, settings=get_settings())
    assert second.blocked_by == "not_enough_labels"  # 80 < 100, windows 1 and 2 together
    assert second.numbers["new_labelled_rows"] == 80
    log_labelled(engine, 3, 40)
    third = decide_and_record(save(engine, 3, drift=CRITICAL_DRIFT), settings=get_settings())
    assert third.retrain is True and third.numbers["new_labelled_rows"] == 120
    assert training_run(third.training_run_id)["data_start"] == window(1)[0]


def test_deciding_a_window_again_returns_the_same_decision_and_starts_nothing(engine):
    log_labelled(engine, 0, 20)
    bounds = save(engine, 0, drift=CRITICAL_DRIFT)
    first = decide_and_record(bounds, settings=get_settings())
    again = decide_and_record(
        (pendulum.instance(bounds[0]), pendulum.instance(bounds[1])), settings=get_settings()
    )
    assert again == first and first.retrain is True
    assert count(engine, retrain_decisions) == 1 and count(engine, training_runs) == 1


def test_no_retrain_while_one_runs_unless_it_is_dead(engine, monkeypatch):
    monkeypatch.setenv("RETRAIN_COOLDOWN_HOURS", "0")
    get_settings.cache_clear()
    log_labelled(engine, 1, 20)
    running = open_training_run(model_name=MODEL, requested_at=window(1)[0] + timedelta(hours=1),
                                trigger="manual",
                                reason="by hand", engine=engine)  # fmt: skip
    decision = decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings())
    assert decision.blocked_by == "training_running" and decision.retrain is False
    assert f"training run {running} is still running" in decision.reason
    # A run "running" for longer than RETRAIN_TIMEOUT_HOURS (6) died: it blocks nothing.
    log_labelled(engine, 3, 20)
    assert (
        decide_and_record(save(engine, 3, drift=CRITICAL_DRIFT), settings=get_settings()).retrain
        is True
    )


def test_the_cooldown_counts_from_the_last_run_but_not_a_failed_one(engine):
    log_labelled(engine, 1, 20)
    done = open_training_run(model_name=MODEL, requested_at=window(0)[1], trigger="policy",
                             reason="earlier drift", engine=engine)  # fmt: skip
    finish_training_run(done, "promoted", finished_at=window(0)[1], engine=engine)
    decision = decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings())
    assert decision.blocked_by == "cooldown"
    assert decision.numbers["hours_since_last_training"] == 6
    assert "RETRAIN_COOLDOWN_HOURS=12" in decision.reason

    # Twelve hours after it, the cooldown is over.
    log_labelled(engine, 2, 20)
    assert (
        decide_and_record(save(engine, 2, drift=CRITICAL_DRIFT), settings=get_settings()).retrain
        is True
    )


def test_a_failed_run_does_not_hold_the_next_one_back(engine):
    log_labelled(engine, 1, 20)
    failed = open_training_run(model_name=MODEL, requested_at=window(0)[1], trigger="policy",
                               reason="earlier drift", engine=engine)  # fmt: skip
    finish_training_run(failed, "failed", finished_at=window(0)[1], engine=engine)
    assert (
        decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings()).retrain
        is True
    )


def test_the_daily_cap_counts_the_policys_runs_of_the_last_24_hours(engine, monkeypatch):
    monkeypatch.setenv("RETRAIN_COOLDOWN_HOURS", "0")
    monkeypatch.setenv("RETRAIN_MAX_PER_DAY", "2")
    get_settings.cache_clear()
    outcomes = []
    for k in range(4):
        log_labelled(engine, k, 20)
        decision = decide_and_record(save(engine, k, drift=CRITICAL_DRIFT), settings=get_settings())
        if decision.training_run_id:
            finish_training_run(decision.training_run_id, "promoted",
                                finished_at=window(k)[1], engine=engine)  # fmt: skip
        outcomes.append(decision.blocked_by)
    assert outcomes == [None, None, "daily_cap", "daily_cap"]
    # A day after the first run it has left the last 24 hours: room for one again.
    assert (
        decide_and_record(save(engine, 4, drift=CRITICAL_DRIFT), settings=get_settings()).retrain
        is True
    )


def test_unlabelled_predictions_do_not_count_as_something_to_learn_from(engine):
    log_labelled(engine, 0, 500, labelled=False, tag="u")
    log_labelled(engine, 0, 5)
    decision = decide_and_record(save(engine, 0, drift=CRITICAL_DRIFT), settings=get_settings())
    assert decision.blocked_by == "not_enough_labels" and decision.numbers["new_labelled_rows"] == 5


def test_the_command_line_shows_each_decision_and_why(engine, capsys):
    from monitoring.retrain.policy import main

    assert main([]) == 0
    assert "no retrain decisions" in capsys.readouterr().out
    log_labelled(engine, 1, 20)
    decide_and_record(save(engine, 0, drift=NO_DRIFT), settings=get_settings())
    decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings())
    assert main(["--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2026-03-02 06:00..12:00 UTC  v?  RETRAIN -> training run ")
    assert lines[1].strip().startswith("retrain: critical drift in amount")
    assert lines[2].startswith("2026-03-02 00:00..06:00 UTC") and " no" in lines[2]
    assert main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["retrain"] for row in rows] == [True, False]


def test_when_accuracy_fell_the_episode_starts_where_it_fell(engine, monkeypatch):
    # Drift the champion handled (accuracy fine) for two windows, then accuracy falls: the
    # relationship changed in window 3, and windows 1-2's labels follow the old one.
    monkeypatch.setenv("RETRAIN_MIN_LABELLED_ROWS", "50")
    get_settings.cache_clear()
    for k, n in ((1, 20), (2, 20), (3, 30), (4, 30)):
        log_labelled(engine, k, n)
    decide_and_record(
        save(engine, 1, drift=CRITICAL_DRIFT, perf=performance(0.95, 0.5, 0.95)),
        settings=get_settings(),
    )
    decide_and_record(
        save(engine, 2, drift=CRITICAL_DRIFT, perf=performance(0.95, 0.5, 0.95)),
        settings=get_settings(),
    )
    fell = decide_and_record(
        save(engine, 3, drift=CRITICAL_DRIFT, perf=performance(0.8, 0.5, 0.9)),
        settings=get_settings(),
    )
    # 30 rows since it fell < 50 (the whole drift episode would have had 70)
    assert fell.blocked_by == "not_enough_labels", fell.reason
    decision = decide_and_record(
        save(engine, 4, drift=CRITICAL_DRIFT, perf=performance(0.8, 0.5, 0.9)),
        settings=get_settings(),
    )
    assert decision.retrain is True and "accuracy_below_floor" in decision.triggers
    assert decision.numbers["new_labelled_rows"] == 60
    assert training_run(decision.training_run_id)["data_start"] == window(3)[0]


def test_labels_that_came_late_for_predictions_the_last_run_saw_unlabelled_are_new(engine):
    # Window 1's predictions were unlabelled when a run trained on data up to its end; their
    # labels come two days later. Nothing predicted since has a label yet (the lag), so only
    # those late labels are new to learn from, and they are enough.
    log_labelled(engine, 1, 20, labelled=False)
    for k in (1, 2, 3):
        save(engine, k, drift=CRITICAL_DRIFT)
    decide_and_record(window(1), settings=get_settings())
    run = open_training_run(model_name=MODEL, requested_at=window(1)[1], trigger="policy",
                            reason="drift", data_window=window(1), engine=engine)  # fmt: skip
    finish_training_run(run, "rejected", finished_at=window(1)[1], engine=engine)
    for k in (2, 3):
        decide_and_record(window(k), settings=get_settings())
    log_labelled(engine, 4, 5, labelled=False)
    held = decide_and_record(save(engine, 4, drift=CRITICAL_DRIFT), settings=get_settings())
    assert held.blocked_by == "not_enough_labels" and held.numbers["new_labelled_rows"] == 0

    with engine.begin() as conn:
        conn.execute(
            insert(labels),
            [{"request_id": f"w1-{i}", "label": 0, "labelled_at": window(5)[0]} for i in range(20)],
        )
    decision = decide_and_record(save(engine, 5, drift=CRITICAL_DRIFT), settings=get_settings())
    assert decision.retrain is True, decision.reason
    assert decision.numbers["late_labelled_rows"] == 20
    assert decision.numbers["new_labelled_rows"] == 20


# --- One training at a time, decided concurrently ------------------------------------------


def test_a_later_windows_running_training_blocks_an_earlier_windows_retrain(engine):
    # Windows decided out of order (a backfill, Airflow catching up): the later one started a
    # training; the earlier one must not start a second.
    log_labelled(engine, 1, 20)
    log_labelled(engine, 3, 20)
    later = decide_and_record(save(engine, 3, drift=CRITICAL_DRIFT), settings=get_settings())
    assert later.retrain is True
    earlier = decide_and_record(save(engine, 1, drift=CRITICAL_DRIFT), settings=get_settings())
    assert earlier.retrain is False and earlier.blocked_by == "training_running"
    assert "a training is already running or starting" in earlier.reason
    assert f"run {later.training_run_id}" in earlier.reason
    assert count(engine, training_runs) == 1


def test_two_windows_decided_at_once_start_one_training(postgres_url, monkeypatch):
    """Two drift-check tasks deciding two windows at the same moment, each on its own
    connection to real Postgres: before, each read "no training running", and both started one.
    Each decision here pauses (up to 2 s) between deciding and recording, so that, without the
    lock, both have decided before either records."""
    import contextlib
    import threading

    import monitoring.retrain.policy as policy

    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("RETRAIN_MIN_LABELLED_ROWS", "10")
    # Only the running-training guard between them: no cooldown, and a run counts as alive
    # for a day (windows are six hours apart).
    monkeypatch.setenv("RETRAIN_COOLDOWN_HOURS", "0")
    monkeypatch.setenv("RETRAIN_TIMEOUT_HOURS", "24")
    get_settings.cache_clear()
    engine = get_engine(postgres_url)
    init_db(engine)
    for k in (1, 2):
        log_labelled(engine, k, 20)
        save(engine, k, drift=CRITICAL_DRIFT)
    both_decided = threading.Barrier(2, timeout=2)
    decide = policy._decide

    def decide_then_pause(*args, **kwargs):
        decision = decide(*args, **kwargs)
        # With the lock the other waits for it (the barrier breaks): it decides after this
        # one commits.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_decided.wait()
        return decision

    monkeypatch.setattr(policy, "_decide", decide_then_pause)
    results, errors = {}, []

    def run(k: int) -> None:
        try:
            results[k] = decide_and_record(window(k), settings=get_settings())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    started = [d for d in results.values() if d.retrain]
    assert len(started) == 1, [d.reason for d in results.values()]
    (held,) = [d for d in results.values() if not d.retrain]
    assert held.blocked_by == "training_running"
    assert f"{started[0].training_run_id}" in held.reason
    assert "running" in held.reason
    assert count(engine, training_runs) == 1
