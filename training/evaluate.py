"""Model evaluation: the numbers and pictures a promotion decision is based on.

`evaluate_scores` turns labels and positive-class probabilities into accuracy, precision, recall,
F1, ROC AUC, PR AUC, Brier score, expected calibration error, the confusion matrix and the
calibration curve. `plot_confusion_matrix` / `plot_calibration` draw them as PNGs for MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: training runs in CI, Airflow workers and containers

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from data.profile import DEFAULT_THRESHOLD

CALIBRATION_BINS = 10


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]
    calibration_prob_true: list[float]
    calibration_prob_pred: list[float]
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "confusion_matrix": self.confusion,
            "calibration": {
                "prob_true": self.calibration_prob_true,
                "prob_pred": self.calibration_prob_pred,
            },
            "threshold": self.threshold,
        }


def evaluation_from_dict(raw: dict[str, Any]) -> Evaluation:
    """The inverse of `Evaluation.to_dict` (a training step reads the previous step's JSON)."""
    return Evaluation(
        metrics={key: float(value) for key, value in raw["metrics"].items()},
        confusion=raw["confusion_matrix"],
        calibration_prob_true=raw["calibration"]["prob_true"],
        calibration_prob_pred=raw["calibration"]["prob_pred"],
        threshold=float(raw["threshold"]),
    )


def evaluate_scores(
    y_true: np.ndarray | pd.Series, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> Evaluation:
    """Metrics of positive-class probabilities `scores` against binary labels `y_true`."""
    y = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    predicted = (scores >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    prob_true, prob_pred = calibration_curve(y, scores, n_bins=CALIBRATION_BINS, strategy="uniform")
    metrics = {
        "accuracy": accuracy_score(y, predicted),
        "precision": precision_score(y, predicted, zero_division=0),
        "recall": recall_score(y, predicted, zero_division=0),
        "f1": f1_score(y, predicted, zero_division=0),
        "roc_auc": roc_auc_score(y, scores) if both_classes else float("nan"),
        "pr_auc": average_precision_score(y, scores) if both_classes else float("nan"),
        "brier": brier_score_loss(y, scores),
        "ece": expected_calibration_error(y, scores),
        "positive_rate": float(predicted.mean()),
        "rows": float(len(y)),
    }
    return Evaluation(
        metrics={k: float(v) for k, v in metrics.items()},
        confusion=confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
        calibration_prob_true=prob_true.tolist(),
        calibration_prob_pred=prob_pred.tolist(),
        threshold=threshold,
    )


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate − mean score| over equal-width score bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - scores[mask].mean())
    return float(total / len(y))


def plot_confusion_matrix(
    evaluation: Evaluation, path: str | Path, classes: tuple[str, str] = ("0", "1")
) -> Path:
    """The hold-out's confusion matrix; `classes` names class 0 and 1 (the schema's
    `class_names`), so the plot speaks of the model's own target."""
    matrix = np.array(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(col, row, f"{value:,}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], list(classes))
    ax.set_yticks([0, 1], list(classes), rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (threshold {evaluation.threshold:g})")
    return _save(fig, path)


def plot_calibration(evaluation: Evaluation, path: str | Path, positive: str = "class 1") -> Path:
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=110)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(
        evaluation.calibration_prob_pred,
        evaluation.calibration_prob_true,
        marker="o",
        label="model",
    )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel(f"observed share of {positive}")
    ax.set_title(f"Calibration (ECE {evaluation.metrics['ece']:.3f})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
