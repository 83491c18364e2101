"""Model performance in production: realized once labels arrive, estimated before they do.

Realized (`realized_performance`): the prediction log joined with the labels that arrived later
(`data.prediction_log.read_predictions(..., with_labels=True)`) gives, per time window and for the
whole frame, accuracy, precision, recall, F1 and ROC AUC over the labelled rows with their confusion
matrix (tp, fp, fn, tn: the false-positive rate is fp / (fp + tn)), next to the number of
predictions, the number labelled and the label coverage (labelled / predictions). Rows still waiting
for their label count towards coverage only. A metric whose definition divides by zero in a window
(no label yet, no predicted positive for precision, one class for ROC AUC) is None, not 0, so that a
quiet hour does not look like a broken model.

Estimated (`estimated_performance`, `estimated_performance_by_window`): fraud labels take weeks,
so before they arrive performance is estimated from the scores alone by confidence-based
performance estimation (CBPE, as NannyML does). A row whose raw score s is at or above the
version's threshold is a predicted positive, as the API answered; its calibrated probability
p = calibrator(s) (`training.calibration`, isotonic, fitted on the version's hold-out and stored
with it) is the chance it is really positive. So a predicted positive adds p to the expected
true positives and 1 - p to the false positives, and a predicted negative adds p to the false
negatives and 1 - p to the true negatives; the expected confusion matrix gives expected
accuracy, precision, recall and F1. The expected ROC AUC ranks rows by the raw score, each a
positive of weight p and a negative of weight 1 - p. Realized metrics use the very same
formulas with the label in place of p, so the two are directly comparable. Without a
calibrator (`calibrator=None`: a version stored before calibrations were) p is the raw score,
which is right only for a calibrated model; `fit_calibrator` builds one for any model's
probabilities from reference scores and labels. What it buys, per 5,000-row chunk: a random
forest's squeezed probabilities put the accuracy estimate 5.3 to 8.2 points off, calibrated
0.5 on average (tests/test_calibration.py); the shipped model is nearly calibrated already
(0.6-0.8 points off under covariate shift raw, 0.2-0.4 calibrated).

What the estimate can and cannot see:

- Covariate shift (the inputs move, P(y|x) stays): the estimate follows it, as long as the model
  stays calibrated where the inputs move to. Raw gradient-boosted probabilities are not: in the
  sparse regions a shift moves traffic into, trees extrapolate flat and under-predict, and the
  estimate turns optimistic (tests/test_performance.py measures both cases).
- Concept drift (P(y|x) itself changes): it CANNOT see it. The probabilities were calibrated on
  the old relationship; when that changes they are wrong in a way the model has no means to know,
  and the estimate stays where it was while the real accuracy falls. Only the realized metrics
  catch concept drift, once labels arrive.
- Calibration holds where the reference was: the calibrator maps scores as the hold-out saw
  them. Scores in regions the hold-out hardly covered are mapped by its nearest points. It is
  one map for all inputs: a model whose miscalibration differs between regions of the inputs
  keeps part of it when traffic moves to another region (a Gaussian naive Bayes on
  make_classification with chunks cut along one feature: 3.5 points off raw, 3.0 calibrated
  on one data seed, 0.35-0.5 calibrated on two others).
  `estimation_error` measures how far the estimate is off on the rows that already have labels
  (the estimate on those rows minus the realized value, and the expected calibration error of
  the calibrated probabilities); a persistent gap there means the estimates for the unlabelled
  rows are off by about as much.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

from data.prediction_log import LOG_TIME_COLUMN, MODEL_VERSION_COLUMN
from data.profile import DEFAULT_THRESHOLD
from data.schema import FeatureSchema
from training.calibration import Calibrator, fit_calibrator

__all__ = [
    "METRICS",
    "Calibrator",
    "PerformanceReport",
    "estimated_performance",
    "estimated_performance_by_window",
    "estimation_error",
    "fit_calibrator",
    "realized_performance",
]

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
# `read_predictions` names the prediction time after the schema's timestamp, or this.
DEFAULT_TIMESTAMP_COLUMN = LOG_TIME_COLUMN

Window = str | timedelta | BaseOffset | Sequence[datetime | str]


@dataclass
class PerformanceReport:
    """Metrics per time window and over the whole frame, realized or estimated.

    `windows` has one row per window (window_start, window_end, counts, then METRICS), NaN where
    a metric is undefined; `overall` is the same over every row of the frame, JSON-ready, None
    where undefined.
    """

    kind: str  # "realized" | "estimated"
    threshold: float
    windows: pd.DataFrame
    overall: dict[str, Any]
    # Estimated only: whether the scores went through the version's calibrator.
    calibrated: bool | None = None
    # The same figures over the rows each model version answered (a window that straddles a
    # promotion holds two), keyed by version; empty when the frame names no version.
    by_version: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ISO-8601 window bounds, plain numbers, None for undefined metrics."""
        records = []
        for row in self.windows.to_dict("records"):
            records.append({key: _json_value(value) for key, value in row.items()})
        return {
            "kind": self.kind,
            "threshold": self.threshold,
            **({} if self.calibrated is None else {"calibrated": self.calibrated}),
            "overall": {key: _json_value(value) for key, value in self.overall.items()},
            "windows": records,
            **({"by_version": self.by_version} if self.by_version else {}),
        }


def realized_performance(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    window: Window = "1h",
    threshold: float = DEFAULT_THRESHOLD,
) -> PerformanceReport:
    """Realized metrics per window of the timestamp column and overall, from labelled rows.

    `frame` holds the score, the timestamp and the target (NaN where no label arrived yet), as
    `read_predictions(..., with_labels=True)` returns it. `window` is a pandas frequency ("1h",
    "6h", "1D", a timedelta), windows aligned as `DataFrame.resample` aligns them and empty ones
    kept, or an explicit sequence of bin edges [e0, e1, ..., en] giving the windows [e0, e1), ...
    (rows outside every bin count in `overall` only). A row's prediction is the class the API
    answered, the schema's `prediction` column as the log holds it, so every row counts with the
    threshold of the version that answered it; a frame without that column is judged at
    `threshold` (pass the version's, `ReferenceProfile.threshold`). With a `model_version`
    column the report also holds `by_version`, the overall figures per version.
    """
    timestamps, scores = _inputs(frame, schema)
    labels = _labels(frame, schema)
    labelled = ~np.isnan(labels)
    predicted = _answered(frame, schema, scores, threshold)
    starts, ends, codes = _assign_windows(timestamps, window)

    def table(rows: np.ndarray, groups: int) -> pd.DataFrame:
        given = rows[labelled], groups, scores[labelled], labels[labelled], predicted[labelled]
        metrics = _metrics(*given, with_confusion=True)
        predictions = np.bincount(rows, minlength=groups)
        counted = np.bincount(rows[labelled], minlength=groups)
        counts = pd.DataFrame(
            {
                "predictions": predictions,
                "labelled": counted,
                "label_coverage": _ratio(counted, predictions),
            }
        )
        return pd.concat([counts, metrics], axis=1)

    report = _report("realized", threshold, starts, ends, codes, table)
    report.by_version = _by_version(frame, table)
    return report


def estimated_performance(
    scores: np.ndarray | pd.Series,
    threshold: float = DEFAULT_THRESHOLD,
    calibrator: Calibrator | None = None,
) -> dict[str, Any]:
    """CBPE on raw scores: expected metrics and confusion matrix (see above).

    Returns rows, expected_positive_rate (mean calibrated probability), the expected
    tp/fp/fn/tn and METRICS, None where a metric is undefined (no rows; precision with no
    predicted positive).
    """
    values = _check_scores(np.asarray(scores, dtype=np.float64))
    probabilities = _calibrated(values, calibrator)
    rows = np.zeros(values.size, dtype=np.intp)
    metrics = _metrics(rows, 1, values, probabilities, values >= threshold, with_confusion=True)
    result = {
        "rows": int(values.size),
        "expected_positive_rate": float(probabilities.mean()) if values.size else None,
        **metrics.to_dict("records")[0],
    }
    return {key: _json_value(value) for key, value in result.items()}


def estimated_performance_by_window(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    window: Window = "1h",
    threshold: float = DEFAULT_THRESHOLD,
    calibrator: Calibrator | None = None,
    versions: Mapping[str, tuple[float, Calibrator | None]] | None = None,
) -> PerformanceReport:
    """CBPE per window of the timestamp column and overall; `window` as in realized_performance,
    `threshold` and `calibrator` the served version's.

    `versions` maps a model version to its own threshold and calibrator: the rows that version
    answered (the frame's `model_version` column) are read with them, and the report holds
    `by_version`. Rows of a version not in the map are read with `threshold` and `calibrator`.
    """
    timestamps, scores = _inputs(frame, schema)
    probabilities = _calibrated(scores, calibrator)
    thresholds = np.full(scores.size, threshold, dtype=np.float64)
    version = _versions(frame)
    for name, (own_threshold, own_calibrator) in (versions or {}).items():
        if version is None:
            break
        mine = version == name
        thresholds[mine] = own_threshold
        probabilities[mine] = _calibrated(scores[mine], own_calibrator)
    predicted = scores >= thresholds
    starts, ends, codes = _assign_windows(timestamps, window)

    def table(rows: np.ndarray, groups: int) -> pd.DataFrame:
        predictions = np.bincount(rows, minlength=groups)
        counts = pd.DataFrame(
            {
                "predictions": predictions,
                "expected_positive_rate": _ratio(
                    np.bincount(rows, weights=probabilities, minlength=groups), predictions
                ),
            }
        )
        metrics = _metrics(rows, groups, scores, probabilities, predicted)
        return pd.concat([counts, metrics], axis=1)

    report = _report("estimated", threshold, starts, ends, codes, table)
    report.calibrated = calibrator is not None
    report.by_version = _by_version(frame, table)
    return report


def estimation_error(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    calibrator: Calibrator | None = None,
) -> dict[str, Any]:
    """How far CBPE is from the truth on the rows that already have labels.

    Returns `labelled` (rows used), `estimated` and `realized` METRICS on those rows, `error`
    (estimated − realized per metric) and `ece` (expected calibration error of the scores). A gap
    here, on old rows, means the calibration assumption does not hold for this model and window.
    """
    # Imported here: training.evaluate pulls in sklearn and matplotlib (~1.7 s), which nothing
    # else in this module, or the quality check that imports it, needs.
    from training.evaluate import expected_calibration_error

    _require(frame, [schema.score])
    labels = _labels(frame, schema)
    done = ~np.isnan(labels)
    scores, y = _check_scores(frame[schema.score].to_numpy(dtype=np.float64))[done], labels[done]
    probabilities = _calibrated(scores, calibrator)
    rows = np.zeros(y.size, dtype=np.intp)
    predicted = scores >= threshold
    estimated = _metrics(rows, 1, scores, probabilities, predicted).iloc[0]
    realized = _metrics(rows, 1, scores, y, predicted).iloc[0]
    return {
        "labelled": int(y.size),
        "estimated": {m: _json_value(estimated[m]) for m in METRICS},
        "realized": {m: _json_value(realized[m]) for m in METRICS},
        "error": {m: _json_value(estimated[m] - realized[m]) for m in METRICS},
        "ece": float(expected_calibration_error(y.astype(int), probabilities)) if y.size else None,
    }


def _calibrated(scores: np.ndarray, calibrator: Calibrator | None) -> np.ndarray:
    """The probability that each row is positive: the calibrated score, or the raw one."""
    return scores.copy() if calibrator is None else np.asarray(calibrator(scores), dtype=float)


def _answered(
    frame: pd.DataFrame, schema: FeatureSchema, scores: np.ndarray, threshold: float
) -> np.ndarray:
    """Whether the API answered class 1 for each row: the logged class where the frame has it."""
    if schema.prediction in frame.columns:
        answered = pd.to_numeric(frame[schema.prediction], errors="coerce").to_numpy(dtype=float)
        if not np.isnan(answered).any():
            return answered == 1.0
    return scores >= threshold


def _versions(frame: pd.DataFrame) -> np.ndarray | None:
    if MODEL_VERSION_COLUMN not in frame.columns:
        return None
    return frame[MODEL_VERSION_COLUMN].astype(str).to_numpy()


def _by_version(
    frame: pd.DataFrame, table: Callable[[np.ndarray, int], pd.DataFrame]
) -> dict[str, dict[str, Any]]:
    """The overall figures per model version: `table` over the rows grouped by version."""
    version = _versions(frame)
    if version is None or version.size == 0:
        return {}
    names, codes = np.unique(version, return_inverse=True)
    per_version = table(codes.astype(np.intp), len(names)).to_dict("records")
    return {
        str(name): {key: _json_value(value) for key, value in row.items()}
        for name, row in zip(names, per_version, strict=True)
    }


def _metrics(
    rows: np.ndarray,
    groups: int,
    scores: np.ndarray,
    positive: np.ndarray,
    predicted: np.ndarray,
    *,
    with_confusion: bool = False,
) -> pd.DataFrame:
    """METRICS per group, with each row counting as a positive of weight `positive` and a negative
    of weight 1 - `positive`: the label for realized metrics, the score itself for CBPE.
    `predicted` is the answered class of each row (True: class 1)."""
    negative = 1.0 - positive

    def total(weights: np.ndarray) -> np.ndarray:
        return np.bincount(rows, weights=weights, minlength=groups)

    tp, fp = total(np.where(predicted, positive, 0.0)), total(np.where(predicted, negative, 0.0))
    fn, tn = total(np.where(predicted, 0.0, positive)), total(np.where(predicted, 0.0, negative))
    table = pd.DataFrame(
        {
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "roc_auc": _weighted_auc(rows, groups, scores, positive, negative),
        }
    )
    if with_confusion:
        table = table.assign(tp=tp, fp=fp, fn=fn, tn=tn)
    return table


def _weighted_auc(
    rows: np.ndarray, groups: int, scores: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """Per group, P(score of a positive > score of a negative) + ½ P(equal), rows weighted.

    This is the Mann-Whitney form of ROC AUC, what `sklearn.metrics.roc_auc_score` gives with
    `sample_weight`, computed for every group in one sort instead of one call per window.
    """
    order = np.lexsort((scores, rows))
    rows, scores = rows[order], scores[order]
    positive, negative = positive[order], negative[order]
    # One entry per distinct (group, score): tied rows share their positive and negative weight.
    new_tie = (np.diff(rows, prepend=-1) != 0) | (np.diff(scores, prepend=np.nan) != 0)
    tie = np.cumsum(new_tie) - 1
    tie_positive = np.bincount(tie, weights=positive)
    tie_negative = np.bincount(tie, weights=negative)
    tie_group = rows[new_tie]
    # Negative weight at strictly lower scores in the same group.
    before = np.cumsum(tie_negative) - tie_negative
    first_of_group = np.diff(tie_group, prepend=-1) != 0
    group_first = np.maximum.accumulate(np.where(first_of_group, np.arange(tie_group.size), 0))
    below = before - before[group_first]
    wins = np.bincount(
        tie_group, weights=tie_positive * (below + 0.5 * tie_negative), minlength=groups
    )
    pairs = np.bincount(rows, weights=positive, minlength=groups) * np.bincount(
        rows, weights=negative, minlength=groups
    )
    return _ratio(wins, pairs)


def _assign_windows(
    timestamps: pd.Series, window: Window
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex, np.ndarray]:
    """Window starts and ends, and each row's window number (-1: in no window)."""
    if isinstance(window, str | timedelta | BaseOffset):
        offset = to_offset(window)
        present = pd.DatetimeIndex(timestamps.dropna())
        if present.empty:
            starts = pd.DatetimeIndex([], tz="UTC")
        else:
            # resample's alignment (hours on the hour, days at midnight), empty windows included.
            starts = pd.Series(0, index=present).resample(offset).size().index
        ends = starts + offset
    else:
        edges = pd.DatetimeIndex(pd.to_datetime(list(window), utc=True))
        if len(edges) < 2 or not (edges[1:] > edges[:-1]).all():
            raise ValueError("explicit window edges must be at least two increasing times")
        starts, ends = edges[:-1], edges[1:]
    nanos = pd.DatetimeIndex(timestamps).as_unit("ns").asi8
    codes = np.searchsorted(starts.as_unit("ns").asi8, nanos, side="right") - 1
    inside = (codes >= 0) & timestamps.notna().to_numpy()
    inside[inside] &= nanos[inside] < ends.as_unit("ns").asi8[codes[inside]]
    return starts, ends, np.where(inside, codes, -1)


def _report(
    kind: str,
    threshold: float,
    starts: pd.DatetimeIndex,
    ends: pd.DatetimeIndex,
    codes: np.ndarray,
    table: Callable[[np.ndarray, int], pd.DataFrame],
) -> PerformanceReport:
    """Assemble the report from `table(row_groups, group_count)`, computed per window and once
    over every row."""
    # Rows in no window go to one extra group, dropped afterwards, so no window counts them.
    extra = len(starts)
    per_window = table(np.where(codes >= 0, codes, extra), extra + 1).iloc[:extra]
    windows = pd.concat(
        [pd.DataFrame({"window_start": starts, "window_end": ends}), per_window], axis=1
    )
    everything = table(np.zeros(codes.size, dtype=np.intp), 1).to_dict("records")[0]
    overall = {key: _json_value(value) for key, value in everything.items()}
    return PerformanceReport(kind=kind, threshold=threshold, windows=windows, overall=overall)


def _inputs(frame: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.Series, np.ndarray]:
    """The prediction times (UTC) and the scores, checked."""
    timestamp = schema.timestamp or DEFAULT_TIMESTAMP_COLUMN
    _require(frame, [timestamp, schema.score])
    timestamps = pd.to_datetime(frame[timestamp], utc=True).reset_index(drop=True)
    return timestamps, _check_scores(frame[schema.score].to_numpy(dtype=np.float64))


def _labels(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """The target as 0.0 / 1.0, NaN where no label has arrived."""
    _require(frame, [schema.target])
    labels = pd.to_numeric(frame[schema.target], errors="coerce").to_numpy(dtype=np.float64)
    given = labels[~np.isnan(labels)]
    if not np.isin(given, (0.0, 1.0)).all():
        found = sorted(set(given.tolist()) - {0.0, 1.0})[:5]
        raise ValueError(f"target {schema.target!r} must hold 0/1 labels, found {found}")
    return labels


def _require(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"performance needs column(s) {', '.join(missing)} in the frame")


def _check_scores(scores: np.ndarray) -> np.ndarray:
    bad = ~((scores >= 0.0) & (scores <= 1.0))  # also catches NaN
    if bad.any():
        raise ValueError(
            f"scores must be probabilities in [0, 1]; {int(bad.sum())} are not, "
            f"e.g. {scores[bad][:3].tolist()}"
        )
    return scores


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.nan)


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value
