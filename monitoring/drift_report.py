"""Drift report: has the live window moved away from the data the model was trained on?

Compares a current window (a DataFrame typed as `data.ingest.coerce_frame` returns it, optionally
with the `prediction` and `score` columns of the prediction log) with a reference: the
`ReferenceProfile` stored with the model version, or a DataFrame, which is profiled here with
every value kept so that the numbers are exact.

Per feature:

- numerical: two-sided Kolmogorov-Smirnov on the present values. `statistic` and `p_value` are
  those of `scipy.stats.ks_2samp(reference_sample, current)` with scipy's defaults (exact up to
  10,000 values a side, asymptotic above). Missing values are never dropped silently: both shares
  are reported, they have a PSI bin of their own, and when either side has any, a chi-square
  test of missing vs present (`missing_p_value`) joins the KS test within the feature
  (Bonferroni: `decision_p_value` = min(1, 2 × the smaller p-value)).
- categorical and boolean: `scipy.stats.chi2_contingency` (defaults, so Yates' correction when
  there are only two categories) on the 2 × K table of reference vs current counts, categories
  aligned over the union: a category never seen in the reference counts, missing is a category,
  and only a category absent from both sides is dropped.
- PSI for both: numerical bins are the reference deciles with open outer ends (values outside
  the reference range count) plus a missing bin; categorical bins are the aligned categories.
  Empty bins get PSI_EPSILON before the log.
- `wasserstein` for numerical columns: `scipy.stats.wasserstein_distance(reference_sample,
  current)` over the finite values, divided by the reference's standard deviation: how far, in
  reference standard deviations, the values moved on average. PSI is blind to two changes this
  sees: a value far outside the reference lands in the same open outer bin as one just outside
  (10% of the values 10-20 std out is a PSI of 0.07), and a wider spread hardly moves the
  deciles (1.2 times the spread is a PSI of 0.08). `wasserstein_threshold` is the distance
  that counts as an effect for this feature: WASSERSTEIN_WARNING, or WASSERSTEIN_NOISE_MULTIPLE
  times 1 / sqrt(n_ref · n_cur / (n_ref + n_cur)) when that is larger, since two small samples
  of one distribution already lie about that far apart. Counted chunk by chunk, it is scipy's
  value except where the two ECDFs cross between two reference points, where it can fall short
  by at most the gap's width times the current share in it.

Direction: a larger statistic, PSI or Wasserstein distance and a smaller p-value mean more
drift. A feature is `drifted` when its p-value, corrected over all features (DRIFT_CORRECTION:
Benjamini-Hochberg by default, or Bonferroni), is below the significance level (KS_P_THRESHOLD or
CHI2_P_THRESHOLD, default 0.05) AND an effect size passes its floor: PSI at least PSI_WARNING
(default 0.1), or (numerical) the Wasserstein distance at least its `wasserstein_threshold`
(default 0.1 std). The floors keep a million-row window from flagging shifts nobody cares about
(0.02 std is a Wasserstein distance of 0.02). Severity is "critical" for a drifted feature with
PSI >= PSI_CRITICAL (default 0.2) or a Wasserstein distance >= WASSERSTEIN_CRITICAL (0.5 std),
"warning" for the other drifted ones, else "none". docs/drift-detection.md has the false-alarm
and detection rates behind these numbers. The dataset drifted when the share of drifted
features reaches DRIFT_SHARE_THRESHOLD (default 0.3). Prediction drift (predicted class by
chi-square, score by KS, both with PSI, corrected over those two tests) needs the model's
outputs on both sides and otherwise says why it is not available. Concept drift (the same
inputs now come with other labels) cannot show up in input drift; performance monitoring on
labelled feedback catches it.

Windows larger than memory: `DriftAccumulator.update` takes the window chunk by chunk and keeps
only counts. Between two consecutive reference sample points the reference ECDF is constant and
the current ECDF is monotone, so sup|F_ref - F_cur| is reached at a reference point or just left
of one: the counts of current values `<` and `<=` each distinct reference value give the exact KS
statistic, in memory proportional to the reference sample whatever the window size. The sums of
the current values below each point give the Wasserstein distance the same way.

    python -m monitoring.drift_report --schema schemas/fraud.yaml \\
        --reference reference.parquet --current window.parquet --json drift.json --html drift.html

The reference may also be a reference profile saved as JSON (`ReferenceProfile.save`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow.parquet
from scipy import stats

from data.ingest import DataError, load_frame
from data.profile import (
    MISSING_KEY,
    NumericalProfile,
    ReferenceProfile,
    build_reference_profile,
    category_counts,
)
from data.schema import Feature, FeatureSchema, SchemaError, load_schema
from data.settings import Settings, exit_on_config_error, get_settings
from monitoring.html_report import write_html

SEVERITIES = ("critical", "warning", "none")
CORRECTIONS = ("benjamini_hochberg", "bonferroni")
PSI_EPSILON = 1e-4
# The effect size beside PSI for numerical columns: the Wasserstein distance in reference
# standard deviations. PSI's open outer bins count a value far outside the reference no more
# than one just outside, and deciles hardly move when only the spread changes; this distance
# weighs every value by how far it moved. A significant feature is drifted from
# WASSERSTEIN_WARNING and critical from WASSERSTEIN_CRITICAL (measured in docs/drift-detection.md).
WASSERSTEIN_WARNING = 0.1
WASSERSTEIN_CRITICAL = 0.5
# Two samples of one distribution are a Wasserstein distance of about 1 / sqrt(effective sample
# size) apart by chance; below this many times that, the distance is not taken as an effect
# (so 500 rows against 500 stay as quiet as with PSI alone).
WASSERSTEIN_NOISE_MULTIPLE = 5.0
# scipy's ks_2samp(method="auto") is exact when neither sample is larger than this.
EXACT_KS_MAX_N = 10_000
# Positions of the deciles in the profile's 101 quantiles (levels 0.00, 0.01, ..., 1.00).
_DECILE_POSITIONS = slice(10, 100, 10)
_WARNINGS_LOCK = threading.Lock()
# Below this many rows, starting threads costs more than the columns take.
_PARALLEL_MIN_ROWS = 20_000


class DriftError(ValueError):
    """Input the drift check cannot use; the message says which column or argument and why."""


@dataclass(frozen=True)
class DriftThresholds:
    """The decision rules, named as in `Settings` (lower case)."""

    ks_p_threshold: float = 0.05
    chi2_p_threshold: float = 0.05
    psi_warning: float = 0.1
    psi_critical: float = 0.2
    correction: str = "benjamini_hochberg"
    drift_share_threshold: float = 0.3
    # The numerical effect size beside PSI, see the module docstring.
    wasserstein_warning: float = WASSERSTEIN_WARNING
    wasserstein_critical: float = WASSERSTEIN_CRITICAL
    wasserstein_noise_multiple: float = WASSERSTEIN_NOISE_MULTIPLE

    def __post_init__(self) -> None:
        for name in ("ks_p_threshold", "chi2_p_threshold"):
            if not 0 < getattr(self, name) < 1:
                raise DriftError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for kind in ("psi", "wasserstein"):
            warning, critical = getattr(self, f"{kind}_warning"), getattr(self, f"{kind}_critical")
            if not 0 < warning < critical:
                raise DriftError(
                    f"need 0 < {kind}_warning < {kind}_critical, got {warning} and {critical}"
                )
        if not self.wasserstein_noise_multiple >= 0:
            raise DriftError(
                "wasserstein_noise_multiple must be at least 0, got "
                f"{self.wasserstein_noise_multiple}"
            )
        if self.correction not in CORRECTIONS:
            raise DriftError(
                f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}"
            )
        if not 0 < self.drift_share_threshold <= 1:
            raise DriftError(
                f"drift_share_threshold must be in (0, 1], got {self.drift_share_threshold}"
            )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DriftThresholds:
        settings = settings or get_settings()
        return cls(
            ks_p_threshold=settings.KS_P_THRESHOLD,
            chi2_p_threshold=settings.CHI2_P_THRESHOLD,
            psi_warning=settings.PSI_WARNING,
            psi_critical=settings.PSI_CRITICAL,
            correction=settings.DRIFT_CORRECTION,
            drift_share_threshold=settings.DRIFT_SHARE_THRESHOLD,
            wasserstein_warning=settings.WASSERSTEIN_WARNING,
            wasserstein_critical=settings.WASSERSTEIN_CRITICAL,
            wasserstein_noise_multiple=settings.WASSERSTEIN_NOISE_MULTIPLE,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks_p_threshold": self.ks_p_threshold,
            "chi2_p_threshold": self.chi2_p_threshold,
            "psi_warning": self.psi_warning,
            "psi_critical": self.psi_critical,
            "correction": self.correction,
            "drift_share_threshold": self.drift_share_threshold,
            "wasserstein_warning": self.wasserstein_warning,
            "wasserstein_critical": self.wasserstein_critical,
            "wasserstein_noise_multiple": self.wasserstein_noise_multiple,
        }


@dataclass
class Distribution:
    """Reference and current shares per bin or category, for PSI and for the charts."""

    kind: str  # "bins" (numerical) or "categories"
    labels: list[str]  # what a person reads: "(12.5, 20]", "online", "(missing)"
    reference: list[float]
    current: list[float]
    edges: list[float] | None = None  # inner bin edges (numerical)
    new: list[str] = field(default_factory=list)  # categories the reference never had

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "kind": self.kind,
            "labels": self.labels,
            "reference": self.reference,
            "current": self.current,
        }
        if self.edges is not None:
            result["edges"] = self.edges
        if self.kind == "categories":
            result["new"] = self.new
        return result


@dataclass
class FeatureDrift:
    """One comparison: a feature, or one of the model's outputs."""

    name: str
    type: str  # numerical | categorical | boolean
    test: str  # ks | chi2
    statistic: float | None
    p_value: float | None
    psi: float
    distribution: Distribution
    rows_reference: int
    rows_current: int
    missing_share_reference: float
    missing_share_current: float
    missing_p_value: float | None = None
    # Numerical only: the Wasserstein distance in reference standard deviations, and the scale
    # of its sampling noise (1 / sqrt of the effective sample size).
    wasserstein: float | None = None
    wasserstein_noise: float | None = None
    mean_reference: float | None = None
    mean_current: float | None = None
    std_reference: float | None = None
    std_current: float | None = None
    # Set when the whole family is judged together (see `_judge`).
    decision_p_value: float | None = None
    p_value_corrected: float | None = None
    wasserstein_threshold: float | None = None
    drifted: bool = False
    severity: str = "none"

    def to_dict(self) -> dict[str, Any]:
        result = {
            "type": self.type,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "decision_p_value": self.decision_p_value,
            "p_value_corrected": self.p_value_corrected,
            "psi": self.psi,
            "severity": self.severity,
            "drifted": self.drifted,
            "missing_share_reference": self.missing_share_reference,
            "missing_share_current": self.missing_share_current,
            "missing_p_value": self.missing_p_value,
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
        }
        if self.type == "numerical":
            result |= {
                "wasserstein": self.wasserstein,
                "wasserstein_threshold": self.wasserstein_threshold,
                "mean_reference": self.mean_reference,
                "mean_current": self.mean_current,
                "std_reference": self.std_reference,
                "std_current": self.std_current,
            }
        result["distribution"] = self.distribution.to_dict()
        return _json_ready(result)


@dataclass
class PredictionDrift:
    """Drift of the model's outputs: predicted class (chi-square) and score (KS)."""

    available: bool
    reason: str | None = None
    predicted_class: FeatureDrift | None = None
    score: FeatureDrift | None = None

    @property
    def drifted(self) -> bool:
        return self.available and any(p.drifted for p in (self.predicted_class, self.score) if p)

    def to_dict(self) -> dict[str, Any]:
        if not self.available or self.predicted_class is None or self.score is None:
            return {"available": False, "reason": self.reason, "drifted": False}
        score = self.score.to_dict()
        score.pop("type")
        return self.predicted_class.to_dict() | {
            "available": True,
            "class_drifted": self.predicted_class.drifted,
            "drifted": self.drifted,
            "score": score,
        }


@dataclass
class DriftReport:
    """The result of one drift check; `to_dict` is the JSON contract in ARCHITECTURE.md."""

    schema_name: str
    features: dict[str, FeatureDrift]
    prediction: PredictionDrift
    thresholds: DriftThresholds
    rows_reference: int
    rows_current: int
    window_start: str | None = None
    window_end: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def ranked_features(self) -> list[FeatureDrift]:
        """Features by severity, then drifted first, then PSI (largest first), then name."""
        return sorted(
            self.features.values(),
            key=lambda f: (SEVERITIES.index(f.severity), not f.drifted, -f.psi, f.name),
        )

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.ranked_features() if f.drifted]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted_features) / len(self.features)

    @property
    def dataset_drift(self) -> bool:
        return self.drifted_share >= self.thresholds.drift_share_threshold

    @property
    def counts_by_severity(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for feature in self.features.values():
            counts[feature.severity] += 1
        return counts

    @property
    def summary(self) -> str:
        drifted = self.drifted_features
        critical = self.counts_by_severity["critical"]
        text = f"{len(drifted)} of {len(self.features)} features drifted"
        if critical:
            text += f" ({critical} critical)"
        if drifted:
            text += ": " + ", ".join(f"{f.name} ({f.severity}, {_effect(f)})" for f in drifted)
        text += (
            f". Dataset drift: {'yes' if self.dataset_drift else 'no'} "
            f"(drifted share {self.drifted_share:.0%}, threshold "
            f"{self.thresholds.drift_share_threshold:.0%})."
        )
        prediction = self.prediction
        if not prediction.available:
            text += f" Prediction drift: not available ({prediction.reason})."
        elif prediction.drifted:
            parts = [p for p in (prediction.predicted_class, prediction.score) if p and p.drifted]
            text += (
                " Prediction drift: yes ("
                + ", ".join(f"{p.name}, {_effect(p)}" for p in parts)
                + ")."
            )
        else:
            text += " Prediction drift: no."
        return text

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(
            {
                "schema": self.schema_name,
                "created_at": self.created_at,
                "window": {"start": self.window_start, "end": self.window_end},
                "features": {name: f.to_dict() for name, f in self.features.items()},
                "ranked_features": [f.name for f in self.ranked_features()],
                "prediction": self.prediction.to_dict(),
                "prediction_drift": self.prediction.drifted,
                "drifted_share": self.drifted_share,
                "dataset_drift": self.dataset_drift,
                "counts_by_severity": self.counts_by_severity,
                "summary": self.summary,
                "rows_reference": self.rows_reference,
                "rows_current": self.rows_current,
                "correction": self.thresholds.correction,
                "thresholds": self.thresholds.to_dict(),
            }
        )


def _effect(part: FeatureDrift) -> str:
    """The effect sizes a person reads in the summary: PSI, and the Wasserstein distance."""
    if part.wasserstein is None:
        return f"PSI {part.psi:.2f}"
    return f"PSI {part.psi:.2f}, Wasserstein {part.wasserstein:.2f} std"


def _json_ready(value: Any) -> Any:
    """Plain Python values only; NaN and infinities become None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    cur = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _chi2(reference: dict[str, int], current: dict[str, int]) -> tuple[float, float, list[str]]:
    """chi2_contingency on the 2 × K table over the union of keys; also the keys used."""
    keys = [k for k in dict.fromkeys([*reference, *current]) if reference.get(k) or current.get(k)]
    table = np.array([[reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys]])
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue), keys


class _NumericalState:
    """Running counts for one numerical column against its reference profile."""

    def __init__(self, profile: NumericalProfile) -> None:
        self.profile = profile
        self.sample = np.asarray(profile.sample, dtype=np.float64)  # the profile keeps it sorted
        # Distinct reference values ("points") and where each starts in the sample; with no
        # ties (the usual case for continuous data) both are implied and nothing is copied.
        starts = np.flatnonzero(self.sample[1:] != self.sample[:-1]) + 1
        self.starts = None if starts.size + 1 >= self.sample.size else np.r_[0, starts]
        self.points = self.sample if self.starts is None else self.sample[self.starts]
        quantiles = np.asarray(profile.quantiles, dtype=np.float64)
        deciles = quantiles[_DECILE_POSITIONS] if quantiles.size == 101 else quantiles[:0]
        self.edges = np.unique(deciles[np.isfinite(deciles)])
        # Current values `<` each point, and `==` it (np.zeros pages stay untouched, so costing
        # no memory, until a tie is actually counted).
        self.cur_lt = np.zeros(self.points.size, dtype=np.int64)
        self.cur_eq = np.zeros(self.points.size, dtype=np.int64)
        self.cur_bin_le = np.zeros(self.edges.size, dtype=np.int64)
        # For the Wasserstein distance: the sum of the finite current values below each point
        # (measured from the reference median, so the sums stay at the data's scale), their
        # total, and how many current values are -inf (counted in cur_lt, not in the distance).
        self.center = float(np.median(self.sample)) if self.sample.size else 0.0
        self.cur_sum_lt = np.zeros(self.points.size)
        self.cur_sum = 0.0
        self.negative_infinite = 0
        self.rows = 0
        self.present = 0
        self.finite = 0
        self.mean = 0.0
        self.m2 = 0.0
        # Kept only while scipy would use its exact mode, so the p-value is scipy's own.
        self.exact_buffer: list[np.ndarray] | None = (
            [] if self.sample.size <= EXACT_KS_MAX_N else None
        )

    def update(self, values: np.ndarray) -> None:
        missing = np.isnan(values)
        present = np.sort(values[~missing] if missing.any() else values)
        self.rows += values.size
        if not present.size:
            return
        lt = np.searchsorted(present, self.points, side="left")
        self.cur_lt += lt
        # ±inf, kept by ingest for the quality checks, sit at the ends of the sorted chunk; the
        # mean, the spread and the Wasserstein distance are those of the finite values.
        low = int(np.searchsorted(present, -np.inf, "right"))
        finite = present[low : np.searchsorted(present, np.inf, "left")]
        self.negative_infinite += low
        if finite.size:
            sums = np.concatenate(([0.0], np.cumsum(finite - self.center)))
            self.cur_sum_lt += sums[np.clip(lt - low, 0, finite.size)]
            self.cur_sum += sums[-1]
        # A current value equal to a point sits at position `lt`; count those ties with a
        # second search over the tied points only, instead of a second full search.
        np.minimum(lt, present.size - 1, out=lt)
        tied = np.flatnonzero(present[lt] == self.points)
        if tied.size:
            ends = np.searchsorted(present, self.points[tied], side="right")
            self.cur_eq[tied] += ends - lt[tied]
        self.cur_bin_le += np.searchsorted(present, self.edges, side="right")
        self.present += present.size
        # Mean and spread merged chunk by chunk (Chan et al.).
        if finite.size:
            n, chunk_mean = finite.size, float(finite.mean())
            chunk_m2 = float(finite.var()) * n
            total = self.finite + n
            delta = chunk_mean - self.mean
            self.mean += delta * n / total
            self.m2 += chunk_m2 + delta**2 * self.finite * n / total
            self.finite = total
        if self.exact_buffer is not None:
            self.exact_buffer.append(present)
            if self.present > EXACT_KS_MAX_N:
                self.exact_buffer = None

    def ks(self) -> tuple[float | None, float | None]:
        n1, n2 = self.sample.size, self.present
        if n1 == 0 or n2 == 0:
            return None, None
        if self.exact_buffer is not None:
            # When the exact computation overflows (large samples far apart) scipy warns and
            # switches to its asymptotic formula; that p-value is the one we report, so the
            # warning would only alarm whoever reads the logs. The warnings filters are
            # process-wide, hence the lock around changing them.
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
                result = stats.ks_2samp(self.sample, np.concatenate(self.exact_buffer))
            return float(result.statistic), float(result.pvalue)
        # ks_2samp evaluates count/n1 - count/n2 at every pooled value; the same arithmetic on
        # the same counts at the points (and just left of them) gives bit-identical floats.
        ref_lt = np.arange(n1) if self.starts is None else self.starts
        statistic = 0.0
        for ref_count, cur_count in (
            (ref_lt, self.cur_lt),
            (np.append(ref_lt[1:], n1), self.cur_lt + self.cur_eq),
        ):
            diff = ref_count / n1
            diff -= cur_count / n2
            statistic = max(statistic, float(np.abs(diff, out=diff).max()))
        m, n = sorted([float(n1), float(n2)], reverse=True)
        p_value = float(np.clip(stats.kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1))
        return statistic, p_value

    def wasserstein(self) -> tuple[float | None, float | None]:
        """The Wasserstein distance between the reference sample and the finite current values,
        divided by the reference's standard deviation; and 1 / sqrt(effective sample size), the
        scale of that distance's sampling noise between two samples of these sizes.

        W = ∫|F_ref - F_cur| dx. Between two consecutive points F_ref is constant, and the
        counts and sums of current values below each point give ∫F_cur over the gap exactly,
        so each gap adds |∫(F_ref - F_cur)|. That is exact unless F_cur crosses F_ref inside
        the gap, where it can fall short by at most the gap's width times the current share
        in it; beyond the outer points F_ref is 0 or 1 and the sums give the exact area, so
        values far outside the reference weigh by how far out they land.
        """
        n1, n2, scale = self.sample.size, self.finite, self.profile.std
        if not n1 or not n2 or not scale or not np.isfinite(self.points[[0, -1]]).all():
            return None, None
        points = self.points - self.center
        below = self.cur_lt - self.negative_infinite  # finite current values < each point
        sums = self.cur_sum_lt
        ref_le = np.arange(1, n1 + 1) if self.starts is None else np.append(self.starts[1:], n1)
        gaps = np.diff(points)
        # n2 × ∫F_cur over each gap: values below its left end span all of it, values inside
        # it span from where they are to its right end.
        inside = below[:-1] * gaps + np.diff(below) * points[1:] - np.diff(sums)
        area = (
            below[0] * points[0]
            - sums[0]  # left of the first point, where F_ref = 0
            + (self.cur_sum - sums[-1])
            - (n2 - below[-1]) * points[-1]  # right of the last one, where F_ref = 1
            + np.abs(ref_le[:-1] * (n2 / n1) * gaps - inside).sum()
        )
        return float(area / n2 / scale), 1 / math.sqrt(n1 * n2 / (n1 + n2))

    def result(self, name: str, ftype: str) -> FeatureDrift:
        profile = self.profile
        statistic, p_value = self.ks()
        wasserstein, wasserstein_noise = self.wasserstein()
        cur_missing = self.rows - self.present
        ref_missing_share = profile.missing / profile.count
        cur_missing_share = cur_missing / self.rows

        ref_le = np.searchsorted(self.sample, self.edges, side="right")
        ref_bins = np.diff(np.concatenate([[0], ref_le, [self.sample.size]]))
        ref_shares = (
            ref_bins / self.sample.size * (1 - ref_missing_share)
            if self.sample.size
            else np.zeros(ref_bins.size)
        )
        cur_bins = np.diff(np.concatenate([[0], self.cur_bin_le, [self.present]]))
        reference = np.append(ref_shares, ref_missing_share)
        current = np.append(cur_bins / self.rows, cur_missing_share)

        missing_p = None
        if profile.missing or cur_missing:
            ref_present = profile.count - profile.missing
            _, missing_p, _ = _chi2(
                {"missing": profile.missing, "present": ref_present},
                {"missing": cur_missing, "present": self.present},
            )
        return FeatureDrift(
            name=name,
            type=ftype,
            test="ks",
            statistic=statistic,
            p_value=p_value,
            psi=psi(reference, current),
            wasserstein=wasserstein,
            wasserstein_noise=wasserstein_noise,
            distribution=Distribution(
                kind="bins",
                labels=[*_bin_labels(self.edges), "(missing)"],
                reference=reference.tolist(),
                current=current.tolist(),
                edges=self.edges.tolist(),
            ),
            rows_reference=profile.count,
            rows_current=self.rows,
            missing_share_reference=ref_missing_share,
            missing_share_current=cur_missing_share,
            missing_p_value=missing_p,
            mean_reference=profile.mean,
            std_reference=profile.std,
            mean_current=self.mean if self.finite else None,
            std_current=math.sqrt(self.m2 / self.finite) if self.finite else None,
        )


def _bin_labels(edges: np.ndarray) -> list[str]:
    if edges.size == 0:
        return ["all values"]
    text = [f"{e:.4g}" for e in edges]
    middle = [f"({low}, {high}]" for low, high in itertools.pairwise(text)]
    return [f"≤ {text[0]}", *middle, f"> {text[-1]}"]


class _CategoricalState:
    """Running counts for one categorical or boolean column (or the predicted class)."""

    def __init__(
        self, reference_counts: dict[str, int], count: Callable[[pd.Series], dict[str, int]]
    ) -> None:
        self.reference = reference_counts
        self.count = count
        self.current: dict[str, int] = {}

    def update(self, values: pd.Series) -> None:
        for key, n in self.count(values).items():
            self.current[key] = self.current.get(key, 0) + n

    def result(self, name: str, ftype: str) -> FeatureDrift:
        statistic, p_value, keys = _chi2(self.reference, self.current)
        # Reference order (most frequent first), then the categories it never had; missing last.
        keys.sort(
            key=lambda k: (
                k == MISSING_KEY,
                -self.reference.get(k, 0),
                -self.current.get(k, 0),
                k,
            )
        )
        labels = ["(missing)" if k == MISSING_KEY else k for k in keys]
        ref_total = sum(self.reference.values())
        cur_total = sum(self.current.values())
        reference = np.array([self.reference.get(k, 0) / ref_total for k in keys])
        current = np.array([self.current.get(k, 0) / cur_total for k in keys])
        return FeatureDrift(
            name=name,
            type=ftype,
            test="chi2",
            statistic=statistic,
            p_value=p_value,
            psi=psi(reference, current),
            distribution=Distribution(
                kind="categories",
                labels=labels,
                reference=reference.tolist(),
                current=current.tolist(),
                new=[
                    label
                    for k, label in zip(keys, labels, strict=True)
                    if not self.reference.get(k)
                ],
            ),
            rows_reference=ref_total,
            rows_current=cur_total,
            missing_share_reference=self.reference.get(MISSING_KEY, 0) / ref_total,
            missing_share_current=self.current.get(MISSING_KEY, 0) / cur_total,
        )


def _class_counts(values: pd.Series) -> dict[str, int]:
    """Predicted classes counted with the same keys as `ReferenceProfile.prediction_counts`."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers.dropna()
    result = {str(k): int(v) for k, v in present.astype(np.int64).value_counts().items()}
    if len(present) < len(numbers):
        result[MISSING_KEY] = len(numbers) - len(present)
    return result


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
    start: Callable[[], _NumericalState | _CategoricalState]
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
        self._states: list[_NumericalState | _CategoricalState | None] = [None] * len(self._parts)
        self._final: list[FeatureDrift | None] = [None] * len(self._parts)
        self._first_seen: pd.Timestamp | None = None
        self._last_seen: pd.Timestamp | None = None

    def _feature_part(self, feature: Feature) -> _Part:
        name = feature.name
        if feature.is_numerical:
            profile = self.profile.numerical[name]
            return _Part(
                name,
                feature.type,
                lambda: _NumericalState(profile),
                lambda chunk: _numeric_column(chunk, name),
            )
        counts = self.profile.categorical[name].counts
        return _Part(
            name,
            feature.type,
            lambda: _CategoricalState(counts, lambda values: category_counts(values, feature)),
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
        self.rows += len(chunk)
        self._track_window(chunk)

    def _add_output_parts(self) -> None:
        profile = self.profile
        prediction, score = self.schema.prediction, self.schema.score
        self._parts += [
            _Part(
                prediction,
                "categorical",
                lambda: _CategoricalState(profile.prediction_counts, _class_counts),
                lambda chunk: chunk[prediction],
            ),
            _Part(
                score,
                "numerical",
                lambda: _NumericalState(profile.score),
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
        _judge(results[:count], self.thresholds)

        if len(results) > count:
            predicted_class, score = results[count:]
            prediction = PredictionDrift(True, predicted_class=predicted_class, score=score)
            _judge([predicted_class, score], self.thresholds)
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
        return DriftReport(
            schema_name=self.schema.name,
            features=features,
            prediction=prediction,
            thresholds=self.thresholds,
            rows_reference=self.profile.rows,
            rows_current=self.rows,
            window_start=None if start is None else start.isoformat(),
            window_end=None if end is None else end.isoformat(),
        )


def _no_outputs(data: str, missing: list[str]) -> str:
    """Which output columns `data` lacks, and which schema keys name them."""
    columns = " and ".join(repr(c) for c in missing) + " column" + "s" * (len(missing) > 1)
    return (
        f"{data} has no {columns}: the model's predicted class and score, named by the "
        "schema's `prediction` and `score` keys"
    )


def _judge(parts: list[FeatureDrift], thresholds: DriftThresholds) -> None:
    """Correct the p-values over the family, then decide drifted and severity for each part."""
    for part in parts:
        p_values = [p for p in (part.p_value, part.missing_p_value) if p is not None]
        part.decision_p_value = min(1.0, len(p_values) * min(p_values)) if p_values else None
    tested = [part for part in parts if part.decision_p_value is not None]
    if tested:
        raw = np.array([part.decision_p_value for part in tested])
        if thresholds.correction == "bonferroni":
            corrected = np.minimum(raw * len(raw), 1.0)
        else:
            corrected = stats.false_discovery_control(raw, method="bh")
        for part, value in zip(tested, corrected, strict=True):
            part.p_value_corrected = float(value)
    for part in parts:
        alpha = thresholds.ks_p_threshold if part.test == "ks" else thresholds.chi2_p_threshold
        moved = False
        if part.wasserstein is not None and part.wasserstein_noise is not None:
            part.wasserstein_threshold = max(
                thresholds.wasserstein_warning,
                thresholds.wasserstein_noise_multiple * part.wasserstein_noise,
            )
            moved = part.wasserstein >= part.wasserstein_threshold
        part.drifted = (
            part.p_value_corrected is not None
            and part.p_value_corrected < alpha
            and (part.psi >= thresholds.psi_warning or moved)
        )
        critical = part.psi >= thresholds.psi_critical or (
            moved and part.wasserstein >= thresholds.wasserstein_critical
        )
        part.severity = ("critical" if critical else "warning") if part.drifted else "none"


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


def load_window(path: str | Path, schema: FeatureSchema) -> pd.DataFrame:
    """Read a CSV or Parquet file typed by the schema, keeping the model's outputs if there (the
    schema's `prediction` and `score` columns).

    `load_frame` keeps only the schema's columns; the model's outputs are read next to them.
    """
    frame = load_frame(path, schema, require_target=False)
    present = _column_names(Path(path))
    outputs = [c for c in (schema.prediction, schema.score) if c in present]
    if outputs:
        if Path(path).suffix.lower() == ".csv":
            extra = pd.read_csv(path, usecols=outputs)
        else:
            extra = pd.read_parquet(path, columns=outputs)
        for column in outputs:
            values = pd.to_numeric(extra[column], errors="coerce")
            bad = extra[column].notna() & values.isna()
            if bad.any():
                raise DataError(f"{path}: column {column!r} must be numeric")
            frame[column] = values.to_numpy(dtype=np.float64)
    return frame


def _column_names(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    return list(pyarrow.parquet.read_schema(path).names)


def _load_reference(path: str, schema: FeatureSchema) -> ReferenceProfile | pd.DataFrame:
    if Path(path).suffix.lower() != ".json":
        return load_window(path, schema)
    try:
        return ReferenceProfile.load(path)
    except (KeyError, TypeError, ValueError) as exc:  # ValueError covers malformed JSON
        raise DriftError(f"{path}: cannot use as a reference profile: {exc}") from None


class _UsageError(ValueError):
    """A command line argparse cannot use."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Reported by `main` in one line, as every other bad input, not as argparse's usage block.
        raise _UsageError(message)


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(description="Compare a current data window with the reference.")
    parser.add_argument("--schema", required=True, help="feature-schema YAML file")
    parser.add_argument(
        "--reference",
        required=True,
        help=".csv or .parquet reference data, or a reference profile saved as .json",
    )
    parser.add_argument("--current", required=True, help=".csv or .parquet current window")
    parser.add_argument("--json", dest="json_out", help="write the report as JSON here")
    parser.add_argument("--html", dest="html_out", help="write the report as an HTML page here")
    try:
        args = parser.parse_args(argv)
        schema = load_schema(args.schema)
        reference = _load_reference(args.reference, schema)
        current = load_window(args.current, schema)
        report = compute_drift_report(reference, current, schema)
        written = []
        if args.json_out:
            path = Path(args.json_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
            written.append(path)
        if args.html_out:
            written.append(write_html(report, args.html_out))
    except (SchemaError, DataError, OSError, ValueError) as exc:
        # SchemaError, DataError and DriftError are ValueErrors with one-line messages.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report.summary)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
