"""maintenance_dag: daily, keep the prediction log bounded (PREDICTION_RETENTION_DAYS).

Thin on purpose: the work is `data.retention.purge_expired`, imported inside the task.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable


def _join_task_log(context) -> None:
    from data.logs import on_airflow_task_start

    on_airflow_task_start(context)


def _notify_failure(context) -> None:
    from monitoring.retrain.notifier import on_task_failure

    on_task_failure(context)


@dag(
    dag_id="maintenance_dag",
    schedule=CronTriggerTimetable("30 2 * * *", timezone="UTC"),  # daily, 02:30 UTC
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["maintenance"],
    # Retries come from Airflow's own [core] default_task_retries (`make airflow` sets 1).
    default_args={
        # The project's log lines go to Airflow's task log, with the DAG run's id on each.
        "on_execute_callback": _join_task_log,
        "on_failure_callback": _notify_failure,
    },
)
def maintenance_dag():
    """Delete prediction log rows older than PREDICTION_RETENTION_DAYS before the run's logical
    date, with their labels, in batches of PREDICTION_RETENTION_BATCH rows (one short
    transaction each, so live logging never waits behind a day's delete)."""

    @task
    def purge_old_predictions(logical_date=None) -> dict:
        from data.retention import purge_expired
        from data.settings import get_settings

        return purge_expired(logical_date or datetime.now(UTC), get_settings())

    purge_old_predictions()


maintenance_dag()
