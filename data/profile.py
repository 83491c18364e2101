"""The reference profile: what "normal" looked like when a model version was trained.

Built once at training time from the hold-out window (data the model did not learn from, with
the model's own predictions on it) and stored with the registered model version, so the drift
check never reloads the training set and always compares against the data *this* version saw.

Per numerical feature: counts, moments, the range of the rows the model learnt from and the
hold-out (the quality check's training range), 101 quantiles of the full column and a sorted
sample (every value when the window is smaller than the sample size, so KS is exact), held in
memory as one float64 array (`FloatSample`) and saved as a JSON list. Per categorical or
boolean feature: value counts. For the model: predicted-class counts and the score (positive-class
probability) profile, the version's decision threshold (a score at or above it is class 1: what
the API answered, what realized and estimated performance count) and the calibration of its
scores fitted on the same hold-out (`training.calibration`), which performance estimation
needs. For the multivariate check (`monitoring.multivariate_drift`): a joint sample, up to
`JOINT_SAMPLE_ROWS` rows kept whole (every feature of the same row), since the per-feature
samples are sorted apart and lose which values went together; profiles saved before it have
none and the check then says it is not available. `category_counts` is the one function that
turns a column into counts, used both here and by the drift check, so reference and live data
are counted the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.schema import Feature, FeatureSchema

PROFILE_VERSION = 1
# The decision threshold of versions trained before it was stored with them, and the default.
DEFAULT_THRESHOLD = 0.5
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
MISSING_KEY = "__missing__"
# Reference rows kept whole for the multivariate check: its held-out AUC compares half of these
# with half of the window's sample; more than the window's 5,000 shrinks the reference's own
# chance deviation, which every window of the version shares (docs/drift-detection.md).
JOINT_SAMPLE_ROWS = 10_000


class FloatSample(Sequence[float]):
    """A reference sample: float64 values in one read-only numpy array.

    A million values take 8 MB this way, against about 40 MB as a list of Python floats (a
    24-byte float object plus an 8-byte slot each, and the float objects scattered in memory).
    It behaves as the list it replaces: `len`, indexing, iteration (Python floats), `==` with a
    list, tuple or array (one bool, true when the values are the same), false when empty. numpy
    gets the array itself, without a copy: `np.asarray(sample)`, or `sample.values`.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[float] | np.ndarray = ()) -> None:
        if not isinstance(values, np.ndarray | Sequence) and not hasattr(values, "__array__"):
            values = list(values)
        # A view, so that making it read-only never freezes an array the caller still holds.
        array = np.array(values, dtype=np.float64, copy=None).view()
        if array.ndim != 1:
            raise ValueError(f"a sample is one-dimensional, got shape {array.shape}")
        array.flags.writeable = False
        self._values = array

    @property
    def values(self) -> np.ndarray:
        """The values as a read-only float64 array (no copy)."""
        return self._values

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is not None and np.dtype(dtype) != self._values.dtype:
            if copy is False:
                raise ValueError(f"a float64 sample cannot be viewed as {np.dtype(dtype)}")
            return self._values.astype(dtype)
        return self._values.copy() if copy else self._values

    def __len__(self) -> int:
        return self._values.size

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return FloatSample(self._values[index])
        return float(self._values[index])

    def __iter__(self) -> Iterator[float]:
        return map(float, self._values)

    def __contains__(self, value: object) -> bool:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return bool((self._values == number).any())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FloatSample):
            other = other._values
        elif isinstance(other, list | tuple | np.ndarray):
            try:
                other = np.asarray(other, dtype=np.float64)
            except (TypeError, ValueError):
                return False
        else:
            return NotImplemented
        return other.shape == self._values.shape and bool(np.array_equal(self._values, other))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like the list it replaces

    def __reduce__(self) -> tuple[type[FloatSample], tuple[np.ndarray]]:
        return FloatSample, (self._values,)

    def __repr__(self) -> str:
        return f"FloatSample({np.array2string(self._values, separator=', ', threshold=8)})"

    def tolist(self) -> list[float]:
        return self._values.tolist()


@dataclass
class NumericalProfile:
    count: int
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: list[float]
    sample: FloatSample  # sorted; a list or an array given here is converted

    def __post_init__(self) -> None:
        if not isinstance(self.sample, FloatSample):
            self.sample = FloatSample(self.sample)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, the sample as a list (the saved format)."""
        return {
            "count": self.count,
            "missing": self.missing,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "quantiles": list(self.quantiles),
            "sample": self.sample.tolist(),
        }

    @classmethod
    def from_values(
        cls, values: pd.Series | np.ndarray, sample_size: int, rng: np.random.Generator
    ) -> NumericalProfile:
        array = np.asarray(values, dtype=np.float64)
        present = array[~np.isnan(array)]
        empty = present.size == 0
        summary = {
            "count": int(array.size),
            "missing": int(array.size - present.size),
            "mean": None if empty else float(present.mean()),
            "std": None if empty else float(present.std()),
            "min": None if empty else float(present.min()),
            "max": None if empty else float(present.max()),
            "quantiles": [] if empty else np.quantile(present, QUANTILE_LEVELS).tolist(),
        }
        if present.size > sample_size:
            sample = np.sort(rng.choice(present, size=sample_size, replace=False))
        else:
            sample = present  # a copy already (boolean indexing): sorted in place
            sample.sort()
        return cls(**summary, sample=FloatSample(sample))


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
    threshold: float = DEFAULT_THRESHOLD
    # `training.calibration.Calibrator.to_dict()`, None for versions stored without one.
    calibration: dict[str, Any] | None = None
    # Feature -> values of the same sampled rows (numbers, booleans as 0 / 1, categories as
    # strings; None = missing). None for profiles saved before the multivariate check.
    joint_sample: dict[str, list[Any]] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, in the saved format (samples as lists)."""
        return {
            "schema_name": self.schema_name,
            "rows": self.rows,
            "numerical": {k: v.to_dict() for k, v in self.numerical.items()},
            "categorical": {k: asdict(v) for k, v in self.categorical.items()},
            "prediction_counts": dict(self.prediction_counts),
            "score": self.score.to_dict(),
            "threshold": self.threshold,
            "calibration": self.calibration,
            "joint_sample": self.joint_sample,
            "created_at": self.created_at,
            "version": self.version,
        }

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
            threshold=float(raw.get("threshold", DEFAULT_THRESHOLD)),
            calibration=raw.get("calibration"),
            joint_sample=raw.get("joint_sample"),
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


def feature_numbers(values: pd.Series) -> np.ndarray:
    """A numerical or boolean column as float64 (booleans 0 / 1), missing as NaN."""
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def build_joint_sample(
    frame: pd.DataFrame, schema: FeatureSchema, size: int = JOINT_SAMPLE_ROWS, seed: int = 0
) -> dict[str, list[Any]]:
    """Up to `size` rows of `frame` drawn at random and kept whole, feature by feature."""
    rows = len(frame)
    chosen = np.sort(np.random.default_rng(seed).permutation(rows)[: min(size, rows)])
    part = frame.iloc[chosen]
    result: dict[str, list[Any]] = {}
    for feature in schema.features:
        if feature.is_numerical or feature.is_boolean:
            numbers = feature_numbers(part[feature.name])
            result[feature.name] = [None if np.isnan(v) else float(v) for v in numbers]
        else:
            labels = part[feature.name].astype("string")
            result[feature.name] = [None if pd.isna(v) else str(v) for v in labels]
    return result


def build_reference_profile(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    predictions: np.ndarray,
    scores: np.ndarray,
    sample_size: int = 10_000,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    calibration: dict[str, Any] | None = None,
    trained_on: pd.DataFrame | None = None,
    joint_sample_size: int = JOINT_SAMPLE_ROWS,
) -> ReferenceProfile:
    """Profile `frame` (typed as `coerce_frame` returns it) and the model's outputs.

    The outputs (`predictions`, `scores`) may be of other rows than `frame`: a retrain profiles
    the inputs of all its recent rows and the outputs on its hold-out, which the model never saw.

    With `trained_on` (the rows the model learnt from), each numerical `min` / `max` spans those
    rows and `frame`: the quality check's "training range". A hold-out of a small data set (67
    penguins) misses the extremes of the rest, and ordinary rows would count as out of range.
    """
    if len(predictions) != len(scores):
        raise ValueError("predictions and scores must have one entry per scored row")
    rng = np.random.default_rng(seed)
    numerical = {
        f.name: NumericalProfile.from_values(frame[f.name], sample_size, rng)
        for f in schema.numerical
    }
    for name, profile in numerical.items() if trained_on is not None else ():
        learnt = trained_on[name].to_numpy(dtype=np.float64)
        learnt = learnt[~np.isnan(learnt)]
        if learnt.size:
            low, high = float(learnt.min()), float(learnt.max())
            profile.min = low if profile.min is None else min(profile.min, low)
            profile.max = high if profile.max is None else max(profile.max, high)
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
        threshold=threshold,
        calibration=calibration,
        joint_sample=build_joint_sample(frame, schema, joint_sample_size, seed),
    )
