"""Holdout metrics of a probability model."""

import numpy as np


def expected_calibration_error(y_true, proba, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by size."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y_true[mask].mean() - proba[mask].mean())
    return float(total / max(len(y_true), 1))


def classification_metrics(y_true, proba, threshold: float) -> dict[str, float]:
    """AUC and log loss need both classes; with one class they are reported as NaN, not guessed."""
    from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    proba = np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7)
    predicted = (proba >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)) if both else float("nan"),
        "log_loss": float(log_loss(y_true, proba, labels=[0, 1])) if len(y_true) else float("nan"),
        "brier": float(brier_score_loss(y_true, proba)) if len(y_true) else float("nan"),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "calibration_error": expected_calibration_error(y_true, proba),
        "late_rate": float(y_true.mean()) if len(y_true) else float("nan"),
        "predicted_late_rate": float(predicted.mean()) if len(y_true) else float("nan"),
        "mean_probability": float(proba.mean()) if len(y_true) else float("nan"),
        "rows": float(len(y_true)),
    }
