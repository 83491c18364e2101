"""The reference profile: what "normal" looked like when a model version was trained.

Built once at training time from the hold-out window (data the model did not learn from, with
the model's own predictions on it) and stored with the registered model version, so the drift
check never reloads the training set and always compares against the data *this* version saw.

Per numerical feature: counts, moments, 101 quantiles of the full column and a sorted sample
(every value when the window is smaller than the sample size, so KS is exact). Per categorical or
boolean feature: value counts. For the model: predicted-class counts and the score (positive-class
probability) profile. `category_counts` is the one function that turns a column into counts, used
both here and by the drift check, so reference and live data are counted the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.schema import Feature, FeatureSchema

PROFILE_VERSION = 1
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
MISSING_KEY = "__missing__"


@dataclass
class NumericalProfile:
    count: int
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: list[float]
    sample: list[float]

    @classmethod
    def from_values(
        cls, values: pd.Series | np.ndarray, sample_size: int, rng: np.random.Generator
    ) -> NumericalProfile:
        array = np.asarray(values, dtype=np.float64)
        present = array[~np.isnan(array)]
        if present.size > sample_size:
            sample = rng.choice(present, size=sample_size, replace=False)
        else:
            sample = present
        empty = present.size == 0
        return cls(
            count=int(array.size),
            missing=int(array.size - present.size),
            mean=None if empty else float(present.mean()),
            std=None if empty else float(present.std()),
            min=None if empty else float(present.min()),
            max=None if empty else float(present.max()),
            quantiles=[] if empty else np.quantile(present, QUANTILE_LEVELS).tolist(),
            sample=np.sort(sample).tolist(),
        )


@dataclass
class CategoricalProfile:
    count: int
    missing: int
    counts: dict[str, int]


@dataclass
class ReferenceProfile:
    schema_name: str
    rows: int
    numerical: dict[str, NumericalProfile]
    categorical: dict[str, CategoricalProfile]
    prediction_counts: dict[str, int]
    score: NumericalProfile
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        if raw.get("version") != PROFILE_VERSION:
            raise ValueError(
                f"reference profile version {raw.get('version')!r} is not supported "
                f"(expected {PROFILE_VERSION}); retrain to rebuild it"
            )
        return cls(
            schema_name=raw["schema_name"],
            rows=raw["rows"],
            numerical={k: NumericalProfile(**v) for k, v in raw["numerical"].items()},
            categorical={k: CategoricalProfile(**v) for k, v in raw["categorical"].items()},
            prediction_counts=raw["prediction_counts"],
            score=NumericalProfile(**raw["score"]),
            created_at=raw["created_at"],
            version=raw["version"],
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        return cls.from_dict(json.loads(Path(path).read_text()))


def category_counts(values: pd.Series, feature: Feature) -> dict[str, int]:
    """Counts per category as strings; booleans as "true"/"false"; missing under MISSING_KEY."""
    if feature.is_boolean:
        numeric = pd.to_numeric(values, errors="coerce")
        labels = numeric.map({1.0: "true", 0.0: "false"})
    else:
        labels = values.astype("string")
    counts = labels.value_counts(dropna=True)
    result = {str(k): int(v) for k, v in counts.items()}
    missing = int(labels.isna().sum())
    if missing:
        result[MISSING_KEY] = missing
    return dict(sorted(result.items()))


def build_reference_profile(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    predictions: np.ndarray,
    scores: np.ndarray,
    sample_size: int = 10_000,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile `frame` (typed as `coerce_frame` returns it) and the model's outputs on it."""
    if len(predictions) != len(frame) or len(scores) != len(frame):
        raise ValueError("predictions and scores must have one entry per row of the frame")
    rng = np.random.default_rng(seed)
    numerical = {
        f.name: NumericalProfile.from_values(frame[f.name], sample_size, rng)
        for f in schema.numerical
    }
    categorical = {}
    for f in schema.features:
        if f.is_numerical:
            continue
        counts = category_counts(frame[f.name], f)
        categorical[f.name] = CategoricalProfile(
            count=len(frame), missing=counts.get(MISSING_KEY, 0), counts=counts
        )
    classes, class_counts = np.unique(np.asarray(predictions).astype(int), return_counts=True)
    return ReferenceProfile(
        schema_name=schema.name,
        rows=len(frame),
        numerical=numerical,
        categorical=categorical,
        prediction_counts={str(c): int(n) for c, n in zip(classes, class_counts, strict=True)},
        score=NumericalProfile.from_values(scores, sample_size, rng),
    )
