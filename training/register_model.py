"""Model registry: promotion gates, champion/challenger aliases, rollback and the audit trail.

The registry is MLflow's, with aliases only (never stages): the API serves
`models:/<MODEL_NAME>@champion`. A new version becomes champion only through three gates, each
recorded as tags on the version (`gate.<name>` = passed|failed, `gate.<name>.detail` = the numbers):

1. `performance_floor`: ROC AUC, PR AUC and F1 on the hold-out at or above absolute floors.
2. `no_regression`: on the *same* fresh hold-out, the candidate's ROC AUC and PR AUC are not
   worse than the current champion's by more than GATE_MAX_REGRESSION (relative).
3. `operational`: data validation passed, single-row scoring latency within budget, and
   calibration (Brier score) not worse than the champion's by more than the tolerance.

Passing all three moves `@champion` when AUTO_PROMOTE is true, otherwise sets `@challenger` for a
person to promote. Every promotion, rejection and rollback is also a row in `promotion_audit`.

    python -m training.register_model history
    python -m training.register_model promote [--version N] [--force] [--reason TEXT]
    python -m training.register_model rollback --to-version N [--reason TEXT]
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from data.db import database_error_message, get_engine, init_db, promotion_audit
from data.profile import DEFAULT_THRESHOLD, ReferenceProfile
from data.schema import FeatureSchema
from data.settings import Settings, exit_on_config_error, get_settings
from training.evaluate import evaluate_scores, measure_single_row_latency

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# Compared with the champion: threshold-free ranking metrics, stable between retrains, where F1
# at a fixed threshold moves by several percent with the seed alone. F1 still has a floor.
REGRESSION_METRICS = ("roc_auc", "pr_auc")
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
# The version tag holding its decision threshold (a score at or above it is class 1).
THRESHOLD_TAG = "decision_threshold"
HOLDOUT_ARTIFACT = "holdout.parquet"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passed": self.passed,
            "gates": {
                g.name: {"passed": g.passed, "reason": g.reason, **g.detail} for g in self.gates
            },
        }


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as this module uses it (MLflow returns the number as int or
    str depending on the call; here it is always a str)."""

    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_at: datetime

    @classmethod
    def of(cls, mv: ModelVersion) -> VersionInfo:
        return cls(
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            aliases=tuple(mv.aliases),
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
        )

    @property
    def threshold(self) -> float:
        """The decision threshold trained with the version (versions from before: 0.5)."""
        return float(self.tags.get(THRESHOLD_TAG, DEFAULT_THRESHOLD))


class Registry:
    """One registered model in MLflow plus the audit table in DATABASE_URL."""

    def __init__(self, client: MlflowClient, model_name: str, engine: Engine) -> None:
        self.client = client
        self.model_name = model_name
        self.engine = engine
        init_db(engine)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Registry:
        settings = settings or get_settings()
        uri = settings.mlflow_tracking_uri
        return cls(
            MlflowClient(tracking_uri=uri, registry_uri=uri),
            settings.MODEL_NAME,
            get_engine(settings.database_url),
        )

    def exists(self) -> bool:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            return False
        return True

    def require_exists(self) -> None:
        if not self.exists():
            raise RegistryError(
                f"no registered model named {self.model_name!r}; "
                f"train one with `python -m training.train`"
            )

    def version(self, version: str | int) -> VersionInfo:
        self.require_exists()
        try:
            return VersionInfo.of(self.client.get_model_version(self.model_name, str(version)))
        except MlflowException:
            raise RegistryError(
                f"model {self.model_name!r} has no version {version}; "
                f"see `python -m training.register_model history`"
            ) from None

    def alias(self, alias: str) -> VersionInfo | None:
        try:
            return VersionInfo.of(self.client.get_model_version_by_alias(self.model_name, alias))
        except MlflowException:
            return None

    def load_model(self, version: str | int) -> Any:
        """The fitted sklearn pipeline (features + classifier) of `version`."""
        uri = self.client.get_model_version_download_uri(self.model_name, str(version))
        return mlflow.sklearn.load_model(uri)

    def reference_profile(self, version: str | int) -> ReferenceProfile:
        """The reference profile stored with `version` at training time."""
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(mv.run_id, REFERENCE_PROFILE_ARTIFACT, tmp)
            return ReferenceProfile.load(path)

    def holdout(self, version: str | int) -> pd.DataFrame:
        """The hold-out rows `version` was evaluated on (typed as training saw them)."""
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(self.client.download_artifacts(mv.run_id, HOLDOUT_ARTIFACT, tmp))

    def audit(
        self,
        version: str,
        action: str,
        actor: str,
        reason: str,
        previous_champion: str | None = None,
        gates: dict[str, Any] | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(promotion_audit).values(
                    created_at=datetime.now(UTC),
                    model_name=self.model_name,
                    version=str(version),
                    action=action,
                    previous_champion=previous_champion,
                    actor=actor,
                    reason=reason,
                    gates=gates,
                )
            )

    def audit_rows(self, limit: int = 50) -> list[dict[str, Any]]:
        query = (
            select(promotion_audit)
            .where(promotion_audit.c.model_name == self.model_name)
            .order_by(promotion_audit.c.created_at.desc(), promotion_audit.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]


def run_gates(
    registry: Registry,
    version: str | int,
    holdout: pd.DataFrame,
    schema: FeatureSchema,
    *,
    validation_passed: bool,
    settings: Settings | None = None,
) -> GateReport:
    """Evaluate the three gates for `version` on `holdout` and tag the version with the results."""
    settings = settings or get_settings()
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

    latency = measure_single_row_latency(candidate, features.head(50))
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
    if latency["p50_ms"] > budget:
        problems.append(f"single-row latency p50 {latency['p50_ms']:.2f} ms > budget {budget} ms")
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
            "latency_p50_ms": latency["p50_ms"],
            "latency_p99_ms": latency["p99_ms"],
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
            report.version, "rejected", actor, reason, _champion_version(registry), gates
        )
        return "rejected"
    if auto_promote:
        _move_champion(registry, report.version, "promoted", "auto-promote", "passed all gates")
        return "promoted"
    registry.client.set_registered_model_alias(registry.model_name, CHALLENGER, report.version)
    registry.audit(
        report.version,
        "challenger",
        actor,
        "passed all gates; waiting for a person to promote (AUTO_PROMOTE=false)",
        _champion_version(registry),
        gates,
    )
    return "challenger"


def promote(
    registry: Registry,
    version: str | int | None = None,
    *,
    actor: str,
    reason: str = "manual promotion",
    force: bool = False,
) -> VersionInfo:
    """Move `@champion` to `version` (default: the current `@challenger`)."""
    if version is None:
        challenger = registry.alias(CHALLENGER)
        if challenger is None:
            registry.require_exists()
            raise RegistryError(
                f"model {registry.model_name!r} has no @challenger to promote; "
                f"pass --version N (see `history`)"
            )
        version = challenger.version
    mv = registry.version(version)
    champion = _champion_version(registry)
    if champion == mv.version:
        raise RegistryError(f"version {mv.version} is already @champion")
    gates_passed = mv.tags.get("gates.passed")
    if gates_passed != "true" and not force:
        state = "failed" if gates_passed == "false" else "were never evaluated"
        raise RegistryError(
            f"version {mv.version}'s gates {state}; use --force with --reason to promote it anyway"
        )
    if gates_passed != "true":
        reason = f"forced: {reason}"
    _move_champion(registry, mv.version, "promoted", actor, reason)
    return registry.version(mv.version)


def rollback(
    registry: Registry, to_version: str | int, *, actor: str, reason: str = "manual rollback"
) -> VersionInfo:
    """Move `@champion` back to an earlier version."""
    champion = registry.alias(CHAMPION)
    if champion is None:
        registry.require_exists()
        raise RegistryError(
            f"model {registry.model_name!r} has no @champion yet; nothing to roll back"
        )
    target = registry.version(to_version)
    if int(target.version) >= int(champion.version):
        raise RegistryError(
            f"rollback goes to an earlier version than the champion (v{champion.version}); "
            f"v{target.version} is not earlier: use `promote --version {target.version}`"
        )
    _move_champion(registry, target.version, "rollback", actor, reason)
    return registry.version(target.version)


def _move_champion(registry: Registry, version: str, action: str, actor: str, reason: str) -> None:
    previous = _champion_version(registry)
    registry.client.set_registered_model_alias(registry.model_name, CHAMPION, version)
    challenger = registry.alias(CHALLENGER)
    if challenger is not None and challenger.version == version:
        registry.client.delete_registered_model_alias(registry.model_name, CHALLENGER)
    gates = _gates_from_tags(registry.version(version))
    registry.audit(version, action, actor, reason, previous, gates)
    log.info("model %s: @champion %s -> v%s (%s)", registry.model_name, previous, version, action)


def _champion_version(registry: Registry) -> str | None:
    champion = registry.alias(CHAMPION)
    return champion.version if champion else None


def _gates_from_tags(mv: VersionInfo) -> dict[str, Any] | None:
    gates = {
        key.removeprefix("gate.").removesuffix(".detail"): json.loads(value)
        for key, value in mv.tags.items()
        if key.startswith("gate.") and key.endswith(".detail")
    }
    return gates or None


def history(registry: Registry, limit: int = 50) -> dict[str, Any]:
    """Versions with their aliases and gate results, and the audit trail (newest first)."""
    registry.require_exists()
    aliases = {CHAMPION: _champion_version(registry)}
    challenger = registry.alias(CHALLENGER)
    aliases[CHALLENGER] = challenger.version if challenger else None
    found = registry.client.search_model_versions(f"name='{registry.model_name}'")
    versions = sorted((VersionInfo.of(mv) for mv in found), key=lambda v: -int(v.version))
    return {
        "model_name": registry.model_name,
        "aliases": aliases,
        "versions": [
            {
                "version": mv.version,
                "created_at": mv.created_at.isoformat(),
                # search results do not carry aliases; take them from the lookups above
                "aliases": [name for name, v in aliases.items() if v == mv.version],
                "gates_passed": mv.tags.get("gates.passed"),
                "roc_auc": mv.tags.get("holdout.roc_auc"),
            }
            for mv in versions
        ],
        "audit": [
            {**row, "created_at": row["created_at"].isoformat()}
            for row in registry.audit_rows(limit)
        ],
    }


def _print_history(data: dict[str, Any]) -> None:
    aliases = data["aliases"]

    def shown(version: str | None) -> str:
        return f"v{version}" if version else "none"

    print(
        f"model {data['model_name']}: @champion = {shown(aliases[CHAMPION])}, "
        f"@challenger = {shown(aliases[CHALLENGER])}\n"
    )
    print("version  created (UTC)        gates   roc_auc  aliases")
    for v in data["versions"]:
        print(
            f"{v['version']:>7}  {v['created_at'][:19]:<19}  {v['gates_passed'] or '-':<6}  "
            f"{v['roc_auc'] or '-':<7.7}  {', '.join(v['aliases'])}"
        )
    print("\naudit (newest first)")
    if not data["audit"]:
        print("  (no promotions, rejections or rollbacks yet)")
    for row in data["audit"]:
        print(
            f"  {row['created_at'][:19]}  v{row['version']:<4} {row['action']:<10} "
            f"by {row['actor']}: {row['reason']}"
        )


def configure_cli_logging() -> None:
    """Warnings and errors only: MLflow's INFO lines (store migrations, "registered model")
    would bury the one line a command-line user needs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.register_model",
        description="Promote, roll back and inspect registered model versions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_promote = sub.add_parser("promote", help="move @champion to a version (default @challenger)")
    p_promote.add_argument("--version", help="version to promote (default: the @challenger)")
    p_promote.add_argument("--force", action="store_true", help="promote despite failed gates")
    p_promote.add_argument("--reason", default="manual promotion")
    p_promote.add_argument("--actor", default=None, help="who is doing this (default: $USER)")
    p_rollback = sub.add_parser("rollback", help="move @champion back to an earlier version")
    p_rollback.add_argument("--to-version", required=True)
    p_rollback.add_argument("--reason", default="manual rollback")
    p_rollback.add_argument("--actor", default=None, help="who is doing this (default: $USER)")
    p_history = sub.add_parser("history", help="versions, aliases, gates and the audit trail")
    p_history.add_argument("--json", action="store_true", help="print JSON")
    p_history.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    configure_cli_logging()
    try:
        registry = Registry.from_settings()
        actor = getattr(args, "actor", None) or getpass.getuser()
        if args.command == "promote":
            if args.force and args.reason == "manual promotion":
                raise RegistryError("--force needs a --reason saying why the gates are overridden")
            mv = promote(registry, args.version, actor=actor, reason=args.reason, force=args.force)
            print(f"{registry.model_name} v{mv.version} is now @champion")
        elif args.command == "rollback":
            mv = rollback(registry, args.to_version, actor=actor, reason=args.reason)
            print(f"{registry.model_name} rolled back: v{mv.version} is now @champion")
        else:
            data = history(registry, args.limit)
            if args.json:
                print(json.dumps(data, indent=2, default=str))
            else:
                _print_history(data)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the audit table's database (DATABASE_URL) is unavailable
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
