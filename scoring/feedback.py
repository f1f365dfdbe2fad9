"""What reps tell Fieldwise from the widgets, and how training and the model report use it.

Each piece of feedback is one row of the tenant's ``feedback`` table: a thumbs up or down on one
result of one record, "not a fit" with a reason, an owner override (the user the rep would route
to) or a score override (0-100, with a reason). Rows are only ever appended, so the table is the
history of what reps said; the widget shows each user their own latest word per result.

How training uses it (:func:`with_feedback_labels`), and why only this much:

* A lead a rep marked **not a fit** that has **not converted** is a labelled negative from then
  on, even before it is old enough to count as "not converted" by the maturity rule: the rep has
  looked and dismissed it, which is the outcome the maturity wait stands in for. A lead that did
  convert stays positive: the outcome is the label, and the disagreement is reported instead.
* Thumbs and overrides change no label. A thumbs-down says the rep doubts a score, not that the
  lead will not convert, and a score override is an opinion of a probability. Turning either into
  labels or weights would teach the model the reps' current beliefs rather than outcomes; they are
  summarised in the report (:func:`feedback_summary`), where disagreement is a signal to review
  the model, the features or the grade thresholds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.store import Store
from scoring.features import FeatureFrame, build_features

TABLE = "feedback"
SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("crm_id", pa.string()),
        ("entity", pa.string()),
        ("result", pa.string()),
        ("vote", pa.string()),
        ("reason", pa.string()),
        ("override_owner", pa.string()),
        ("override_score", pa.int32()),
        ("user_id", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)
VOTES = ("up", "down", "not_a_fit", "override")
"""``up``/``down`` judge a result; ``not_a_fit`` dismisses the record; ``override`` corrects it."""


@dataclass(frozen=True)
class Feedback:
    """One rep's word on one result of one record."""

    entity: str
    crm_id: str
    result: str
    vote: str
    user_id: str | None
    reason: str | None = None
    override_owner: str | None = None
    override_score: int | None = None
    at: datetime | None = None


def record_feedback(store: Store, tenant_id: str, entries: Sequence[Feedback]) -> int:
    """Append feedback rows (already validated by the caller); returns how many.

    Raises:
        ValueError: an unknown vote, or a score override outside 0-100.
    """
    for entry in entries:
        if entry.vote not in VOTES:
            raise ValueError(f"unknown vote {entry.vote!r}; expected one of {', '.join(VOTES)}")
        if entry.override_score is not None and not 0 <= entry.override_score <= 100:
            raise ValueError(f"override_score {entry.override_score} is outside 0-100")
    now = datetime.now(UTC)
    rows = [
        {
            "tenant_id": tenant_id,
            "crm_id": e.crm_id,
            "entity": e.entity,
            "result": e.result,
            "vote": e.vote,
            "reason": e.reason,
            "override_owner": e.override_owner,
            "override_score": e.override_score,
            "user_id": e.user_id,
            "at": (e.at or now).astimezone(UTC),
        }
        for e in entries
    ]
    return store.append_rows(tenant_id, TABLE, SCHEMA, rows)


def read_feedback(
    store: Store, tenant_id: str, filters: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Feedback rows of a tenant matching equality filters, oldest first."""
    rows = store.read_rows(tenant_id, TABLE, SCHEMA, filters)
    return sorted(rows, key=lambda r: r["at"])


def feedback_state(
    store: Store, tenant_id: str, entity: str, crm_id: str, user_id: str | None
) -> dict[str, dict[str, Any]]:
    """One user's latest feedback per result on one record (what the widget shows as chosen)."""
    if not user_id:
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for row in read_feedback(
        store, tenant_id, {"entity": entity, "crm_id": crm_id, "user_id": user_id}
    ):
        latest[row["result"]] = {
            "vote": row["vote"],
            "reason": row["reason"],
            "override_owner": row["override_owner"],
            "override_score": row["override_score"],
            "at": row["at"].isoformat(),
        }
    return latest


def feedback_summary(store: Store, tenant_id: str) -> dict[str, Any]:
    """Counts per result and vote, the agreement rate and the overrides, for the model report.

    ``agreement_rate`` is thumbs up over all thumbs (None without any); ``not_a_fit`` counts
    dismissed records per entity; ``overrides`` counts owner and score overrides, with the mean
    overriding score.
    """
    rows = read_feedback(store, tenant_id)
    by_result: dict[str, Counter[str]] = {}
    for row in rows:
        by_result.setdefault(row["result"], Counter())[row["vote"]] += 1
    votes = Counter(row["vote"] for row in rows)
    thumbs = votes["up"] + votes["down"]
    scores = [r["override_score"] for r in rows if r["override_score"] is not None]
    dismissed = Counter(r["entity"] for r in rows if r["vote"] == "not_a_fit")
    return {
        "total": len(rows),
        "by_result": {result: dict(counts) for result, counts in sorted(by_result.items())},
        "agreement_rate": round(votes["up"] / thumbs, 4) if thumbs else None,
        "not_a_fit": dict(sorted(dismissed.items())),
        "overrides": {
            "owner": sum(1 for r in rows if r["override_owner"]),
            "score": len(scores),
            "mean_override_score": round(float(np.mean(scores)), 2) if scores else None,
        },
        "users": len({r["user_id"] for r in rows if r["user_id"]}),
    }


# --------------------------------------------------------------------------------------------------
# Training signal


def not_a_fit_ids(store: Store, tenant_id: str, entity: str = "lead") -> list[str]:
    """Records a rep marked "not a fit", in the order they were first marked."""
    rows = read_feedback(store, tenant_id, {"entity": entity, "vote": "not_a_fit"})
    return list(dict.fromkeys(r["crm_id"] for r in rows))


def with_feedback_labels(
    store: Store,
    tenant_id: str,
    frame: FeatureFrame,
    *,
    as_of: datetime | None = None,
    excluded_fields: Iterable[str] = (),
) -> tuple[FeatureFrame, dict[str, Any]]:
    """Add the leads reps dismissed as labelled negatives to a training frame.

    Args:
        store: the store.
        tenant_id: the tenant.
        frame: the training frame from ``build_features(..., for_training=True)``.
        as_of: the moment training looks from (as given to ``build_features``).
        excluded_fields: the admin's excluded fields (as given to ``build_features``).

    Returns:
        The frame (a new one when rows were added) and what changed: ``added_negatives`` (open
        leads now labelled 0), ``kept_positive`` (dismissed leads that converted anyway) and
        ``already_negative``.
    """
    info: dict[str, Any] = {"added_negatives": 0, "kept_positive": 0, "already_negative": 0}
    if frame.kind != "lead":
        return frame, info
    marked = not_a_fit_ids(store, tenant_id, "lead")
    if not marked:
        return frame, info
    labels = frame.labels if frame.labels is not None else pd.Series(dtype=float)
    present = [i for i in marked if i in frame.frame.index]
    info["kept_positive"] = sum(1 for i in present if labels.get(i) == 1.0)
    info["already_negative"] = sum(1 for i in present if labels.get(i) == 0.0)
    missing = [i for i in marked if i not in frame.frame.index]
    if not missing:
        return frame, info
    extra = build_features(
        store, tenant_id, "lead", crm_ids=missing, as_of=as_of, excluded_fields=excluded_fields
    )
    if extra.labels is not None:
        # A lead converted by now is labelled positive already and sits in the training frame.
        extra = extra.subset([i for i in extra.frame.index if extra.labels.get(i) != 1.0])
    if not len(extra):
        return frame, info
    info["added_negatives"] = len(extra)
    return _concat(frame, extra, label=0.0), info


def _concat(base: FeatureFrame, extra: FeatureFrame, *, label: float) -> FeatureFrame:
    """``base`` plus ``extra``'s rows, on ``base``'s columns, every added row labelled ``label``."""
    added = extra.frame.reindex(columns=base.frame.columns)
    for column in base.cat_features:
        added[column] = added[column].where(added[column].notna(), "missing").astype(str)
    labels = base.labels if base.labels is not None else pd.Series(dtype=float)
    new_labels = pd.Series(label, index=added.index, dtype=float)
    return FeatureFrame(
        kind=base.kind,
        frame=pd.concat([base.frame, added]),
        cat_features=list(base.cat_features),
        labels=pd.concat([labels, new_labels]).rename(labels.name),
        as_of=pd.concat([base.as_of, extra.as_of.loc[added.index]]),
        evidence={**base.evidence, **extra.evidence},
        segments=pd.concat([base.segments, extra.segments.reindex(columns=base.segments.columns)]),
        info=dict(base.info),
        sources=pd.concat([base.sources, extra.sources]),
    )
