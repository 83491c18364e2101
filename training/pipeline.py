"""The training pipeline in steps: ingest → validate → fit → evaluate → register → gate.

Each step is one function of the same shape, `step(run, settings) -> JSON-ready result`, where
`run` is the run's `TrainingPlan` (or the dict it travels as through Airflow's XCom). The
training DAG calls each step as its own task, so a failure names its step and a retry repeats
only that step; `python -m training.train` calls them one after the other. The steps hand their
results on through the plan's run folder (`RunFolder`): the data as Parquet, the fitted model
in skops format (no pickle), reports as JSON, so nothing large travels through XCom.

Training data is either a file (the first model: CSV or Parquet typed by the feature schema)
or, for a retrain, the labelled predictions logged in a recent window plus a sample of the
original training data (`TRAINING_DATA`, `RETRAIN_BASE_SAMPLE_RATIO` rows per recent row): the
recent relationship dominates what is learnt. The hold-out is always the newest share of the
data, and for a retrain the newest share of the *recent* rows, so the gates compare candidate
and champion on the world as it is now: a champion the world has left behind loses there.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
import sklearn
import skops.io
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from data.db import as_utc
from data.features import FeaturePipeline
from data.ingest import DataError, load_frame
from data.prediction_log import read_predictions
from data.profile import DEFAULT_THRESHOLD, ReferenceProfile, build_reference_profile
from data.schema import FeatureSchema, load_schema
from data.settings import Settings
from data.synthetic import generate_transactions, write_frame
from data.validate import validate_frame
from training.calibration import fit_calibrator
from training.evaluate import (
    evaluate_scores,
    evaluation_from_dict,
    plot_calibration,
    plot_confusion_matrix,
)
from training.gates import run_gates
from training.registry import HOLDOUT_ARTIFACT, REFERENCE_PROFILE_ARTIFACT, THRESHOLD_TAG, Registry

log = logging.getLogger(__name__)

MODEL_TYPES = ("hist_gradient_boosting", "random_forest")
SYNTHETIC_SCHEMA = "fraud"


@dataclass(frozen=True)
class RunFolder:
    """Where one training run's steps leave their results for the next step."""

    path: Path

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        path = parent / name
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def train(self) -> Path:
        return self.path / "train.parquet"

    @property
    def holdout(self) -> Path:
        return self.path / "holdout.parquet"

    @property
    def model(self) -> Path:
        return self.path / "model.skops"

    @property
    def reference(self) -> Path:
        """A retrain's recent rows, train and hold-out: the world the version will serve."""
        return self.path / "reference.parquet"

    def write_json(self, name: str, value: Any) -> Path:
        target = self.path / f"{name}.json"
        target.write_text(json.dumps(value, indent=2, default=str))
        return target

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / f"{name}.json").read_text())


@dataclass(frozen=True)
class TrainingPlan:
    """What one training run learns from and how, and where its steps meet.

    JSON-ready: the training DAG's first task makes it and every later task receives it as the
    dict `to_dict` gives (Airflow's XCom); each step takes either form. With `data_start` and
    `data_end` (ISO times) it is a retrain on the labelled predictions logged in that window.
    """

    folder: str
    schema: str  # the feature-schema file
    model_type: str
    data_path: str | None = None  # the original data; default TRAINING_DATA, else synthetic
    data_start: str | None = None
    data_end: str | None = None
    holdout_fraction: float = 0.2
    rows: int = 50_000  # synthetic rows, when there is no data file
    seed: int = 42
    threshold: float = DEFAULT_THRESHOLD
    reason: str = "manual"
    trigger: str = "manual"
    training_run_id: int | None = None  # the `training_runs` row the loop keeps

    @classmethod
    def of(cls, run: TrainingPlan | Mapping[str, Any]) -> TrainingPlan:
        if isinstance(run, TrainingPlan):
            return run
        return cls(**{f.name: run[f.name] for f in fields(cls) if f.name in run})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_folder(self) -> RunFolder:
        path = Path(self.folder)
        return RunFolder.create(path.parent, path.name)

    @property
    def recent_window(self) -> tuple[datetime, datetime] | None:
        if self.data_start is None or self.data_end is None:
            return None
        return as_utc(self.data_start), as_utc(self.data_end)

    def feature_schema(self, settings: Settings) -> FeatureSchema:
        return load_schema(settings.path(self.schema))


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
    frame: pd.DataFrame,
    schema: FeatureSchema,
    holdout_fraction: float,
    *,
    seed: int = 42,
    in_time_order: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest rows train, newest rows are the hold-out (by the schema's timestamp column).

    Without a timestamp column, a file's row order says nothing about time (the penguins CSV is
    sorted by species: its last fifth is one species the model would never have seen), so the
    hold-out is a seeded random sample stratified by the target instead; `in_time_order` says
    the rows are in time order already (the prediction log's), and the newest are held out.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"hold-out fraction must be between 0 and 1, got {holdout_fraction}")
    if schema.timestamp and schema.timestamp in frame.columns:
        frame = frame.sort_values(schema.timestamp, kind="stable")
    elif not in_time_order:
        labels = frame[schema.target]
        # Missing labels or a lone class cannot be stratified; validation reports them next.
        stratify = labels if labels.notna().all() and labels.value_counts().min() >= 2 else None
        train, holdout = train_test_split(
            frame, test_size=holdout_fraction, random_state=seed, stratify=stratify
        )
        frame = pd.concat([train, holdout])
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
    """The original training data: TRAINING_DATA, else the synthetic set (fraud schema only)."""
    if settings.TRAINING_DATA:
        return settings.path(settings.TRAINING_DATA)
    if schema.name != SYNTHETIC_SCHEMA:
        raise DataError(f"--data is required for schema {schema.name!r} (no generator for it)")
    path = settings.path(settings.DATA_DIR) / f"transactions-{rows}-{seed}.parquet"
    if not path.exists():
        write_frame(generate_transactions(rows, seed), path)
    return path


def recent_labelled(
    schema: FeatureSchema, window: tuple[datetime, datetime], settings: Settings
) -> pd.DataFrame:
    """The predictions logged in `window` whose label arrived, as training rows (schema columns,
    the label as the target, the prediction time as the timestamp)."""
    frame = read_predictions(
        schema, window[0], window[1], url=settings.database_url, with_labels=True
    )
    frame = frame[frame[schema.target].notna()]
    columns = [c for c in (schema.id, schema.timestamp) if c] + schema.feature_names
    result = frame[columns].reset_index(drop=True)
    result[schema.target] = frame[schema.target].to_numpy().astype(int)
    return result


Run = TrainingPlan | Mapping[str, Any]


def ingest(run: Run, settings: Settings) -> dict[str, Any]:
    """Step 1: assemble the training set and the hold-out into the run folder."""
    plan = TrainingPlan.of(run)
    folder, schema = plan.run_folder, plan.feature_schema(settings)
    base_path = (
        Path(plan.data_path)
        if plan.data_path
        else default_data(schema, settings, plan.rows, plan.seed)
    )
    base = load_frame(base_path, schema)
    summary: dict[str, Any] = {"base_data": str(base_path), "base_rows": len(base)}
    window, fraction, seed = plan.recent_window, plan.holdout_fraction, plan.seed
    if window is None:
        train, holdout = time_split(base, schema, fraction, seed=seed)
        summary["recent_rows"] = 0
    else:
        recent = recent_labelled(schema, window, settings)
        summary["recent_window"] = [moment.isoformat() for moment in window]
        if recent[schema.target].nunique() < 2:
            # A weekly run with no feedback yet: the original data alone, said in the summary
            # (MLflow's training_data.json); the policy never retrains without labels.
            log.warning("no labelled predictions of both classes in %s..%s: training on the "
                        "original data only", *window)  # fmt: skip
            train, holdout = time_split(base, schema, fraction, seed=seed)
            summary |= {"recent_rows": len(recent), "note": "no recent labels: original data only"}
            return _write(folder, train, holdout, summary)
        # The log's rows come in prediction-time order, with or without a timestamp column.
        recent_train, holdout = time_split(recent, schema, fraction, in_time_order=True)
        wanted = round(len(recent_train) * settings.RETRAIN_BASE_SAMPLE_RATIO)
        sample = base.sample(n=min(wanted, len(base)), random_state=seed)
        train = pd.concat([sample, recent_train], ignore_index=True)
        summary |= {"recent_rows": len(recent), "base_sample_rows": len(sample)}
        # Drift is measured against the world the version is trained for: every recent row,
        # not the hold-out alone (a few hundred rows make a noisy reference) and not the sample
        # of the original data (a world the traffic has left).
        pd.concat([recent_train, holdout], ignore_index=True).to_parquet(
            folder.reference, index=False
        )
    return _write(folder, train, holdout, summary)


def _write(
    folder: RunFolder, train: pd.DataFrame, holdout: pd.DataFrame, summary: dict[str, Any]
) -> dict[str, Any]:
    train.to_parquet(folder.train, index=False)
    holdout.to_parquet(folder.holdout, index=False)
    summary |= {"train_rows": len(train), "holdout_rows": len(holdout)}
    folder.write_json("ingest", summary)
    return summary


def validate(run: Run, settings: Settings) -> dict[str, Any]:
    """Step 2: the data checks over everything the model will see; hard failures raise
    `ValidationError` naming every problem."""
    plan = TrainingPlan.of(run)
    folder = plan.run_folder
    frame = pd.concat([_read(folder.train), _read(folder.holdout)], ignore_index=True)
    report = validate_frame(frame, plan.feature_schema(settings))
    folder.write_json("validation", report.to_dict())
    report.raise_for_failures()
    return {"passed": report.passed, "summary": report.summary()}


def fit(run: Run, settings: Settings) -> dict[str, Any]:
    """Step 3: fit the feature pipeline and the classifier as one servable sklearn pipeline."""
    plan = TrainingPlan.of(run)
    folder, schema = plan.run_folder, plan.feature_schema(settings)
    train = _read(folder.train)
    features = FeaturePipeline(schema).fit(train)
    classifier = make_classifier(plan.model_type, plan.seed)
    classifier.fit(features.transform(train), train[schema.target].astype(int))
    model = Pipeline([("features", features.column_transformer), ("classifier", classifier)])
    skops.io.dump(model, folder.model)
    summary = {"model_type": plan.model_type, "seed": plan.seed, "train_rows": len(train)}
    folder.write_json("fit", summary)
    return summary


def load_fitted(folder: RunFolder) -> Pipeline:
    """The model `fit` left in the run folder (written by this run, so its types are trusted)."""
    return skops.io.load(folder.model, trusted=skops.io.get_untrusted_types(file=folder.model))


def evaluate(run: Run, settings: Settings) -> dict[str, float]:
    """Step 4: hold-out metrics, the score calibration and the reference profile; returns the
    hold-out metrics."""
    plan = TrainingPlan.of(run)
    folder, schema = plan.run_folder, plan.feature_schema(settings)
    model = load_fitted(folder)
    holdout = _read(folder.holdout)
    scores = model.predict_proba(holdout[schema.feature_names])[:, 1]
    evaluation = evaluate_scores(holdout[schema.target], scores, plan.threshold)
    # Performance estimation reads scores as probabilities: the map that makes them so is
    # fitted here, on the hold-out the model never saw, and travels with the version.
    calibrator = fit_calibrator(scores, holdout[schema.target].astype(int))
    # The inputs' reference: a retrain's recent rows (see `ingest`), else the hold-out. The
    # outputs' reference is always the hold-out's, scores on rows the model never learnt.
    described = _read(folder.reference) if folder.reference.exists() else holdout
    profile = build_reference_profile(
        described[schema.feature_names],
        schema,
        predictions=(scores >= plan.threshold).astype(int),
        scores=scores,
        sample_size=settings.REFERENCE_SAMPLE_SIZE,
        seed=plan.seed,
        threshold=plan.threshold,
        calibration=calibrator.to_dict(),
        trained_on=_read(folder.train)[[f.name for f in schema.numerical]],
    )
    folder.write_json("evaluation", evaluation.to_dict())
    profile.save(folder.path / REFERENCE_PROFILE_ARTIFACT)
    return evaluation.metrics


def register(run: Run, settings: Settings) -> str:
    """Step 5: log the run to MLflow (params, metrics, plots, hold-out, reference profile) and
    register the model as a new version with its tags; returns the version."""
    plan = TrainingPlan.of(run)
    folder, schema = plan.run_folder, plan.feature_schema(settings)
    model = load_fitted(folder)
    evaluation = evaluation_from_dict(folder.read_json("evaluation"))
    profile = ReferenceProfile.load(folder.path / REFERENCE_PROFILE_ARTIFACT)
    validation = folder.read_json("validation")
    data = folder.read_json("ingest")
    holdout = read_holdout(folder)
    classifier = model.named_steps["classifier"]
    params = {
        "model_type": plan.model_type,
        "seed": plan.seed,
        "holdout_fraction": plan.holdout_fraction,
        "reason": plan.reason,
        "trigger": plan.trigger,
        "training_run_id": plan.training_run_id,
        "schema": schema.name,
        "data": data["base_data"],
        "rows": data["train_rows"] + data["holdout_rows"],
        "train_rows": data["train_rows"],
        "holdout_rows": data["holdout_rows"],
        "recent_rows": data.get("recent_rows", 0),
        "decision_threshold": evaluation.threshold,
        **{f"clf.{k}": v for k, v in classifier.get_params().items() if _loggable(v)},
    }

    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"{plan.model_type}-{schema.name}") as mlflow_run:
        mlflow.log_params({key: value for key, value in params.items() if value is not None})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.log_dict(validation, "validation_report.json")
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
        version = log_servable_model(model, holdout[schema.feature_names], settings)

    tags = {f"holdout.{key}": f"{value:.6f}" for key, value in evaluation.metrics.items()}
    tags |= {
        "schema": schema.name,
        THRESHOLD_TAG: repr(evaluation.threshold),
        "reference_profile": f"runs:/{mlflow_run.info.run_id}/{REFERENCE_PROFILE_ARTIFACT}",
        "validation.passed": str(bool(validation["passed"])).lower(),
        "training.reason": plan.reason[:5000],
        "training.recent_rows": str(data.get("recent_rows", 0)),
    }
    Registry.from_settings(settings).tag_version(version, tags)
    folder.write_json("register", {"run_id": mlflow_run.info.run_id, "version": version})
    return version


def gate(run: Run, version: str, settings: Settings) -> dict[str, Any]:
    """Step 6: the three promotion gates (`training.gates`) for `version`, on the run's hold-out
    (for a retrain the newest recent rows: the world the champion now faces); the gate report
    as a dict. What follows from it (promote, challenger, reject) is `training.gates.decide`."""
    plan = TrainingPlan.of(run)
    folder = plan.run_folder
    report = run_gates(
        Registry.from_settings(settings),
        str(version),  # XCom hands "2" back as 2
        read_holdout(folder),
        plan.feature_schema(settings),
        validation_passed=bool(folder.read_json("validation")["passed"]),
        settings=settings,
    )
    return report.to_dict()


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


def read_holdout(folder: RunFolder) -> pd.DataFrame:
    return _read(folder.holdout)


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="training-")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)
