"""Probability calibration and the metrics a model report states.

Calibration is Platt scaling on the model's log-odds, ``p = sigmoid(a * raw + b)``, fitted on the
time-based validation set: two parameters stay stable on the few hundred outcomes a small tenant
has, where isotonic regression would chase noise. Because it is a straight line in log-odds, a
model's per-feature contributions (SHAP values in log-odds) scaled by ``a`` still add up to the
calibrated log-odds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GRADE_BANDS: tuple[tuple[str, int], ...] = (("Hot", 70), ("Warm", 40), ("Cold", 0))
"""Default grades by score: Hot at 70 and above, Warm at 40 and above, else Cold."""


@dataclass(frozen=True)
class Platt:
    """``p = sigmoid(a * raw + b)`` over raw log-odds."""

    a: float = 1.0
    b: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw log-odds."""
        return sigmoid(self.a * np.asarray(raw, dtype=float) + self.b)

    def as_dict(self) -> dict[str, float]:
        """JSON-ready parameters."""
        return {"a": self.a, "b": self.b}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, safe for large magnitudes."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def logit(p: np.ndarray | float) -> np.ndarray:
    """Log-odds of probabilities (clipped away from 0 and 1)."""
    q = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def fit_platt(raw: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3) -> Platt:
    """Fit Platt scaling by Newton's method on the log-loss (a tiny ridge keeps it finite).

    With one outcome class only, returns the identity mapping.
    """
    x = np.asarray(raw, dtype=float)
    y = np.asarray(labels, dtype=float)
    if x.size == 0 or y.min() == y.max():
        return Platt()
    a, b = 1.0, 0.0
    for _ in range(100):
        p = sigmoid(a * x + b)
        w = np.clip(p * (1 - p), 1e-9, None)
        grad = np.array([np.sum((p - y) * x) + l2 * (a - 1.0), np.sum(p - y)])
        hess = np.array(
            [[np.sum(w * x * x) + l2, np.sum(w * x)], [np.sum(w * x), np.sum(w) + 1e-9]]
        )
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return Platt(float(a), float(b))


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """ROC AUC by average ranks; NaN when only one class is present."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float) > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float) > 0.5
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / hits.sum())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((np.asarray(probs) - np.asarray(labels, dtype=float)) ** 2))


def calibration_table(
    probs: np.ndarray, labels: np.ndarray, bins: int = 10
) -> list[dict[str, Any]]:
    """Equal-width probability bins: count, mean predicted and observed rate (empty bins left out)."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    table = []
    for k in range(bins):
        mask = which == k
        if mask.any():
            table.append(
                {
                    "bin": f"{edges[k]:.1f}-{edges[k + 1]:.1f}",
                    "n": int(mask.sum()),
                    "mean_predicted": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return table


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: bin-weighted mean of |observed - predicted| over 10 bins."""
    table = calibration_table(probs, labels, bins)
    total = sum(row["n"] for row in table)
    if total == 0:
        return float("nan")
    return float(
        sum(row["n"] * abs(row["observed"] - row["mean_predicted"]) for row in table) / total
    )


def lift_top(probs: np.ndarray, labels: np.ndarray, share: float = 0.2) -> tuple[float, float]:
    """Conversion rate in the top ``share`` by probability, and its lift over the base rate."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    if y.size == 0:
        return float("nan"), float("nan")
    k = max(1, math.ceil(share * y.size))
    top = np.argsort(-p, kind="mergesort")[:k]
    rate = float(y[top].mean())
    base = float(y.mean())
    return rate, (rate / base if base > 0 else float("nan"))


def scores_from_probs(probs: np.ndarray) -> np.ndarray:
    """Scores 0-100: ``round(100 * probability)``."""
    return np.rint(100.0 * np.asarray(probs, dtype=float)).astype(int)


def grade_of(score: int | float, bands: Sequence[tuple[str, int]] = GRADE_BANDS) -> str:
    """The grade of a 0-100 score."""
    return next(name for name, low in bands if score >= low)


def per_grade(
    probs: np.ndarray, labels: np.ndarray, bands: Sequence[tuple[str, int]] = GRADE_BANDS
) -> list[dict[str, Any]]:
    """Per grade: rows, realised conversion, mean score."""
    scores = scores_from_probs(probs)
    y = np.asarray(labels, dtype=float)
    grades = np.array([grade_of(s, bands) for s in scores])
    out = []
    for name, low in bands:
        mask = grades == name
        out.append(
            {
                "grade": name,
                "min_score": low,
                "n": int(mask.sum()),
                "conversion_rate": float(y[mask].mean()) if mask.any() else None,
                "mean_score": float(scores[mask].mean()) if mask.any() else None,
            }
        )
    return out


def finite(value: float) -> float | None:
    """A float for JSON: None instead of NaN or infinity."""
    return float(value) if value is not None and math.isfinite(value) else None
