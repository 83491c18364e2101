"""The drift check's statistics: PSI, chi-square on aligned counts, the running state of one
numerical or categorical column against its reference (KS, PSI, the Wasserstein distance,
counted chunk by chunk), and the judgement of a family of results (correction, effect-size
floors, severity). `monitoring.drift_report` explains the method.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from data.profile import MISSING_KEY, NumericalProfile
from monitoring.drift_results import (
    Distribution,
    DriftThresholds,
    FeatureDrift,
)

PSI_EPSILON = 1e-4
# scipy's ks_2samp(method="auto") is exact when neither sample is larger than this.
EXACT_KS_MAX_N = 10_000
# Positions of the deciles in the profile's 101 quantiles (levels 0.00, 0.01, ..., 1.00).
_DECILE_POSITIONS = slice(10, 100, 10)
_WARNINGS_LOCK = threading.Lock()


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    cur = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi2(reference: dict[str, int], current: dict[str, int]) -> tuple[float, float, list[str]]:
    """chi2_contingency on the 2 × K table over the union of keys; also the keys used."""
    keys = [k for k in dict.fromkeys([*reference, *current]) if reference.get(k) or current.get(k)]
    table = np.array([[reference.get(k, 0) for k in keys], [current.get(k, 0) for k in keys]])
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue), keys


class NumericalState:
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
            _, missing_p, _ = chi2(
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


class CategoricalState:
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
        statistic, p_value, keys = chi2(self.reference, self.current)
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


def class_counts(values: pd.Series) -> dict[str, int]:
    """Predicted classes counted with the same keys as `ReferenceProfile.prediction_counts`."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers.dropna()
    result = {str(k): int(v) for k, v in present.astype(np.int64).value_counts().items()}
    if len(present) < len(numbers):
        result[MISSING_KEY] = len(numbers) - len(present)
    return result


def judge_family(parts: list[FeatureDrift], thresholds: DriftThresholds) -> None:
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
