"""`DriftAccumulator`: the current window, chunk by chunk, against a reference profile, keeping
only counts; `compute_drift_report` for a window in memory, and `profile_from_frame` for a
reference DataFrame. `monitoring.drift_report` explains the method and is the entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from data.profile import ReferenceProfile, build_reference_profile, category_counts
from data.schema import Feature, FeatureSchema
from data.settings import Settings
from monitoring.drift_results import (
    DriftError,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    PredictionDrift,
)
from monitoring.drift_stats import CategoricalState, NumericalState, class_counts, judge_family
from monitoring.multivariate_drift import RowReservoir, multivariate_drift

# Below this many rows, starting threads costs more than the columns take.
_PARALLEL_MIN_ROWS = 20_000


def profile_from_frame(frame: pd.DataFrame, schema: FeatureSchema) -> ReferenceProfile:
    """Profile a reference DataFrame keeping every value, so KS against it is exact.

    The model's outputs come from the schema's `prediction` and `score` columns; without them
    the profile has no prediction counts, and prediction drift is reported as not available
    rather than compared with something else.
    """
    _check_columns(frame, schema, "reference")
    if frame.empty:
        raise DriftError("the reference has no rows")
    has_outputs = {schema.prediction, schema.score} <= set(frame.columns)
    if has_outputs:
        predictions = _numeric_column(frame, schema.prediction)
        if np.isnan(predictions).any():
            raise DriftError(f"the reference column {schema.prediction!r} has missing values")
        scores = _numeric_column(frame, schema.score)
    else:
        predictions, scores = np.zeros(len(frame)), np.full(len(frame), np.nan)
    profile = build_reference_profile(
        frame, schema, predictions=predictions, scores=scores, sample_size=len(frame)
    )
    if not has_outputs:
        profile = replace(profile, prediction_counts={})
    return profile


def _check_columns(frame: pd.DataFrame, schema: FeatureSchema, what: str) -> None:
    missing = [name for name in schema.feature_names if name not in frame.columns]
    if missing:
        raise DriftError(f"the {what} data lacks feature column(s): {', '.join(missing)}")


def _numeric_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    try:
        return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise DriftError(
            f"column {name!r} must be numeric (type the frame with data.ingest.coerce_frame)"
        ) from None


@dataclass(frozen=True)
class _Part:
    """One column to compare: how to start its running state and how to read it from a chunk."""

    name: str
    type: str
    start: Callable[[], NumericalState | CategoricalState]
    read: Callable[[pd.DataFrame], Any]


class DriftAccumulator:
    """A drift check over a window fed in chunks; memory stays bounded by the reference.

    `update` each chunk (a DataFrame typed as `coerce_frame` returns it, with `prediction` and
    `score` columns for prediction drift), then `report` (as often as wanted: it does not stop
    the accumulation). `compute_drift_report` is one update.
    """

    def __init__(
        self,
        reference: ReferenceProfile | pd.DataFrame,
        schema: FeatureSchema,
        *,
        settings: Settings | None = None,
        thresholds: DriftThresholds | None = None,
        window: tuple[datetime, datetime] | None = None,
        workers: int | None = None,
    ) -> None:
        outputs = schema.prediction, schema.score
        # The output columns reference data lacks, named when prediction drift is not available.
        self._reference_missing: list[str] = []
        if isinstance(reference, pd.DataFrame):
            self._reference_missing = [c for c in outputs if c not in reference.columns]
            reference = profile_from_frame(reference, schema)
        elif not isinstance(reference, ReferenceProfile):
            raise DriftError(
                f"reference must be a DataFrame or a ReferenceProfile, not {type(reference)}"
            )
        if reference.rows == 0:
            raise DriftError("the reference profile has no rows")
        absent = [
            f.name
            for f in schema.features
            if f.name not in (reference.numerical if f.is_numerical else reference.categorical)
        ]
        if absent:
            raise DriftError(
                f"the reference profile has no statistics for: {', '.join(absent)} "
                "(was it built with another schema?)"
            )
        self.profile = reference
        self.schema = schema
        self.thresholds = thresholds or DriftThresholds.from_settings(settings)
        self.window = window
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.rows = 0
        # Features first, then (from the first chunk on, if both sides have them) the model's
        # outputs. A part's state is started by the first chunk, in a worker thread.
        self._parts = [self._feature_part(feature) for feature in schema.features]
        self._has_outputs: bool | None = None
        self._outputs_missing: list[str] = []
        self._states: list[NumericalState | CategoricalState | None] = [None] * len(self._parts)
        self._final: list[FeatureDrift | None] = [None] * len(self._parts)
        self._first_seen: pd.Timestamp | None = None
        self._last_seen: pd.Timestamp | None = None
        # The multivariate check needs rows whole: a uniform sample of the window's.
        self._reservoir = RowReservoir(schema.feature_names)

    def _feature_part(self, feature: Feature) -> _Part:
        name = feature.name
        if feature.is_numerical:
            profile = self.profile.numerical[name]
            return _Part(
                name,
                feature.type,
                lambda: NumericalState(profile),
                lambda chunk: _numeric_column(chunk, name),
            )
        counts = self.profile.categorical[name].counts
        return _Part(
            name,
            feature.type,
            lambda: CategoricalState(counts, lambda values: category_counts(values, feature)),
            lambda chunk: chunk[name],
        )

    @property
    def _reference_has_outputs(self) -> bool:
        return bool(self.profile.prediction_counts) and bool(self.profile.score.sample)

    def update(self, chunk: pd.DataFrame) -> None:
        """Add one chunk of the current window."""
        self._consume(chunk, last=False)

    def _consume(self, chunk: pd.DataFrame, *, last: bool) -> None:
        """Count a chunk; with `last`, also finish each part's result and free its state.

        Finishing in the worker threads lets the heavy numpy work of one column overlap the
        GIL-bound work of another, and keeps only a couple of columns' counts alive at a time.
        """
        _check_columns(chunk, self.schema, "current")
        outputs = self.schema.prediction, self.schema.score
        has_outputs = set(outputs) <= set(chunk.columns)
        if self._has_outputs is None:
            self._outputs_missing = [c for c in outputs if c not in chunk.columns]
            self._has_outputs = has_outputs
            if has_outputs and self._reference_has_outputs:
                self._add_output_parts()
        elif has_outputs != self._has_outputs:
            raise DriftError(
                "every chunk must have the prediction and score columns, or none may have them"
            )
        if chunk.empty:
            return

        def run(index: int) -> None:
            part = self._parts[index]
            state = self._states[index] or part.start()
            state.update(part.read(chunk))
            if last:
                self._final[index] = state.result(part.name, part.type)
                state = None
            self._states[index] = state

        self._map(run, len(chunk))
        self._reservoir.update(chunk)
        self.rows += len(chunk)
        self._track_window(chunk)

    def _add_output_parts(self) -> None:
        profile = self.profile
        prediction, score = self.schema.prediction, self.schema.score
        self._parts += [
            _Part(
                prediction,
                "categorical",
                lambda: CategoricalState(profile.prediction_counts, class_counts),
                lambda chunk: chunk[prediction],
            ),
            _Part(
                score,
                "numerical",
                lambda: NumericalState(profile.score),
                lambda chunk: _numeric_column(chunk, score),
            ),
        ]
        self._states += [None, None]
        self._final += [None, None]

    def _map(self, task: Callable[[int], Any], rows: int) -> list[Any]:
        indices = range(len(self._parts))
        if self.workers == 1 or rows < _PARALLEL_MIN_ROWS:
            return [task(index) for index in indices]
        # numpy's sort and searchsorted release the GIL, so columns run in parallel.
        with ThreadPoolExecutor(max_workers=min(self.workers, len(indices))) as pool:
            return list(pool.map(task, indices))

    def _track_window(self, chunk: pd.DataFrame) -> None:
        column = self.schema.timestamp
        if self.window is not None or not column or column not in chunk.columns:
            return
        times = pd.to_datetime(chunk[column], utc=True, errors="coerce").dropna()
        if times.empty:
            return
        low, high = times.min(), times.max()
        self._first_seen = low if self._first_seen is None else min(self._first_seen, low)
        self._last_seen = high if self._last_seen is None else max(self._last_seen, high)

    def report(self) -> DriftReport:
        """The drift report for everything added so far."""
        if self.rows == 0:
            raise DriftError("the current window has no rows; there is nothing to compare")

        def result(index: int) -> FeatureDrift:
            final, state, part = self._final[index], self._states[index], self._parts[index]
            return final if final is not None else state.result(part.name, part.type)

        results = self._map(result, max(self.rows, self.profile.rows))
        count = len(self.schema.features)
        features = {part.name: part for part in results[:count]}
        judge_family(results[:count], self.thresholds)

        if len(results) > count:
            predicted_class, score = results[count:]
            prediction = PredictionDrift(True, predicted_class=predicted_class, score=score)
            judge_family([predicted_class, score], self.thresholds)
        elif not self._reference_has_outputs:
            reason = "the reference has no model predictions and scores to compare with"
            if self._reference_missing:
                reason += f" ({_no_outputs('its data', self._reference_missing)})"
            prediction = PredictionDrift(False, reason=reason)
        else:
            prediction = PredictionDrift(
                False, reason=_no_outputs("the current data", self._outputs_missing)
            )

        start, end = self.window or (self._first_seen, self._last_seen)
        multivariate = multivariate_drift(
            self.profile,
            self._reservoir.sample,
            self.schema,
            p_threshold=self.thresholds.multivariate_p_threshold,
            auc_critical=self.thresholds.multivariate_auc_critical,
        )
        return DriftReport(
            schema_name=self.schema.name,
            features=features,
            prediction=prediction,
            thresholds=self.thresholds,
            rows_reference=self.profile.rows,
            rows_current=self.rows,
            window_start=None if start is None else start.isoformat(),
            window_end=None if end is None else end.isoformat(),
            multivariate=multivariate,
        )


def _no_outputs(data: str, missing: list[str]) -> str:
    """Which output columns `data` lacks, and which schema keys name them."""
    columns = " and ".join(repr(c) for c in missing) + " column" + "s" * (len(missing) > 1)
    return (
        f"{data} has no {columns}: the model's predicted class and score, named by the "
        "schema's `prediction` and `score` keys"
    )


def compute_drift_report(
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame,
    schema: FeatureSchema,
    *,
    settings: Settings | None = None,
    thresholds: DriftThresholds | None = None,
    window: tuple[datetime, datetime] | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Compare `current` with `reference` (a stored profile or a DataFrame); see the module doc.

    Thresholds come from `thresholds` if given, else from `settings` (default: `get_settings()`).
    `window` is reported as the window's bounds; without it, the observed range of the schema's
    timestamp column is used when the data has one.
    """
    accumulator = DriftAccumulator(
        reference, schema, settings=settings, thresholds=thresholds, window=window, workers=workers
    )
    accumulator._consume(current, last=True)
    return accumulator.report()
