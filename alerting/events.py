"""What the stack tells the people on call: one `Event` type and a constructor per kind
(a retrain started, a candidate promoted or rejected, a task failed), each with its severity,
summary, details and dedup key. `alerting.notify` sends them. Depends on nothing of the project.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ERROR_LIMIT = 500  # characters of a failed task's error carried in its event
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
Severity = Literal["critical", "warning", "info"]
RETRAIN_STARTED = "retrain_started"
CANDIDATE_PROMOTED = "candidate_promoted"
CANDIDATE_REJECTED = "candidate_rejected"
TASK_FAILED = "task_failed"

Detail = float | int | str | bool | None


@dataclass(frozen=True)
class Event:
    """Something the on-call people should hear of.

    `summary` is a fixed sentence per kind of event (what dashboards and dedup group on);
    `description` says which model, version or task and why; `details` are the numbers;
    `labels` identify the subject (model, version, dag, task). `dedup_key` defaults to a hash
    of everything else, so the same event repeated is sent once per dedup window.
    """

    name: str
    severity: Severity
    summary: str
    description: str = ""
    details: Mapping[str, Detail] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    dedup_key: str = ""

    def __post_init__(self) -> None:
        # Refused here rather than routed by a default: an unknown severity must not quietly
        # become a warning (the published stack lost its pages that way).
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not self.name or not self.summary:
            raise ValueError("an event needs a name and a summary")
        if not self.dedup_key:
            identity = json.dumps(
                [self.name, self.summary, self.description, self.details, self.labels],
                sort_keys=True,
                default=str,
            )
            digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
            object.__setattr__(self, "dedup_key", f"{self.name}:{digest}")


def retrain_started(
    model_name: str, *, reason: str, run_id: str | None = None, details: Mapping | None = None
) -> Event:
    """Retraining began (warning: Slack). One message per model and run."""
    return Event(
        name=RETRAIN_STARTED,
        severity="warning",
        summary="Retraining started",
        description=f"Retraining {model_name}: {reason}",
        details=flatten(details or {}),
        labels=_labels(model_name=model_name, run_id=run_id),
        dedup_key=_key(RETRAIN_STARTED, model_name, run_id),
    )


def candidate_promoted(
    model_name: str,
    version: str | int,
    *,
    previous_champion: str | int | None = None,
    metrics: Mapping | None = None,
) -> Event:
    """A candidate became `@champion` (warning: Slack)."""
    before = f" (was v{previous_champion})" if previous_champion is not None else ""
    return Event(
        name=CANDIDATE_PROMOTED,
        severity="warning",
        summary="Candidate model promoted to champion",
        description=f"{model_name} v{version} is now @champion{before}",
        details=flatten(metrics or {}),
        labels=_labels(model_name=model_name, version=version, previous_champion=previous_champion),
        dedup_key=_key(CANDIDATE_PROMOTED, model_name, version),
    )


def candidate_rejected(
    model_name: str, version: str | int, *, gates: Mapping[str, Mapping[str, Any]]
) -> Event:
    """A candidate failed a promotion gate (warning: Slack), with every gate's numbers.

    `gates` maps a gate's name to its result, as `GateReport.to_dict()["gates"]` gives it:
    `{"performance_floor": {"passed": False, "reason": "...", "metrics": {...}, ...}}`.
    """
    failed = [name for name, result in gates.items() if not result.get("passed", False)]
    reasons = "; ".join(f"{name}: {gates[name].get('reason', 'failed')}" for name in failed)
    return Event(
        name=CANDIDATE_REJECTED,
        severity="warning",
        summary="Candidate model rejected by a promotion gate",
        description=f"{model_name} v{version} stays off @champion. {reasons or 'no gate passed'}",
        details=flatten(gates),
        labels=_labels(model_name=model_name, version=version, failed_gates=",".join(failed)),
        dedup_key=_key(CANDIDATE_REJECTED, model_name, version),
    )


def task_failed(
    dag_id: str,
    task_id: str,
    *,
    run_id: str | None = None,
    error: str = "",
    try_number: int | None = None,
    log_url: str | None = None,
) -> Event:
    """A DAG task failed for good (critical: it pages, since monitoring is blind until fixed)."""
    return Event(
        name=TASK_FAILED,
        severity="critical",
        summary="Airflow task failed",
        # A traceback-sized message would bury the task's name in Slack and PagerDuty.
        description=f"{dag_id}.{task_id} failed" + (f": {error[:ERROR_LIMIT]}" if error else ""),
        details={
            name: value
            for name, value in {"try_number": try_number, "log_url": log_url}.items()
            if value is not None
        },
        labels=_labels(dag_id=dag_id, task_id=task_id, run_id=run_id),
        dedup_key=_key(TASK_FAILED, dag_id, task_id, run_id),
    )


def flatten(values: Mapping, prefix: str = "") -> dict[str, Detail]:
    """Nested numbers as one level, `{"gate": {"roc_auc": 0.8}}` → `{"gate.roc_auc": 0.8}`;
    anything that is not a number, bool, string or None becomes its text."""
    flat: dict[str, Detail] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _labels(**values: object) -> dict[str, str]:
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _key(*parts: object) -> str:
    return ":".join(str(part) for part in parts if part not in (None, ""))
