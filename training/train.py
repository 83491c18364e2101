"""Train a model, log it to MLflow, register a version and run the promotion gates.

    python -m training.train [--schema schemas/fraud.yaml] [--data PATH] [--model-type ...]

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import sklearn
import skops.io
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sqlalchemy.exc import SQLAlchemyError

from data.db import database_error_message
from data.features import FeaturePipeline
from data.ingest import DataError, load_frame
from data.profile import DEFAULT_THRESHOLD, build_reference_profile
from data.schema import FeatureSchema, SchemaError, load_schema
from data.settings import Settings, configure_cli_logging, exit_on_config_error, get_settings
from data.synthetic import generate_transactions, write_frame
from data.validate import ValidationError, validate_frame
from training.calibration import fit_calibrator
from training.evaluate import evaluate_scores, plot_calibration, plot_confusion_matrix
from training.gates import GateReport, decide, run_gates
from training.registry import (
    HOLDOUT_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    THRESHOLD_TAG,
    Registry,
    RegistryError,
)

MODEL_TYPES = ("hist_gradient_boosting", "random_forest")
SYNTHETIC_SCHEMA = "fraud"


@dataclass
class TrainingResult:
    version: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    gates: GateReport
    action: str
    seconds: float


def make_classifier(model_type: str, seed: int) -> Any:
    if model_type == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            learning_rate=0.1, max_iter=300, early_stopping=True, random_state=seed
        )
    if model_type == "random_forest":
        # n_jobs=1 on purpose: joblib's per-call start-up costs ~45 ms per single-row prediction.
        return RandomForestClassifier(
            n_estimators=200, min_samples_leaf=5, n_jobs=1, random_state=seed
        )
    raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")


def time_split(
    frame: pd.DataFrame, schema: FeatureSchema, holdout_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest rows train, newest rows are the hold-out (by the schema's timestamp column)."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"hold-out fraction must be between 0 and 1, got {holdout_fraction}")
    if schema.timestamp and schema.timestamp in frame.columns:
        frame = frame.sort_values(schema.timestamp, kind="stable")
    cut = round(len(frame) * (1 - holdout_fraction))
    train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    for name, part in (("training", train), ("hold-out", holdout)):
        if part[schema.target].nunique() < 2:
            raise DataError(
                f"the {name} split has only one class of {schema.target!r}; "
                f"use more data or another --holdout share"
            )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def default_data(schema: FeatureSchema, settings: Settings, rows: int, seed: int) -> Path:
    if schema.name != SYNTHETIC_SCHEMA:
        raise DataError(f"--data is required for schema {schema.name!r} (no generator for it)")
    path = settings.path(settings.DATA_DIR) / f"transactions-{rows}-{seed}.parquet"
    if not path.exists():
        write_frame(generate_transactions(rows, seed), path)
    return path


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
    settings: Settings | None = None,
) -> TrainingResult:
    """Train, log, register and gate one model version; see the module docstring."""
    started = time.perf_counter()
    if not 0 < threshold < 1:
        raise ValueError(f"the decision threshold must be between 0 and 1, got {threshold}")
    settings = settings or get_settings()
    schema = load_schema(settings.path(str(schema_path or settings.FEATURE_SCHEMA)))
    model_type = model_type or settings.MODEL_TYPE
    data_path = Path(data_path) if data_path else default_data(schema, settings, rows, seed)

    frame = load_frame(data_path, schema)
    validation = validate_frame(frame, schema)
    validation.raise_for_failures()
    train_frame, holdout = time_split(frame, schema, holdout_fraction)

    features = FeaturePipeline(schema).fit(train_frame)
    classifier = make_classifier(model_type, seed)
    classifier.fit(features.transform(train_frame), train_frame[schema.target].astype(int))
    model = Pipeline([("features", features.column_transformer), ("classifier", classifier)])

    holdout_x = holdout[schema.feature_names]
    scores = model.predict_proba(holdout_x)[:, 1]
    evaluation = evaluate_scores(holdout[schema.target], scores, threshold)
    # Performance estimation reads scores as probabilities: the map that makes them so is
    # fitted here, on the hold-out the model never saw, and travels with the version.
    calibrator = fit_calibrator(scores, holdout[schema.target].astype(int))
    profile = build_reference_profile(
        holdout_x,
        schema,
        predictions=(scores >= threshold).astype(int),
        scores=scores,
        sample_size=settings.REFERENCE_SAMPLE_SIZE,
        seed=seed,
        threshold=threshold,
        calibration=calibrator.to_dict(),
    )

    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"{model_type}-{schema.name}") as run:
        mlflow.log_params(
            {
                "model_type": model_type,
                "schema": schema.name,
                "data": str(data_path),
                "rows": len(frame),
                "train_rows": len(train_frame),
                "holdout_rows": len(holdout),
                "holdout_fraction": holdout_fraction,
                "seed": seed,
                "decision_threshold": threshold,
                **{f"clf.{k}": v for k, v in classifier.get_params().items() if _loggable(v)},
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.log_dict(validation.to_dict(), "validation_report.json")
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        mlflow.log_dict(profile.to_dict(), REFERENCE_PROFILE_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            plot_confusion_matrix(evaluation, tmp_path / "confusion_matrix.png")
            plot_calibration(evaluation, tmp_path / "calibration.png")
            holdout.to_parquet(tmp_path / HOLDOUT_ARTIFACT, index=False)
            for name in ("confusion_matrix.png", "calibration.png", HOLDOUT_ARTIFACT):
                mlflow.log_artifact(str(tmp_path / name))
            mlflow.log_artifact(schema.source)
        version = log_servable_model(model, holdout_x, settings)

    registry = Registry.from_settings(settings)
    client = registry.client
    for key, value in evaluation.metrics.items():
        client.set_model_version_tag(settings.MODEL_NAME, version, f"holdout.{key}", f"{value:.6f}")
    client.set_model_version_tag(settings.MODEL_NAME, version, "schema", schema.name)
    client.set_model_version_tag(settings.MODEL_NAME, version, THRESHOLD_TAG, repr(threshold))
    client.set_model_version_tag(
        settings.MODEL_NAME,
        version,
        "reference_profile",
        f"runs:/{run.info.run_id}/{REFERENCE_PROFILE_ARTIFACT}",
    )
    client.set_model_version_tag(
        settings.MODEL_NAME, version, "validation.passed", str(validation.passed).lower()
    )

    gates = run_gates(
        registry, version, holdout, schema, validation_passed=validation.passed, settings=settings
    )
    promote = settings.AUTO_PROMOTE if auto_promote is None else auto_promote
    action = decide(registry, gates, auto_promote=promote)
    return TrainingResult(
        version=version,
        run_id=run.info.run_id,
        model_uri=f"models:/{settings.MODEL_NAME}/{version}",
        metrics=evaluation.metrics,
        gates=gates,
        action=action,
        seconds=time.perf_counter() - started,
    )


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
        if "://" not in artifact_root:
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
    args = parser.parse_args(argv)
    configure_cli_logging()
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
