"""Which alerts of `prometheus/alerts.yml` a demo window would fire, read from that file.

`make demo` runs without Prometheus, yet it must show the alerts the stack would send, with the
numbers people tune in production, not a copy of them. So this module reads the rules file: the
thresholds from its `ml-thresholds` group (each `ml:threshold:<name>` is a constant
`vector(N)`), and each alert's severity, summary and runbook from its rule. What it does not
have is a PromQL engine: the condition of each alert it knows is written here in Python, next
to the expression it stands for, and checked against the rule (the rule must compare with the
same threshold series), so a renamed threshold or alert stops the demo instead of silently
evaluating something else. Alerts about the running system (API down, stale reports, a dropped
log) have no meaning for a replay and are not evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data.settings import PROJECT_ROOT

RULES_FILE = PROJECT_ROOT / "prometheus" / "alerts.yml"
_VECTOR = re.compile(r"^\s*vector\(\s*([-+0-9.eE]+)\s*\)\s*$")


class AlertRulesError(ValueError):
    """The rules file is missing an alert or threshold the demo evaluates."""


@dataclass(frozen=True)
class WindowFigures:
    """What the exporter and the API would show for one window (None: not measured)."""

    critical_features: int = 0
    warning_features: int = 0
    prediction_drift: bool = False
    quality_hard_failures: int = 0
    max_missing_ratio: float | None = None
    realized_accuracy: float | None = None
    label_coverage: float | None = None
    estimated_accuracy: float | None = None
    # The most recent window whose labels are LABEL_MATURE_COVERAGE in (late labels).
    mature_accuracy: float | None = None
    latency_p99_seconds: float | None = None
    mean_confidence: float | None = None

    @property
    def drifted_features(self) -> int:
        """Features at warning or worse: the warning of MLFeatureDrift holds when it escalates."""
        return self.warning_features + self.critical_features


@dataclass(frozen=True)
class FiredAlert:
    name: str
    severity: str
    summary: str
    value: float | None
    threshold: float | None
    runbook_url: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "runbook_url": self.runbook_url,
        }


# (alert, severity) -> (threshold name or None, how the window's figures meet the condition).
# Each condition restates the rule's expression for one window's figures.
_CONDITIONS: dict[tuple[str, str], tuple[str | None, str]] = {
    # ml_drift_features{severity="critical"} > 0
    ("MLFeatureDrift", "critical"): (None, "critical_features"),
    # sum without (severity) (ml_drift_features{severity=~"warning|critical"}) > 0
    ("MLFeatureDrift", "warning"): (None, "drifted_features"),
    # ml_prediction_drift_detected == 1
    ("MLPredictionDrift", "warning"): (None, "prediction_drift"),
    # ml_quality_hard_failures > 0
    ("MLDataQualityHardFailure", "critical"): (None, "quality_hard_failures"),
    # ml_quality_missing_ratio > ml:threshold:feature_missing_ratio
    ("MLFeatureMissingRateHigh", "warning"): ("feature_missing_ratio", "max_missing_ratio"),
    # ml_realized_performance{metric="accuracy"} < threshold and coverage >= label_coverage_min
    ("MLRealizedAccuracyLow", "warning"): ("realized_accuracy_warning", "realized_accuracy"),
    ("MLRealizedAccuracyLow", "critical"): ("realized_accuracy_critical", "realized_accuracy"),
    # ml:mature_realized_performance:last_known{metric="accuracy"} < threshold
    ("MLMatureAccuracyLow", "warning"): ("realized_accuracy_warning", "mature_accuracy"),
    ("MLMatureAccuracyLow", "critical"): ("realized_accuracy_critical", "mature_accuracy"),
    # ml_estimated_performance{metric="accuracy"} < threshold
    ("MLEstimatedAccuracyLow", "warning"): ("estimated_accuracy_warning", "estimated_accuracy"),
    ("MLEstimatedAccuracyLow", "critical"): ("estimated_accuracy_critical", "estimated_accuracy"),
    # ml:http_request_duration:p99_rate5m > ml:threshold:latency_p99_seconds
    ("MLApiLatencyHigh", "warning"): ("latency_p99_seconds", "latency_p99_seconds"),
    # ml:prediction_confidence:mean_rate10m < ml:threshold:mean_confidence_min
    ("MLPredictionConfidenceLow", "warning"): ("mean_confidence_min", "mean_confidence"),
}
_BELOW = {"realized_accuracy", "mature_accuracy", "estimated_accuracy", "mean_confidence"}


class AlertRules:
    """The thresholds and the evaluated alerts of one rules file."""

    def __init__(self, thresholds: dict[str, float], rules: dict[tuple[str, str], dict]):
        self.thresholds = thresholds
        self.rules = rules

    @classmethod
    def load(cls, path: str | Path = RULES_FILE) -> AlertRules:
        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise AlertRulesError(f"cannot read the alert rules {path}: {exc}") from None
        thresholds: dict[str, float] = {}
        rules: dict[tuple[str, str], dict] = {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                record = rule.get("record", "")
                if record.startswith("ml:threshold:"):
                    match = _VECTOR.match(str(rule.get("expr", "")))
                    if match is None:
                        raise AlertRulesError(
                            f"{path}: {record} is not a constant vector(N): {rule.get('expr')!r}"
                        )
                    thresholds[record.removeprefix("ml:threshold:")] = float(match.group(1))
                elif "alert" in rule:
                    severity = (rule.get("labels") or {}).get("severity", "")
                    rules[(rule["alert"], severity)] = rule
        for (name, severity), (threshold, _) in _CONDITIONS.items():
            rule = rules.get((name, severity))
            if rule is None:
                raise AlertRulesError(
                    f"{path} has no {severity} alert {name}, which the demo shows"
                )
            if threshold is not None:
                if threshold not in thresholds:
                    raise AlertRulesError(f"{path} has no threshold ml:threshold:{threshold}")
                if f"ml:threshold:{threshold}" not in rule["expr"]:
                    raise AlertRulesError(
                        f"{path}: {name} ({severity}) no longer compares with "
                        f"ml:threshold:{threshold}; update demo/alerts.py"
                    )
        if "label_coverage_min" not in thresholds:
            raise AlertRulesError(f"{path} has no threshold ml:threshold:label_coverage_min")
        return cls(thresholds, rules)

    def evaluate(self, figures: WindowFigures) -> list[FiredAlert]:
        """The alerts these figures fire, critical first; a warning is left out while the
        critical of the same alert fires (Alertmanager's inhibition does the same)."""
        fired: list[FiredAlert] = []
        for (name, severity), (threshold_name, figure) in _CONDITIONS.items():
            value = getattr(figures, figure)
            threshold = self.thresholds[threshold_name] if threshold_name else None
            if value is None or value is False:
                continue
            if threshold is None:
                hit = float(value) > 0
            elif figure in _BELOW:
                hit = value < threshold
            else:
                hit = value > threshold
            if figure == "realized_accuracy":
                coverage = figures.label_coverage
                hit = (
                    hit
                    and coverage is not None
                    and coverage >= self.thresholds["label_coverage_min"]
                )
            if hit:
                annotations = self.rules[(name, severity)].get("annotations") or {}
                fired.append(
                    FiredAlert(
                        name,
                        severity,
                        str(annotations.get("summary", "")),
                        None if isinstance(value, bool) else float(value),
                        threshold,
                        str(annotations.get("runbook_url", "")),
                    )
                )
        critical = {alert.name for alert in fired if alert.severity == "critical"}
        fired = [a for a in fired if a.severity == "critical" or a.name not in critical]
        # Alertmanager's inhibition too: the latest window's accuracy alert holds back the mature
        # window's at the same or a lower severity.
        latest = {a.severity for a in fired if a.name == "MLRealizedAccuracyLow"}
        muted = {"critical", "warning"} if "critical" in latest else latest
        fired = [a for a in fired if not (a.name == "MLMatureAccuracyLow" and a.severity in muted)]
        return sorted(fired, key=lambda a: (a.severity != "critical", a.name))
