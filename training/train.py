"""Train a model, log it to MLflow, register a version and run the promotion gates.

    python -m training.train [--schema schemas/fraud.yaml] [--data PATH] [--model-type ...]
    python -m training.train --recent-days 7     # a retrain on the last week's labelled log

The steps are `training.pipeline`'s, the functions the training DAG runs as its tasks: ingest
(CSV / Parquet, typed by the schema) → validate (hard failures stop here with a
message naming the column and rule) → time-based split (the newest `--holdout` share is the
hold-out, so evaluation looks like the future) → fit the feature pipeline and the classifier →
evaluate on the hold-out → log params, metrics, a confusion-matrix and a calibration plot, the
validation report, the hold-out and the reference profile to an MLflow run → register the fitted
pipeline + model as one servable sklearn model → run the gates (`training.gates`).

Without `--data` on the default schema it generates the synthetic transactions first.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from data.db import database_error_message
from data.ingest import DataError
from data.logs import configure_logging
from data.profile import DEFAULT_THRESHOLD
from data.schema import SchemaError
from data.settings import Settings, exit_on_config_error, get_settings
from data.validate import ValidationError
from training.gates import GateReport, decide
from training.pipeline import (
    MODEL_TYPES,
    TrainingPlan,
    evaluate,
    fit,
    gate,
    ingest,
    make_classifier,
    register,
    temporary_folder,
    validate,
)
from training.registry import Registry, RegistryError


@dataclass
class TrainingResult:
    version: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    gates: GateReport
    action: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


def train(
    schema_path: str | Path | None = None,
    data_path: str | Path | None = None,
    *,
    model_type: str | None = None,
    holdout_fraction: float = 0.2,
    rows: int = 50_000,
    seed: int = 42,
    threshold: float = DEFAULT_THRESHOLD,
    auto_promote: bool | None = None,
    recent_window: tuple[datetime, datetime] | None = None,
    reason: str | None = None,
    settings: Settings | None = None,
) -> TrainingResult:
    """Train, log, register and gate one model version; see the module docstring.

    With `recent_window`, a retrain: the labelled predictions logged in that window plus a
    sample of the original data, gated on the newest recent rows (`training.pipeline`).
    """
    started = time.perf_counter()
    if not 0 < threshold < 1:
        raise ValueError(f"the decision threshold must be between 0 and 1, got {threshold}")
    settings = settings or get_settings()
    model_type = model_type or settings.MODEL_TYPE
    make_classifier(model_type, seed)  # an unknown model type stops here, before any work
    with temporary_folder() as tmp:
        plan = TrainingPlan(
            folder=str(Path(tmp) / "run"),
            schema=str(settings.path(str(schema_path or settings.FEATURE_SCHEMA))),
            model_type=model_type,
            data_path=str(data_path) if data_path else None,
            data_start=recent_window[0].isoformat() if recent_window else None,
            data_end=recent_window[1].isoformat() if recent_window else None,
            holdout_fraction=holdout_fraction,
            rows=rows,
            seed=seed,
            threshold=threshold,
            reason=reason or "manual",
        )
        plan.feature_schema(settings)  # a broken schema file stops here, with its line
        data = ingest(plan, settings)
        validate(plan, settings)
        fit(plan, settings)
        metrics = evaluate(plan, settings)
        version = register(plan, settings)
        gates = GateReport.from_dict(gate(plan, version, settings))
        run_id = plan.run_folder.read_json("register")["run_id"]
    promote = settings.AUTO_PROMOTE if auto_promote is None else auto_promote
    action = decide(Registry.from_settings(settings), gates, auto_promote=promote)
    return TrainingResult(
        version=version,
        run_id=run_id,
        model_uri=f"models:/{settings.MODEL_NAME}/{version}",
        metrics=metrics,
        gates=gates,
        action=action,
        seconds=time.perf_counter() - started,
        data=data,
    )


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train, register and gate a model version.",
    )
    parser.add_argument("--schema", help="feature-schema YAML (default: FEATURE_SCHEMA)")
    parser.add_argument("--data", help="CSV or Parquet training data (default: synthetic)")
    parser.add_argument("--model-type", choices=MODEL_TYPES, help="default: MODEL_TYPE")
    parser.add_argument("--holdout", type=float, default=0.2, help="newest share held out")
    parser.add_argument("--rows", type=int, default=50_000, help="synthetic rows without --data")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="decision threshold stored with the version: a score at or above it is class 1",
    )
    parser.add_argument(
        "--auto-promote",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="promote when all gates pass (default: AUTO_PROMOTE)",
    )
    parser.add_argument(
        "--recent-days",
        type=float,
        help="retrain: also learn from the labelled predictions logged in the last N days, "
        "gated on the newest of them",
    )
    args = parser.parse_args(argv)
    if args.recent_days is not None and args.recent_days <= 0:
        parser.error(f"--recent-days must be positive (got {args.recent_days:g})")
    configure_logging(get_settings(), process="train", command=True)
    recent = None
    if args.recent_days is not None:
        now = datetime.now(UTC)
        recent = (now - timedelta(days=args.recent_days), now)
    try:
        result = train(
            args.schema,
            args.data,
            model_type=args.model_type,
            holdout_fraction=args.holdout,
            rows=args.rows,
            seed=args.seed,
            threshold=args.threshold,
            auto_promote=args.auto_promote,
            recent_window=recent,
            reason="manual retrain (--recent-days)" if recent else None,
        )
    except (SchemaError, DataError, ValidationError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the audit table's database (DATABASE_URL) is unavailable
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    _print_result(result)
    return 0


def _print_result(result: TrainingResult) -> None:
    settings = get_settings()
    m = result.metrics
    print(
        f"trained {result.model_uri} in {result.seconds:.1f} s\n"
        f"  hold-out: ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
        f"recall {m['recall']:.4f}  F1 {m['f1']:.4f}  Brier {m['brier']:.4f}"
    )
    data = result.data
    if "recent_window" in data:
        print(
            f"  data: {data.get('base_sample_rows', data['base_rows']):,} rows of "
            f"{data['base_data']} + {data['recent_rows']:,} labelled predictions"
            + (f" ({data['note']})" if data.get("note") else "")
        )
    for result_of in result.gates.gates:
        verdict = "passed" if result_of.passed else "FAILED"
        print(f"  gate {result_of.name:<17} {verdict}: {result_of.reason}")
    next_step = {
        "promoted": "it is now @champion",
        "challenger": (
            "it is @challenger; promote it with "
            f"`python -m training.register_model promote --version {result.version}`"
        ),
        "rejected": "it was rejected; the champion is unchanged",
    }[result.action]
    print(f"  version {result.version}: {next_step}")
    print(
        f"  MLflow store: {settings.mlflow_tracking_uri}  run {result.run_id}\n"
        f"  browse it with: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}"
    )


if __name__ == "__main__":
    sys.exit(main())
