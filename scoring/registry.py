"""The per-tenant model registry: versions with their reports, promotion on merit, one-step rollback.

Every trained model (CatBoost or rule-based) is kept as a version in the store's ``models`` table,
artifact included (CatBoost ``cbm`` bytes; the rule table as JSON), so a store on object storage
carries its models with it. Exactly one version per tenant and kind is *current* and scores.

A new model becomes current only if it beats the current one **on the same holdout**: the registry
rebuilds the holdout rows' features from the store and scores them with both models. Higher ROC AUC
wins; an AUC tie goes to the lower Brier score. :meth:`ModelRegistry.rollback` makes the version
that was current before the present one current again.

Models are never pooled or shared: every row and every lookup carries the tenant id.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from scoring.calibration import Platt, brier, finite, roc_auc
from scoring.features import MISSING, FeatureFrame, Kind, build_features
from scoring.leaf_shap import LeafShap
from scoring.rules import RuleBasedModel

log = logging.getLogger(__name__)

KEY_METRICS = ("auc", "pr_auc", "brier", "ece", "lift_top20", "n_train", "n_holdout")
"""Metrics copied from a report into the version listing."""


@runtime_checkable
class ScoringModel(Protocol):
    """What scoring code needs from a model, CatBoost or rule-based."""

    version: str
    kind: str
    rule_based: bool
    report: dict[str, Any]

    @property
    def feature_names(self) -> list[str]:
        """Feature columns the model reads, in order."""
        ...

    def predict_proba(self, features: FeatureFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n,)."""
        ...

    def contributions(self, features: FeatureFrame) -> pd.DataFrame:
        """Per-row, per-feature contributions in log-odds, index crm_id."""
        ...


class CatBoostModel:
    """A calibrated CatBoost classifier over a :class:`FeatureFrame`.

    ``predict_proba`` returns Platt-calibrated probabilities; ``contributions`` returns SHAP values
    scaled by the calibration slope, so a row's contributions plus the scaled expected value plus
    the calibration intercept add up to its calibrated log-odds. :meth:`predict_with_contributions`
    gives both from one ``Pool``.

    SHAP values come from per-leaf tables (:mod:`scoring.leaf_shap`), built on first use and checked
    once against CatBoost's own ``ShapValues``; a model they cannot reproduce is explained by
    CatBoost directly.
    """

    rule_based = False
    SHAP_CHECK_ROWS = 32
    """Rows whose table SHAP values are compared with CatBoost's before the tables are trusted."""
    SHAP_CHECK_TOLERANCE = 1e-9
    """Largest difference from CatBoost's SHAP values (log-odds) taken as rounding."""

    def __init__(
        self,
        model: Any,
        kind: str,
        feature_names: Sequence[str],
        cat_features: Sequence[str],
        calibration: Platt,
        *,
        version: str = "",
        report: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.kind = kind
        self._feature_names = list(feature_names)
        self.cat_features = [c for c in cat_features if c in self._feature_names]
        self.calibration = calibration
        self.version = version
        self.report = report or {}
        self._leaf_shap: LeafShap | None = None
        self._leaf_shap_state = "unbuilt"
        """``unbuilt``, ``ready`` (tables built, not yet checked), ``checked`` or ``unsupported``."""

    @property
    def feature_names(self) -> list[str]:
        """Feature columns the model reads, in order."""
        return list(self._feature_names)

    def matrix(self, features: FeatureFrame | pd.DataFrame) -> pd.DataFrame:
        """The model's columns from a frame: absent features empty, types as trained."""
        frame = features.frame if isinstance(features, FeatureFrame) else features
        out = pd.DataFrame(index=frame.index)
        for name in self._feature_names:
            if name in self.cat_features:
                column = frame[name] if name in frame else pd.Series(MISSING, index=frame.index)
                out[name] = column.astype(object).where(column.notna(), MISSING).astype(str)
            else:
                column = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
                out[name] = pd.to_numeric(column, errors="coerce").astype(float)
        return out

    def pool(self, features: FeatureFrame | pd.DataFrame) -> Any:
        """A CatBoost ``Pool`` of the model's columns."""
        from catboost import Pool

        return Pool(self.matrix(features), cat_features=self.cat_features)

    def raw(self, features: FeatureFrame | pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds."""
        return np.asarray(self.model.predict(self.pool(features), prediction_type="RawFormulaVal"))

    def predict_proba(self, features: FeatureFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n,)."""
        if len(features.frame) == 0:
            return np.zeros(0)
        return self.calibration.apply(self.raw(features))

    def contributions(self, features: FeatureFrame) -> pd.DataFrame:
        """SHAP values in calibrated log-odds, one column per feature, index crm_id."""
        index = features.frame.index
        if len(index) == 0:
            return pd.DataFrame(columns=self._feature_names, index=index, dtype=float)
        return self._contributions(self.pool(features), index)

    def predict_with_contributions(self, features: FeatureFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """:meth:`predict_proba` and :meth:`contributions` of a batch, from one ``Pool``.

        With SHAP tables, one pass over the trees (``calc_leaf_indexes``) gives both: the raw
        prediction is the same sum of leaf values, in the same order, that ``predict`` adds up.
        """
        index = features.frame.index
        if len(index) == 0:
            return np.zeros(0), self.contributions(features)
        raw, shap = self._raw_and_shap(self.pool(features))
        values = shap * self.calibration.a
        contributions = pd.DataFrame(values, index=index, columns=self._feature_names)
        return self.calibration.apply(raw), contributions

    def prepare_explanations(self) -> bool:
        """Build the per-leaf SHAP tables now rather than on the first batch; whether they exist."""
        if self._leaf_shap_state == "unbuilt":
            self._leaf_shap = LeafShap.from_catboost(self.model, len(self._feature_names))
            self._leaf_shap_state = "ready" if self._leaf_shap is not None else "unsupported"
            if self._leaf_shap is None:
                log.info(
                    "%s: SHAP tables unsupported for this model; CatBoost explains", self.version
                )
        return self._leaf_shap is not None

    def _contributions(self, pool: Any, index: pd.Index) -> pd.DataFrame:
        values = self._raw_and_shap(pool)[1] * self.calibration.a
        return pd.DataFrame(values, index=index, columns=self._feature_names)

    def _raw_and_shap(self, pool: Any) -> tuple[np.ndarray, np.ndarray]:
        """Raw log-odds and exact SHAP values (rows x features, expected value left out)."""
        tables = self._leaf_shap if self.prepare_explanations() else None
        if tables is not None:
            # One thread: measured no faster with more on 5k-100k rows, and slower on a busy host.
            leaves = self.model.calc_leaf_indexes(pool, thread_count=1)
            raw, shap = tables.evaluate(leaves)
            if self._leaf_shap_state == "checked" or self._tables_agree(pool, raw, shap):
                return raw, shap
        raw = np.asarray(self.model.predict(pool, prediction_type="RawFormulaVal"))
        shap = self.model.get_feature_importance(data=pool, type="ShapValues")
        return raw, np.asarray(shap)[:, :-1]

    def _tables_agree(self, pool: Any, raw: np.ndarray, shap: np.ndarray) -> bool:
        """Check the tables against CatBoost on a few rows, once per model.

        Predictions must match ``predict`` exactly, SHAP values ``ShapValues`` to rounding.
        """
        rows = list(range(min(len(raw), self.SHAP_CHECK_ROWS)))
        sample = pool.slice(rows)
        exact_raw = np.asarray(self.model.predict(sample, prediction_type="RawFormulaVal"))
        exact_shap = np.asarray(self.model.get_feature_importance(data=sample, type="ShapValues"))
        gap = float(np.max(np.abs(exact_shap[:, :-1] - shap[rows]), initial=0.0))
        if np.array_equal(exact_raw, raw[rows]) and gap <= self.SHAP_CHECK_TOLERANCE:
            self._leaf_shap_state = "checked"
            return True
        log.warning(
            "%s: SHAP tables disagree with CatBoost (SHAP gap %.3g, predictions %s); CatBoost "
            "explains this model",
            self.version,
            gap,
            "equal" if np.array_equal(exact_raw, raw[rows]) else "differ",
        )
        self._leaf_shap, self._leaf_shap_state = None, "unsupported"
        return False

    def meta(self) -> dict[str, Any]:
        """What the registry stores beside the artifact."""
        return {
            "kind": self.kind,
            "rule_based": False,
            "feature_names": self._feature_names,
            "cat_features": self.cat_features,
            "calibration": self.calibration.as_dict(),
        }

    def artifact(self) -> bytes:
        """The CatBoost model as ``cbm`` bytes."""
        handle, path = tempfile.mkstemp(suffix=".cbm")
        os.close(handle)
        try:
            self.model.save_model(path, format="cbm")
            with open(path, "rb") as stream:
                return stream.read()
        finally:
            os.unlink(path)

    @classmethod
    def from_artifact(
        cls, blob: bytes, meta: dict[str, Any], *, version: str = "", report: dict[str, Any]
    ) -> CatBoostModel:
        """Rebuild from ``cbm`` bytes and :meth:`meta`."""
        from catboost import CatBoostClassifier

        model = CatBoostClassifier()
        model.load_model(blob=blob)
        calibration = Platt(**meta.get("calibration", {}))
        return cls(
            model,
            meta["kind"],
            meta["feature_names"],
            meta.get("cat_features", []),
            calibration,
            version=version,
            report=report,
        )


def predict_with_contributions(
    model: ScoringModel, features: FeatureFrame
) -> tuple[np.ndarray, pd.DataFrame]:
    """Probabilities and contributions of a batch, sharing the model's work where it can."""
    combined = getattr(model, "predict_with_contributions", None)
    if callable(combined):
        probabilities, contributions = combined(features)
        return np.asarray(probabilities), contributions
    return np.asarray(model.predict_proba(features)), model.contributions(features)


def load_model(row: dict[str, Any]) -> ScoringModel:
    """A model from its registry row (artifact included)."""
    meta = json.loads(row["meta_json"])
    report = json.loads(row["report_json"] or "{}")
    if meta.get("rule_based"):
        return RuleBasedModel.from_artifact(row["artifact"], version=row["version"], report=report)
    return CatBoostModel.from_artifact(row["artifact"], meta, version=row["version"], report=report)


class ModelRegistry:
    """Per-tenant model versions in the store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._cache: dict[tuple[str, str, str], ScoringModel] = {}

    def current(self, tenant_id: str, kind: str) -> ScoringModel | None:
        """The version that scores now, or None before the first training."""
        rows = [r for r in self.store.get_models(tenant_id, kind) if r["is_current"]]
        if not rows:
            return None
        return self.load(tenant_id, kind, rows[-1]["version"])

    def load(self, tenant_id: str, kind: str, version: str) -> ScoringModel:
        """One version by name.

        Raises:
            KeyError: no such version.
        """
        key = (tenant_id, kind, version)
        if key not in self._cache:
            rows = self.store.get_models(tenant_id, kind, version=version, artifacts=True)
            if not rows:
                raise KeyError(f"{tenant_id} has no {kind} model {version!r}")
            self._cache[key] = load_model(rows[0])
        return self._cache[key]

    def versions(self, tenant_id: str, kind: str) -> list[dict[str, Any]]:
        """Every version, oldest first: name, times, whether current or ever promoted, key metrics."""
        out = []
        for row in self.store.get_models(tenant_id, kind):
            metrics = json.loads(row["metrics_json"] or "{}")
            out.append(
                {
                    "version": row["version"],
                    "created_at": _iso(row["created_at"]),
                    "promoted": row["promoted_at"] is not None,
                    "promoted_at": _iso(row["promoted_at"]),
                    "current": bool(row["is_current"]),
                    "rule_based": bool(row["rule_based"]),
                    **{k: metrics.get(k) for k in KEY_METRICS},
                }
            )
        return out

    def report(self, tenant_id: str, kind: str, version: str | None = None) -> dict[str, Any]:
        """The saved report of a version (default: the current one), with its latest monitoring.

        Raises:
            KeyError: no such version, or no current model.
        """
        rows = self.store.get_models(tenant_id, kind, version=version)
        if version is None:
            rows = [r for r in rows if r["is_current"]]
        if not rows:
            raise KeyError(f"{tenant_id} has no {kind} model {version or '(current)'}")
        row = rows[-1]
        report = json.loads(row["report_json"] or "{}")
        report["model_version"] = row["version"]
        report["current"] = bool(row["is_current"])
        if row.get("monitoring_json"):
            report["monitoring"] = json.loads(row["monitoring_json"])
        return report

    def register(
        self,
        tenant_id: str,
        kind: Kind,
        model: ScoringModel,
        holdout_ids: Sequence[str],
        *,
        holdout: FeatureFrame | None = None,
    ) -> dict[str, Any]:
        """Save a new version; make it current only if it beats the current one on the same holdout.

        Args:
            tenant_id: the tenant.
            kind: ``lead`` or ``opportunity``.
            model: the new model (its ``version`` and report's ``model_version`` are set here).
            holdout_ids: the records the new model was evaluated on.
            holdout: their features with labels, when they are not in the store (CSV training);
                by default they are rebuilt from the store.

        Returns:
            ``version``, ``promoted``, ``reason`` and the ``comparison`` on the holdout.
        """
        existing = self.store.get_models(tenant_id, kind)
        seq = (max(r["seq"] for r in existing) + 1) if existing else 1
        version = f"{kind}-v{seq}"
        model.version = version
        model.report["model_version"] = version
        current = self.current(tenant_id, kind)
        comparison: dict[str, Any] = {}
        if current is None:
            promoted, reason = True, "first model of this kind"
        else:
            frame = holdout
            if frame is None:
                frame = build_features(
                    self.store, tenant_id, kind, crm_ids=list(holdout_ids), for_training=True
                )
            promoted, reason, comparison = _compare(model, current, frame)
        model.report["promoted"] = promoted
        model.report["promotion"] = {"reason": reason, "comparison": comparison}
        now = datetime.now(UTC)
        metrics = {k: model.report.get(k) for k in KEY_METRICS}
        self.store.put_model(
            tenant_id,
            {
                "kind": kind,
                "version": version,
                "seq": seq,
                "created_at": now,
                "rule_based": bool(model.rule_based),
                "is_current": False,
                "promoted_at": None,
                "metrics_json": json.dumps(metrics, default=str),
                "report_json": json.dumps(model.report, default=str),
                "meta_json": json.dumps(model.meta(), default=str),  # type: ignore[attr-defined]
                "holdout_ids_json": json.dumps(list(holdout_ids)),
                "monitoring_json": None,
                "artifact": model.artifact(),  # type: ignore[attr-defined]
            },
        )
        if promoted:
            self.store.set_current_model(tenant_id, kind, version)
        log.info("%s %s: registered %s (%s)", tenant_id, kind, version, reason)
        return {
            "version": version,
            "promoted": promoted,
            "reason": reason,
            "comparison": comparison,
        }

    def rollback(self, tenant_id: str, kind: str) -> str:
        """Make the version that was current before the present one current again; return it.

        Raises:
            LookupError: there is no earlier promoted version to go back to.
        """
        rows = self.store.get_models(tenant_id, kind)
        current = [r for r in rows if r["is_current"]]
        if not current:
            raise LookupError(f"{tenant_id} has no current {kind} model to roll back")
        now_seq = current[-1]["seq"]
        earlier = [r for r in rows if r["promoted_at"] is not None and r["seq"] < now_seq]
        if not earlier:
            raise LookupError(
                f"{tenant_id} {kind}: {current[-1]['version']} is the first promoted version; "
                "nothing to roll back to"
            )
        target = earlier[-1]["version"]
        self.store.set_current_model(tenant_id, kind, target)
        log.info("%s %s: rolled back to %s", tenant_id, kind, target)
        return str(target)


def _compare(
    new: ScoringModel, current: ScoringModel, frame: FeatureFrame
) -> tuple[bool, str, dict[str, Any]]:
    labels = frame.labels
    if labels is None or labels.dropna().empty:
        return False, "holdout has no outcomes to compare on; current model kept", {}
    known = labels.dropna().index
    rows = frame.subset(known)
    y = rows.labels.to_numpy() if rows.labels is not None else np.zeros(0)
    p_new, p_cur = new.predict_proba(rows), current.predict_proba(rows)
    auc_new, auc_cur = roc_auc(p_new, y), roc_auc(p_cur, y)
    brier_new, brier_cur = brier(p_new, y), brier(p_cur, y)
    comparison = {
        "against": current.version,
        "n_holdout": len(y),
        "auc_new": finite(auc_new),
        "auc_current": finite(auc_cur),
        "brier_new": finite(brier_new),
        "brier_current": finite(brier_cur),
    }
    if np.isfinite(auc_new) and np.isfinite(auc_cur) and abs(auc_new - auc_cur) > 1e-9:
        better = auc_new > auc_cur
        reason = f"holdout AUC {auc_new:.4f} vs {auc_cur:.4f} for {current.version}"
    else:
        better = brier_new < brier_cur
        reason = f"holdout Brier {brier_new:.4f} vs {brier_cur:.4f} for {current.version}"
    return better, ("promoted: " if better else "kept current: ") + reason, comparison


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None
