"""The drift check's results: its thresholds, one result per feature or model output, the
report, and the report's JSON shape (ARCHITECTURE.md's contract). `monitoring.drift_report`
explains the method; `monitoring.drift_stats` computes the numbers these hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from data.settings import Settings, get_settings
from monitoring.multivariate_drift import MultivariateDrift

SEVERITIES = ("critical", "warning", "none")
CORRECTIONS = ("benjamini_hochberg", "bonferroni")
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
# The multivariate check (`monitoring.multivariate_drift`): its held-out AUC's p-value under no
# drift must be below this for the joint distribution to count as drifted (the per-check false
# alarm rate, measured in docs/drift-detection.md), and a drifted window with an AUC this high
# is critical.
MULTIVARIATE_P_THRESHOLD = 0.01
MULTIVARIATE_AUC_CRITICAL = 0.65


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
    # The multivariate check, see `monitoring.multivariate_drift`.
    multivariate_p_threshold: float = MULTIVARIATE_P_THRESHOLD
    multivariate_auc_critical: float = MULTIVARIATE_AUC_CRITICAL

    def __post_init__(self) -> None:
        for name in ("ks_p_threshold", "chi2_p_threshold", "multivariate_p_threshold"):
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
        if not 0.5 < self.multivariate_auc_critical <= 1:
            raise DriftError(
                "multivariate_auc_critical must be in (0.5, 1], got "
                f"{self.multivariate_auc_critical}"
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
            multivariate_p_threshold=settings.MULTIVARIATE_P_THRESHOLD,
            multivariate_auc_critical=settings.MULTIVARIATE_AUC_CRITICAL,
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
            "multivariate_p_threshold": self.multivariate_p_threshold,
            "multivariate_auc_critical": self.multivariate_auc_critical,
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
        return json_ready(result)


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
    # The joint distribution's check; None when it was not run (a report built by hand).
    multivariate: MultivariateDrift | None = None
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
    def multivariate_drift(self) -> bool:
        """The joint distribution moved (the multivariate check ran and found drift)."""
        return self.multivariate is not None and self.multivariate.drifted

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
        if self.multivariate is not None:
            text += " " + self.multivariate.summary
        return text

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                "schema": self.schema_name,
                "created_at": self.created_at,
                "window": {"start": self.window_start, "end": self.window_end},
                "features": {name: f.to_dict() for name, f in self.features.items()},
                "ranked_features": [f.name for f in self.ranked_features()],
                "prediction": self.prediction.to_dict(),
                "prediction_drift": self.prediction.drifted,
                "multivariate": (
                    self.multivariate
                    or MultivariateDrift(False, reason="the multivariate check was not run")
                ).to_dict(),
                "multivariate_drift": self.multivariate_drift,
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


def json_ready(value: Any) -> Any:
    """Plain Python values only; NaN and infinities become None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
