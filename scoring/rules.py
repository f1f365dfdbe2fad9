"""The transparent fallback: a rule-based fit + engagement score for tenants with too little history.

When a tenant's history fails the sufficiency check (:mod:`scoring.training`), Fieldwise does not
borrow another tenant's data and does not pretend a small CatBoost model is trustworthy. It scores
with a table of rules a person can read: each rule is "field in this band or value -> points", and
the score is ``round(100 * sigmoid(base + sum of points))``. The CRM shows such scores labelled as
rule-based, and the report says which requirement failed.

* **Fit rules** come from the record's firmographics and source (categorical fields with at most
  :data:`MAX_LEVELS` values).
* **Engagement rules** come from activity and engagement counts, recency and note signals, in fixed
  bands (0, 1-2, 3-5, 6+; recency 0-7, 8-14, 15-30, 31+ days).

Points are in log-odds. With outcomes available they are the shrunk log-odds of each band against
the tenant's base rate (``strength`` pseudo-records pull small bands toward zero), halved because
correlated rules would otherwise count the same evidence twice; the base is then set so the average
score matches the base rate. With no outcomes at all, the engagement rules get default points and
fit rules none; the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.calibration import logit, sigmoid
from scoring.features import MISSING, FeatureFrame

MAX_LEVELS = 30
"""Categorical fields with more values than this make no fit rule (too thin per value)."""
COUNT_EDGES = (0.5, 2.5, 5.5)
COUNT_LABELS = ("0", "1-2", "3-5", "6+")
RECENCY_EDGES = (7.0, 14.0, 30.0)
RECENCY_LABELS = ("0-7 days", "8-14 days", "15-30 days", "31+ days")
ENGAGEMENT_COUNTS = (
    "email_opens", "email_clicks", "page_visits", "form_fills", "n_activities", "n_meetings",
    "n_inbound", "buying_signals", "objections", "competitor_mentions", "n_competitors",
)  # fmt: skip
RECENCY = ("days_since_engaged", "days_since_activity")
DEFAULT_POINTS = {
    "count": (0.0, 0.3, 0.6, 0.9),
    "negative_count": (0.0, -0.3, -0.6, -0.9),
    "recency": (0.6, 0.3, 0.0, -0.3),
}
"""Points used when the tenant has no outcomes yet."""
_NEGATIVE = frozenset({"objections", "competitor_mentions", "n_competitors"})


@dataclass
class Rule:
    """One field's rule: a band or value per row, and points per band or value."""

    feature: str
    kind: str
    """``category`` (by value) or ``bands`` (numeric, by ``edges``)."""
    points: dict[str, float]
    edges: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()

    def band(self, values: pd.Series) -> pd.Series:
        """The band or value each row falls into."""
        if self.kind == "category":
            return values.fillna(MISSING).astype(str)
        numbers = pd.to_numeric(values, errors="coerce")
        which = np.digitize(numbers.fillna(-1).to_numpy(), self.edges)
        out = pd.Series([self.labels[i] for i in which], index=values.index, dtype=object)
        return out.where(numbers.notna(), MISSING)

    def score(self, values: pd.Series) -> pd.Series:
        """Points per row (0 for a value the rule has never seen)."""
        return self.band(values).map(lambda b: self.points.get(b, 0.0)).astype(float)


@dataclass
class RuleBasedModel:
    """A :class:`~scoring.registry.ScoringModel` made of readable rules (``rule_based`` is True)."""

    kind: str
    base: float
    rules: list[Rule]
    version: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    rule_based: bool = True

    @property
    def feature_names(self) -> list[str]:
        """The fields the rules read."""
        return [r.feature for r in self.rules]

    def contributions(self, features: FeatureFrame) -> pd.DataFrame:
        """Points per row and rule (log-odds), index crm_id."""
        frame = features.frame
        data = {
            r.feature: (
                r.score(frame[r.feature])
                if r.feature in frame
                else pd.Series(0.0, index=frame.index)
            )
            for r in self.rules
        }
        return pd.DataFrame(data, index=frame.index, columns=self.feature_names).astype(float)

    def predict_proba(self, features: FeatureFrame) -> np.ndarray:
        """Probabilities: ``sigmoid(base + sum of points)``."""
        total = self.contributions(features).sum(axis=1).to_numpy()
        return sigmoid(self.base + total)

    def describe(self) -> list[dict[str, Any]]:
        """The rule table, for the report and the admin console."""
        return [
            {"feature": r.feature, "kind": r.kind,
             "points": {k: round(v, 3) for k, v in r.points.items()}}
            for r in self.rules
        ]  # fmt: skip

    def meta(self) -> dict[str, Any]:
        """What the registry stores beside the artifact."""
        return {"kind": self.kind, "rule_based": True, "feature_names": self.feature_names}

    def artifact(self) -> bytes:
        """The rules as JSON bytes."""
        body = {
            "kind": self.kind,
            "base": self.base,
            "rules": [
                {"feature": r.feature, "kind": r.kind, "points": r.points,
                 "edges": list(r.edges), "labels": list(r.labels)}
                for r in self.rules
            ],
        }  # fmt: skip
        return json.dumps(body, sort_keys=True).encode("utf-8")

    @classmethod
    def from_artifact(
        cls, blob: bytes, *, version: str = "", report: Mapping[str, Any] | None = None
    ) -> RuleBasedModel:
        """Rebuild a model from :meth:`artifact` bytes."""
        body = json.loads(blob.decode("utf-8"))
        rules = [
            Rule(r["feature"], r["kind"], dict(r["points"]), tuple(r["edges"]), tuple(r["labels"]))
            for r in body["rules"]
        ]
        return cls(body["kind"], float(body["base"]), rules, version, dict(report or {}))


def fit_rules(
    features: FeatureFrame,
    labels: pd.Series | None = None,
    *,
    strength: float = 30.0,
    damping: float = 0.5,
) -> RuleBasedModel:
    """Fit the rule table on the rows of ``features`` that have outcomes.

    Args:
        features: the rows to learn from (their ``labels``, or ``labels`` given here).
        labels: outcomes overriding ``features.labels``.
        strength: pseudo-records of the base rate added to every band (shrinkage).
        damping: share of each band's log-odds kept (correlated rules overlap).
    """
    frame = features.frame
    y = labels if labels is not None else features.labels
    known = y.dropna() if y is not None else pd.Series(dtype=float)
    rules = _rule_shapes(frame, features.cat_features)
    if known.empty or known.min() == known.max():
        base_rate = float(known.mean()) if not known.empty else 0.1
        base_rate = min(max(base_rate, 0.02), 0.98)
        for rule in rules:
            if rule.kind == "bands":
                shape = _default_shape(rule.feature)
                rule.points = dict(zip(rule.labels, DEFAULT_POINTS[shape], strict=True))
                rule.points[MISSING] = 0.0
        model = RuleBasedModel(features.kind, float(logit(base_rate)), rules)
        model.report["rule_points"] = "default points: no outcomes to learn from"
        return model
    rows = frame.loc[known.index]
    p = float(known.mean())
    for rule in rules:
        bands = rule.band(rows[rule.feature])
        table = pd.DataFrame({"band": bands.to_numpy(), "y": known.to_numpy()})
        stats = table.groupby("band")["y"].agg(["sum", "count"])
        points = {}
        for band, (pos, count) in stats.iterrows():
            odds = (pos + strength * p) / (count - pos + strength * (1 - p))
            points[str(band)] = damping * (math.log(odds) - float(logit(p)))
        rule.points = points
    total = sum(
        (r.score(rows[r.feature]) for r in rules), start=pd.Series(0.0, index=rows.index)
    ).to_numpy()
    base = _match_rate(total, p)
    model = RuleBasedModel(features.kind, base, [r for r in rules if r.points])
    model.report["rule_points"] = f"learned from {len(known)} outcomes with shrinkage"
    return model


def _rule_shapes(frame: pd.DataFrame, cat_features: Sequence[str]) -> list[Rule]:
    rules: list[Rule] = []
    for name in cat_features:
        if name in frame and 1 < frame[name].nunique() <= MAX_LEVELS:
            rules.append(Rule(name, "category", {}))
    for name in (*ENGAGEMENT_COUNTS, *RECENCY):
        if name in frame:
            if name in RECENCY:
                rules.append(Rule(name, "bands", {}, RECENCY_EDGES, RECENCY_LABELS))
            else:
                rules.append(Rule(name, "bands", {}, COUNT_EDGES, COUNT_LABELS))
    return rules


def _default_shape(feature: str) -> str:
    if feature in RECENCY:
        return "recency"
    return "negative_count" if feature in _NEGATIVE else "count"


def _match_rate(total: np.ndarray, rate: float) -> float:
    """The base log-odds at which the mean probability equals ``rate`` (Newton's method)."""
    b = float(logit(rate))
    for _ in range(50):
        p = sigmoid(b + total)
        grad = float(p.mean() - rate)
        slope = float((p * (1 - p)).mean()) + 1e-9
        b -= grad / slope
        if abs(grad) < 1e-10:
            break
    return b
