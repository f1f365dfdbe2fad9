"""Drift and decay monitoring: is the current model still looking at the world it was trained on?

Training saves a *baseline* in the report (:func:`baseline`): per feature, the share of training rows
in each bin (deciles for numbers, the 20 most common values for categories, a bin for missing), and
the same for the score. :func:`drift` compares the records being scored now against it with the
population stability index, ``PSI = sum((cur - base) * ln(cur / base))`` over the bins, and, as
outcomes arrive, compares the realised conversion per grade and the realised AUC with what the
report promised.

When a threshold in :class:`Thresholds` is passed, the result says ``retrain_recommended`` and lists
each reason in words an admin can act on. :func:`check` stores the result on the model version (the
admin console and ``fieldwise model report`` show it) and queues a retrain job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from scoring.calibration import GRADE_BANDS, finite, grade_of, roc_auc
from scoring.features import MISSING, FeatureFrame

log = logging.getLogger(__name__)

OTHER = "__other__"
NAN_BIN = "__missing__"
TOP_LEVELS = 20
EPSILON = 1e-4
"""Floor on a bin's share, so an empty bin does not make PSI infinite."""
SCORE_EDGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True)
class Thresholds:
    """When drift or decay is bad enough to retrain (PSI rule of thumb: 0.1 watch, 0.25 act)."""

    feature_psi: float = 0.25
    """Any feature past this PSI recommends a retrain."""
    score_psi: float = 0.2
    """The score distribution past this PSI recommends a retrain."""
    auc_drop: float = 0.05
    """Realised AUC this far below the report's holdout AUC recommends a retrain."""
    grade_gap: float = 0.15
    """A grade whose realised conversion is this far from the report's recommends a retrain."""
    min_outcomes: int = 50
    """Fewer realised outcomes than this are too few to judge decay."""


def baseline(
    frame: pd.DataFrame, cat_features: Sequence[str], scores: np.ndarray
) -> dict[str, Any]:
    """The distributions drift is measured against (saved in the training report)."""
    features: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if name in cat_features:
            shares = column.astype(str).value_counts(normalize=True)
            top = shares.iloc[:TOP_LEVELS]
            bins = {str(k): float(v) for k, v in top.items()}
            bins[OTHER] = float(max(0.0, 1.0 - top.sum()))
            features[name] = {"type": "categorical", "bins": bins}
        else:
            values = pd.to_numeric(column, errors="coerce")
            present = values.dropna()
            edges = (
                sorted(set(np.quantile(present, np.linspace(0.1, 0.9, 9)).tolist()))
                if len(present)
                else []
            )
            features[name] = {
                "type": "numeric",
                "edges": edges,
                "shares": _numeric_shares(values, edges),
            }
    return {
        "features": features,
        "score": {
            "edges": list(SCORE_EDGES),
            "shares": _numeric_shares(pd.Series(scores), SCORE_EDGES),
        },
        "n": len(frame),
    }


def psi(base: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index between two share vectors over the same bins."""
    b = np.clip(np.asarray(base, dtype=float), EPSILON, None)
    c = np.clip(np.asarray(current, dtype=float), EPSILON, None)
    return float(np.sum((c - b) * np.log(c / b)))


def feature_psi(spec: dict[str, Any], column: pd.Series) -> float:
    """PSI of one feature's current values against its baseline spec."""
    if spec["type"] == "categorical":
        bins = spec["bins"]
        values = column.astype(object).where(column.notna(), MISSING).astype(str)
        known = [k for k in bins if k != OTHER]
        shares = values.value_counts(normalize=True)
        current = [float(shares.get(k, 0.0)) for k in known]
        current.append(float(max(0.0, 1.0 - sum(current))))
        return psi([bins[k] for k in known] + [bins[OTHER]], current)
    values = pd.to_numeric(column, errors="coerce")
    return psi(spec["shares"], _numeric_shares(values, spec["edges"]))


def drift(
    store: Any,
    tenant_id: str,
    kind: str,
    current: FeatureFrame,
    scores: Sequence[float] | np.ndarray,
    *,
    thresholds: Thresholds | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Compare the records scored now with the current model's training baseline.

    Args:
        store: the store holding the model registry.
        tenant_id: the tenant.
        kind: ``lead`` or ``opportunity``.
        current: the features of the records being scored (labels where outcomes arrived).
        scores: their scores, 0-100, in ``current``'s row order.
        thresholds: when to recommend a retrain (defaults: :class:`Thresholds`).
        model: the model to compare with (default: the tenant's current one).

    Returns:
        ``feature_psi``, ``score_psi``, ``realised`` (per grade, AUC), ``retrain_recommended``,
        ``reasons`` (human-readable) and ``thresholds``.

    Raises:
        LookupError: the tenant has no model of this kind, or it has no baseline.
    """
    from scoring.registry import ModelRegistry

    limits = thresholds or Thresholds()
    model = model or ModelRegistry(store).current(tenant_id, kind)
    if model is None:
        raise LookupError(f"{tenant_id} has no {kind} model; train one first")
    report = model.report
    base = report.get("drift_baseline")
    if not base:
        raise LookupError(f"{tenant_id} {kind} model {model.version} has no drift baseline")
    score_values = np.asarray(scores, dtype=float)
    reasons: list[str] = []
    per_feature: dict[str, float] = {}
    for name, spec in base["features"].items():
        if name in current.frame:
            per_feature[name] = round(feature_psi(spec, current.frame[name]), 4)
    score_shift = psi(
        base["score"]["shares"], _numeric_shares(pd.Series(score_values), base["score"]["edges"])
    )
    for name, value in sorted(per_feature.items(), key=lambda kv: -kv[1]):
        if value > limits.feature_psi:
            reasons.append(
                f"feature {name} has shifted (PSI {value:.2f} > {limits.feature_psi:.2f})"
            )
    if score_shift > limits.score_psi:
        reasons.append(
            f"the score distribution has shifted (PSI {score_shift:.2f} > {limits.score_psi:.2f})"
        )
    realised = _realised(current, score_values, report, limits, reasons)
    result = {
        "model_version": model.version,
        "checked_at": datetime.now(UTC).isoformat(),
        "n": len(current.frame),
        "feature_psi": per_feature,
        "score_psi": round(score_shift, 4),
        "realised": realised,
        "retrain_recommended": bool(reasons),
        "reasons": reasons,
        "thresholds": asdict(limits),
    }
    return result


def check(
    store: Any,
    tenant_id: str,
    kind: str,
    current: FeatureFrame,
    scores: Sequence[float] | np.ndarray,
    *,
    thresholds: Thresholds | None = None,
    queue: Any = None,
) -> dict[str, Any]:
    """Run :func:`drift`, save the result on the model version, and queue a retrain if needed.

    The retrain job is ``scoring.training.train_job(tenant_id, kind)`` with a job id per tenant,
    kind and day, so repeated checks queue it once.
    """
    result = drift(store, tenant_id, kind, current, scores, thresholds=thresholds)
    if result["retrain_recommended"] and queue is not None:
        day = datetime.now(UTC).strftime("%Y%m%d")
        job_id = queue.enqueue(
            "scoring.training.train_job",
            tenant_id,
            kind,
            job_id=f"retrain:{tenant_id}:{kind}:{day}",
        )
        result["retrain_job"] = job_id
        log.info("%s %s: retrain queued: %s", tenant_id, kind, "; ".join(result["reasons"]))
    store.put_model_monitoring(tenant_id, kind, result["model_version"], result)
    return result


def _realised(
    current: FeatureFrame,
    scores: np.ndarray,
    report: dict[str, Any],
    limits: Thresholds,
    reasons: list[str],
) -> dict[str, Any]:
    labels = current.labels
    if labels is None:
        return {"n_outcomes": 0, "per_grade": [], "auc": None}
    known = labels.notna().to_numpy()
    y = labels.to_numpy()[known]
    s = scores[known]
    grades = np.array([grade_of(v) for v in s]) if s.size else np.array([])
    expected = {
        g["grade"]: g.get("conversion_rate") for g in report.get("conversion_per_grade", [])
    }
    rows = []
    for name, low in GRADE_BANDS:
        mask = grades == name
        rate = float(y[mask].mean()) if mask.any() else None
        rows.append(
            {"grade": name, "min_score": low, "n": int(mask.sum()), "conversion_rate": rate,
             "expected": expected.get(name)}
        )  # fmt: skip
        want = expected.get(name)
        if (
            rate is not None
            and want is not None
            and mask.sum() >= limits.min_outcomes
            and abs(rate - want) > limits.grade_gap
        ):
            reasons.append(
                f"{name} records convert at {rate:.0%} against {want:.0%} at training "
                f"(gap over {limits.grade_gap:.0%})"
            )
    auc = roc_auc(s, y) if y.size else float("nan")
    trained_auc = report.get("auc")
    if (
        y.size >= limits.min_outcomes
        and np.isfinite(auc)
        and trained_auc is not None
        and auc < trained_auc - limits.auc_drop
    ):
        reasons.append(
            f"realised AUC {auc:.3f} is below the holdout AUC {trained_auc:.3f} "
            f"by more than {limits.auc_drop:.2f}"
        )
    return {"n_outcomes": int(y.size), "per_grade": rows, "auc": finite(auc)}


def _numeric_shares(values: pd.Series, edges: Sequence[float]) -> list[float]:
    numbers = pd.to_numeric(values, errors="coerce")
    n = len(numbers)
    if n == 0:
        return [0.0] * (len(edges) + 2)
    present = numbers.dropna().to_numpy()
    counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="right"),
                         minlength=len(edges) + 1)  # fmt: skip
    shares = (counts / n).tolist()
    shares.append(float(numbers.isna().mean()))
    return [float(x) for x in shares]
