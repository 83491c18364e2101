"""The three promotion gates a new model version must pass, and what follows from them.

1. `performance_floor`: ROC AUC, PR AUC and F1 on the hold-out at or above absolute floors.
2. `no_regression`: on the *same* fresh hold-out, the candidate's ROC AUC and PR AUC are not
   worse than the current champion's by more than GATE_MAX_REGRESSION (relative).
3. `operational`: data validation passed, single-row scoring latency within budget, and
   calibration (Brier score) not worse than the champion's by more than the tolerance.

Each result is recorded as tags on the version (`gate.<name>` = passed|failed,
`gate.<name>.detail` = the numbers). `decide` then moves `@champion` when AUTO_PROMOTE is true,
sets `@challenger` for a person to promote otherwise, or rejects the version; every outcome is
a row in `promotion_audit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from data.schema import FeatureSchema
from data.settings import Settings
from training.evaluate import evaluate_scores
from training.registry import CHALLENGER, CHAMPION, Registry, move_champion
from training.scoring import VERIFY_ROWS, make_scorer, request_records, time_one_row

# Compared with the champion: threshold-free ranking metrics, stable between retrains, where F1
# at a fixed threshold moves by several percent with the seed alone. F1 still has a floor.
REGRESSION_METRICS = ("roc_auc", "pr_auc")


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: dict[str, Any]
    reason: str


@dataclass
class GateReport:
    version: str
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed_names(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateReport:
        """The inverse of `to_dict` (the training DAG's promote task reads the gates task's)."""
        gates = []
        for name, values in raw["gates"].items():
            detail = {k: v for k, v in values.items() if k not in ("passed", "reason")}
            gates.append(GateResult(name, bool(values["passed"]), detail, values["reason"]))
        return cls(version=str(raw["version"]), gates=gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passed": self.passed,
            "gates": {
                g.name: {"passed": g.passed, "reason": g.reason, **g.detail} for g in self.gates
            },
        }


def run_gates(
    registry: Registry,
    version: str | int,
    holdout: pd.DataFrame,
    schema: FeatureSchema,
    *,
    validation_passed: bool,
    settings: Settings,
) -> GateReport:
    """Evaluate the three gates for `version` on `holdout` and tag the version with the results."""
    version = str(version)
    candidate = registry.load_model(version)
    features = holdout[schema.feature_names]
    labels = holdout[schema.target].to_numpy()
    threshold = registry.version(version).threshold
    candidate_eval = evaluate_scores(labels, candidate.predict_proba(features)[:, 1], threshold)

    champion_version = registry.alias(CHAMPION)
    champion_eval = None
    champion_error = None
    if champion_version is not None and champion_version.version != version:
        try:
            champion = registry.load_model(champion_version.version)
            champion_eval = evaluate_scores(
                labels, champion.predict_proba(features)[:, 1], champion_version.threshold
            )
        except Exception as exc:  # a broken champion must not hide behind a passing gate
            champion_error = f"champion v{champion_version.version} could not be scored: {exc}"

    # Timed as the API will serve it: the scorer it loads (compiled, or the pipeline when the
    # model cannot be compiled), one request dict at a time, on one thread.
    scorer = make_scorer(candidate, schema, holdout.head(VERIFY_ROWS))
    latency = time_one_row(scorer, request_records(holdout.head(200), schema))
    report = GateReport(
        version=version,
        gates=[
            _floor_gate(candidate_eval.metrics, settings),
            _regression_gate(
                candidate_eval.metrics,
                champion_eval.metrics if champion_eval else None,
                champion_version.version if champion_version else None,
                champion_error,
                settings,
            ),
            _operational_gate(
                candidate_eval.metrics,
                champion_eval.metrics if champion_eval else None,
                latency,
                validation_passed,
                settings,
            ),
        ],
    )
    _tag_gates(registry, version, report)
    return report


def _floor_gate(metrics: dict[str, float], settings: Settings) -> GateResult:
    floors = {
        "roc_auc": settings.GATE_MIN_ROC_AUC,
        "pr_auc": settings.GATE_MIN_PR_AUC,
        "f1": settings.GATE_MIN_F1,
    }
    below = [f"{m} {metrics[m]:.4f} < {floor}" for m, floor in floors.items() if metrics[m] < floor]
    return GateResult(
        name="performance_floor",
        passed=not below,
        detail={"metrics": {m: metrics[m] for m in floors}, "floors": floors},
        reason="; ".join(below) if below else "all metrics at or above their floors",
    )


def _regression_gate(
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None,
    champion_error: str | None,
    settings: Settings,
) -> GateResult:
    tolerance = settings.GATE_MAX_REGRESSION
    if champion_error:
        return GateResult("no_regression", False, {"champion_version": champion_version},
                          champion_error)  # fmt: skip
    if champion is None:
        return GateResult("no_regression", True, {"champion_version": None},
                          "no champion yet: nothing to regress against")  # fmt: skip
    worse = [
        f"{m} {metrics[m]:.4f} vs champion {champion[m]:.4f}"
        for m in REGRESSION_METRICS
        if metrics[m] < champion[m] * (1 - tolerance)
    ]
    return GateResult(
        name="no_regression",
        passed=not worse,
        detail={
            "champion_version": champion_version,
            "tolerance_relative": tolerance,
            "candidate": {m: metrics[m] for m in REGRESSION_METRICS},
            "champion": {m: champion[m] for m in REGRESSION_METRICS},
        },
        reason=(
            f"worse than the champion by more than {tolerance:.0%}: " + "; ".join(worse)
            if worse
            else f"within {tolerance:.0%} of champion v{champion_version} on the same hold-out"
        ),
    )


def _operational_gate(
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    latency: dict[str, float],
    validation_passed: bool,
    settings: Settings,
) -> GateResult:
    problems = []
    if not validation_passed:
        problems.append("training data failed validation")
    budget = settings.GATE_LATENCY_BUDGET_MS
    p50_ms = latency["p50_us"] / 1000
    if p50_ms > budget:
        problems.append(
            f"single-row latency p50 {p50_ms:.2f} ms > budget {budget} ms "
            f"({latency['scorer']} scorer)"
        )
    brier_limit = None
    if champion is not None:
        brier_limit = champion["brier"] * (1 + settings.GATE_MAX_CALIBRATION_WORSENING)
        if metrics["brier"] > brier_limit:
            problems.append(
                f"calibration worse: Brier {metrics['brier']:.4f} > {brier_limit:.4f} "
                f"(champion {champion['brier']:.4f})"
            )
    return GateResult(
        name="operational",
        passed=not problems,
        detail={
            "validation_passed": validation_passed,
            "scorer": latency["scorer"],
            "latency_p50_us": latency["p50_us"],
            "latency_p99_us": latency["p99_us"],
            "latency_budget_ms": budget,
            "brier": metrics["brier"],
            "champion_brier": champion["brier"] if champion else None,
            "brier_limit": brier_limit,
        },
        reason="; ".join(problems) if problems else "validation, latency and calibration in order",
    )


def _tag_gates(registry: Registry, version: str, report: GateReport) -> None:
    set_tag = registry.client.set_model_version_tag
    for gate in report.gates:
        set_tag(
            registry.model_name, version, f"gate.{gate.name}", "passed" if gate.passed else "failed"
        )
        detail = {"reason": gate.reason, **gate.detail}
        set_tag(registry.model_name, version, f"gate.{gate.name}.detail", json.dumps(detail))
    set_tag(registry.model_name, version, "gates.passed", str(report.passed).lower())
    set_tag(registry.model_name, version, "gates.evaluated_at", datetime.now(UTC).isoformat())


def decide(
    registry: Registry, report: GateReport, *, auto_promote: bool, actor: str = "training"
) -> str:
    """Act on a gate report: promote, make challenger, or reject. Returns the action taken."""
    gates = report.to_dict()
    if not report.passed:
        reason = "failed gate(s): " + ", ".join(
            f"{g.name} ({g.reason})" for g in report.gates if not g.passed
        )
        registry.audit(
            report.version, "rejected", actor, reason, registry.champion_version(), gates
        )
        return "rejected"
    if auto_promote:
        move_champion(registry, report.version, "promoted", "auto-promote", "passed all gates")
        return "promoted"
    registry.set_alias(CHALLENGER, report.version)
    registry.audit(
        report.version,
        "challenger",
        actor,
        "passed all gates; waiting for a person to promote (AUTO_PROMOTE=false)",
        registry.champion_version(),
        gates,
    )
    return "challenger"
