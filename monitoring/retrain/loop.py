"""The retrain loop's own tasks, as the Airflow DAGs (and the demo) run them.

    drift_check_dag   check_and_decide  →  trigger training_dag when the policy said so
    training_dag      begin → ingest → validate → fit → evaluate → register → gate → conclude

`check_and_decide` runs `monitoring.window_checks` over the run's data interval and records the
retrain policy's decision (`monitoring.retrain.policy`). `begin` opens (or takes over) the run's
`training_runs` row and makes its `training.pipeline.TrainingPlan`, which the training steps
between (`training.pipeline`'s functions, called by the DAG directly) receive through XCom;
`conclude` acts on the gates and closes the row with the outcome. Notifications go out for a
retrain started, a candidate promoted, made challenger or rejected by a gate (with the gate's
numbers), and, through `on_training_failure`, a failed task. Each function is tested without
Airflow; the DAG files only call them.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from alerting.events import (
    candidate_challenger,
    candidate_promoted,
    candidate_rejected,
    retrain_started,
)
from data.db import as_utc, get_engine
from data.logs import log_context
from data.settings import Settings
from monitoring.retrain.notifier import notify, on_task_failure
from monitoring.retrain.policy import decide_and_record
from monitoring.window_checks import check_window
from training.runs import FAILED, claim_training_run, finish_training_run, open_training_run

log = logging.getLogger(__name__)


def check_and_decide(start: datetime, end: datetime, settings: Settings) -> dict[str, Any]:
    """The drift-check DAG's task: checks of [start, end), then the policy's decision.

    Returns what the trigger needs: whether to retrain, and the training DAG's `conf`.
    """
    start, end = as_utc(start), as_utc(end)
    hours = (end - start).total_seconds() / 3600
    result = check_window(end=end, hours=hours, settings=settings)
    with log_context(window=(start, end), model_version=result.model_version):
        decision = decide_and_record(
            (start, end), model_version=result.model_version, settings=settings
        )
        with log_context(training_run_id=decision.training_run_id):
            log.info("%s\n%s", result.summary(), decision.reason)
    outcome: dict[str, Any] = {
        "window": [start.isoformat(), end.isoformat()],
        "rows": result.rows,
        "decision_id": decision.id,
        "retrain": decision.retrain,
        "reason": decision.reason,
        "triggers": decision.triggers,
        "blocked_by": decision.blocked_by,
        "training_run_id": decision.training_run_id,
        # Realized accuracy under its floor in an earlier window, found as its labels came:
        # how many hours after that window closed (None when not).
        "found_late_hours": (decision.numbers.get("late_accuracy") or {}).get("found_late_hours"),
    }
    if decision.retrain:
        data_start = as_utc(decision.numbers["data_start"])
        outcome["conf"] = {
            "reason": decision.reason,
            "trigger": "policy",
            "training_run_id": decision.training_run_id,
            "data_start": data_start.isoformat(),
            "data_end": end.isoformat(),
        }
    return outcome


def begin(
    conf: dict[str, Any] | None,
    *,
    dag_run_id: str,
    logical_end: datetime,
    scheduled: bool = False,
    settings: Settings,
) -> dict[str, Any]:
    """The training DAG's first task: take over the policy's run or open one; say it started.

    `conf` (all optional): reason, data_start / data_end (ISO times; default the
    RETRAIN_DATA_DAYS before the run's logical end), training_run_id (the policy's run).
    Returns the run's `TrainingPlan` as a dict, for the steps that follow.
    """
    from training.pipeline import TrainingPlan

    conf = dict(conf or {})
    logical_end = as_utc(logical_end)
    data_end = as_utc(conf["data_end"]) if conf.get("data_end") else logical_end
    data_start = (
        as_utc(conf["data_start"])
        if conf.get("data_start")
        else data_end - timedelta(days=settings.RETRAIN_DATA_DAYS)
    )
    if data_start >= data_end:
        raise ValueError(f"conf: data_start {data_start} is not before data_end {data_end}")
    trigger = conf.get("trigger") or ("schedule" if scheduled else "manual")
    reason = conf.get("reason") or ("weekly retrain" if scheduled else "manual retrain")
    engine = get_engine(settings.database_url)
    run_id = conf.get("training_run_id")
    if run_id is None:
        run_id = open_training_run(
            model_name=settings.MODEL_NAME,
            requested_at=data_end,
            trigger=trigger,
            reason=reason,
            data_window=(data_start, data_end),
            external_id=dag_run_id,
            engine=engine,
        )
    elif not claim_training_run(int(run_id), dag_run_id, engine):
        raise ValueError(f"conf: training run {run_id} does not exist")
    folder = settings.path(settings.DATA_DIR) / "training-runs" / _safe(dag_run_id)
    with log_context(training_run_id=int(run_id), dag_run_id=dag_run_id):
        log.info("training run %s begins: %s (%s), data %s..%s", run_id, reason, trigger,
                 data_start.isoformat(), data_end.isoformat())  # fmt: skip
        notify(
            retrain_started(
                settings.MODEL_NAME,
                reason=reason,
                run_id=dag_run_id,
                details={
                    "trigger": trigger,
                    "training_run_id": int(run_id),
                    "data_start": data_start.isoformat(),
                    "data_end": data_end.isoformat(),
                },
            ),
            settings=settings,
        )
    plan = TrainingPlan(
        folder=str(folder),
        schema=settings.FEATURE_SCHEMA,
        model_type=settings.MODEL_TYPE,
        data_start=data_start.isoformat(),
        data_end=data_end.isoformat(),
        reason=reason,
        trigger=trigger,
        training_run_id=int(run_id),
    )
    return plan.to_dict()


def conclude(
    run: dict[str, Any], version: str, gate_report: dict[str, Any], settings: Settings
) -> str:
    """The training DAG's last task: act on the gates (`training.gates.decide`: promote when
    AUTO_PROMOTE, else make challenger, or reject), close the run, tell the people."""
    version = str(version)
    with log_context(training_run_id=run["training_run_id"], model_version=version):
        action = _act_on_gates(run, version, gate_report, settings)
        log.info("training run %s concluded: version %s %s", run["training_run_id"], version,
                 action)  # fmt: skip
    return action


def _act_on_gates(
    run: dict[str, Any], version: str, gate_report: dict[str, Any], settings: Settings
) -> str:
    from training.gates import GateReport, decide
    from training.registry import Registry

    registry = Registry.from_settings(settings)
    previous = registry.champion_version()
    report = GateReport.from_dict(gate_report)
    action = decide(registry, report, auto_promote=settings.AUTO_PROMOTE, actor="training_dag")
    finish_training_run(
        run["training_run_id"],
        action,
        finished_at=datetime.now(UTC),
        version=version,
        details={"gates": gate_report, "previous_champion": previous},
        engine=get_engine(settings.database_url),
    )
    metrics = {
        f"{name}.{key}": value
        for name, gate in gate_report["gates"].items()
        for key, value in gate.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if action == "promoted":
        event = candidate_promoted(
            settings.MODEL_NAME, version, previous_champion=previous, metrics=metrics
        )
    elif action == "rejected":
        event = candidate_rejected(settings.MODEL_NAME, version, gates=gate_report["gates"])
    else:  # a person has to act: promote it, or not
        event = candidate_challenger(settings.MODEL_NAME, version, metrics=metrics)
    notify(event, settings=settings)
    return action


def on_training_failure(context: dict[str, Any]) -> None:
    """`on_failure_callback` of the training tasks: tell it (a warning, as the rule
    MLRetrainFailed, whose alert it is), and close the run as failed."""
    on_task_failure(context, training=True)
    ti = context.get("ti") or context.get("task_instance")
    try:
        run = ti.xcom_pull(task_ids="begin") if ti is not None else None
        if run and run.get("training_run_id"):
            finish_training_run(
                run["training_run_id"],
                FAILED,
                finished_at=datetime.now(UTC),
                details={
                    "task": getattr(ti, "task_id", None),
                    "error": str(context.get("exception"))[:2000],
                },
            )
    except Exception:  # a callback must not hide the task's own failure
        log.exception("could not mark the training run failed")


def _safe(name: str) -> str:
    """A dag run id as a folder name (run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
