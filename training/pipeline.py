"""The training pipeline in steps: ingest → validate → fit → evaluate → register → gates → promote.

`python -m training.train` runs the steps one after the other in a temporary folder; the
training DAG runs each as its own Airflow task, so a failure names its step and a retry
repeats only that step. The steps hand their results on through a run folder (`RunFolder`):
the data as Parquet, the fitted model in skops format (no pickle), reports as JSON, so nothing
large travels through XCom.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from data.features import FeaturePipeline
from data.ingest import DataError, load_frame, read_predictions
from data.profile import DEFAULT_THRESHOLD, build_reference_profile
from data.schema import FeatureSchema
from data.settings import Settings
from data.synthetic import generate_transactions, write_frame
from data.validate import ValidationReport, validate_frame
from training.calibration import fit_calibrator
from training.evaluate import Evaluation, evaluate_scores

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


def ingest(
    folder: RunFolder,
    schema: FeatureSchema,
    settings: Settings,
    *,
    data_path: str | Path | None = None,
    recent_window: tuple[datetime, datetime] | None = None,
    holdout_fraction: float = 0.2,
    rows: int = 50_000,
    seed: int = 42,
) -> dict[str, Any]:
    """Step 1: assemble the training set and the hold-out into the run folder."""
    base_path = Path(data_path) if data_path else default_data(schema, settings, rows, seed)
    base = load_frame(base_path, schema)
    summary: dict[str, Any] = {"base_data": str(base_path), "base_rows": len(base)}
    if recent_window is None:
        train, holdout = time_split(base, schema, holdout_fraction, seed=seed)
        summary["recent_rows"] = 0
    else:
        recent = recent_labelled(schema, recent_window, settings)
        summary["recent_window"] = [moment.isoformat() for moment in recent_window]
        if recent[schema.target].nunique() < 2:
            # A weekly run with no feedback yet: the original data alone, said in the summary
            # (MLflow's training_data.json); the policy never retrains without labels.
            log.warning("no labelled predictions of both classes in %s..%s: training on the "
                        "original data only", *recent_window)  # fmt: skip
            train, holdout = time_split(base, schema, holdout_fraction, seed=seed)
            summary |= {"recent_rows": len(recent), "note": "no recent labels: original data only"}
            return _write(folder, train, holdout, summary)
        # The log's rows come in prediction-time order, with or without a timestamp column.
        recent_train, holdout = time_split(recent, schema, holdout_fraction, in_time_order=True)
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


def validate(folder: RunFolder, schema: FeatureSchema) -> ValidationReport:
    """Step 2: the data checks over everything the model will see; hard failures raise."""
    frame = pd.concat([_read(folder.train), _read(folder.holdout)], ignore_index=True)
    report = validate_frame(frame, schema)
    folder.write_json("validation", report.to_dict())
    report.raise_for_failures()
    return report


def fit(folder: RunFolder, schema: FeatureSchema, model_type: str, seed: int) -> Pipeline:
    """Step 3: fit the feature pipeline and the classifier as one servable sklearn pipeline."""
    train = _read(folder.train)
    features = FeaturePipeline(schema).fit(train)
    classifier = make_classifier(model_type, seed)
    classifier.fit(features.transform(train), train[schema.target].astype(int))
    model = Pipeline([("features", features.column_transformer), ("classifier", classifier)])
    skops.io.dump(model, folder.model)
    folder.write_json("fit", {"model_type": model_type, "seed": seed, "train_rows": len(train)})
    return model


def load_fitted(folder: RunFolder) -> Pipeline:
    """The model `fit` left in the run folder (written by this run, so its types are trusted)."""
    return skops.io.load(folder.model, trusted=skops.io.get_untrusted_types(file=folder.model))


@dataclass
class EvaluationResult:
    evaluation: Evaluation
    profile: Any  # data.profile.ReferenceProfile


def evaluate(
    folder: RunFolder,
    schema: FeatureSchema,
    settings: Settings,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 42,
    model: Pipeline | None = None,
) -> EvaluationResult:
    """Step 4: hold-out metrics, the score calibration and the reference profile."""
    model = model if model is not None else load_fitted(folder)
    holdout = _read(folder.holdout)
    holdout_x = holdout[schema.feature_names]
    scores = model.predict_proba(holdout_x)[:, 1]
    evaluation = evaluate_scores(holdout[schema.target], scores, threshold)
    # Performance estimation reads scores as probabilities: the map that makes them so is
    # fitted here, on the hold-out the model never saw, and travels with the version.
    calibrator = fit_calibrator(scores, holdout[schema.target].astype(int))
    # The inputs' reference: a retrain's recent rows (see `ingest`), else the hold-out. The
    # outputs' reference is always the hold-out's, scores on rows the model never learnt.
    described = _read(folder.reference) if folder.reference.exists() else holdout
    profile = build_reference_profile(
        described[schema.feature_names],
        schema,
        predictions=(scores >= threshold).astype(int),
        scores=scores,
        sample_size=settings.REFERENCE_SAMPLE_SIZE,
        seed=seed,
        threshold=threshold,
        calibration=calibrator.to_dict(),
        trained_on=_read(folder.train)[[f.name for f in schema.numerical]],
    )
    folder.write_json("evaluation", evaluation.to_dict())
    profile.save(folder.path / "reference_profile.json")
    return EvaluationResult(evaluation, profile)


def read_holdout(folder: RunFolder) -> pd.DataFrame:
    return _read(folder.holdout)


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="training-")


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)
