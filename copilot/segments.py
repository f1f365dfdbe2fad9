"""Segment specialists: accounts clustered into micro-segments, each with a context document.

Every account is described by two things: what its records say (the mean embedding of the notes on
the account, its contacts and its deals) and its firmographics (industry, employee band, region,
annual revenue). Those features go into k-means (numpy only); the number of segments is the
tenant's ``segment_count`` or, when that is 0, the one with the best silhouette over a small range.
A cluster smaller than ``segment_min_accounts`` is merged into the nearest cluster that is big
enough, or, when none is, every account lands in one segment named "Other".

Each segment gets a readable name (dominant size band, industry and region, plus the note theme
that sets it apart, e.g. "Mid-market Software, EMEA - security-led") and a context document built
in code from its accounts' records: win rate, median won deal size, median won cycle (created to
close date), recurring pains, what came up in won deals, objections, competitors and discovery
questions, every item citing the notes or deals it was counted from.

Tables (tenant-scoped feature tables owned here):

* ``segments``: one row per segment with its centroid, the feature layout needed to place a new
  record, and the context document as JSON.
* ``segment_members``: one row per account with its segment and distance to the centroid (it has
  ``crm_id``, so erasing an account removes its membership).

The daily job :func:`assign_segments` re-clusters and matches the new clusters to the old ones by
overlap, so a segment keeps its id while its membership mostly agrees. :func:`on_deal_closed`
recomputes only the context documents of the segments whose deals closed, without re-clustering.
The segment name is written to the AI Segment field of accounts, contacts and leads through
``copilot.results``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from statistics import median
from typing import Any

import numpy as np
import pyarrow as pa
from marshmallow import Schema, fields, validate
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from copilot.llm import Evidence, Task, cited_text_json, cited_text_schema
from copilot.results import CopilotResult, save_results
from core.embeddings import DIMENSION
from core.store import Store

SEGMENTS_TABLE = "segments"
SEGMENTS_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("segment_id", pa.string()),
        ("name", pa.string()),
        ("size", pa.int64()),
        ("centroid", pa.list_(pa.float32())),
        ("layout_json", pa.string()),
        ("context_json", pa.string()),
        ("version", pa.int64()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
MEMBERS_TABLE = "segment_members"
MEMBERS_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("crm_id", pa.string()),
        ("segment_id", pa.string()),
        ("distance", pa.float64()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

OTHER_NAME = "Other"
"""The segment every account joins when no cluster reaches the minimum size."""
MAX_NAME_CHARS = 80
"""The AI Segment field's length in both manifests."""
MAX_EVIDENCE_CHARS = 1500
"""Longest segment context handed to battle cards and forecast notes."""
AUTO_K_MAX = 12
"""Largest segment count the silhouette search tries."""
SILHOUETTE_SAMPLE = 2000
"""Accounts the silhouette is computed over (pairwise distances grow with the square)."""
MATCH_SHARE = 0.5
"""A new cluster keeps an old id when more than this share of its members came from it."""
ITEMS_PER_SECTION = 5
CITES_PER_ITEM = 3

BANDS: tuple[tuple[str, int, str], ...] = (
    ("1-50", 50, "Small business"),
    ("51-200", 200, "Lower mid-market"),
    ("201-1000", 1000, "Mid-market"),
    ("1001-5000", 5000, "Upper mid-market"),
    ("5000+", 10**12, "Enterprise"),
)
"""Employee band, inclusive upper bound, and the words a segment name uses for it."""

WEIGHTS: Mapping[str, float] = {
    "industry": 1.0,
    "size": 0.8,
    "region": 0.8,
    "revenue": 0.4,
    "notes": 1.0,
}
"""Weight of each feature block; each block has about unit length before weighting, so these say
how much a difference in that block moves an account."""

DOMINANT_SHARE = 0.5
"""A firmographic value names a segment when more than this share of its accounts have it."""


@dataclass(frozen=True)
class Theme:
    """A recurring topic of sales notes, found by keywords."""

    key: str
    kind: str  # pain, objection or signal
    label: str
    tag: str
    pattern: re.Pattern[str]
    question: str


def _theme(key: str, kind: str, label: str, tag: str, words: str, question: str) -> Theme:
    return Theme(key, kind, label, tag, re.compile(words, re.IGNORECASE), question)


THEMES: tuple[Theme, ...] = (
    _theme(
        "manual_reporting",
        "pain",
        "Manual reporting and forecasting",
        "reporting-pain",
        r"spreadsheet|manual|hours a week|error-prone",
        "How is the forecast built today, and how many hours a week does it take?",
    ),
    _theme(
        "visibility",
        "pain",
        "No clear view of the pipeline",
        "visibility-led",
        r"visibility|single view|nobody can say|no one can say",
        "Who needs a view of the funnel, and what do they decide with it?",
    ),
    _theme(
        "data_quality",
        "pain",
        "Poor CRM data quality",
        "data-quality-led",
        r"data quality|no owner|duplicate",
        "How much of the CRM data is trusted today, and who owns cleaning it?",
    ),
    _theme(
        "lead_handoff",
        "pain",
        "Leads lost or wasted between teams",
        "funnel-leak-led",
        r"handoff|on the floor|waste time|never convert",
        "Where do leads fall through between marketing and sales?",
    ),
    _theme(
        "scale",
        "pain",
        "Tooling that does not scale",
        "scale-led",
        r"cannot handle|volume of",
        "What volume of records and users must the tool handle in a year?",
    ),
    _theme(
        "routing",
        "pain",
        "Territory routing that keeps breaking",
        "routing-led",
        r"territor|routing",
        "How are territories and lead routing maintained today?",
    ),
    _theme(
        "renewals",
        "pain",
        "Renewals that surprise them",
        "renewal-led",
        r"renewals? keep|renewals? surprise",
        "How early do they know which renewals are at risk?",
    ),
    _theme(
        "price",
        "objection",
        "Price and budget pushback",
        "price-sensitive",
        r"\bprice\b|too rich|sticker shock|\bcost\b|discount|cheaper",
        "What budget range is set aside, and who can approve beyond it?",
    ),
    _theme(
        "security",
        "objection",
        "Security review and data residency",
        "security-led",
        r"security|infosec|soc 2|ciso|data residency|vendor risk|pen-test",
        "What does their security team need (SOC 2, pen test, residency) and how long does it take?",
    ),
    _theme(
        "integration",
        "objection",
        "Integration and migration effort",
        "integration-heavy",
        r"integrat|migration|legacy|implementation",
        "Which systems must it connect to, and who on their side does the integration work?",
    ),
    _theme(
        "timing",
        "objection",
        "Timing, freezes and reorganisations",
        "timing-sensitive",
        r"not a priority|timing|freeze|reorg|circle back|pause|next quarter",
        "What else competes for the team's time this quarter, and what would make this urgent?",
    ),
    _theme(
        "incumbent",
        "objection",
        "Locked into an incumbent vendor",
        "incumbent-bound",
        r"locked into|incumbent|renews in|early-exit|switching cost|agreement runs",
        "Which vendor do they use today, and when does that contract end?",
    ),
    _theme(
        "champion",
        "signal",
        "A champion who sells internally",
        "champion-driven",
        r"champion|push this through|coached us|forwarding our deck|set up the meeting",
        "Who owns the problem and will carry the proposal to the executive sponsor?",
    ),
    _theme(
        "budget",
        "signal",
        "Budget approved early",
        "budget-ready",
        r"budget (line )?(is |of \S+ is )?approved|signed off|earmarked|set aside|money is there",
        "Is budget approved for this year, and by whom?",
    ),
    _theme(
        "pilot",
        "signal",
        "A pilot or proof of concept with measured results",
        "pilot-led",
        r"pilot|\bpoc\b|proof of concept|trial",
        "Would a short pilot with agreed success criteria help them decide?",
    ),
    _theme(
        "timeline",
        "signal",
        "A firm go-live date or mutual close plan",
        "deadline-driven",
        r"go-live|go live|deadline|close plan|rollout starts|decision expected",
        "Is there a date by which this must be live, and what drives it?",
    ),
    _theme(
        "legal",
        "signal",
        "Legal and procurement engaged early",
        "procurement-ready",
        r"legal|\bmsa\b|\bdpa\b|redlines|counsel|standard terms",
        "Who in legal and procurement must see the paper, and how long do they take?",
    ),
)
"""Themes the context documents count; labels and questions are Fieldwise's own wording."""

_WIN_REASON = re.compile(r"what won it:\s*([^.]+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PERSONAL = re.compile(r"@|\+?\d[\d ()-]{6,}\d")


class SegmentError(ValueError):
    """Bad input to a segment function; the message says what was wrong."""


# --------------------------------------------------------------------------------------------------
# Public reads


def segment_for_account(store: Store, tenant_id: str, account_id: str) -> dict[str, Any] | None:
    """The segment an account belongs to, with its context document.

    Args:
        store: the store.
        tenant_id: whose account.
        account_id: the account's CRM id.

    Returns:
        ``segment_id``, ``name``, ``size``, ``distance``, ``version``, ``updated_at`` and
        ``context`` (the context document), or None when the account has no segment yet.
    """
    members = store.read_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA, {"crm_id": account_id})
    if not members:
        return None
    rows = _segment_rows(store, tenant_id, [members[0]["segment_id"]])
    if not rows:
        return None
    found = _public(rows[0])
    found["distance"] = members[0]["distance"]
    return found


def segment_context(store: Store, tenant_id: str, account_id: str) -> Evidence | None:
    """The context of an account's segment as one piece of evidence for battle cards and notes.

    Args:
        store: the store.
        tenant_id: whose account.
        account_id: the account's CRM id.

    Returns:
        Evidence with ref ``segment:<segment_id>``, kind ``segment`` and the context document
        condensed to at most 1500 characters, or None when the account has no segment yet.
    """
    found = segment_for_account(store, tenant_id, account_id)
    if found is None:
        return None
    updated = found["updated_at"]
    return Evidence(
        ref=f"segment:{found['segment_id']}",
        kind="segment",
        date=updated.date().isoformat() if isinstance(updated, datetime) else None,
        text=condense(found["context"]),
        facets={"segment": found["segment_id"], "segment_name": found["name"]},
    )


def list_segments(store: Store, tenant_id: str) -> list[dict[str, Any]]:
    """Every segment of a tenant for the admin console, largest first.

    Returns:
        Dicts with ``segment_id``, ``name``, ``size``, ``version``, ``updated_at`` and ``context``.
    """
    rows = store.read_rows(
        tenant_id,
        SEGMENTS_TABLE,
        SEGMENTS_SCHEMA,
        columns=["segment_id", "name", "size", "context_json", "version", "updated_at"],
    )
    return sorted((_public(r) for r in rows), key=lambda s: (-s["size"], s["name"]))


def segment_members(store: Store, tenant_id: str) -> dict[str, str]:
    """Account CRM id -> segment id, for every account with a segment."""
    rows = store.read_rows(
        tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA, columns=["crm_id", "segment_id"]
    )
    return {r["crm_id"]: r["segment_id"] for r in rows}


def condense(context: Mapping[str, Any], limit: int = MAX_EVIDENCE_CHARS) -> str:
    """The context document as plain sentences of at most ``limit`` characters.

    The text names themes and counts only (no quotes from notes), so it carries no personal data.
    """
    stats = context.get("stats") or {}
    parts = [f"Segment {context.get('name')}: {context.get('accounts', 0)} accounts."]
    closed = stats.get("closed", 0)
    if closed:
        parts.append(
            f"Win rate {stats['win_rate']:.0%} ({stats['won']} won of {closed} closed deals)."
        )
    else:
        parts.append("No closed deals yet.")
    if stats.get("median_deal_size") is not None:
        parts.append(f"Median won deal {stats['median_deal_size']:,.0f}.")
    if stats.get("median_cycle_days") is not None:
        parts.append(f"Median won cycle {stats['median_cycle_days']:.0f} days.")
    for key, title in (
        ("pains", "Recurring pains"),
        ("resonated", "What resonated in won deals"),
        ("objections", "Objections"),
    ):
        items = context.get(key) or []
        if items:
            listed = "; ".join(f"{i['text']} ({i['count']})" for i in items)
            parts.append(f"{title}: {listed}.")
    competitors = context.get("competitors") or []
    if competitors:
        listed = "; ".join(
            f"{c['name']} in {c['count']} deals (won {c['won']}, lost {c['lost']})"
            for c in competitors
        )
        parts.append(f"Competitors: {listed}.")
    questions = context.get("discovery_questions") or []
    if questions:
        parts.append("Ask: " + " ".join(q["text"] for q in questions))
    text = " ".join(parts)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return cut[: cut.rfind(" ")].rstrip(" ;,:") + "…" if " " in cut else cut + "…"


# --------------------------------------------------------------------------------------------------
# Jobs


def assign_segments(
    services: Any,
    tenant_id: str,
    *,
    min_accounts: int | None = None,
    segment_count: int | None = None,
    seed: int = 0,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Re-cluster a tenant's accounts, rebuild every context document and write the names.

    The daily job. New clusters take the id of the old segment most of their members came from.

    Args:
        services: the process's services (store and tenant registry).
        tenant_id: whose accounts.
        min_accounts: overrides the tenant's ``segment_min_accounts``.
        segment_count: overrides the tenant's ``segment_count`` (0 chooses automatically).
        seed: seeds k-means, so a run is reproducible.
        now: the time stamped on rows and results (now when None).

    Returns:
        The segments as :func:`list_segments` gives them.

    Raises:
        SegmentError: a bad override.
    """
    settings = _settings(services, tenant_id)
    minimum = settings.segment_min_accounts if min_accounts is None else min_accounts
    count = settings.segment_count if segment_count is None else segment_count
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 1:
        raise SegmentError(f"min_accounts must be a positive whole number, got {minimum!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SegmentError(f"segment_count must be a whole number >= 0, got {count!r}")
    store: Store = services.store
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    data = _load(store, tenant_id)
    if not data.account_ids:
        _drop_all(store, tenant_id)
        return []
    layout = _fit_layout(data)
    features = _features(layout, data.firmographics(), data.account_vectors())
    labels = _cluster(features, count, minimum, seed)
    groups = _groups(data.account_ids, labels)
    old_members = segment_members(store, tenant_id)
    old_rows = {r["segment_id"]: r for r in _segment_rows(store, tenant_id, None)}
    ids = _match_ids(tenant_id, groups, old_members)
    competitors = dict(settings.competitors)
    names = _names(data, groups, big_enough=len(data.account_ids) >= minimum)
    rows, member_rows = [], []
    for index, members in enumerate(groups):
        segment_id = ids[index]
        positions = [data.position[a] for a in members]
        centroid = features[positions].mean(axis=0)
        distances = np.linalg.norm(features[positions] - centroid, axis=1)
        context = _context(data, members, segment_id, names[index], competitors)
        old = old_rows.get(segment_id)
        rows.append(
            {
                "segment_id": segment_id,
                "name": names[index],
                "size": len(members),
                "centroid": centroid.astype(np.float32).tolist(),
                "layout_json": json.dumps(layout),
                "context_json": _stamped(context, (old["version"] + 1) if old else 1, stamp),
                "version": (old["version"] + 1) if old else 1,
                "updated_at": stamp,
            }
        )
        member_rows += [
            {"crm_id": a, "segment_id": segment_id, "distance": float(d), "updated_at": stamp}
            for a, d in zip(members, distances.tolist(), strict=True)
        ]
    gone = sorted(set(old_rows) - set(ids))
    if gone:
        store.delete_rows(tenant_id, SEGMENTS_TABLE, SEGMENTS_SCHEMA, {"segment_id": gone})
    left = sorted(set(old_members) - set(data.account_ids))
    if left:
        store.delete_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA, {"crm_id": left})
    store.put_rows(tenant_id, SEGMENTS_TABLE, SEGMENTS_SCHEMA, rows, keys=["segment_id"])
    store.put_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA, member_rows, keys=["crm_id"])
    _write_results(store, tenant_id, data, rows, member_rows, layout, stamp)
    return list_segments(store, tenant_id)


def on_deal_closed(
    services: Any, tenant_id: str, opportunity_ids: Sequence[str], *, now: datetime | None = None
) -> list[str]:
    """Recompute the context documents of the segments whose deals just closed.

    The learning loop: statistics and items are rebuilt from the segments' current records; the
    membership, names and centroids stay as the last clustering left them.

    Args:
        services: the process's services.
        tenant_id: whose deals.
        opportunity_ids: CRM ids of the deals that closed.
        now: the time stamped on the documents (now when None).

    Returns:
        The ids of the segments whose documents were rebuilt, sorted.

    Raises:
        SegmentError: ``opportunity_ids`` is not a list of ids.
    """
    if isinstance(opportunity_ids, str | bytes) or not all(
        isinstance(i, str) and i for i in opportunity_ids
    ):
        raise SegmentError("opportunity_ids must be a list of non-empty CRM id strings")
    store: Store = services.store
    if not opportunity_ids:
        return []
    deals = store.query(
        tenant_id,
        "opportunity",
        filters={"crm_id": list(opportunity_ids)},
        columns=["crm_id", "account_id"],
    )
    accounts = sorted({d["account_id"] for d in deals if d["account_id"]})
    if not accounts:
        return []
    members = store.read_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA, {"crm_id": accounts})
    touched = sorted({m["segment_id"] for m in members})
    if not touched:
        return []
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    settings = _settings(services, tenant_id)
    data = _load(store, tenant_id)
    everyone = segment_members(store, tenant_id)
    rows = []
    for row in _segment_rows(store, tenant_id, touched):
        segment_id = row["segment_id"]
        accounts_in = sorted(
            a for a, s in everyone.items() if s == segment_id and a in data.position
        )
        context = _context(data, accounts_in, segment_id, row["name"], dict(settings.competitors))
        version = row["version"] + 1
        rows.append(
            {
                **row,
                "size": len(accounts_in),
                "context_json": _stamped(context, version, stamp),
                "version": version,
                "updated_at": stamp,
            }
        )
    store.put_rows(tenant_id, SEGMENTS_TABLE, SEGMENTS_SCHEMA, rows, keys=["segment_id"])
    return sorted(r["segment_id"] for r in rows)


def polish_summary(services: Any, tenant_id: str, segment_id: str) -> dict[str, Any]:
    """Write a short summary of a segment's context document and keep it in the document.

    The model (or, offline, :func:`summary_offline`) only words what the code computed: the facts
    are the statistics, and every bullet cites the notes or deals the items were counted from.

    Args:
        services: the process's services.
        tenant_id: whose segment.
        segment_id: which segment.

    Returns:
        ``{"bullets": [{"text", "cites"}], "offline": bool, "model": str | None}``.

    Raises:
        SegmentError: the tenant has no such segment.
        copilot.llm.GenerationFailed: the answer stayed invalid; nothing is stored.
    """
    from copilot.llm import copilot_for

    store: Store = services.store
    rows = _segment_rows(store, tenant_id, [segment_id])
    if not rows:
        raise SegmentError(f"tenant {tenant_id!r} has no segment {segment_id!r}")
    row = rows[0]
    context = json.loads(row["context_json"] or "{}")
    evidence = _summary_evidence(store, tenant_id, context)
    if not evidence:
        # Nothing counted yet (no closed deals, no themed notes): nothing to word or cite.
        return {"bullets": [], "offline": True, "model": None}
    generated = copilot_for(services).generate(
        tenant_id,
        SUMMARY_TASK,
        evidence,
        facts={"segment": context.get("name"), **_plain_stats(context)},
        offline=lambda: summary_offline(context, {e.ref for e in evidence}),
    )
    summary = {
        "bullets": generated.data["bullets"],
        "offline": generated.offline,
        "model": generated.model,
    }
    context["summary"] = summary
    store.put_rows(
        tenant_id,
        SEGMENTS_TABLE,
        SEGMENTS_SCHEMA,
        [{**row, "context_json": json.dumps(context, sort_keys=True, default=str)}],
        keys=["segment_id"],
    )
    return summary


_SummaryBullet = cited_text_schema(300, min_cites=1)


class _SummarySchema(Schema):
    bullets = fields.List(
        fields.Nested(_SummaryBullet), required=True, validate=validate.Length(min=1, max=6)
    )


SUMMARY_TASK = Task(
    name="segment_context",
    instructions=(
        "You brief sales reps on one customer segment. From the computed facts and the cited "
        "notes and deals, write at most six short bullets: how the segment buys (win rate, deal "
        "size, cycle), its recurring pains, what won deals, the objections to expect and the "
        "competitors met. Use only the given facts and evidence; cite evidence refs on every "
        "bullet; never invent numbers."
    ),
    output_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["bullets"],
        "properties": {
            "bullets": {
                "type": "array",
                "minItems": 1,
                "maxItems": 6,
                "items": cited_text_json(300, min_cites=1),
            }
        },
    },
    validator=_SummarySchema(),
    max_tokens=800,
)
"""The optional wording pass over a segment's context document."""


def summary_offline(context: Mapping[str, Any], refs: Collection[str]) -> dict[str, Any]:
    """The summary built from the context document alone: one bullet per section's top items.

    Args:
        context: the segment's context document.
        refs: the evidence refs a bullet may cite.

    Returns:
        ``{"bullets": [{"text", "cites"}]}`` citing only ``refs``.
    """
    stats = context.get("stats") or {}
    bullets: list[dict[str, Any]] = []

    def add(text: str, cites: Iterable[str]) -> None:
        usable = [c for c in cites if c in refs]
        if usable:
            bullets.append({"text": text[:300], "cites": usable[:CITES_PER_ITEM]})

    if stats.get("closed"):
        text = f"Wins {stats['won']} of {stats['closed']} closed deals ({stats['win_rate']:.0%})"
        if stats.get("median_deal_size") is not None:
            text += f"; median won deal {stats['median_deal_size']:,.0f}"
        if stats.get("median_cycle_days") is not None:
            text += f" over {stats['median_cycle_days']:.0f} days"
        add(text + ".", stats.get("cites") or [])
    for key, lead in (
        ("pains", "Recurring pain"),
        ("resonated", "Won deals had"),
        ("objections", "Expect objections on"),
    ):
        items = (context.get(key) or [])[:2]
        if items:
            listed = " and ".join(f"{i['text'].lower()} ({i['count']} notes)" for i in items)
            add(f"{lead}: {listed}.", [c for i in items for c in i["cites"]])
    competitors = (context.get("competitors") or [])[:2]
    if competitors:
        listed = " and ".join(f"{c['name']} ({c['count']} deals)" for c in competitors)
        add(f"Competitors met most: {listed}.", [r for c in competitors for r in c["cites"]])
    return {"bullets": bullets[:6]}


def _summary_evidence(store: Store, tenant_id: str, context: Mapping[str, Any]) -> list[Evidence]:
    refs: list[str] = list((context.get("stats") or {}).get("cites") or [])
    for key in ("pains", "resonated", "objections", "competitors"):
        for item in (context.get(key) or [])[:2]:
            refs += item["cites"]
    wanted = list(dict.fromkeys(refs))
    by_kind: dict[str, list[str]] = {}
    for ref in wanted:
        kind, _, crm_id = ref.partition(":")
        by_kind.setdefault(kind, []).append(crm_id)
    found: dict[str, Evidence] = {}
    for note in store.get_many(tenant_id, "note", by_kind.get("note", [])):
        found[f"note:{note['crm_id']}"] = Evidence(
            ref=f"note:{note['crm_id']}",
            kind="note",
            date=note["created_at"].date().isoformat() if note["created_at"] else None,
            text=note["body"],
        )
    for deal in store.get_many(tenant_id, "opportunity", by_kind.get("opportunity", [])):
        outcome = "won" if deal["is_won"] else "lost" if deal["is_closed"] else "open"
        found[f"opportunity:{deal['crm_id']}"] = Evidence(
            ref=f"opportunity:{deal['crm_id']}",
            kind="opportunity",
            date=deal["close_date"].isoformat() if deal["close_date"] else None,
            text=f"{deal['name']}: {outcome}, amount {deal['amount']}, stage {deal['stage']}.",
            facets={"outcome": outcome},
        )
    return [found[r] for r in wanted if r in found]


def _plain_stats(context: Mapping[str, Any]) -> dict[str, Any]:
    stats = context.get("stats") or {}
    return {k: v for k, v in stats.items() if k != "cites"}


# --------------------------------------------------------------------------------------------------
# Loading a tenant's records


@dataclass
class _TenantData:
    account_ids: list[str]
    position: dict[str, int]
    accounts: list[dict[str, Any]]
    deals: list[dict[str, Any]]
    deals_by_account: dict[str, list[dict[str, Any]]]
    notes: list[dict[str, Any]]
    notes_by_account: dict[str, list[int]]
    note_vectors: np.ndarray
    contacts: list[dict[str, Any]]
    leads: list[dict[str, Any]]
    lead_notes: dict[str, list[int]]
    _themes: dict[int, frozenset[str]] = field(default_factory=dict)

    def themes_of(self, note: int) -> frozenset[str]:
        """The keys of the themes a note raises, matched once per note however often asked."""
        found = self._themes.get(note)
        if found is None:
            text = _note_text(self.notes[note])
            found = frozenset(t.key for t in THEMES if t.pattern.search(text))
            self._themes[note] = found
        return found

    def firmographics(self) -> list[dict[str, Any]]:
        return self.accounts

    def account_vectors(self) -> list[np.ndarray | None]:
        return [self._mean([*self.notes_by_account.get(a, [])]) for a in self.account_ids]

    def lead_vectors(self) -> list[np.ndarray | None]:
        return [self._mean(self.lead_notes.get(x["crm_id"], [])) for x in self.leads]

    def _mean(self, rows: list[int]) -> np.ndarray | None:
        usable = [i for i in rows if self.notes[i]["has_vector"]]
        if not usable:
            return None
        return np.asarray(self.note_vectors[usable].mean(axis=0))


def _load(store: Store, tenant_id: str) -> _TenantData:
    firm = ["crm_id", "name", "domain", "industry", "employees", "annual_revenue", "region"]
    accounts = sorted(
        store.query(tenant_id, "account", columns=[*firm, "country"]), key=lambda a: a["crm_id"]
    )
    account_ids = [a["crm_id"] for a in accounts]
    position = {a: i for i, a in enumerate(account_ids)}
    contacts = store.query(tenant_id, "contact", columns=["crm_id", "account_id", "email"])
    contact_account = {c["crm_id"]: c["account_id"] for c in contacts if c["account_id"]}
    deals = store.query(
        tenant_id,
        "opportunity",
        columns=[
            "crm_id",
            "account_id",
            "amount",
            "is_closed",
            "is_won",
            "created_at",
            "close_date",
            "competitors",
        ],
    )
    deals_by_account: dict[str, list[dict[str, Any]]] = {}
    deal_account = {}
    for deal in deals:
        if deal["account_id"] in position:
            deals_by_account.setdefault(deal["account_id"], []).append(deal)
            deal_account[deal["crm_id"]] = deal["account_id"]
    leads = store.query(
        tenant_id,
        "lead",
        columns=[
            "crm_id",
            "company",
            "email",
            "industry",
            "employees",
            "annual_revenue",
            "region",
            "converted_contact_id",
        ],
    )
    table = store.to_arrow(
        tenant_id,
        "note",
        columns=[
            "crm_id",
            "title",
            "body",
            "created_at",
            "account_id",
            "contact_id",
            "opportunity_id",
            "lead_id",
            "vector",
        ],
    )
    vectors = np.zeros((table.num_rows, DIMENSION), dtype=np.float32)
    column = table.column("vector").combine_chunks() if table.num_rows else None
    notes = table.drop_columns(["vector"]).to_pylist()
    if column is not None:
        valid = np.asarray(column.is_valid())
        if valid.any():
            flat = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
            vectors[valid] = np.asarray(flat, dtype=np.float32).reshape(-1, DIMENSION)
        for note, ok in zip(notes, valid.tolist(), strict=True):
            note["has_vector"] = bool(ok)
    notes_by_account: dict[str, list[int]] = {}
    lead_notes: dict[str, list[int]] = {}
    for index, note in enumerate(notes):
        account = note["account_id"] if note["account_id"] in position else None
        account = account or deal_account.get(note["opportunity_id"] or "")
        account = account or contact_account.get(note["contact_id"] or "")
        if account is not None and account in position:
            notes_by_account.setdefault(account, []).append(index)
        if note["lead_id"]:
            lead_notes.setdefault(note["lead_id"], []).append(index)
    return _TenantData(
        account_ids=account_ids,
        position=position,
        accounts=accounts,
        deals=deals,
        deals_by_account=deals_by_account,
        notes=notes,
        notes_by_account=notes_by_account,
        note_vectors=vectors,
        contacts=contacts,
        leads=leads,
        lead_notes=lead_notes,
    )


# --------------------------------------------------------------------------------------------------
# Features and clustering


def band_of(employees: int | None) -> str | None:
    """The employee band of a head count (None when unknown)."""
    if employees is None:
        return None
    return next(name for name, upper, _ in BANDS if employees <= upper)


def _fit_layout(data: _TenantData) -> dict[str, Any]:
    """Vocabularies and scales of the feature space, kept so a later record can be placed in it."""
    industries = sorted({a["industry"] for a in data.accounts if a["industry"]})
    regions = sorted({a["region"] for a in data.accounts if a["region"]})
    revenue = np.array(
        [math.log1p(a["annual_revenue"]) for a in data.accounts if a["annual_revenue"] is not None]
    )
    vectors = [v for v in data.account_vectors() if v is not None]
    if vectors:
        stacked = np.vstack(vectors)
        mean = stacked.mean(axis=0)
        spread = float(np.linalg.norm(stacked - mean, axis=1).mean()) or 1.0
    else:
        mean, spread = np.zeros(DIMENSION, dtype=np.float32), 1.0
    return {
        "industries": industries,
        "bands": [b[0] for b in BANDS],
        "regions": regions,
        "revenue_mean": float(revenue.mean()) if revenue.size else 0.0,
        "revenue_std": float(revenue.std()) if revenue.size and revenue.std() > 0 else 1.0,
        "embedding_mean": [round(float(x), 6) for x in mean],
        "embedding_spread": spread,
        "weights": dict(WEIGHTS),
    }


def _features(
    layout: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    vectors: Sequence[np.ndarray | None],
) -> np.ndarray:
    """One row per record: weighted one-hot firmographics, scaled revenue, centred note meaning."""
    weights = layout["weights"]
    industries = {v: i for i, v in enumerate(layout["industries"])}
    bands = {v: i for i, v in enumerate(layout["bands"])}
    regions = {v: i for i, v in enumerate(layout["regions"])}
    mean = np.asarray(layout["embedding_mean"], dtype=np.float32)
    width = len(industries) + len(bands) + len(regions) + 1 + DIMENSION
    out = np.zeros((len(records), width), dtype=np.float32)
    start_band = len(industries)
    start_region = start_band + len(bands)
    revenue_at = start_region + len(regions)
    for row, (record, vector) in enumerate(zip(records, vectors, strict=True)):
        if record.get("industry") in industries:
            out[row, industries[record["industry"]]] = weights["industry"]
        band = band_of(record.get("employees"))
        if band in bands:
            out[row, start_band + bands[band]] = weights["size"]
        if record.get("region") in regions:
            out[row, start_region + regions[record["region"]]] = weights["region"]
        if record.get("annual_revenue") is not None:
            z = (math.log1p(record["annual_revenue"]) - layout["revenue_mean"]) / layout[
                "revenue_std"
            ]
            out[row, revenue_at] = weights["revenue"] * max(-3.0, min(3.0, z)) / 2.0
        if vector is not None:
            centred = (vector - mean) / layout["embedding_spread"]
            out[row, revenue_at + 1 :] = weights["notes"] * centred
    return out


def _kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 4, iterations: int = 60
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ starts; the best of ``n_init`` runs by inertia."""
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        centres = _kmeans_plus_plus(points, k, rng)
        labels = np.zeros(len(points), dtype=int)
        for step in range(iterations):
            distances = cdist(points, centres, "sqeuclidean")
            new_labels = distances.argmin(axis=1)
            if step and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            for j in range(k):
                chosen = points[labels == j]
                if len(chosen):
                    centres[j] = chosen.mean(axis=0)
                else:
                    # An emptied cluster restarts at the point worst served by the others.
                    far = int(distances.min(axis=1).argmax())
                    centres[j] = points[far]
        inertia = float(cdist(points, centres, "sqeuclidean").min(axis=1).sum())
        if best is None or inertia < best[2]:
            best = (labels, centres.copy(), inertia)
    assert best is not None
    return best


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [points[int(rng.integers(len(points)))]]
    for _ in range(1, k):
        nearest = cdist(points, np.vstack(centres), "sqeuclidean").min(axis=1)
        total = float(nearest.sum())
        pick = int(rng.choice(len(points), p=nearest / total)) if total > 0 else 0
        centres.append(points[pick])
    return np.vstack(centres).astype(np.float64)


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) from pairwise distances; -1 with fewer than 2 clusters."""
    clusters, index = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return -1.0
    onehot = np.eye(len(clusters))[index]
    counts = onehot.sum(axis=0)
    sums = distances @ onehot
    rows = np.arange(len(labels))
    own_count = counts[index]
    own = sums[rows, index] / np.maximum(own_count - 1, 1)
    others = sums / counts
    others[rows, index] = np.inf
    nearest = others.min(axis=1)
    spread = np.maximum(own, nearest)
    scores = np.where(
        (own_count > 1) & (spread > 0), (nearest - own) / np.where(spread > 0, spread, 1), 0.0
    )
    return float(scores.mean())


def _cluster(points: np.ndarray, count: int, minimum: int, seed: int) -> np.ndarray:
    """Cluster labels with every cluster at least ``minimum`` accounts (or one cluster in all)."""
    n = len(points)
    rng = np.random.default_rng(seed)
    data = points.astype(np.float64)
    if count > 0:
        k = min(count, n)
    else:
        k_max = min(AUTO_K_MAX, n // max(minimum, 1))
        k = 1
        if k_max >= 2:
            sample = (
                rng.choice(n, SILHOUETTE_SAMPLE, replace=False)
                if n > SILHOUETTE_SAMPLE
                else np.arange(n)
            )
            best_score = -2.0
            distances = cdist(data[sample], data[sample])
            for candidate in range(2, k_max + 1):
                labels, _, _ = _kmeans(data, candidate, np.random.default_rng(seed), n_init=2)
                score = _silhouette(distances, labels[sample])
                if score > best_score:
                    best_score, k = score, candidate
    if k <= 1:
        return np.zeros(n, dtype=int)
    labels, _, _ = _kmeans(data, k, np.random.default_rng(seed))
    return _merge_small(data, labels, minimum)


def _merge_small(points: np.ndarray, labels: np.ndarray, minimum: int) -> np.ndarray:
    sizes = Counter(labels.tolist())
    big = sorted(c for c, size in sizes.items() if size >= minimum)
    if not big:
        return np.zeros(len(points), dtype=int)
    centres = np.vstack([points[labels == c].mean(axis=0) for c in big])
    merged = labels.copy()
    small = ~np.isin(labels, big)
    if small.any():
        nearest = cdist(points[small], centres).argmin(axis=1)
        merged[small] = np.asarray(big)[nearest]
    return np.unique(merged, return_inverse=True)[1]


def _groups(account_ids: Sequence[str], labels: np.ndarray) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for account, label in zip(account_ids, labels.tolist(), strict=True):
        groups.setdefault(label, []).append(account)
    return [sorted(g) for _, g in sorted(groups.items(), key=lambda item: -len(item[1]))]


def _match_ids(
    tenant_id: str, groups: Sequence[Sequence[str]], old_members: Mapping[str, str]
) -> list[str]:
    """Segment ids for new clusters: an old id where most of the cluster came from it."""
    old_ids = sorted(set(old_members.values()))
    ids: list[str | None] = [None] * len(groups)
    if old_ids:
        overlap = np.zeros((len(groups), len(old_ids)))
        column = {s: j for j, s in enumerate(old_ids)}
        for i, members in enumerate(groups):
            for account in members:
                if account in old_members:
                    overlap[i, column[old_members[account]]] += 1
        rows, cols = linear_sum_assignment(-overlap)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if overlap[i, j] > MATCH_SHARE * len(groups[i]):
                ids[i] = old_ids[j]
    taken = {i for i in ids if i}
    out = []
    for index, members in enumerate(groups):
        found = ids[index]
        if found is None:
            digest = hashlib.sha256("\n".join([tenant_id, *members]).encode()).hexdigest()
            found = f"seg-{digest[:10]}"
            while found in taken:
                digest = hashlib.sha256(digest.encode()).hexdigest()
                found = f"seg-{digest[:10]}"
        taken.add(found)
        out.append(found)
    return out


# --------------------------------------------------------------------------------------------------
# Names and context documents


def _names(data: _TenantData, groups: Sequence[Sequence[str]], *, big_enough: bool) -> list[str]:
    if not big_enough:
        return [OTHER_NAME for _ in groups]
    tenant_rates = _theme_rates(data, data.account_ids)
    names: list[str] = []
    for members in groups:
        records = [data.accounts[data.position[a]] for a in members]
        band = _dominant(band_of(r["employees"]) for r in records)
        industry = _dominant(r["industry"] for r in records)
        region = _dominant(r["region"] for r in records)
        size_words = next((words for name, _, words in BANDS if name == band), None)
        head = " ".join(x for x in (size_words, industry) if x) or "Mixed accounts"
        if size_words and not industry:
            head = f"{size_words} mixed industries"
        name = f"{head}, {region}" if region else head
        tag = _distinct_theme(_theme_rates(data, members), tenant_rates)
        if tag:
            name = f"{name} - {tag}"
        names.append(name[:MAX_NAME_CHARS])
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        if seen[name] > 1:
            suffix = f" #{seen[name]}"
            name = name[: MAX_NAME_CHARS - len(suffix)] + suffix
        unique.append(name)
    return unique


def _dominant(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    total = sum(counts.values())
    if not total:
        return None
    value, count = counts.most_common(1)[0]
    return value if count > DOMINANT_SHARE * total else None


def _theme_rates(data: _TenantData, accounts: Sequence[str]) -> dict[str, tuple[int, float]]:
    indices = [i for a in accounts for i in data.notes_by_account.get(a, [])]
    if not indices:
        return {}
    counts = Counter(key for i in indices for key in data.themes_of(i))
    return {key: (count, count / len(indices)) for key, count in counts.items()}


def _distinct_theme(
    rates: Mapping[str, tuple[int, float]], tenant: Mapping[str, tuple[int, float]]
) -> str | None:
    """The tag of the theme most over-represented in a segment (at least 3 notes)."""
    best, best_lift = None, 1.05
    for theme in THEMES:
        count, rate = rates.get(theme.key, (0, 0.0))
        base = tenant.get(theme.key, (0, 0.0))[1]
        if count >= 3 and base > 0 and rate / base > best_lift:
            best, best_lift = theme.tag, rate / base
    return best


def _context(
    data: _TenantData,
    members: Sequence[str],
    segment_id: str,
    name: str,
    competitors: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """The segment's context document, computed from its accounts' deals and notes."""
    deals = sorted(
        (d for a in members for d in data.deals_by_account.get(a, [])), key=lambda d: d["crm_id"]
    )
    closed = [d for d in deals if d["is_closed"]]
    won = [d for d in closed if d["is_won"]]
    amounts = [d["amount"] for d in won if d["amount"] is not None]
    cycles = [c for c in (_cycle_days(d) for d in won) if c is not None]
    won_ids = {d["crm_id"] for d in won}
    note_indices = sorted(i for a in members for i in data.notes_by_account.get(a, []))
    won_notes = [i for i in note_indices if data.notes[i]["opportunity_id"] in won_ids]
    stats = {
        "deals": len(deals),
        "open": len(deals) - len(closed),
        "closed": len(closed),
        "won": len(won),
        "lost": len(closed) - len(won),
        "win_rate": round(len(won) / len(closed), 4) if closed else None,
        "median_deal_size": float(median(amounts)) if amounts else None,
        "median_cycle_days": float(median(cycles)) if cycles else None,
        "cites": [f"opportunity:{d['crm_id']}" for d in won[:CITES_PER_ITEM]]
        or [f"opportunity:{d['crm_id']}" for d in closed[:CITES_PER_ITEM]],
    }
    pains = _theme_items(data, note_indices, "pain")
    objections = _theme_items(data, note_indices, "objection")
    resonated = _theme_items(data, won_notes, "signal") + _win_reasons(data, won_notes)
    resonated.sort(key=lambda item: (-item["count"], item["text"]))
    questions = [
        {"text": item["question"], "cites": item["cites"]}
        for item in sorted(pains[:3] + objections[:3], key=lambda x: -x["count"])
    ][:ITEMS_PER_SECTION]
    return {
        "segment_id": segment_id,
        "name": name,
        "accounts": len(members),
        "notes": len(note_indices),
        "stats": stats,
        "pains": pains,
        "resonated": resonated[:ITEMS_PER_SECTION],
        "objections": objections,
        "competitors": _competitors(data, deals, note_indices, competitors),
        "discovery_questions": questions,
    }


def _cycle_days(deal: Mapping[str, Any]) -> int | None:
    created, closed = deal["created_at"], deal["close_date"]
    if created is None or closed is None:
        return None
    start = created.astimezone(UTC).date() if isinstance(created, datetime) else created
    end = closed if isinstance(closed, date) else date.fromisoformat(str(closed))
    return (end - start).days


def _note_text(note: Mapping[str, Any]) -> str:
    # A win reason ("What won it: our security posture.") names a theme as a strength; it is
    # counted under what resonated, never as a pain or objection.
    return _WIN_REASON.sub("", note["body"] or "")


def _theme_items(data: _TenantData, indices: Sequence[int], kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for theme in THEMES:
        if theme.kind != kind:
            continue
        hits = [i for i in indices if theme.key in data.themes_of(i)]
        if not hits:
            continue
        newest = sorted(hits, key=lambda i: (_when(data.notes[i]), data.notes[i]["crm_id"]))
        items.append(
            {
                "theme": theme.key,
                "text": theme.label,
                "count": len(hits),
                "share": round(len(hits) / len(indices), 4),
                "quote": _quote(data, hits, theme.pattern),
                "question": theme.question,
                "cites": [f"note:{data.notes[i]['crm_id']}" for i in newest[-CITES_PER_ITEM:]],
            }
        )
    items.sort(key=lambda item: (-item["count"], item["theme"]))
    return items[:ITEMS_PER_SECTION]


def _win_reasons(data: _TenantData, indices: Sequence[int]) -> list[dict[str, Any]]:
    found: dict[str, list[int]] = {}
    for i in indices:
        match = _WIN_REASON.search(data.notes[i]["body"] or "")
        if match:
            found.setdefault(match.group(1).strip().lower(), []).append(i)
    return [
        {
            "theme": "win_reason",
            "text": f"Won on {reason}",
            "count": len(hits),
            "share": round(len(hits) / len(indices), 4),
            "quote": None,
            "question": None,
            "cites": [f"note:{data.notes[i]['crm_id']}" for i in hits[-CITES_PER_ITEM:]],
        }
        for reason, hits in found.items()
    ]


def _quote(data: _TenantData, hits: Sequence[int], pattern: re.Pattern[str]) -> str | None:
    """The most common matching sentence (shortest on ties) with no email or phone number."""
    sentences: Counter[str] = Counter()
    for i in hits:
        for sentence in _SENTENCE_END.split(_note_text(data.notes[i])):
            if pattern.search(sentence) and not _PERSONAL.search(sentence):
                sentences[sentence.strip()] += 1
    if not sentences:
        return None
    return min(sentences, key=lambda s: (-sentences[s], len(s), s))


def _competitors(
    data: _TenantData,
    deals: Sequence[Mapping[str, Any]],
    note_indices: Sequence[int],
    configured: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Competitors named on the segment's deals (and, by configured alias, in its notes)."""
    canonical = {alias.lower(): name for name, aliases in configured.items() for alias in aliases}
    canonical.update({name.lower(): name for name in configured})
    counts: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return counts.setdefault(
            name, {"name": name, "count": 0, "won": 0, "lost": 0, "open": 0, "cites": []}
        )

    for deal in deals:
        for raw in dict.fromkeys(deal["competitors"] or []):
            item = entry(canonical.get(raw.lower(), raw))
            item["count"] += 1
            outcome = "open" if not deal["is_closed"] else "won" if deal["is_won"] else "lost"
            item[outcome] += 1
            if len(item["cites"]) < CITES_PER_ITEM:
                item["cites"].append(f"opportunity:{deal['crm_id']}")
    if canonical:
        pattern = re.compile(
            r"\b("
            + "|".join(re.escape(a) for a in sorted(canonical, key=len, reverse=True))
            + r")\b",
            re.IGNORECASE,
        )
        for i in note_indices:
            named = {canonical[m.lower()] for m in pattern.findall(_note_text(data.notes[i]))}
            for name in named:
                item = entry(name)
                item["mentions"] = item.get("mentions", 0) + 1
                if len(item["cites"]) < CITES_PER_ITEM:
                    item["cites"].append(f"note:{data.notes[i]['crm_id']}")
    ranked = sorted(counts.values(), key=lambda c: (-c["count"], -c.get("mentions", 0), c["name"]))
    return ranked[:ITEMS_PER_SECTION]


def _when(note: Mapping[str, Any]) -> datetime:
    return note["created_at"] or datetime.min.replace(tzinfo=UTC)


def _stamped(context: dict[str, Any], version: int, stamp: datetime) -> str:
    return json.dumps(
        {**context, "version": version, "updated_at": stamp.isoformat()},
        sort_keys=True,
        default=str,
    )


# --------------------------------------------------------------------------------------------------
# Writing the AI Segment field


def _write_results(
    store: Store,
    tenant_id: str,
    data: _TenantData,
    rows: Sequence[Mapping[str, Any]],
    member_rows: Sequence[Mapping[str, Any]],
    layout: Mapping[str, Any],
    stamp: datetime,
) -> int:
    names = {r["segment_id"]: r["name"] for r in rows}
    of_account = {m["crm_id"]: m for m in member_rows}

    def result(entity: str, crm_id: str, segment_id: str, **detail: Any) -> CopilotResult:
        return CopilotResult(
            entity=entity,
            crm_id=crm_id,
            result="segment",
            value=names[segment_id],
            detail={"segment_id": segment_id, "name": names[segment_id], **detail},
            offline=False,
            model=None,
            generated_at=stamp,
        )

    out = [
        result("account", a, m["segment_id"], via="cluster", distance=round(m["distance"], 4))
        for a, m in of_account.items()
    ]
    for contact in data.contacts:
        member = of_account.get(contact["account_id"] or "")
        if member is not None:
            out.append(
                result(
                    "contact",
                    contact["crm_id"],
                    member["segment_id"],
                    via="account",
                    account_id=contact["account_id"],
                )
            )
    out += _lead_results(data, of_account, rows, layout, result)
    return save_results(store, tenant_id, out)


def _lead_results(
    data: _TenantData,
    of_account: Mapping[str, Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    layout: Mapping[str, Any],
    result: Any,
) -> list[CopilotResult]:
    """Segment results for leads.

    A lead joins its account's segment (found by conversion, company name or email domain), or
    else the segment whose centroid is nearest to its own firmographics and notes.
    """
    contact_account = {c["crm_id"]: c["account_id"] for c in data.contacts if c["account_id"]}
    by_name = {_normal(a["name"]): a["crm_id"] for a in data.accounts if a["name"]}
    by_domain = {(a["domain"] or "").lower(): a["crm_id"] for a in data.accounts if a["domain"]}
    out: list[CopilotResult] = []
    unplaced = []
    for lead in data.leads:
        account = contact_account.get(lead["converted_contact_id"] or "")
        account = account or by_name.get(_normal(lead["company"] or ""))
        email = lead["email"] or ""
        account = account or by_domain.get(email.rpartition("@")[2].lower() if email else "")
        if account is not None and account in of_account:
            out.append(
                result(
                    "lead",
                    lead["crm_id"],
                    of_account[account]["segment_id"],
                    via="account",
                    account_id=account,
                )
            )
        else:
            unplaced.append(lead)
    if unplaced and rows:
        vectors = dict(zip((x["crm_id"] for x in data.leads), data.lead_vectors(), strict=True))
        features = _features(layout, unplaced, [vectors[x["crm_id"]] for x in unplaced])
        centroids = np.vstack([np.asarray(r["centroid"], dtype=np.float32) for r in rows])
        distances = cdist(features, centroids)
        nearest = distances.argmin(axis=1)
        for lead, j, row in zip(unplaced, nearest.tolist(), distances, strict=True):
            out.append(
                result(
                    "lead",
                    lead["crm_id"],
                    rows[j]["segment_id"],
                    via="nearest",
                    distance=round(float(row[j]), 4),
                )
            )
    return out


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


# --------------------------------------------------------------------------------------------------
# Helpers


def _settings(services: Any, tenant_id: str) -> Any:
    from copilot.settings import load_settings

    return load_settings(services.registry, tenant_id)


def _segment_rows(
    store: Store, tenant_id: str, segment_ids: Sequence[str] | None
) -> list[dict[str, Any]]:
    filters = None if segment_ids is None else {"segment_id": list(segment_ids)}
    return store.read_rows(tenant_id, SEGMENTS_TABLE, SEGMENTS_SCHEMA, filters)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "segment_id": row["segment_id"],
        "name": row["name"],
        "size": row["size"],
        "version": row["version"],
        "updated_at": row["updated_at"],
        "context": json.loads(row["context_json"] or "{}"),
    }


def _drop_all(store: Store, tenant_id: str) -> None:
    for table, schema in ((SEGMENTS_TABLE, SEGMENTS_SCHEMA), (MEMBERS_TABLE, MEMBERS_SCHEMA)):
        ids = [
            r["segment_id"] if table == SEGMENTS_TABLE else r["crm_id"]
            for r in store.read_rows(tenant_id, table, schema)
        ]
        if ids:
            key = "segment_id" if table == SEGMENTS_TABLE else "crm_id"
            store.delete_rows(tenant_id, table, schema, {key: ids})
