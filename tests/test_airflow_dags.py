"""The DAG files on real Airflow 3: they load, their shape is pinned, they parse light, and the
maintenance DAG and a failing task behave under `dag.test()` (the drift-check and training DAGs
run end to end in tests/test_retrain_loop.py)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, func, insert, select

from data.db import init_db, labels, prediction_logs, training_runs
from data.settings import PROJECT_ROOT
from tools.testkit.airflow_run import DAGS_FOLDER, AirflowHome
from tools.testkit.alertmanager_run import SLACK as AM_SLACK
from tools.testkit.alertmanager_run import RunningAlertmanager, loopback_copy, wait_for
from tools.testkit.http_sink import running_sink

PAGERDUTY, SLACK = "/pagerduty/v2/enqueue", "/slack/T0/B0/X"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> AirflowHome:
    return AirflowHome(tmp_path_factory.mktemp("airflow"), {"ENVIRONMENT": "development"})


def test_every_dag_loads_with_the_pinned_tasks_and_schedules(airflow):
    described = airflow.describe()
    assert described["import_errors"] == {}
    dags = described["dags"]
    assert set(dags) == {"drift_check_dag", "training_dag", "maintenance_dag"}

    drift = dags["drift_check_dag"]
    # Every six hours, each run over the interval that just ended (a data-interval timetable).
    assert (drift["timetable"], drift["schedule"]) == ("CronDataIntervalTimetable", "0 */6 * * *")
    assert drift["tasks"] == {
        "check": ["retrain_decided"],
        "retrain_decided": ["trigger_training"],
        "trigger_training": [],
    }
    training = dags["training_dag"]
    assert (training["timetable"], training["schedule"]) == ("CronTriggerTimetable", "0 3 * * 0")
    steps = ["begin", "ingest", "validate", "fit", "evaluate", "register", "gate", "conclude"]
    for step, after in itertools.pairwise(steps):
        assert after in training["tasks"][step], (step, after)
    assert training["tasks"]["conclude"] == []
    assert dags["maintenance_dag"]["tasks"] == {"purge_old_predictions": []}
    assert all(not dag["catchup"] and dag["tags"] and dag["doc"] for dag in dags.values())


def parse_env() -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="airflow-parse-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def test_parsing_the_dags_imports_none_of_the_heavy_work():
    """The dag processor parses every file every few seconds: no pandas, sklearn, MLflow or
    project package at the top of a DAG file."""
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(DAGS_FOLDER)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "heavy = ('sklearn', 'mlflow', 'pandas', 'scipy', 'monitoring', 'training', 'data.db')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=parse_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.postgres
def test_maintenance_deletes_only_rows_past_retention_with_their_labels(airflow, postgres_url):
    engine = create_engine(postgres_url)
    init_db(engine)
    run_at = datetime(2026, 3, 31, 2, 30, tzinfo=UTC)
    ages = {"old-1": 45, "old-2": 31, "new-1": 29, "new-2": 1}  # days before the run
    with engine.begin() as conn:
        for request_id, days in ages.items():
            conn.execute(insert(prediction_logs).values(
                request_id=request_id, predicted_at=run_at - timedelta(days=days),
                model_name="fraud-detector", model_version="1", features={}, predicted_class=0,
                score=0.1, latency_ms=1.0))  # fmt: skip
            conn.execute(insert(labels).values(request_id=request_id, label=1,
                                               labelled_at=run_at))  # fmt: skip
    result = airflow.run_dag(
        "maintenance_dag", run_at, DATABASE_URL=postgres_url, PREDICTION_RETENTION_DAYS="30",
        PREDICTION_RETENTION_BATCH="1",
    )  # fmt: skip
    assert result["state"] == "success", result["log"][-3000:]
    purged = result["xcom"]["purge_old_predictions"]
    assert (purged["deleted_predictions"], purged["deleted_labels"], purged["batches"]) == (2, 2, 2)
    with engine.connect() as conn:
        kept = sorted(conn.execute(select(prediction_logs.c.request_id)).scalars())
        assert kept == ["new-1", "new-2"]
        assert sorted(conn.execute(select(labels.c.request_id)).scalars()) == kept
    engine.dispose()


@pytest.mark.postgres
def test_a_failed_training_task_is_an_alertmanager_alert_and_closes_its_run(
    airflow, postgres_url, tmp_path
):
    """As compose runs it (ALERTMANAGER_URL set): the failure callback's notification is the
    alert MLRetrainFailed in a real Alertmanager, a warning that reaches Slack through it, with
    nothing sent around it (the notifier's own Slack and PagerDuty are set, and unused)."""
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            env = {
                "DATABASE_URL": postgres_url,
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "DATA_DIR": str(tmp_path / "data"),
                "ALERTMANAGER_URL": manager.url,
                "SLACK_WEBHOOK_URL": sink.url + SLACK,
                "PAGERDUTY_ROUTING_KEY": "routing-key-0123456789abcdef0123",
                "PAGERDUTY_EVENTS_URL": sink.url + PAGERDUTY,
                # No data to train on: ingest fails after begin opened the run.
                "TRAINING_DATA": str(tmp_path / "missing.parquet"),
            }
            result = airflow.run_dag("training_dag", datetime(2026, 3, 1, tzinfo=UTC),
                                     {"reason": "test of a failure"}, **env)  # fmt: skip
            assert result["state"] == "failed"
            assert result["tasks"]["begin"] == "success" and result["tasks"]["ingest"] == "failed"
            # The project's lines are in Airflow's task log, with the runs they concern.
            (begins,) = [
                line for line in result["log"].splitlines() if "training run 1 begins" in line
            ]
            assert "[monitoring.retrain.loop]" in begins and "training_run_id=1" in begins
            assert f"dag_run_id={result['run_id']}" in begins
            alerts = {
                alert["labels"]["alertname"]: alert
                for alert in httpx.get(f"{manager.url}/api/v2/alerts", timeout=5).json()
            }
            assert set(alerts) == {"MLRetrainStarted", "MLRetrainFailed"}
            failed = alerts["MLRetrainFailed"]
            assert failed["labels"] == {"alertname": "MLRetrainFailed", "severity": "warning",
                                        "environment": "development",
                                        "model_name": "fraud-detector"}  # fmt: skip
            assert "training_dag.ingest failed" in failed["annotations"]["description"]
            assert "missing.parquet" in failed["annotations"]["description"]
            assert "test of a failure" in alerts["MLRetrainStarted"]["annotations"]["description"]
            assert wait_for(lambda: len(sink.at(AM_SLACK)) == 2), manager.log.read_text()[-2000:]
            # Nothing around it, and no page: PAGERDUTY is also the test Alertmanager's path.
            assert sink.at(SLACK) == [] and sink.at(PAGERDUTY) == []
        finally:
            manager.stop()
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        (run,) = conn.execute(select(training_runs)).all()
        assert run.id == 1 and run.status == "failed" and run.trigger == "manual"
        assert "missing.parquet" in run.details["error"]
        assert conn.execute(select(func.count()).select_from(training_runs)).scalar_one() == 1
    engine.dispose()


def test_the_celery_executor_of_the_celery_profile_imports():
    """The compose `celery` profile's workers run `airflow celery worker`: its executor module
    must import with the pinned Celery (5.7 dropped a name the provider imports)."""
    done = subprocess.run(
        [sys.executable, "-c", "import airflow.providers.celery.executors.celery_executor as m; "
         "print(type(m.app).__name__)"],
        env=parse_env() | {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "Celery"
