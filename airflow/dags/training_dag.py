"""training_dag: weekly, or on demand with `conf`, train → gate → promote a new model version.

Thin on purpose: each task calls one function, imported inside it: `training.pipeline`'s steps
between `monitoring.retrain.loop.begin` and `.conclude`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import chain, dag, task
from airflow.timetables.trigger import CronTriggerTimetable


def _join_task_log(context) -> None:
    from data.logs import on_airflow_task_start

    on_airflow_task_start(context)


def _on_failure(context) -> None:
    from monitoring.retrain.loop import on_training_failure

    on_training_failure(context)


@dag(
    dag_id="training_dag",
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),  # Sundays 03:00 UTC
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["training", "retraining"],
    # Retries come from Airflow's own [core] default_task_retries (`make airflow` sets 1).
    default_args={
        # The project's log lines go to Airflow's task log, with the DAG run's id on each.
        "on_execute_callback": _join_task_log,
        "on_failure_callback": _on_failure,
    },
)
def training_dag():
    """Train on the recent labelled predictions plus a sample of the original data, then gate.

    `conf` (all optional): `reason`; `data_start` / `data_end`, ISO times of the window of
    logged predictions to learn from (default: the RETRAIN_DATA_DAYS before the run);
    `training_run_id`, set by drift_check_dag. Started by hand with, for example:

        airflow dags trigger training_dag --conf '{"reason": "new labels"}'

    ingest → validate → fit → evaluate → register → gate → conclude: the three gates compare
    the candidate with the champion on the newest recent rows; `conclude` moves `@champion` when
    AUTO_PROMOTE is true, makes the version `@challenger` otherwise, or rejects it, and says so
    (Slack; PagerDuty for a failed task).
    """

    @task
    def begin(dag_run=None, logical_date=None) -> dict:
        from data.settings import get_settings
        from monitoring.retrain.loop import begin as begin_run

        scheduled = str(getattr(dag_run, "run_type", "")).endswith("scheduled")
        return begin_run(
            dag_run.conf,
            dag_run_id=dag_run.run_id,
            logical_end=logical_date or datetime.now(UTC),
            scheduled=scheduled,
            settings=get_settings(),
        )

    @task
    def ingest(run: dict) -> dict:
        from data.settings import get_settings
        from training.pipeline import ingest

        return ingest(run, get_settings())

    @task
    def validate(run: dict) -> dict:
        from data.settings import get_settings
        from training.pipeline import validate

        return validate(run, get_settings())

    @task
    def fit(run: dict) -> dict:
        from data.settings import get_settings
        from training.pipeline import fit

        return fit(run, get_settings())

    @task
    def evaluate(run: dict) -> dict:
        from data.settings import get_settings
        from training.pipeline import evaluate

        return evaluate(run, get_settings())

    @task
    def register(run: dict) -> str:
        from data.settings import get_settings
        from training.pipeline import register

        return register(run, get_settings())

    @task
    def gate(run: dict, version: str) -> dict:
        from data.settings import get_settings
        from training.pipeline import gate

        return gate(run, version, get_settings())

    @task
    def conclude(run: dict, version: str, gate_report: dict) -> str:
        from data.settings import get_settings
        from monitoring.retrain.loop import conclude

        return conclude(run, version, gate_report, get_settings())

    run = begin()
    ingested, validated, fitted, evaluated = ingest(run), validate(run), fit(run), evaluate(run)
    version = register(run)
    gated = gate(run, version)
    concluded = conclude(run, version, gated)
    chain(run, ingested, validated, fitted, evaluated, version, gated, concluded)


training_dag()
