"""The Prometheus exporter: real report rows in SQLite and Postgres in, `ml_*` series out, read
back with prometheus_client's own parser; and the real process answering a scrape."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from mlflow import MlflowClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from data.db import get_engine, init_db, labels, prediction_logs
from data.drift_injector import inject_drift
from data.prediction_log import PREDICTION_COLUMN, SCORE_COLUMN
from data.settings import PROJECT_ROOT, get_settings
from data.synthetic import fraud_probability, generate_transactions
from monitoring.drift_report import compute_drift_report, profile_from_frame
from monitoring.performance import estimated_performance_by_window, realized_performance
from monitoring.prometheus_exporter import MonitoringCollector, build_registry
from monitoring.quality_report import compute_quality_report
from monitoring.report_store import save_reports
from tools.testkit.airflow_health import airflow_answer, running_airflow_health
from training.runs import finish_training_run, open_training_run

WINDOW_END = datetime(2026, 3, 1, 6, tzinfo=UTC)
WINDOW = (WINDOW_END - timedelta(hours=6), WINDOW_END)


def scored(frame):
    """The hidden rule's probability as the model's score: calibrated by construction."""
    frame = frame.copy()
    frame[SCORE_COLUMN] = fraud_probability(frame)
    frame[PREDICTION_COLUMN] = (frame[SCORE_COLUMN] >= 0.5).astype(int)
    return frame


def save_window(schema, database_url, *, feature="amount", model_version="3"):
    """Compute real reports on a window with `feature` mean-shifted and save them."""
    reference = scored(generate_transactions(5_000, seed=1))
    current = generate_transactions(3_000, seed=2, start="2026-03-01", days=0.25)
    current = scored(inject_drift(current, "mean_shift", schema=schema, feature=feature, seed=3))
    profile = profile_from_frame(reference, schema)
    reports = {
        "drift": compute_drift_report(profile, current, schema, window=WINDOW),
        "quality": compute_quality_report(
            current, schema, window_start=WINDOW[0], window_end=WINDOW[1], reference=profile
        ),
        "realized": realized_performance(current, schema, window=list(WINDOW)),
        "estimated": estimated_performance_by_window(current, schema, window=list(WINDOW)),
    }
    save_reports(
        window=WINDOW,
        model_name=get_settings().MODEL_NAME,
        model_version=model_version,
        engine=get_engine(database_url),
        **reports,
    )
    return reports


def scrape(collector) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels without the common ones): value} of one scrape."""
    text = generate_latest(build_registry(collector)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("environment") == "development"
            assert labels.pop("model_name") == "fraud-detector"
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def collector(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    return MonitoringCollector(read_registry=False)


def test_the_latest_reports_become_ml_series(collector, fraud_schema, database_url):
    reports = save_window(fraud_schema, database_url)
    samples = scrape(collector)
    drift, quality = reports["drift"], reports["quality"]

    amount = drift.features["amount"]
    assert value(samples, "ml_drift_psi", feature="amount") == pytest.approx(amount.psi)
    assert value(samples, "ml_drift_p_value", feature="amount", test="ks") == pytest.approx(
        amount.p_value
    )
    assert value(samples, "ml_drift_detected", feature="amount") == 1
    assert value(samples, "ml_drift_severity", feature="amount") == 2  # critical
    assert value(samples, "ml_drift_detected", feature="merchant_category") == 0
    counts = drift.counts_by_severity
    assert value(samples, "ml_drift_features", severity="critical") == counts["critical"]
    assert value(samples, "ml_drift_drifted_share") == pytest.approx(drift.drifted_share)
    assert value(samples, "ml_drift_dataset_drift") == 0
    assert value(samples, "ml_prediction_drift_psi", output="score") == pytest.approx(
        drift.prediction.score.psi
    )
    assert value(samples, "ml_drift_window_rows", dataset="current") == 3_000
    age = (datetime.now(UTC) - WINDOW_END).total_seconds()
    assert value(samples, "ml_drift_report_age_seconds") == pytest.approx(age, abs=60)

    assert value(samples, "ml_quality_hard_failures") == quality.hard_failures
    assert value(samples, "ml_quality_passed") == int(quality.passed)
    assert value(samples, "ml_quality_check_status", check="duplicate_ids") == 0
    assert value(samples, "ml_quality_missing_ratio", feature="amount") == 0
    assert value(samples, "ml_drift_wasserstein", feature="amount") == pytest.approx(
        amount.wasserstein
    )
    # The quality check's share beyond the training range, where the schema sets no bound.
    outside = quality.outside_training_range_share
    assert outside and all(
        value(samples, "ml_quality_outside_training_range_ratio", feature=name)
        == pytest.approx(share)
        for name, share in outside.items()
    )

    realized, estimated = reports["realized"].overall, reports["estimated"].overall
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert value(samples, "ml_realized_performance", metric=metric) == pytest.approx(
            realized[metric]
        )
        assert value(samples, "ml_estimated_performance", metric=metric) == pytest.approx(
            estimated[metric]
        )
    for cell in ("tp", "fp", "fn", "tn"):
        assert value(samples, "ml_realized_confusion", cell=cell) == realized[cell]
    fp, tn = realized["fp"], realized["tn"]
    assert 0 < fp < fp + tn and fp + tn + realized["tp"] + realized["fn"] == 3_000
    assert value(samples, "ml_label_coverage_ratio") == 1.0
    assert value(samples, "ml_exporter_source_up", source="database") == 1


def save_drift(drift, database_url) -> None:
    """Save a drift report alone for WINDOW, as the monitoring pass does."""
    save_reports(
        window=WINDOW,
        model_name=get_settings().MODEL_NAME,
        model_version="3",
        engine=get_engine(database_url),
        drift=drift,
    )


def test_a_joint_drift_is_the_multivariate_series_with_its_drivers(
    collector, fraud_schema, database_url
):
    """A correlation flip (every column holds the values it held): no feature drifted, the
    multivariate check's AUC, p-value and severity are series, its drivers by feature."""
    reference = scored(generate_transactions(10_000, seed=1))
    current = generate_transactions(5_000, seed=2, start="2026-03-01", days=0.25)
    current = inject_drift(
        current, "correlation_flip", schema=fraud_schema, feature="avg_amount_30d", intensity=1.0
    )
    profile = profile_from_frame(reference, fraud_schema)
    drift = compute_drift_report(profile, scored(current), fraud_schema, window=WINDOW)
    save_drift(drift, database_url)
    samples = scrape(collector)
    joint = drift.multivariate
    assert joint is not None and joint.severity == "critical"
    assert value(samples, "ml_drift_features", severity="critical") == 0
    assert value(samples, "ml_drift_multivariate_severity") == 2
    assert value(samples, "ml_drift_multivariate_auc") == pytest.approx(joint.auc)
    assert value(samples, "ml_drift_multivariate_p_value") == pytest.approx(joint.p_value)
    assert value(samples, "ml_drift_multivariate_auc_threshold") == pytest.approx(
        joint.auc_threshold
    )
    drivers = {
        dict(labels)["feature"]: v
        for (name, labels), v in samples.items()
        if name == "ml_drift_multivariate_driver_importance"
    }
    named = {f["feature"]: f["auc_drop"] for f in joint.top_features}
    assert "avg_amount_30d" in named and all(v > 0 for v in named.values())
    # Every feature has its series (a dashboard draws them all); those not named are 0.
    assert set(drivers) == set(fraud_schema.feature_names)
    assert drivers == {name: pytest.approx(named.get(name, 0.0)) for name in drivers}


def test_a_report_without_the_multivariate_check_has_no_multivariate_series(
    collector, fraud_schema, database_url
):
    """A profile without a joint sample (made before the check): unknown, not "no drift"."""
    reports = save_window(fraud_schema, database_url)
    assert reports["drift"].multivariate is not None
    samples = scrape(collector)
    names = {name for name, _ in samples}
    available = reports["drift"].multivariate.available
    assert ("ml_drift_multivariate_auc" in names) == available
    old = profile_from_frame(scored(generate_transactions(2_000, seed=1)), fraud_schema)
    old.joint_sample = None
    drift = compute_drift_report(
        old, scored(generate_transactions(2_000, seed=2)), fraud_schema, window=WINDOW
    )
    assert not drift.multivariate.available
    save_drift(drift, database_url)
    names = {name for name, _ in scrape(MonitoringCollector(read_registry=False))}
    assert not {n for n in names if n.startswith("ml_drift_multivariate")}
    assert "ml_drift_psi" in names


def test_nothing_saved_yet_is_no_series_not_an_error(collector):
    samples = scrape(collector)
    assert value(samples, "ml_exporter_source_up", source="database") == 1
    assert not [name for name, _ in samples if name.startswith(("ml_drift", "ml_quality"))]


def test_labels_without_a_prediction_count_as_orphaned_after_the_wait(collector, database_url):
    """`/feedback` stores every label; one whose prediction has not reached the log
    LABEL_MATCH_MINUTES (60) after it arrived is counted, not silently ignored."""
    engine = get_engine(database_url)
    init_db(engine)
    now = datetime.now(UTC)
    features = {"amount": 1.0}
    logged = dict(predicted_at=now, model_name="m", model_version="1", features=features,
                  predicted_class=0, score=0.1, latency_ms=0.1)  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), [{"request_id": "known", **logged}])
        conn.execute(
            insert(labels),
            [
                {"request_id": "known", "label": 1, "labelled_at": now,
                 "received_at": now - timedelta(hours=3)},
                {"request_id": "typo", "label": 1, "labelled_at": now,
                 "received_at": now - timedelta(hours=3)},
                {"request_id": "early", "label": 0, "labelled_at": now,
                 "received_at": now - timedelta(minutes=5)},
            ],
        )  # fmt: skip
    assert value(scrape(collector), "ml_labels_orphaned") == 1


def test_training_runs_become_counts_and_the_last_outcome(collector, database_url):
    """Closed runs by outcome, the running ones, and the newest closed run's outcome and time,
    for this model only: what the alerts on a failed or rejected retrain read."""
    engine = get_engine(database_url)
    start = datetime(2026, 3, 1, tzinfo=UTC)

    def run(status, hours, model_name="fraud-detector"):
        run_id = open_training_run(
            model_name=model_name, requested_at=start, trigger="policy", reason="test",
            engine=engine,
        )  # fmt: skip
        if status != "running":
            finish_training_run(run_id, status, finished_at=start + timedelta(hours=hours),
                                engine=engine)  # fmt: skip

    run("promoted", 1)
    run("rejected", 2)
    run("failed", 3)
    run("running", 0)
    run("promoted", 9, model_name="another-model")
    samples = scrape(collector)
    counts = {s: value(samples, "ml_training_runs_total", status=s) for s in
              ("promoted", "challenger", "rejected", "failed")}  # fmt: skip
    assert counts == {"promoted": 1, "challenger": 0, "rejected": 1, "failed": 1}
    assert value(samples, "ml_training_runs_running") == 1
    last = {s: value(samples, "ml_training_last_run_status", status=s) for s in counts}
    assert last == {"promoted": 0, "challenger": 0, "rejected": 0, "failed": 1}
    assert value(samples, "ml_training_last_run_timestamp_seconds") == pytest.approx(
        (start + timedelta(hours=3)).timestamp()
    )


def test_no_training_run_yet_is_zero_counts_and_no_last_outcome(collector):
    samples = scrape(collector)
    assert value(samples, "ml_training_runs_total", status="failed") == 0
    assert value(samples, "ml_training_runs_running") == 0
    assert not [name for name, _ in samples if name.startswith("ml_training_last_run")]


def test_reads_are_cached_and_ages_keep_growing(monkeypatch, fraud_schema, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("EXPORTER_CACHE_SECONDS", "30")
    get_settings.cache_clear()
    now = [1_000.0]
    collector = MonitoringCollector(read_registry=False, clock=lambda: now[0])
    save_window(fraud_schema, database_url, feature="amount")
    first = scrape(collector)
    assert value(first, "ml_drift_severity", feature="avg_amount_30d") == 0
    save_window(fraud_schema, database_url, feature="avg_amount_30d")  # a newer row, same window
    now[0] += 29
    cached = scrape(collector)
    assert value(cached, "ml_drift_severity", feature="avg_amount_30d") == 0
    assert value(cached, "ml_drift_report_age_seconds") >= value(
        first, "ml_drift_report_age_seconds"
    )
    now[0] += 1
    assert value(scrape(collector), "ml_drift_severity", feature="avg_amount_30d") == 2


def test_a_database_outage_is_a_metric_not_a_failed_scrape(monkeypatch, fraud_schema, tmp_path):
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXPORTER_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    save_window(fraud_schema, url)
    collector = MonitoringCollector(read_registry=False)
    assert value(scrape(collector), "ml_drift_severity", feature="amount") == 2
    collector.settings = collector.settings.model_copy(
        update={"DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/none"}
    )
    samples = scrape(collector)
    assert value(samples, "ml_exporter_source_up", source="database") == 0
    # The last values read stay, and their age goes on growing.
    assert value(samples, "ml_drift_severity", feature="amount") == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_exporter_process_serves_real_values_to_a_scrape(
    default_training, fraud_schema, postgres_url
):
    store, training = default_training
    reports = save_window(fraud_schema, postgres_url, model_version=training.version)
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "MLFLOW_TRACKING_URI": store.MLFLOW_TRACKING_URI,
    }
    port = _free_port()
    command = [sys.executable, "-m", "monitoring.prometheus_exporter"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--host", "127.0.0.1"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.2)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        psi = {s.labels["feature"]: s.value for s in families["ml_drift_psi"].samples}
        assert psi["amount"] == pytest.approx(reports["drift"].features["amount"].psi)
        (champion,) = families["ml_champion_version"].samples
        assert champion.value == int(training.version)
        # The registry named too: a test that trained in-process before this one left its own
        # store as MLflow's global registry URI, whose version 1 is another, newer model.
        uri = store.MLFLOW_TRACKING_URI
        registered = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(
            store.MODEL_NAME, training.version
        )
        (age,) = families["ml_champion_age_seconds"].samples
        expected = time.time() - registered.creation_timestamp / 1000
        assert age.value == pytest.approx(expected, abs=60)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0

    once = subprocess.run(
        [*command, "--once"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert once.returncode == 0, once.stderr
    line = (
        'ml_drift_severity{environment="development",feature="amount",model_name="fraud-detector"}'
    )
    assert f"{line} 2.0" in once.stdout.splitlines()


# --- Airflow's health, probed by the exporter --------------------------------------------------


@pytest.fixture
def airflow_server():
    with running_airflow_health() as server:
        yield server


def airflow_collector(monkeypatch, tmp_path, url: str | None, cache: int = 0):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'monitoring.db'}")
    monkeypatch.setenv("EXPORTER_CACHE_SECONDS", str(cache))
    if url is None:
        monkeypatch.delenv("AIRFLOW_HEALTH_URL", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_HEALTH_URL", url)
    get_settings.cache_clear()
    return MonitoringCollector(read_registry=False)


def airflow_series(samples) -> dict[str, float]:
    return {
        dict(labels)["component"]: v
        for (name, labels), v in samples.items()
        if name == "ml_airflow_component_healthy"
    }


def test_a_healthy_airflow_is_every_component_at_1(monkeypatch, tmp_path, airflow_server):
    samples = scrape(airflow_collector(monkeypatch, tmp_path, airflow_server.url))
    assert value(samples, "ml_exporter_source_up", source="airflow") == 1
    assert airflow_series(samples) == {
        "metadatabase": 1, "scheduler": 1, "triggerer": 1, "dag_processor": 1,
    }  # fmt: skip


def test_an_unhealthy_component_is_0_and_airflow_still_answers(
    monkeypatch, tmp_path, airflow_server
):
    """A scheduler whose heartbeat stopped, and a triggerer that never ran (no status at all):
    both 0; Airflow itself answered (source up)."""
    airflow_server.answer = (200, airflow_answer(scheduler="unhealthy", triggerer=None), 0.0)
    samples = scrape(airflow_collector(monkeypatch, tmp_path, airflow_server.url))
    assert value(samples, "ml_exporter_source_up", source="airflow") == 1
    assert airflow_series(samples) == {
        "metadatabase": 1, "scheduler": 0, "triggerer": 0, "dag_processor": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    "answer",
    [
        (503, airflow_answer(), 0.0),  # the api-server's proxy in front of a dead worker
        (200, "<html>not airflow</html>", 0.0),  # another service on that port
        (200, {"status": "ok"}, 0.0),  # JSON, but none of Airflow's components
    ],
    ids=["5xx", "not-json", "not-airflow"],
)
def test_an_answer_that_is_not_airflows_health_is_airflow_down(
    monkeypatch, tmp_path, airflow_server, answer
):
    airflow_server.answer = answer
    samples = scrape(airflow_collector(monkeypatch, tmp_path, airflow_server.url))
    assert value(samples, "ml_exporter_source_up", source="airflow") == 0
    assert airflow_series(samples) == {}


def test_an_unreachable_airflow_is_a_metric_and_the_components_are_unknown(
    monkeypatch, tmp_path, airflow_server
):
    collector = airflow_collector(monkeypatch, tmp_path, airflow_server.url)
    assert airflow_series(scrape(collector)) != {}
    collector.settings = collector.settings.model_copy(
        update={"AIRFLOW_HEALTH_URL": f"http://127.0.0.1:{_free_port()}/api/v2/monitor/health"}
    )
    samples = scrape(collector)
    assert value(samples, "ml_exporter_source_up", source="airflow") == 0
    assert value(samples, "ml_exporter_source_up", source="database") == 1  # the rest is read
    assert airflow_series(samples) == {}  # not the last values: nothing is known now


def test_a_hung_airflow_does_not_hold_the_scrape(monkeypatch, tmp_path, airflow_server):
    """An api-server that accepts and never answers: the scrape waits the probe's timeout, not
    Prometheus' (10 s), and says Airflow is down."""
    import monitoring.prometheus_exporter as exporter

    monkeypatch.setattr(exporter, "AIRFLOW_HEALTH_TIMEOUT_SECONDS", 0.5)
    airflow_server.answer = (200, airflow_answer(), 5.0)
    collector = airflow_collector(monkeypatch, tmp_path, airflow_server.url)
    started = time.monotonic()
    samples = scrape(collector)
    assert time.monotonic() - started < 3
    assert value(samples, "ml_exporter_source_up", source="airflow") == 0


def test_airflow_is_asked_once_per_cached_read_and_not_at_all_unset(
    monkeypatch, tmp_path, airflow_server
):
    collector = airflow_collector(monkeypatch, tmp_path, airflow_server.url, cache=30)
    for _ in range(3):
        scrape(collector)
    assert airflow_server.requests == 1
    samples = scrape(airflow_collector(monkeypatch, tmp_path, None))
    assert ("ml_exporter_source_up", frozenset({("source", "airflow")})) not in samples
    assert airflow_series(samples) == {} and airflow_server.requests == 1
