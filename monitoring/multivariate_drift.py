"""Multivariate drift: has the joint distribution of the features moved, even where every
feature's own distribution has not?

The per-feature tests (`monitoring.drift_stats`) look at one column at a time, so two features
whose correlation flips, or a new cluster of rows inside the old ranges, pass all of them. This
check looks at the rows whole, with a domain classifier (a classifier two-sample test):

1. a sample of the window's rows (a uniform reservoir of at most `WINDOW_SAMPLE_ROWS`, drawn
   chunk by chunk by `RowReservoir`) and the reference's joint sample (rows kept whole in the
   reference profile, `ReferenceProfile.joint_sample`, at most `JOINT_SAMPLE_ROWS`), every
   schema feature: numerical as they are (missing stays missing), booleans as 0 / 1,
   categorical as categories (a category the reference never had is one more);
2. each side is split in two at random: a gradient-boosted tree classifier
   (`HistGradientBoostingClassifier`) learns on the first halves
   to tell window rows from reference rows;
3. on the second halves, which it never saw, its ROC AUC is the statistic: 0.5 when it cannot
   tell them apart, more when the joint distribution moved. Under no drift the held-out AUC is
   the Mann-Whitney statistic of two samples of one distribution, whose spread is known for
   any window size: the threshold is calibrated by the held-out split, without hand tuning.
   One correction: the reference is the same sample for every window, so its own chance
   deviation from the population would be found again and again at large windows; the
   p-value sets aside two standard deviations of it (`_REFERENCE_MARGIN`).
   `MULTIVARIATE_P_THRESHOLD` (0.01) is the significance level;
4. drivers: how much the held-out AUC falls when one feature's values are shuffled among the
   held-out rows (permutation importance: the features the classifier needs to tell the two
   apart), and the pairs of numerical / boolean features whose Spearman correlation moved most.

docs/drift-detection.md#multivariate-drift has the measurements behind the choice (against PCA
reconstruction error) and its false-alarm and detection rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from data.profile import ReferenceProfile, feature_numbers
from data.schema import FeatureSchema

# Window rows the check samples: more adds little power and costs time (see the docs page).
WINDOW_SAMPLE_ROWS = 5_000
# A classifier feature of more categories than this folds the rarest into one.
_MAX_CATEGORIES = 250
# Pairs of features listed by how far their correlation moved.
_TOP_PAIRS = 3
_TOP_FEATURES = 3
# The least change of a pair's correlation the summary names.
_CORRELATION_CHANGE = 0.1
# Every window of a version meets the same reference sample, whose own chance deviation from the
# population (an AUC offset of about 1 / sqrt(12 n_ref), the same for all of them) the
# Mann-Whitney null averages over. Set aside this many of those, the false-alarm rate stays at
# most the level for 97.7% of references (3.4% at 3 deviations; measured in the docs page).
_REFERENCE_MARGIN = 2.0
# The gradient-boosted trees: small, one thread (the pass shares the machine).
_CLASSIFIER = {"max_iter": 60, "max_leaf_nodes": 15, "learning_rate": 0.15, "min_samples_leaf": 20}

METHOD = "domain_classifier"


@dataclass
class MultivariateDrift:
    """The multivariate check's result; `available` False says why it could not run."""

    available: bool
    reason: str | None = None
    method: str = METHOD
    auc: float | None = None
    p_value: float | None = None
    p_threshold: float | None = None
    # The held-out AUC that would have reached the p-value threshold (for the reader).
    auc_threshold: float | None = None
    drifted: bool = False
    severity: str = "none"
    rows_reference: int | None = None  # reference rows compared (the joint sample)
    rows_current: int | None = None  # window rows compared (the sample)
    top_features: list[dict[str, Any]] = field(default_factory=list)
    correlation_changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drivers(self) -> list[str]:
        """The features named as driving the change: the classifier's, then the pairs'."""
        names = [f["feature"] for f in self.top_features]
        for pair in self.correlation_changes:
            names += [n for n in pair["features"] if n not in names]
        return names

    @property
    def summary(self) -> str:
        if not self.available:
            return f"Multivariate drift: not available ({self.reason})."
        if not self.drifted:
            return f"Multivariate drift: no (domain classifier AUC {self.auc:.3f})."
        text = f"Multivariate drift: yes ({self.severity}, domain classifier AUC {self.auc:.3f}"
        if self.top_features:
            text += ", driven by " + ", ".join(f["feature"] for f in self.top_features)
        pairs = [p for p in self.correlation_changes if p.get("notable")]
        if pairs:
            text += "; correlation moved: " + ", ".join(
                f"{a} ~ {b} {p['reference']:+.2f} → {p['current']:+.2f}"
                for p in pairs
                for a, b in [p["features"]]
            )
        return text + ")."

    def to_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.reason, "drifted": False}
        return _json_ready(
            {
                "available": True,
                "method": self.method,
                "auc": self.auc,
                "p_value": self.p_value,
                "p_threshold": self.p_threshold,
                "auc_threshold": self.auc_threshold,
                "drifted": self.drifted,
                "severity": self.severity,
                "rows_reference": self.rows_reference,
                "rows_current": self.rows_current,
                "top_features": self.top_features,
                "correlation_changes": self.correlation_changes,
                "drivers": self.drivers,
                "summary": self.summary,
            }
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> MultivariateDrift:
        """Read a saved report's section; a report from before the check has none."""
        if not raw:
            return cls(False, reason="the report was made before the multivariate check existed")
        if not raw.get("available"):
            return cls(False, reason=raw.get("reason"))
        keys = set(cls.__dataclass_fields__) - {"available"}
        return cls(True, **{k: v for k, v in raw.items() if k in keys})


class RowReservoir:
    """A uniform sample of at most `size` rows of a window fed chunk by chunk.

    Each row gets a random key; the rows with the `size` smallest keys are kept, so the sample
    is uniform without replacement over everything added, whatever the chunking, and memory
    stays at `size` rows. The seed makes a re-run window give the same sample.
    """

    def __init__(self, columns: list[str], size: int = WINDOW_SAMPLE_ROWS, seed: int = 0) -> None:
        self.columns = columns
        self.size = size
        self.rows = 0
        self._rng = np.random.default_rng(seed)
        self._kept: pd.DataFrame | None = None
        self._keys = np.empty(0)

    def update(self, chunk: pd.DataFrame) -> None:
        if chunk.empty:
            return
        keys = self._rng.random(len(chunk))
        self.rows += len(chunk)
        if self._kept is not None and len(self._keys) >= self.size:
            # Only rows under the largest kept key can enter: skip the copy of the rest.
            take = keys < self._keys.max()
            if not take.any():
                return
            chunk, keys = chunk.loc[take], keys[take]
        part = chunk[self.columns].reset_index(drop=True)
        if self._kept is None:
            frame, all_keys = part, keys
        else:
            frame = pd.concat([self._kept, part], ignore_index=True)
            all_keys = np.concatenate([self._keys, keys])
        if len(all_keys) > self.size:
            keep = np.argpartition(all_keys, self.size - 1)[: self.size]
            keep.sort()
            frame, all_keys = frame.iloc[keep].reset_index(drop=True), all_keys[keep]
        self._kept, self._keys = frame, all_keys

    @property
    def sample(self) -> pd.DataFrame:
        return self._kept if self._kept is not None else pd.DataFrame(columns=self.columns)


def _encode(
    reference: dict[str, list], current: pd.DataFrame, schema: FeatureSchema
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sides as float matrices over the schema's features; also the categorical mask."""
    ref_cols, cur_cols, categorical = [], [], []
    for feature in schema.features:
        ref_values = reference[feature.name]
        if feature.is_numerical or feature.is_boolean:
            ref_cols.append(np.asarray(ref_values, dtype=np.float64))  # None becomes NaN
            cur_cols.append(feature_numbers(current[feature.name]))
            categorical.append(False)
            continue
        ref_labels = pd.Series(ref_values, dtype="string")
        cur_labels = current[feature.name].astype("string")
        counts = pd.concat([ref_labels, cur_labels]).value_counts()
        codes = {label: i for i, label in enumerate(counts.index[:_MAX_CATEGORIES])}
        other = float(len(codes))
        for labels, out in ((ref_labels, ref_cols), (cur_labels, cur_cols)):
            mapped = labels.map(codes).astype("Float64")
            mapped = mapped.where(labels.isna() | mapped.notna(), other)
            out.append(mapped.to_numpy(dtype=np.float64, na_value=np.nan))
        categorical.append(True)
    return np.column_stack(ref_cols), np.column_stack(cur_cols), np.array(categorical)


def _auc(scores_current: np.ndarray, scores_reference: np.ndarray) -> float:
    ranks = stats.rankdata(np.concatenate([scores_current, scores_reference]))
    n1, n2 = len(scores_current), len(scores_reference)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def _null_sd(rows: int) -> float:
    """One side's share of the held-out AUC's standard deviation under no drift: the
    Mann-Whitney variance (n1 + n2 + 1) / (12 n1 n2) is about 1 / (12 n1) + 1 / (12 n2), one
    term per side (without ties; ties only make it smaller)."""
    return math.sqrt(1 / (12 * rows))


def multivariate_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    schema: FeatureSchema,
    *,
    p_threshold: float,
    auc_critical: float,
    seed: int = 0,
) -> MultivariateDrift:
    """Compare `current` (a sample of the window's rows) with the profile's joint sample."""
    joint = profile.joint_sample
    if not joint:
        return MultivariateDrift(
            False,
            reason="the reference profile keeps no joint sample of rows (it was built before "
            "the multivariate check; retraining rebuilds it)",
        )
    missing = [f.name for f in schema.features if f.name not in joint]
    if missing:
        return MultivariateDrift(
            False, reason=f"the reference's joint sample lacks {', '.join(missing)}"
        )
    n_ref, n_cur = len(joint[schema.features[0].name]), len(current)
    if min(n_ref, n_cur) < 20:
        side = "reference's joint sample" if n_ref < 20 else "window"
        return MultivariateDrift(False, reason=f"the {side} has fewer than 20 rows")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    x_ref, x_cur, categorical = _encode(joint, current, schema)
    rng = np.random.default_rng(seed)
    ref_order, cur_order = rng.permutation(n_ref), rng.permutation(n_cur)
    ref_fit, ref_test = ref_order[: n_ref // 2], ref_order[n_ref // 2 :]
    cur_fit, cur_test = cur_order[: n_cur // 2], cur_order[n_cur // 2 :]
    x_fit = np.vstack([x_cur[cur_fit], x_ref[ref_fit]])
    y_fit = np.r_[np.ones(len(cur_fit)), np.zeros(len(ref_fit))]
    x_test = np.vstack([x_cur[cur_test], x_ref[ref_test]])
    n1, n2 = len(cur_test), len(ref_test)
    model = HistGradientBoostingClassifier(
        **_CLASSIFIER,
        categorical_features=categorical if categorical.any() else None,
        early_stopping=False,
        random_state=seed,
    )
    with threadpool_limits(1):
        model.fit(x_fit, y_fit)
        scores = model.predict_proba(x_test)[:, 1]
        auc = _auc(scores[:n1], scores[n1:])
        # One-sided (only a classifier better than chance is drift), with the fixed reference's
        # own chance deviation set aside (see `_REFERENCE_MARGIN`).
        sd_window, sd_reference = _null_sd(n1), _null_sd(n2)
        p_value = float(stats.norm.sf((auc - 0.5 - _REFERENCE_MARGIN * sd_reference) / sd_window))
        drifted = p_value < p_threshold
        importance = []
        # Drivers only of a drift: 13 more predictions are the half of the check's time.
        for index, feature in enumerate(schema.features if drifted else ()):
            shuffled = x_test.copy()
            shuffled[:, index] = rng.permutation(shuffled[:, index])
            permuted = model.predict_proba(shuffled)[:, 1]
            importance.append((auc - _auc(permuted[:n1], permuted[n1:]), feature.name))
    top = sorted(importance, key=lambda item: (-item[0], item[1]))
    return MultivariateDrift(
        True,
        auc=auc,
        p_value=p_value,
        p_threshold=p_threshold,
        auc_threshold=0.5
        + _REFERENCE_MARGIN * sd_reference
        + stats.norm.isf(p_threshold) * sd_window,
        drifted=drifted,
        severity=("critical" if auc >= auc_critical else "warning") if drifted else "none",
        rows_reference=n_ref,
        rows_current=n_cur,
        top_features=[
            {"feature": name, "auc_drop": round(drop, 4)}
            for drop, name in top[:_TOP_FEATURES]
            # A drop within the AUC's sampling noise names no driver.
            if drop > math.hypot(sd_window, sd_reference)
        ],
        correlation_changes=_correlation_changes(x_ref, x_cur, categorical, schema),
    )


def _correlation_changes(
    x_ref: np.ndarray, x_cur: np.ndarray, categorical: np.ndarray, schema: FeatureSchema
) -> list[dict[str, Any]]:
    """The pairs of numerical / boolean features whose Spearman correlation moved most."""
    names = [f.name for f, c in zip(schema.features, categorical, strict=True) if not c]
    if len(names) < 2:
        return []
    columns = ~categorical
    ref = pd.DataFrame(x_ref[:, columns], columns=names).corr(method="spearman").to_numpy()
    cur = pd.DataFrame(x_cur[:, columns], columns=names).corr(method="spearman").to_numpy()
    first, second = np.triu_indices(len(names), k=1)  # every pair once, as a before b
    before, after = ref[first, second], cur[first, second]
    pairs = [
        (abs(after[k] - before[k]), names[first[k]], names[second[k]], before[k], after[k])
        for k in np.flatnonzero(np.isfinite(before) & np.isfinite(after))
    ]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    # A change counts when it is both sizeable and beyond three times the sampling noise of
    # the difference of two correlations (about 1 / sqrt(n) each).
    floor = max(_CORRELATION_CHANGE, 3 * math.sqrt(1 / len(x_ref) + 1 / len(x_cur)))
    return [
        {
            "features": [a, b],
            "reference": round(float(before), 4),
            "current": round(float(after), 4),
            "change": round(float(after - before), 4),
            "notable": bool(abs(after - before) >= floor),
        }
        for _, a, b, before, after in pairs[:_TOP_PAIRS]
    ]


def _json_ready(value: Any) -> Any:
    """Plain Python values; NaN becomes None (as `monitoring.drift_results.json_ready`)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
