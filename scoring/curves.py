"""Points for the model card's pictures: ROC curve, calibration plot and lift chart.

Training computes them once on the time holdout and keeps them in the report (``report["curves"]``),
so the admin console draws a model's pictures without loading the model or its data. Each curve is
thinned to a few dozen points: enough for a 400-pixel chart, small enough for the registry row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_ROC_POINTS = 60
"""Most points kept on the ROC curve (the corners always stay)."""
CALIBRATION_BINS = 10
"""Equal-width probability bins of the calibration plot."""
LIFT_BUCKETS = 10
"""Deciles of the lift chart, best-scored first."""


def roc_points(probs: np.ndarray, labels: np.ndarray) -> list[list[float]]:
    """The ROC curve as ``[false positive rate, true positive rate]`` pairs from (0, 0) to (1, 1).

    Tied probabilities move the curve diagonally, as one threshold step. An empty holdout or one
    with a single class gives an empty list (the curve is undefined).
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return []
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    # The last index of each run of equal probabilities is one threshold.
    cuts = np.r_[np.nonzero(np.diff(p_sorted))[0], len(p_sorted) - 1]
    tpr = np.cumsum(y_sorted)[cuts] / positives
    fpr = np.cumsum(1 - y_sorted)[cuts] / negatives
    fpr, tpr = np.r_[0.0, fpr], np.r_[0.0, tpr]
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [[round(float(a), 4), round(float(b), 4)] for a, b in zip(fpr, tpr, strict=True)]


def calibration_points(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Per non-empty probability bin: mean predicted probability, observed rate and count."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    if not len(p):
        return []
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    points = []
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        n = int(inside.sum())
        if n:
            points.append(
                {
                    "predicted": round(float(p[inside].mean()), 4),
                    "observed": round(float(y[inside].mean()), 4),
                    "n": n,
                }
            )
    return points


def lift_points(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Per decile of the holdout, best-scored first: lift over the base rate, share captured.

    ``cumulative_capture`` is the share of all conversions in this decile and the ones above it.
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    total = float(y.sum())
    if not len(p) or total == 0:
        return []
    base = total / len(y)
    ordered = y[np.argsort(-p, kind="mergesort")]
    edges = np.linspace(0, len(ordered), LIFT_BUCKETS + 1).round().astype(int)
    points, captured = [], 0.0
    for i in range(LIFT_BUCKETS):
        chunk = ordered[edges[i] : edges[i + 1]]
        if not len(chunk):
            continue
        captured += float(chunk.sum())
        points.append(
            {
                "decile": i + 1,
                "lift": round(float(chunk.mean()) / base, 3),
                "cumulative_capture": round(captured / total, 4),
                "n": len(chunk),
            }
        )
    return points


def curve_points(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """All three curves for a report: ``{"roc": ..., "calibration": ..., "lift": ...}``."""
    return {
        "roc": roc_points(probs, labels),
        "calibration": calibration_points(probs, labels),
        "lift": lift_points(probs, labels),
    }
