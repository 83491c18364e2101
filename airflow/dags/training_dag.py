"""training_dag: weekly, or on demand with `conf`, train → gate → promote a new model version.

Thin on purpose: each task is a function of `monitoring.retrain_loop`, imported inside it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import chain, dag, task
from airflow.timetables.trigger import CronTriggerTimetable


def _on_failure(context) -> None:
    from monitoring.retrain_loop import on_training_failure

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
        "on_failure_callback": _on_failure,
    },
)
def training_dag():
    """Train on the recent labelled predictions plus a sample of the original data, then gate.

    `conf` (all optional): `reason`; `data_start` / `data_end`, ISO times of the window of
    logged predictions to learn from (default: the RETRAIN_DATA_DAYS before the run);
    `training_run_id`, set by drift_check_dag. Started by hand with, for example:

        airflow dags trigger training_dag --conf '{"reason": "new labels"}'

    ingest → validate → train → evaluate → register → gates → promote: the three gates compare
    the candidate with the champion on the newest recent rows; `promote` moves `@champion` when
    AUTO_PROMOTE is true, makes the version `@challenger` otherwise, or rejects it, and says so
    (Slack; PagerDuty for a failed task).
    """

    @task
    def begin(dag_run=None, logical_date=None) -> dict:
        from monitoring.retrain_loop import begin as begin_run

        scheduled = str(getattr(dag_run, "run_type", "")).endswith("scheduled")
        return begin_run(
            dag_run.conf,
            dag_run_id=dag_run.run_id,
            logical_end=logical_date or datetime.now(UTC),
            scheduled=scheduled,
        )

    @task
    def ingest(run: dict) -> dict:
        from monitoring.retrain_loop import ingest as step

        return step(run)

    @task
    def validate(run: dict) -> dict:
        from monitoring.retrain_loop import validate as step

        return step(run)

    @task
    def train(run: dict) -> dict:
        from monitoring.retrain_loop import fit as step

        return step(run)

    @task
    def evaluate(run: dict) -> dict:
        from monitoring.retrain_loop import evaluate as step

        return step(run)

    @task
    def register(run: dict) -> str:
        from monitoring.retrain_loop import register as step

        return step(run)

    @task
    def gates(run: dict, version: str) -> dict:
        from monitoring.retrain_loop import gates as step

        return step(run, version)

    @task
    def promote(run: dict, version: str, gate_report: dict) -> str:
        from monitoring.retrain_loop import promote as step

        return step(run, version, gate_report)

    run = begin()
    ingested, validated, trained, evaluated = ingest(run), validate(run), train(run), evaluate(run)
    version = register(run)
    gated = gates(run, version)
    promoted = promote(run, version, gated)
    chain(run, ingested, validated, trained, evaluated, version, gated, promoted)


training_dag()
