"""Score calibration: from a model's scores to the probability that the label is positive.

Confidence-based performance estimation (`monitoring.performance`) reads a score p as "positive
with probability p". Few models' scores mean that: gradient-boosted trees, forests and
anything trained with class weights are off, sometimes by a lot. A `Calibrator` is fitted once,
on scores and labels the model never trained on (a version's hold-out, at training time), by
isotonic regression: the monotone map from score to observed positive rate. It is stored with
the version as its points, so reading it back needs neither pickle nor sklearn, and applying it
is one `np.interp`, exactly what sklearn's `IsotonicRegression.predict` computes for scores
inside the fitted range (outside it, the end values).

The calibrated probability feeds the estimate only: the raw score still decides the predicted
class (against the version's threshold) and the ranking, as in serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw score to probability, as isotonic regression fitted it."""

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    method: str = "isotonic"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability of each raw score."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.scores, self.probabilities)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scores": list(self.scores),
            "probabilities": list(self.probabilities),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibrator:
        if raw.get("method") != "isotonic":
            raise ValueError(f"unknown calibration method {raw.get('method')!r}")
        scores, probabilities = raw["scores"], raw["probabilities"]
        if not scores or len(scores) != len(probabilities):
            raise ValueError("a calibration needs as many probabilities as scores, at least one")
        return cls(tuple(map(float, scores)), tuple(map(float, probabilities)))


def fit_calibrator(reference_scores: Any, reference_labels: Any) -> Calibrator:
    """Fit the map from score to positive rate on reference scores and their 0/1 labels.

    Any model's outputs can be calibrated this way: the reference is data with known labels
    that the model was not trained on (a hold-out), scored by the same model.
    """
    from sklearn.isotonic import IsotonicRegression  # only where a calibrator is fitted

    scores = np.asarray(reference_scores, dtype=np.float64)
    labels = np.asarray(reference_labels, dtype=np.float64)
    if scores.shape != labels.shape or scores.ndim != 1 or scores.size == 0:
        raise ValueError("reference scores and labels must be two lists of the same length")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("reference labels must be 0 or 1")
    if np.isnan(scores).any():
        raise ValueError("reference scores must not be missing")
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    return Calibrator(
        tuple(isotonic.X_thresholds_.tolist()), tuple(isotonic.y_thresholds_.tolist())
    )
