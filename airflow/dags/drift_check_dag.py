"""drift_check_dag: every six hours, check the interval's predictions and decide a retrain.

Thin on purpose: the work is `monitoring.retrain.loop.check_and_decide`, imported inside the task.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable


def _join_task_log(context) -> None:
    from data.logs import on_airflow_task_start

    on_airflow_task_start(context)


def _notify_failure(context) -> None:
    from monitoring.retrain.notifier import on_task_failure

    on_task_failure(context)


@dag(
    dag_id="drift_check_dag",
    # A data-interval timetable: each run covers the six hours that just ended, [start, end).
    schedule=CronDataIntervalTimetable("0 */6 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["monitoring", "retraining"],
    # Retries come from Airflow's own [core] default_task_retries (`make airflow` sets 1).
    default_args={
        # The project's log lines go to Airflow's task log, with the DAG run's id on each.
        "on_execute_callback": _join_task_log,
        "on_failure_callback": _notify_failure,
    },
)
def drift_check_dag():
    """Drift, quality and performance checks of the run's data interval, then the retrain policy.

    1. `check`: `monitoring.window_checks` over [data_interval_start, data_interval_end) (never
       `now()`), reports saved once per interval (a re-run replaces them), then
       `monitoring.retrain.policy` records its decision with the reason and the numbers, in
       `retrain_decisions`.
    2. `retrain_decided`: stops here unless the policy said retrain.
    3. `trigger_training`: starts `training_dag` with the reason and the data window in `conf`,
       under the run id `retrain__<training run id>`, so a re-run of this interval cannot start
       the same training twice.
    """

    @task
    def check(data_interval_start=None, data_interval_end=None) -> dict:
        from data.settings import get_settings
        from monitoring.retrain.loop import check_and_decide

        return check_and_decide(data_interval_start, data_interval_end, get_settings())

    @task.short_circuit
    def retrain_decided(outcome: dict) -> bool:
        return bool(outcome["retrain"])

    outcome = check()
    trigger = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id="training_dag",
        trigger_run_id="retrain__{{ ti.xcom_pull(task_ids='check')['training_run_id'] }}",
        conf="{{ ti.xcom_pull(task_ids='check')['conf'] }}",
        skip_when_already_exists=True,
    )
    retrain_decided(outcome) >> trigger


drift_check_dag()
