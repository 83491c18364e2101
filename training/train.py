"""Train a model, log it to MLflow, register a version and run the promotion gates.

    python -m training.train [--schema schemas/fraud.yaml] [--data PATH] [--model-type ...]
    python -m training.train --recent-days 7     # a retrain on the last week's labelled log

Steps: ingest (CSV / Parquet, typed by the schema) → validate (hard failures stop here with a
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
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
import sklearn
import skops.io
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline
from sqlalchemy.exc import SQLAlchemyError

from data.db import database_error_message
from data.ingest import DataError
from data.profile import DEFAULT_THRESHOLD, ReferenceProfile
from data.schema import FeatureSchema, SchemaError, load_schema
from data.settings import Settings, configure_cli_logging, exit_on_config_error, get_settings
from data.validate import ValidationError, ValidationReport
from training.evaluate import evaluation_from_dict, plot_calibration, plot_confusion_matrix
from training.gates import GateReport, decide, run_gates
from training.pipeline import (
    MODEL_TYPES,
    EvaluationResult,
    RunFolder,
    evaluate,
    fit,
    ingest,
    load_fitted,
    make_classifier,
    read_holdout,
    temporary_folder,
    time_split,
    validate,
)
from training.registry import (
    HOLDOUT_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    THRESHOLD_TAG,
    Registry,
    RegistryError,
)

__all__ = ["MODEL_TYPES", "TrainingResult", "configure_mlflow", "register", "time_split", "train"]


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
    schema = load_schema(settings.path(str(schema_path or settings.FEATURE_SCHEMA)))
    model_type = model_type or settings.MODEL_TYPE
    make_classifier(model_type, seed)  # an unknown model type stops here, before any work
    with temporary_folder() as tmp:
        folder = RunFolder(Path(tmp))
        data = ingest(
            folder,
            schema,
            settings,
            data_path=data_path,
            recent_window=recent_window,
            holdout_fraction=holdout_fraction,
            rows=rows,
            seed=seed,
        )
        validation = validate(folder, schema)
        model = fit(folder, schema, model_type, seed)
        evaluated = evaluate(folder, schema, settings, threshold=threshold, seed=seed, model=model)
        run_id, version = register(
            folder,
            schema,
            settings,
            model=model,
            evaluated=evaluated,
            validation=validation,
            params={
                "model_type": model_type,
                "seed": seed,
                "holdout_fraction": holdout_fraction,
                "decision_threshold": threshold,
                "reason": reason or "manual",
            },
        )
        registry = Registry.from_settings(settings)
        gates = run_gates(
            registry,
            version,
            read_holdout(folder),
            schema,
            validation_passed=validation.passed,
            settings=settings,
        )
    promote = settings.AUTO_PROMOTE if auto_promote is None else auto_promote
    action = decide(registry, gates, auto_promote=promote)
    return TrainingResult(
        version=version,
        run_id=run_id,
        model_uri=f"models:/{settings.MODEL_NAME}/{version}",
        metrics=evaluated.evaluation.metrics,
        gates=gates,
        action=action,
        seconds=time.perf_counter() - started,
        data=data,
    )


def register(
    folder: RunFolder,
    schema: FeatureSchema,
    settings: Settings,
    *,
    model: Pipeline | None = None,
    evaluated: EvaluationResult | None = None,
    validation: ValidationReport | dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Step 5: log the run to MLflow (params, metrics, plots, hold-out, reference profile) and
    register the model as a new version with its tags; returns (run id, version)."""
    model = model if model is not None else load_fitted(folder)
    if evaluated is None:
        evaluated = EvaluationResult(
            evaluation_from_dict(folder.read_json("evaluation")),
            ReferenceProfile.load(folder.path / REFERENCE_PROFILE_ARTIFACT),
        )
    if validation is None:
        validation = folder.read_json("validation")
    validation_dict = validation if isinstance(validation, dict) else validation.to_dict()
    validation_passed = bool(validation_dict["passed"])
    evaluation, profile = evaluated.evaluation, evaluated.profile
    data = folder.read_json("ingest")
    params = params or {}
    model_type = params.get("model_type") or folder.read_json("fit")["model_type"]
    holdout = read_holdout(folder)
    holdout_x = holdout[schema.feature_names]
    classifier = model.named_steps["classifier"]

    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"{model_type}-{schema.name}") as run:
        mlflow.log_params(
            {
                **params,
                "model_type": model_type,
                "schema": schema.name,
                "data": data["base_data"],
                "rows": data["train_rows"] + data["holdout_rows"],
                "train_rows": data["train_rows"],
                "holdout_rows": data["holdout_rows"],
                "recent_rows": data.get("recent_rows", 0),
                "decision_threshold": evaluation.threshold,
                **{f"clf.{k}": v for k, v in classifier.get_params().items() if _loggable(v)},
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.log_dict(validation_dict, "validation_report.json")
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        mlflow.log_dict(data, "training_data.json")
        mlflow.log_dict(profile.to_dict(), REFERENCE_PROFILE_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            classes = schema.class_names
            plot_confusion_matrix(evaluation, tmp_path / "confusion_matrix.png", classes)
            plot_calibration(evaluation, tmp_path / "calibration.png", classes[1])
            holdout.to_parquet(tmp_path / HOLDOUT_ARTIFACT, index=False)
            for name in ("confusion_matrix.png", "calibration.png", HOLDOUT_ARTIFACT):
                mlflow.log_artifact(str(tmp_path / name))
            mlflow.log_artifact(schema.source)
        version = log_servable_model(model, holdout_x, settings)

    client = Registry.from_settings(settings).client
    tags = {f"holdout.{key}": f"{value:.6f}" for key, value in evaluation.metrics.items()}
    tags |= {
        "schema": schema.name,
        THRESHOLD_TAG: repr(evaluation.threshold),
        "reference_profile": f"runs:/{run.info.run_id}/{REFERENCE_PROFILE_ARTIFACT}",
        "validation.passed": str(validation_passed).lower(),
        "training.reason": str(params.get("reason", "manual"))[:5000],
        "training.recent_rows": str(data.get("recent_rows", 0)),
    }
    for key, value in tags.items():
        client.set_model_version_tag(settings.MODEL_NAME, version, key, value)
    return run.info.run_id, version


def log_servable_model(model: Pipeline, sample: pd.DataFrame, settings: Settings) -> str:
    """Log the fitted pipeline as one sklearn model in the active run; register a new version.

    Saved in skops format (no pickle: loading cannot run arbitrary code), with a signature and
    an input example taken from `sample`, the raw typed feature columns.
    """
    head = sample.head(100)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=settings.MODEL_NAME,
        signature=infer_signature(head, model.predict_proba(head)[:, 1]),
        input_example=sample.head(3),
        # Pinning avoids MLflow's slow requirement inference, which imports everything.
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"],
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
    )
    return str(info.registered_model_version)


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow at the configured store; create the experiment with its artifact root."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(settings.MLFLOW_EXPERIMENT) is None:
        artifact_root = settings.MLFLOW_ARTIFACT_ROOT
        if not urlparse(artifact_root).scheme:  # a path; `mlflow-artifacts:/x`, `s3://b` are URIs
            artifact_root = settings.path(artifact_root).resolve().as_uri()
        mlflow.create_experiment(settings.MLFLOW_EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(settings.MLFLOW_EXPERIMENT)


def _loggable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


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
    configure_cli_logging()
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
    for gate in result.gates.gates:
        print(f"  gate {gate.name:<17} {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
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
