"""What the stack tells the people on call: one `Event` type and a constructor per kind
(a retrain started, a candidate promoted, made challenger or rejected, a training run or another
DAG task failed), each with its severity, summary, details, dedup key and the Alertmanager alert
it becomes (`ALERTNAMES`). `alerting.notify` sends them. Depends on nothing of the project.

Each event once. Two kinds are also Prometheus rules of prometheus/alerts.yml, raised from the
exporter's `ml_training_last_run_*` series: a rejected candidate (`MLRetrainRejected`) and a
failed training run (`MLRetrainFailed`). Their events carry exactly the rule's alert name,
severity and labels (`alertname`, `severity`, `environment`, `model_name`: `alert_labels` keeps
the others out), so Alertmanager takes the two for one alert and tells it once, whichever
arrives first. Not sending them at all (and leaving them to the rules) was the other way; it
was not taken because the rule can miss what the event sees: the exporter down or not deployed
(the Kubernetes manifests ship none), or a failure that could not close its `training_runs`
row. Should the labels ever drift apart, the cost is a duplicate message, not a missed one
(tests/test_alertmanager.py pins them to the rule's tested labels).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ERROR_LIMIT = 500  # characters of a failed task's error carried in its event
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
Severity = Literal["critical", "warning", "info"]
RETRAIN_STARTED = "retrain_started"
CANDIDATE_PROMOTED = "candidate_promoted"
CANDIDATE_CHALLENGER = "candidate_challenger"
CANDIDATE_REJECTED = "candidate_rejected"
TRAINING_FAILED = "training_failed"
TASK_FAILED = "task_failed"

# The Alertmanager alert each kind of event becomes: a stable name, whose section in
# docs/runbooks.md is its `runbook_url`. A kind not listed gets "ML" and its name in CamelCase.
ALERTNAMES: Mapping[str, str] = {
    RETRAIN_STARTED: "MLRetrainStarted",
    CANDIDATE_PROMOTED: "MLCandidatePromoted",
    CANDIDATE_CHALLENGER: "MLCandidateAwaitsPromotion",
    CANDIDATE_REJECTED: "MLRetrainRejected",  # = the Prometheus rule (see the module docstring)
    TRAINING_FAILED: "MLRetrainFailed",  # = the Prometheus rule
    TASK_FAILED: "MLAirflowTaskFailed",
}

Detail = float | int | str | bool | None
# The labels of the rules MLRetrainRejected and MLRetrainFailed besides alertname and severity
# (prometheus/alerts.yml aggregates them `by (environment, model_name)`); the notifier adds
# `environment` to every alert.
RULE_LABELS = ("model_name",)


@dataclass(frozen=True)
class Event:
    """Something the on-call people should hear of.

    `summary` is a fixed sentence per kind of event (what dashboards and dedup group on);
    `description` says which model, version or task and why; `details` are the numbers;
    `labels` identify the subject (model, version, dag, task). `dedup_key` defaults to a hash
    of everything else, so the same event repeated is sent once per dedup window.
    `alert_labels` names the labels that identify it as an Alertmanager alert (None: all of
    them); the others travel in the alert's annotations.
    """

    name: str
    severity: Severity
    summary: str
    description: str = ""
    details: Mapping[str, Detail] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    dedup_key: str = ""
    alert_labels: tuple[str, ...] | None = None

    @property
    def alertname(self) -> str:
        """The Alertmanager alert name of this kind of event (`ALERTNAMES`)."""
        if self.name in ALERTNAMES:
            return ALERTNAMES[self.name]
        return "ML" + "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", self.name))

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
        alert_labels=RULE_LABELS,
    )


def candidate_challenger(
    model_name: str, version: str | int, *, metrics: Mapping | None = None
) -> Event:
    """A candidate passed its gates and became `@challenger` (AUTO_PROMOTE=false): a person has
    to promote it, or not (warning: Slack)."""
    return Event(
        name=CANDIDATE_CHALLENGER,
        severity="warning",
        summary="A retrained model passed its gates and waits for a person to promote it.",
        description=(
            f"{model_name} v{version} is @challenger (AUTO_PROMOTE=false); promote "
            f"it with `python -m training.register_model promote --version {version}`"
        ),
        details=flatten(metrics or {}),
        labels=_labels(model_name=model_name, version=version),
        dedup_key=_key(CANDIDATE_CHALLENGER, model_name, version),
    )


def task_failed(
    dag_id: str,
    task_id: str,
    *,
    model_name: str | None = None,
    run_id: str | None = None,
    error: str = "",
    try_number: int | None = None,
    log_url: str | None = None,
) -> Event:
    """A DAG task failed for good (warning: Slack). Not a page: the API keeps serving, and the
    rules rate what a failed batch task leads to as warnings too (a drift or quality report
    that goes stale, a failed training run). A training task's failure is `training_failed`."""
    return Event(
        name=TASK_FAILED,
        severity="warning",
        summary="Airflow task failed",
        # A traceback-sized message would bury the task's name in Slack and PagerDuty.
        description=f"{dag_id}.{task_id} failed" + (f": {error[:ERROR_LIMIT]}" if error else ""),
        details=_present(try_number=try_number, log_url=log_url),
        labels=_labels(dag_id=dag_id, task_id=task_id, run_id=run_id, model_name=model_name),
        dedup_key=_key(TASK_FAILED, dag_id, task_id, run_id),
    )


def training_failed(
    model_name: str,
    dag_id: str,
    task_id: str,
    *,
    run_id: str | None = None,
    error: str = "",
    try_number: int | None = None,
    log_url: str | None = None,
) -> Event:
    """A task of a training run failed for good, so the run failed (warning: Slack, as the rule
    `MLRetrainFailed` that tells the same failure; the champion keeps serving)."""
    return Event(
        name=TRAINING_FAILED,
        severity="warning",
        summary="The newest training run failed; the champion was not replaced.",
        description=f"Training {model_name}: {dag_id}.{task_id} failed"
        + (f": {error[:ERROR_LIMIT]}" if error else ""),
        details=_present(try_number=try_number, log_url=log_url),
        labels=_labels(model_name=model_name, dag_id=dag_id, task_id=task_id, run_id=run_id),
        dedup_key=_key(TRAINING_FAILED, dag_id, task_id, run_id),
        alert_labels=RULE_LABELS,
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


def _present(**values: Detail) -> dict[str, Detail]:
    return {name: value for name, value in values.items() if value is not None}


def _labels(**values: object) -> dict[str, str]:
    return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _key(*parts: object) -> str:
    return ":".join(str(part) for part in parts if part not in (None, ""))
