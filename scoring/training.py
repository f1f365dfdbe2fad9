"""Train a tenant's lead-conversion or opportunity-win model and write its report.

:func:`train` builds the features as of each record's prediction time (:mod:`scoring.features`),
splits the labelled rows **by time** (oldest 60% train, next 20% validation, newest 20% holdout:
every holdout row is later than every training row), and checks that the history is enough for a
trustworthy model:

* leads: at least 1,000 leads with a known outcome and 120 conversions (the bar Salesforce sets for
  Einstein Lead Scoring);
* opportunities: at least 200 won and 200 lost (Einstein Opportunity Scoring's bar);
* both: at least 20 of each outcome in the holdout, or the report's numbers mean little.

When the history passes, CatBoost learns on the training rows (categorical features natively) with
early stopping on the validation rows, Platt scaling calibrates it on the same validation rows, and
the holdout measures it. When it fails, the report names each failed requirement and the model is the
transparent rule table of :mod:`scoring.rules`, measured on the same holdout. Data is never pooled
across tenants.

Before fitting, a leakage guard drops features that give the outcome away on their own (a single
feature separating the training outcomes with AUC >= 0.98, such as a loss-reason field that is only
filled on lost deals), identifier-like categories and constant columns; the report lists them.

The report (JSON-ready) carries the holdout metrics (AUC, PR-AUC, Brier, ECE, lift and conversion in
the top 20%), the calibration table, conversion per grade, top features, the fairness section, the
sufficiency check and the drift baseline; it is saved with the model in the registry, which promotes
the model only if it beats the current one on the same holdout.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoring.calibration import (
    GRADE_BANDS,
    Platt,
    brier,
    calibration_table,
    expected_calibration_error,
    finite,
    fit_platt,
    grade_of,
    lift_top,
    per_grade,
    pr_auc,
    roc_auc,
    scores_from_probs,
)
from scoring.curves import curve_points
from scoring.features import (
    KINDS,
    FeatureFrame,
    Kind,
    TenantContext,
    build_features,
    frame_from_records,
)
from scoring.feedback import feedback_summary, with_feedback_labels
from scoring.monitoring import baseline
from scoring.registry import CatBoostModel, ModelRegistry, ScoringModel
from scoring.rules import RuleBasedModel, fit_rules

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: steps are ``features``, ``training``, ``evaluating``, ``saving``."""

SPLIT = (0.6, 0.2, 0.2)
"""Train, validation and holdout shares, oldest to newest."""
LEAK_AUC = 0.98
"""A single feature separating training outcomes this well is treated as leaking the outcome."""
MIN_HOLDOUT_EACH = 20


@dataclass(frozen=True)
class Requirement:
    """One data-sufficiency requirement."""

    name: str
    needed: int
    description: str


REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "lead": (
        Requirement("labelled_leads", 1000, "leads with a known outcome (converted or not)"),
        Requirement("conversions", 120, "converted leads"),
        Requirement("holdout_conversions", MIN_HOLDOUT_EACH, "conversions in the time holdout"),
        Requirement("holdout_non_conversions", MIN_HOLDOUT_EACH, "non-conversions in the holdout"),
    ),
    "opportunity": (
        Requirement("won", 200, "closed won opportunities"),
        Requirement("lost", 200, "closed lost opportunities"),
        Requirement("holdout_won", MIN_HOLDOUT_EACH, "won opportunities in the time holdout"),
        Requirement("holdout_lost", MIN_HOLDOUT_EACH, "lost opportunities in the time holdout"),
    ),
}
"""Per kind, what a tenant's history must hold before CatBoost is trusted."""


@dataclass(frozen=True)
class Params:
    """CatBoost settings (tests shrink ``iterations``).

    Shallow trees: the outcome is mostly additive in log-odds and a tenant has a few thousand rows,
    where depth 3 generalised best on the sandbox.
    """

    iterations: int = 1000
    learning_rate: float = 0.05
    depth: int = 3
    l2_leaf_reg: float = 3.0
    early_stopping_rounds: int = 100
    random_seed: int = 0


# --------------------------------------------------------------------------------------------------
# Public API


def train(
    store: Any,
    tenant_id: str,
    kind: Kind,
    *,
    task_type: str = "auto",
    excluded_fields: Iterable[str] = (),
    progress: Progress | None = None,
    as_of: datetime | None = None,
    params: Params | None = None,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register a tenant's model of one kind; return the report.

    Args:
        store: the store (``core.store.Store``).
        tenant_id: the tenant; only its records are read.
        kind: ``lead`` or ``opportunity``.
        task_type: ``auto`` (GPU when CatBoost sees one, else CPU), ``CPU`` or ``GPU``.
        excluded_fields: fields the admin excluded from the model.
        progress: called as training advances (see :data:`Progress`).
        as_of: look at the history as of this moment (default: now).
        params: CatBoost settings.
        registry: the model registry (default: one over ``store``).

    Returns:
        The report, JSON-ready, including ``model_version`` and ``promoted``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected lead or opportunity")
    _step(progress, "features", 0, 1)
    frame = build_features(
        store, tenant_id, kind, as_of=as_of, for_training=True, excluded_fields=excluded_fields
    )
    # Leads reps dismissed as "not a fit" join as negatives (scoring.feedback says why).
    frame, feedback_training = with_feedback_labels(
        store, tenant_id, frame, as_of=as_of, excluded_fields=excluded_fields
    )
    _step(progress, "features", 1, 1)
    model, report, holdout = fit(frame, task_type=task_type, progress=progress, params=params)
    report["tenant_id"] = tenant_id
    report["feedback"] = {**feedback_summary(store, tenant_id), "training": feedback_training}
    _step(progress, "saving", 0, 1)
    outcome = (registry or ModelRegistry(store)).register(tenant_id, kind, model, list(holdout))
    _step(progress, "saving", 1, 1)
    report = dict(model.report)
    report["promoted"] = outcome["promoted"]
    report["promotion"] = {"reason": outcome["reason"], "comparison": outcome["comparison"]}
    return report


def train_job(tenant_id: str, kind: str) -> dict[str, Any]:
    """Queue entry point: retrain one tenant's model with the process's services."""
    from core import services

    current = services.current()
    return train(
        current.store,
        tenant_id,
        kind,  # type: ignore[arg-type]
        task_type=current.config.catboost_task_type,
    )


def train_from_csv(
    path: str | Path,
    label_column: str,
    *,
    kind: Kind = "lead",
    time_column: str | None = None,
    id_column: str | None = None,
    store: Any = None,
    tenant_id: str | None = None,
    task_type: str = "auto",
    excluded_fields: Iterable[str] = (),
    progress: Progress | None = None,
    params: Params | None = None,
) -> dict[str, Any]:
    """Train from a CSV export of history (one row per lead or deal) and return the same report.

    Columns named like canonical fields (``industry``, ``employees``, ``email_opens``, ``source``...)
    are read as those fields; every other column except the label, id and time columns becomes a
    custom field. Rows are ordered by ``time_column`` (default: the first of ``converted_at``,
    ``closed_at``, ``close_date``, ``created_at``, ``date`` that exists), else by file order, which
    the report then says.

    With ``store`` and ``tenant_id`` the model is registered for that tenant (compared with the
    current one on this file's holdout); without them it is trained and reported only.

    Raises:
        ValueError: the label column is missing or holds something other than yes/no outcomes.
    """
    data = pd.read_csv(path)
    if label_column not in data:
        raise ValueError(f"{path}: no column {label_column!r}; columns: {', '.join(data.columns)}")
    labels = data[label_column].map(_outcome)
    if labels.isna().all():
        raise ValueError(f"{path}: column {label_column!r} holds no yes/no outcomes")
    data = data.loc[labels.notna()].reset_index(drop=True)
    labels = labels.loc[labels.notna()].reset_index(drop=True).astype(float)
    ids = _csv_ids(data, id_column)
    when, time_note = _csv_times(data, time_column)
    records = _csv_records(data, kind, {label_column, time_column or "", id_column or ""}, ids)
    now = when.max() + timedelta(days=1)
    frame = frame_from_records(
        kind, records, now=now.to_pydatetime(), context=TenantContext(),
        excluded_fields=excluded_fields,
    )  # fmt: skip
    frame.labels = pd.Series(labels.to_numpy(), index=pd.Index(ids, name="crm_id"))
    frame.as_of = pd.Series(when.to_numpy(), index=frame.labels.index).loc[frame.frame.index]
    frame.labels = frame.labels.loc[frame.frame.index]
    model, report, holdout = fit(frame, task_type=task_type, progress=progress, params=params)
    report["source"] = {"csv": str(path), "label_column": label_column, "time_order": time_note}
    # The export's own column labels every row, so rep feedback changes no label here; the summary
    # is still shown beside the model when the tenant has one.
    no_labels_changed = {"added_negatives": 0, "kept_positive": 0, "already_negative": 0}
    report["feedback"] = (
        {**feedback_summary(store, tenant_id), "training": no_labels_changed}
        if store is not None and tenant_id
        else {"total": 0, "training": no_labels_changed}
    )
    if store is not None and tenant_id:
        outcome = ModelRegistry(store).register(
            tenant_id, kind, model, list(holdout), holdout=frame.subset(holdout)
        )
        report = dict(model.report)
        report["promoted"] = outcome["promoted"]
        report["promotion"] = {"reason": outcome["reason"], "comparison": outcome["comparison"]}
    else:
        report["model_version"] = None
        report["promoted"] = False
    return report


def resolve_task_type(requested: str) -> tuple[str, str]:
    """The CatBoost ``task_type`` to use and why: ``auto`` picks GPU when CatBoost sees one."""
    wanted = (requested or "auto").strip().upper()
    if wanted in ("CPU", "GPU"):
        return wanted, f"{wanted} as configured"
    from catboost.utils import get_gpu_device_count

    try:
        count = int(get_gpu_device_count())
    except Exception as exc:  # a broken CUDA install must not stop CPU training
        return "CPU", f"auto: GPU detection failed ({exc}); using CPU"
    if count > 0:
        return "GPU", f"auto: CatBoost sees {count} GPU(s)"
    return "CPU", "auto: CatBoost sees no GPU; using CPU"


# --------------------------------------------------------------------------------------------------
# Fitting and evaluation


def fit(
    frame: FeatureFrame,
    *,
    task_type: str = "auto",
    progress: Progress | None = None,
    params: Params | None = None,
) -> tuple[ScoringModel, dict[str, Any], list[str]]:
    """Split by time, check sufficiency, fit CatBoost or the rule fallback, and report.

    Returns:
        The model (its ``report`` filled), the report, and the holdout ids.
    """
    started = time.perf_counter()
    params = params or Params()
    if frame.labels is None:
        raise ValueError("no rows with a known outcome: nothing to train on")
    known = frame.labels.dropna().index
    frame = frame.subset(known)
    train_ids, val_ids, hold_ids, split = time_split(frame.as_of)
    labels = frame.labels if frame.labels is not None else pd.Series(dtype=float)
    sufficiency = check_sufficiency(frame.kind, labels, hold_ids)
    selection: dict[str, Any] = {}
    task_note = ""
    model: ScoringModel
    features, selection = select_features(frame, [*train_ids, *val_ids])
    if sufficiency["ok"]:
        model, task_used, task_note, best_iteration = _fit_catboost(
            frame, features, train_ids, val_ids, task_type, params, progress
        )
    else:
        learn = frame.subset([*train_ids, *val_ids])
        learn.frame = learn.frame[features]
        learn.cat_features = [c for c in learn.cat_features if c in features]
        fallback = fit_rules(learn)
        model, task_used, best_iteration = fallback, "rules", None
        failed = [r["name"] for r in sufficiency["requirements"] if not r["ok"]]
        task_note = "history too small for a trustworthy model: " + ", ".join(failed)
    _step(progress, "evaluating", 0, 1)
    holdout = frame.subset(hold_ids)
    y_hold = holdout.labels.to_numpy() if holdout.labels is not None else np.zeros(0)
    p_hold = model.predict_proba(holdout) if len(hold_ids) else np.zeros(0)
    p_all = model.predict_proba(frame)
    report = _report(frame, model, holdout, y_hold, p_hold, p_all, sufficiency, split)
    report.update(
        {
            "task_type": task_used,
            "task_type_note": task_note,
            "best_iteration": best_iteration,
            "features": {
                **selection,
                "used": list(model.feature_names),
                "categorical": [c for c in frame.cat_features if c in model.feature_names],
                "excluded_fields": frame.info.get("excluded_fields", []),
                "not_available": _NOT_AVAILABLE[frame.kind],
            },
            "prediction_point": {
                "lead_horizon_days": frame.info.get("horizon_days"),
                "lead_maturity_days": frame.info.get("maturity_days"),
                "as_of": frame.info.get("now"),
            },
            "consent_blocked_rows": frame.info.get("consent_blocked", 0),
            "training_seconds": round(time.perf_counter() - started, 2),
            "trained_at": datetime.now(UTC).isoformat(),
        }
    )
    if isinstance(model, RuleBasedModel):
        report["rules"] = model.describe()
        report["rule_points"] = model.report.get("rule_points")
    model.report = report
    _step(progress, "evaluating", 1, 1)
    return model, report, list(hold_ids)


def time_split(as_of: pd.Series) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    """Oldest 60% train, next 20% validation, newest 20% holdout, cut at time boundaries.

    Rows at exactly a boundary time go to the later part, so every holdout row is later than every
    training and validation row.
    """
    times = pd.to_datetime(as_of, utc=True)
    order = times.sort_values(kind="mergesort")
    n = len(order)
    if n == 0:
        return [], [], [], {}
    t1 = order.iloc[min(n - 1, int(n * SPLIT[0]))]
    t2 = order.iloc[min(n - 1, int(n * (SPLIT[0] + SPLIT[1])))]
    train = order.index[order < t1].tolist()
    val = order.index[(order >= t1) & (order < t2)].tolist()
    hold = order.index[order >= t2].tolist()
    split = {
        "train_until": t1.isoformat(),
        "holdout_from": t2.isoformat(),
        "first": order.iloc[0].isoformat(),
        "last": order.iloc[-1].isoformat(),
    }
    return [str(i) for i in train], [str(i) for i in val], [str(i) for i in hold], split


def check_sufficiency(kind: str, labels: pd.Series, holdout_ids: Sequence[str]) -> dict[str, Any]:
    """Each requirement with what is needed and what the tenant has."""
    y = labels.dropna()
    hold = labels.loc[list(holdout_ids)].dropna() if len(holdout_ids) else pd.Series(dtype=float)
    have = {
        "labelled_leads": len(y),
        "conversions": int((y == 1).sum()),
        "holdout_conversions": int((hold == 1).sum()),
        "holdout_non_conversions": int((hold == 0).sum()),
        "won": int((y == 1).sum()),
        "lost": int((y == 0).sum()),
        "holdout_won": int((hold == 1).sum()),
        "holdout_lost": int((hold == 0).sum()),
    }
    rows = [
        {"name": r.name, "description": r.description, "needed": r.needed,
         "have": have[r.name], "ok": have[r.name] >= r.needed}
        for r in REQUIREMENTS[kind]
    ]  # fmt: skip
    failed = [f"{r['name']} {r['have']}/{r['needed']}" for r in rows if not r["ok"]]
    return {
        "ok": not failed,
        "requirements": rows,
        "failed": failed,
        "message": "enough history for a trained model"
        if not failed
        else "not enough history for a trustworthy model (" + "; ".join(failed) + "): "
        "scores come from the transparent rule-based fit + engagement model",
    }


def select_features(
    frame: FeatureFrame, train_ids: Sequence[str]
) -> tuple[list[str], dict[str, Any]]:
    """Drop constant columns, identifier-like categories and single-feature outcome leaks."""
    rows = frame.frame.loc[list(train_ids)]
    y = frame.labels.loc[list(train_ids)].to_numpy() if frame.labels is not None else np.zeros(0)
    constant, identifiers, leaky = [], [], []
    keep = []
    for name in rows.columns:
        column = rows[name]
        if column.nunique(dropna=False) <= 1:
            constant.append(name)
            continue
        if name in frame.cat_features:
            levels = column.nunique()
            if levels > 50 and levels > 0.5 * len(column):
                identifiers.append(name)
                continue
            score = _category_auc(column, y)
        else:
            score = _numeric_auc(column, y)
        if score >= LEAK_AUC:
            leaky.append({"feature": name, "single_feature_auc": round(score, 4)})
            continue
        keep.append(name)
    return keep, {
        "dropped_constant": constant,
        "dropped_identifier_like": identifiers,
        "dropped_as_leaky": leaky,
    }


def _category_auc(column: pd.Series, y: np.ndarray) -> float:
    table = pd.DataFrame({"v": column.to_numpy(), "y": y})
    rate = table.groupby("v")["y"].transform("mean").to_numpy()
    value = roc_auc(rate, y)
    return value if np.isfinite(value) else 0.5


def _numeric_auc(column: pd.Series, y: np.ndarray) -> float:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    if np.isnan(values).all():
        return 0.5
    filled = np.where(np.isnan(values), np.nanmin(values) - 1.0, values)
    value = roc_auc(filled, y)
    return max(value, 1 - value) if np.isfinite(value) else 0.5


class _IterationProgress:
    """CatBoost callback forwarding iterations to a progress function (CPU only)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.total = total

    def after_iteration(self, info: Any) -> bool:
        self.progress("training", int(info.iteration), self.total)
        return True


def _fit_catboost(
    frame: FeatureFrame,
    features: list[str],
    train_ids: list[str],
    val_ids: list[str],
    task_type: str,
    params: Params,
    progress: Progress | None,
) -> tuple[CatBoostModel, str, str, int | None]:
    from catboost import CatBoostClassifier, CatBoostError, Pool

    cats = [c for c in frame.cat_features if c in features]
    shell = CatBoostModel(None, frame.kind, features, cats, Platt())
    labels = frame.labels if frame.labels is not None else pd.Series(dtype=float)
    train_pool = Pool(shell.matrix(frame.frame.loc[train_ids]), labels.loc[train_ids].to_numpy(),
                      cat_features=cats)  # fmt: skip
    val_pool = Pool(shell.matrix(frame.frame.loc[val_ids]), labels.loc[val_ids].to_numpy(),
                    cat_features=cats)  # fmt: skip
    chosen, note = resolve_task_type(task_type)

    def attempt(device: str) -> Any:
        options: dict[str, Any] = {
            "iterations": params.iterations,
            "learning_rate": params.learning_rate,
            "depth": params.depth,
            "l2_leaf_reg": params.l2_leaf_reg,
            "loss_function": "Logloss",
            "eval_metric": "Logloss",
            "random_seed": params.random_seed,
            "od_type": "Iter",
            "od_wait": params.early_stopping_rounds,
            "use_best_model": True,
            "allow_writing_files": False,
            "verbose": False,
            "task_type": device,
        }
        if device == "GPU":
            options["devices"] = "0"
        else:
            options["thread_count"] = -1
        model = CatBoostClassifier(**options)
        # User callbacks run on CPU only; GPU training reports progress by step.
        callbacks = (
            [_IterationProgress(progress, params.iterations)]
            if progress and device == "CPU"
            else None
        )
        model.fit(train_pool, eval_set=val_pool, callbacks=callbacks)
        return model

    try:
        model = attempt(chosen)
    except CatBoostError as exc:
        if chosen != "GPU":
            raise
        log.warning("GPU training failed (%s); falling back to CPU", exc)
        note = f"{note}; GPU training failed ({exc}), fell back to CPU"
        chosen = "CPU"
        model = attempt("CPU")
    log.info("CatBoost trained on %s (%s)", chosen, note)
    shell.model = model
    raw_val = shell.raw(frame.frame.loc[val_ids])
    shell.calibration = fit_platt(raw_val, labels.loc[val_ids].to_numpy())
    best = model.get_best_iteration()
    return shell, chosen, note, (int(best) if best is not None else None)


def _report(
    frame: FeatureFrame,
    model: ScoringModel,
    holdout: FeatureFrame,
    y_hold: np.ndarray,
    p_hold: np.ndarray,
    p_all: np.ndarray,
    sufficiency: dict[str, Any],
    split: dict[str, Any],
) -> dict[str, Any]:
    rate_top, lift = lift_top(p_hold, y_hold) if y_hold.size else (float("nan"), float("nan"))
    labels = frame.labels if frame.labels is not None else pd.Series(dtype=float)
    n_hold = len(y_hold)
    return {
        "kind": frame.kind,
        "rule_based": bool(model.rule_based),
        "model_version": model.version or None,
        "auc": finite(roc_auc(p_hold, y_hold)) if n_hold else None,
        "pr_auc": finite(pr_auc(p_hold, y_hold)) if n_hold else None,
        "brier": finite(brier(p_hold, y_hold)) if n_hold else None,
        "ece": finite(expected_calibration_error(p_hold, y_hold)) if n_hold else None,
        "lift_top20": finite(lift),
        "conversion_top20": finite(rate_top),
        "base_rate_holdout": finite(float(y_hold.mean())) if n_hold else None,
        "base_rate": finite(float(labels.mean())) if len(labels) else None,
        "n_rows": len(frame.frame),
        "n_train": len(frame.frame) - n_hold,
        "n_holdout": n_hold,
        "split": split,
        "calibration_table": calibration_table(p_hold, y_hold) if n_hold else [],
        "grade_bands": [{"grade": g, "min_score": s} for g, s in GRADE_BANDS],
        "conversion_per_grade": per_grade(p_hold, y_hold) if n_hold else [],
        "curves": curve_points(p_hold, y_hold),
        "top_features": _top_features(model, frame),
        "sufficiency": sufficiency,
        "fairness": _fairness(holdout, y_hold, p_hold, frame.info),
        "drift_baseline": baseline(
            frame.frame[[c for c in model.feature_names if c in frame.frame]],
            frame.cat_features,
            scores_from_probs(p_all),
        ),
    }


def _top_features(
    model: ScoringModel, frame: FeatureFrame, limit: int = 15
) -> list[dict[str, Any]]:
    if isinstance(model, CatBoostModel):
        values = np.asarray(model.model.get_feature_importance())
        pairs = zip(model.feature_names, values.tolist(), strict=True)
    else:
        contrib = model.contributions(frame).abs().mean(axis=0)
        pairs = zip(contrib.index.tolist(), contrib.to_numpy().tolist(), strict=True)
    ranked = sorted(pairs, key=lambda kv: -kv[1])[:limit]
    return [{"feature": name, "importance": round(float(v), 4)} for name, v in ranked if v > 0]


def _fairness(
    holdout: FeatureFrame, y: np.ndarray, p: np.ndarray, info: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(y):
        scores = scores_from_probs(p)
        table = holdout.segments.assign(
            y=y, score=scores, hot=[grade_of(s) == "Hot" for s in scores]
        )
        for column in ("region", "segment", "source"):
            grouped = table.groupby(column)
            out[f"by_{column}"] = [
                {column: str(key), "n": len(g), "conversion_rate": float(g["y"].mean()),
                 "mean_score": float(g["score"].mean()), "hot_share": float(g["hot"].mean())}
                for key, g in grouped
            ]  # fmt: skip
    else:
        out = {"by_region": [], "by_segment": [], "by_source": []}
    out["excluded_sensitive_fields"] = info.get("excluded_sensitive_fields", [])
    out["excluded_by_admin"] = info.get("excluded_fields", [])
    out["note"] = (
        "measured on the time holdout; region, size segment and source are shown for review even "
        "when excluded from the model"
    )
    return out


_NOT_AVAILABLE = {
    "lead": [
        "per-event engagement history (the CRMs roll engagement up on the lead, so counts are the "
        "record's current values)",
    ],
    "opportunity": [
        "stage reached before close and stage ages (canonical opportunities carry no stage "
        "history; a closed deal's current stage is its outcome)",
        "close-date slips (no close-date history in canonical records)",
    ],
}


def _step(progress: Progress | None, step: str, done: int, total: int) -> None:
    if progress is not None:
        progress(step, done, total)


# --------------------------------------------------------------------------------------------------
# CSV


_TRUE_OUTCOMES = {"1", "1.0", "true", "yes", "y", "won", "converted", "closed won", "t"}
_FALSE_OUTCOMES = {"0", "0.0", "false", "no", "n", "lost", "not converted", "closed lost", "f"}


def _outcome(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in _TRUE_OUTCOMES:
        return 1.0
    if text in _FALSE_OUTCOMES:
        return 0.0
    return None


def _csv_ids(data: pd.DataFrame, id_column: str | None) -> list[str]:
    for name in (id_column, "crm_id", "id", "Id", "ID"):
        if name and name in data:
            return [str(v) for v in data[name]]
    return [f"row-{i + 1}" for i in range(len(data))]


def _csv_times(data: pd.DataFrame, time_column: str | None) -> tuple[pd.Series, str]:
    for name in (time_column, "converted_at", "closed_at", "close_date", "created_at", "date"):
        if name and name in data:
            times = pd.to_datetime(data[name], errors="coerce", utc=True, format="mixed")
            if times.notna().any():
                return times.fillna(times.min()), f"by column {name}"
    start = pd.Timestamp("2000-01-01", tz="UTC")
    return pd.Series([start + pd.Timedelta(seconds=i) for i in range(len(data))]), (
        "by file order (no time column found): the holdout is the last 20% of rows"
    )


def _csv_records(data: pd.DataFrame, kind: str, reserved: set[str], ids: list[str]) -> pd.DataFrame:
    from core.schemas import SCHEMAS

    canonical = set(SCHEMAS[kind]._declared_fields) - {"tenant_id", "crm_id", "custom"}
    records: dict[str, Any] = {"crm_id": ids}
    custom_columns = []
    for name in data.columns:
        if name in reserved:
            continue
        if name in canonical:
            records[name] = data[name].where(data[name].notna(), None).tolist()
        else:
            custom_columns.append(name)
    custom = data[custom_columns].astype(object).where(data[custom_columns].notna(), None)
    records["custom"] = [
        {k: v for k, v in row.items() if v is not None} for row in custom.to_dict("records")
    ]
    out = pd.DataFrame(records)
    for name in ("created_at", "converted_at", "last_engaged_at"):
        if name in out:
            out[name] = pd.to_datetime(out[name], errors="coerce", utc=True, format="mixed")
    return out
