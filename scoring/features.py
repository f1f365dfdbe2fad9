"""Features for lead conversion and opportunity win models, as of each record's prediction time.

:func:`build_features` reads a tenant's canonical records and returns a :class:`FeatureFrame`: one
row per lead or opportunity, one column per feature, the time each row is seen at, the notes and
activities behind each text or activity feature, and the segment columns fairness checks group by.

**Prediction time.** Every feature is computed from what was known at the row's ``as_of``; notes and
activities at or after it are ignored, and nothing on the record that is a consequence of the outcome
(status, conversion fields, stage, close flags) becomes a feature.

* A lead is seen at ``min(now, created + horizon, converted_at)``. The horizon is the tenant's own
  prediction point: the 5th percentile of creation-to-conversion time over its converted leads,
  whole days, 30 when it has none (:func:`tenant_context`). Seeing every lead at the same age keeps
  converted and unconverted leads comparable: a model trained on "as of the conversion" against "as
  of today" would learn the calendar, not the lead. A lead is labelled converted when it converted by
  ``now``, not converted when it is past the tenant's maturity age (95th percentile of time to
  convert) or its status says it was closed, and unlabelled otherwise.
* An opportunity is seen at ``min(now, start of its close date)`` once closed, else at ``now``; the
  label is ``is_won`` for closed deals.

**What is left out, and why.** Marketing engagement arrives as roll-ups on the lead (opens, clicks,
visits, forms, last engagement), so those counts are the record's current values; the CRMs hold no
per-event history Fieldwise syncs. Canonical opportunities carry no stage or close-date history, so
the stage a closed deal reached and how often its close date slipped are not features: the current
stage of a closed deal is its outcome. Deal progress shows instead through note signals (legal
review, pilots, budget), activity density and age.

**Consent.** Records whose consent fields forbid profiling are dropped before anything is computed;
:func:`consent_blocked` applies the same rule for embedding and LLM code. The fields are named in
each CRM's manifest (``consent_opt_out_fields``): CRM fields a connector copies into ``custom``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

Kind = Literal["lead", "opportunity"]
KINDS: tuple[Kind, ...] = ("lead", "opportunity")
MISSING = "missing"
"""The category value standing in for an empty categorical field."""
CUSTOM_PREFIX = "custom:"
"""Feature names of custom fields: ``custom:Budget_Confirmed__c``."""

DEFAULT_HORIZON_DAYS = 30
"""A lead's prediction point when the tenant has no conversions to learn it from."""
_DAY = pd.Timedelta(days=1)

"""Per CRM, the ``custom`` keys whose true value forbids profiling and processing. Salesforce keeps
the standard flags on the Individual record (``HasOptedOutProcessing``, ``HasOptedOutProfiling``);
a connector or a formula field copies them onto the lead/contact. Keys match case-insensitively."""

SENSITIVE_FIELD_PATTERN = re.compile(
    r"gender|\bsex\b|^sex|_sex|birth|\bage\b|^age_|_age$|race|ethnic|religio|disab|marital|"
    r"nationality|pregnan|sexual|union_member|health_cond",
    re.IGNORECASE,
)
"""Custom fields whose names say they hold protected characteristics; never features."""
PERSONAL_FIELDS = ("first_name", "last_name", "email", "phone", "company", "name")
"""Identifying fields that are never features (listed in the report as excluded)."""

_TRUE = frozenset({"true", "yes", "1", "y", "t", "opt out", "opted out", "opt-out"})


@dataclass
class FeatureFrame:
    """Features of many records of one kind, with what is needed to train, explain and audit."""

    kind: Kind
    frame: pd.DataFrame
    """Index ``crm_id``; one column per feature."""
    cat_features: list[str]
    """Categorical columns: strings, never NaN (``"missing"``)."""
    labels: pd.Series | None
    """1/0 for rows with a known outcome (NaN where unknown); None when no row has one."""
    as_of: pd.Series
    """Prediction time of each row (UTC)."""
    evidence: dict[str, dict[str, list[str]]]
    """crm_id -> feature -> ids of the notes/activities that drove it."""
    segments: pd.DataFrame
    """Index ``crm_id``; ``region``, ``segment`` (company size band), ``source``."""
    info: dict[str, Any] = field(default_factory=dict)
    """How the frame was built: horizon, excluded and sensitive fields, consent drops."""
    sources: pd.DataFrame = field(default_factory=lambda: no_sources())
    """Index crm_id: the notes and activities the features were computed from, every one that
    ``evidence`` names among them, as :func:`evidence_sources` describes them; explaining a batch
    cites its evidence from here without reading the store again."""

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, ids: Sequence[str] | pd.Index) -> FeatureFrame:
        """The same frame restricted to ``ids`` (in that order)."""
        index = pd.Index(ids)
        labels = self.labels.loc[index] if self.labels is not None else None
        return FeatureFrame(
            kind=self.kind,
            frame=self.frame.loc[index],
            cat_features=list(self.cat_features),
            labels=labels,
            as_of=self.as_of.loc[index],
            evidence={i: self.evidence[i] for i in index if i in self.evidence},
            segments=self.segments.loc[index],
            info=dict(self.info),
            sources=self.sources,
        )


# --------------------------------------------------------------------------------------------------
# Consent


def consent_blocked(record: Mapping[str, Any], crm: str | None = None) -> bool:
    """Whether a canonical record's consent fields forbid profiling or processing it.

    Such records are not scored, not embedded and never sent to an LLM.

    Args:
        record: a canonical record (``custom`` as a dict or its JSON text).
        crm: ``salesforce`` or ``hubspot``; defaults to the record's own ``crm``.
    """
    custom = _custom_dict(record.get("custom"))
    if not custom:
        return False
    names = _consent_fields(crm or str(record.get("crm") or ""))
    wanted = {n.lower() for n in names}
    return any(k.lower() in wanted and _truthy(v) for k, v in custom.items())


def _consent_fields(crm: str) -> tuple[str, ...]:
    """The manifest's opt-out fields for a CRM (both CRMs' when the CRM is unknown)."""
    from manifests.loader import load_manifest

    crms = (crm,) if crm in ("salesforce", "hubspot") else ("salesforce", "hubspot")
    return tuple(name for c in crms for name in load_manifest(c).consent_opt_out_fields)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip().lower() in _TRUE


def _custom_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


# --------------------------------------------------------------------------------------------------
# Note signals: what a rep's notes say, by simple phrase rules a person can read and check.

NOTE_SIGNALS: Mapping[str, tuple[str, re.Pattern[str]]] = {
    name: (group, re.compile(pattern, re.IGNORECASE))
    for name, group, pattern in (
        ("signal_budget", "buying", r"budget\W+(?:\w+\W+){0,3}(?:approved|confirmed|allocated|"
         r"blessed)|(?:funds|money|budget)\W+(?:\w+\W+){0,2}(?:earmarked|set aside|is there|"
         r"allocated)|signed off on the spend|has budget|budget approved"),
        ("signal_champion", "buying", r"champion|sponsor|push this through|selling this to|"
         r"coached us|forwarding our"),
        ("signal_timeline", "buying", r"go[- ]live|deadline|decision expected|close plan|"
         r"signature by|rollout starts|timeline is"),
        ("signal_legal", "buying", r"\blegal\b|\bmsa\b|\bdpa\b|redline|counsel|lawyers|"
         r"standard terms|contract is in"),
        ("signal_pilot", "buying", r"pilot|\bpoc\b|proof of concept|\btrial\b|success criteria"),
        ("objection_price", "objection", r"pushback on price|price is|too (?:rich|expensive)|"
         r"sticker shock|cost as a concern|discount|above their number|closer to \$"),
        ("objection_security", "objection", r"security (?:review|questionnaire|team)|infosec|"
         r"\bciso\b|soc ?2|pen-?test|vendor risk"),
        ("objection_integration", "objection", r"integrat|migration|implementation|legacy|"
         r"bandwidth|engineers for a quarter"),
        ("objection_timing", "objection", r"not a priority|frozen|freeze|timing is bad|"
         r"circle back|asked to pause|reorg|next quarter"),
        ("objection_incumbent", "objection", r"locked into|incumbent|early-exit|switching cost|"
         r"agreement runs|contract with \w+ renews|comfortable with"),
        ("budget_missing", "objection", r"no budget|budget is unclear|not allocated funds|"
         r"business case"),
        ("competitive", "competitor", r"looking at|up against|side by side|shortlisted|"
         r"compare with|in the mix|cheaper|contender|pitched their"),
    )
}  # fmt: skip
"""Signal column -> (group, pattern). Groups sum into ``buying_signals``, ``objections`` and
``competitor_mentions``; known competitor names found in a note also count as mentions."""

_POSITIVE = re.compile(
    r"\b(?:great|strong|upbeat|engaged|excited|positive|keen|thank\w*|success|quickly|"
    r"real opportunity|sharp questions|good (?:sign|energy|progress))\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"\b(?:lukewarm|distracted|noncommittal|no urgency|not much urgency|hard to|concern\w*|"
    r"worr\w*|blocker|slow|picky|bad news|little engagement|gathering quotes|short on time|"
    r"pushback|stuck)\b",
    re.IGNORECASE,
)


def note_signals(texts: pd.Series, competitors: Iterable[str] = ()) -> pd.DataFrame:
    """Per note: one 0/1 column per :data:`NOTE_SIGNALS` entry, ``competitor_named`` and ``sentiment``.

    Sentiment is ``(positive - negative) / (positive + negative + 1)`` over a small word list, in
    [-1, 1].
    """
    out = pd.DataFrame(index=texts.index)
    lowered = texts.fillna("").astype(str)
    for name, (_, pattern) in NOTE_SIGNALS.items():
        out[name] = lowered.str.contains(pattern).astype(np.int8)
    names = [re.escape(c) for c in sorted({c for c in competitors if c}, key=len, reverse=True)]
    if names:
        named = re.compile(r"\b(?:" + "|".join(names) + r")\b", re.IGNORECASE)
        out["competitor_named"] = lowered.str.contains(named).astype(np.int8)
    else:
        out["competitor_named"] = np.int8(0)
    positive = lowered.str.count(_POSITIVE)
    negative = lowered.str.count(_NEGATIVE)
    out["sentiment"] = (positive - negative) / (positive + negative + 1.0)
    return out


# --------------------------------------------------------------------------------------------------
# Tenant context


@dataclass(frozen=True)
class TenantContext:
    """What feature building learns from the whole tenant, not from the rows being built."""

    horizon_days: float = DEFAULT_HORIZON_DAYS
    """A lead's prediction point, in days after creation."""
    maturity_days: float = 2 * DEFAULT_HORIZON_DAYS
    """Past this age an unconverted lead counts as not converted."""
    competitors: tuple[str, ...] = ()
    """Competitor names seen on the tenant's opportunities."""


def tenant_context(store: Any, tenant_id: str) -> TenantContext:
    """Learn the lead prediction point and the competitor names from a tenant's records."""
    leads = _read(store, tenant_id, "lead", None, ["created_at", "converted_at", "is_converted"])
    opps = _read(store, tenant_id, "opportunity", None, ["competitors"])
    names: set[str] = set()
    if not opps.empty:
        for value in opps["competitors"]:
            if value is not None and len(value):
                names.update(str(v) for v in value)
    return context_from_leads(leads, names)


def context_from_leads(leads: pd.DataFrame, competitors: Iterable[str] = ()) -> TenantContext:
    """The tenant context from lead ``created_at``/``converted_at``/``is_converted`` columns."""
    horizon, maturity = float(DEFAULT_HORIZON_DAYS), 2.0 * DEFAULT_HORIZON_DAYS
    if not leads.empty and "converted_at" in leads and "created_at" in leads:
        converted = leads[leads.get("is_converted", pd.Series(True, index=leads.index)) == True]  # noqa: E712
        lag = ((_utc(converted["converted_at"]) - _utc(converted["created_at"])) / _DAY).dropna()
        lag = lag[lag >= 0]
        if len(lag) >= 5:
            horizon = float(max(1, math.floor(np.quantile(lag, 0.05))))
            maturity = float(max(horizon + 1, math.ceil(np.quantile(lag, 0.95))))
    return TenantContext(horizon, maturity, tuple(sorted(set(competitors))))


# --------------------------------------------------------------------------------------------------
# Building


_CLOSED_STATUS = re.compile(
    r"closed|unqualified|disqualified|junk|not converted|lost|bad_timing|bad timing|recycled",
    re.IGNORECASE,
)
"""Lead statuses that say the lead was worked to an end without converting."""

_SIZE_BANDS = ((50, "1-50"), (200, "51-200"), (1000, "201-1000"), (5000, "1001-5000"))
_TITLE_LEVELS = (
    ("c-level", re.compile(r"\bchief\b|\bc[eftoimr]o\b|founder|president|owner", re.I)),
    ("vp", re.compile(r"\bvp\b|vice president|head of|\bsvp\b|\bevp\b", re.I)),
    ("director", re.compile(r"director", re.I)),
    ("student", re.compile(r"student|intern\b|graduate", re.I)),
    ("manager", re.compile(r"manager|\blead\b", re.I)),
)
_PERSONAL_DOMAINS = frozenset(
    {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com", "gmx.de",
     "proton.me", "protonmail.com", "live.com", "mail.com", "yandex.ru", "qq.com"}
)  # fmt: skip
ACTIVITY_TYPES = ("call", "email", "meeting", "task")

FEATURE_SOURCES: Mapping[str, tuple[str, ...]] = {
    "title_level": ("title",),
    "email_personal_domain": ("email",),
    "click_rate": ("email_opens", "email_clicks"),
    "engagement_total": ("email_opens", "email_clicks", "page_visits", "form_fills"),
    "days_since_engaged": ("last_engaged_at",),
    "owner_territory_match": ("region", "owner_id"),
    "owner_custom_overlap": ("owner_id",),
    "log_amount_per_employee": ("amount", "employees"),
    "competitor_set": ("competitors",),
    "n_competitors": ("competitors",),
}
"""Derived feature -> the record fields it is computed from; excluding a field drops these too."""


def build_features(
    store: Any,
    tenant_id: str,
    kind: Kind,
    *,
    crm_ids: Sequence[str] | None = None,
    as_of: datetime | None = None,
    for_training: bool = False,
    excluded_fields: Iterable[str] = (),
) -> FeatureFrame:
    """Build the features of a tenant's leads or opportunities.

    Args:
        store: the store (``core.store.Store``).
        tenant_id: the tenant.
        kind: ``lead`` or ``opportunity``.
        crm_ids: only these records (default: all of the tenant's).
        as_of: the moment to look from (default: now); nothing later is used.
        for_training: keep only rows whose outcome is known by ``as_of``.
        excluded_fields: field or feature names the admin excluded (``industry``,
            ``Budget_Confirmed__c`` or ``custom:Budget_Confirmed__c``).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected lead or opportunity")
    now = _now(as_of)
    records = _read(store, tenant_id, kind, crm_ids, None)
    context = tenant_context(store, tenant_id)
    ids = None if crm_ids is None else list(records["crm_id"]) if not records.empty else []
    link = "lead_id" if kind == "lead" else "opportunity_id"
    activities = _read(
        store,
        tenant_id,
        "activity",
        None,
        ["crm_id", "type", "subject", "occurred_at", "direction", "owner_id", link],
        {link: ids} if ids is not None else None,
    )
    notes = _read(
        store,
        tenant_id,
        "note",
        None,
        ["crm_id", "title", "body", "created_at", "updated_at", link],
        {link: ids} if ids is not None else None,
    )
    users = _read(store, tenant_id, "user", None, ["crm_id", "territory", "custom"])
    accounts = None
    if kind == "opportunity":
        account_ids = None
        if ids is not None:
            account_ids = sorted({a for a in records.get("account_id", []) if a})
        accounts = _read(
            store,
            tenant_id,
            "account",
            None,
            ["crm_id", "industry", "employees", "annual_revenue", "country", "region", "custom"],
            {"crm_id": account_ids} if account_ids is not None else None,
        )
    return frame_from_records(
        kind,
        records,
        activities=activities,
        notes=notes,
        users=users,
        accounts=accounts,
        now=now,
        context=context,
        for_training=for_training,
        excluded_fields=excluded_fields,
    )


def frame_from_records(
    kind: Kind,
    records: pd.DataFrame,
    *,
    activities: pd.DataFrame | None = None,
    notes: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    accounts: pd.DataFrame | None = None,
    now: datetime | None = None,
    context: TenantContext | None = None,
    for_training: bool = False,
    excluded_fields: Iterable[str] = (),
) -> FeatureFrame:
    """Build a :class:`FeatureFrame` from canonical records already in memory.

    :func:`build_features` calls this after reading the store; CSV training calls it with the rows
    of a file. ``records`` holds canonical columns (``custom`` as dicts or JSON text); the other
    frames may be None or empty.
    """
    now_ts = pd.Timestamp(_now(now))
    context = context or TenantContext()
    excluded = {str(e) for e in excluded_fields}
    records = records.copy()
    n_before = len(records)
    if "crm_id" not in records:
        raise ValueError("records need a crm_id column")
    records["crm_id"] = records["crm_id"].astype(str)
    records = records.drop_duplicates("crm_id", keep="last")
    customs = [_custom_dict(v) for v in records.get("custom", pd.Series([None] * len(records)))]
    crm_col = records.get("crm", pd.Series([None] * len(records), index=records.index))
    blocked = np.array(
        [
            consent_blocked({"custom": c, "crm": crm}, None)
            for c, crm in zip(customs, crm_col, strict=True)
        ],
        dtype=bool,
    )
    records = records.loc[~blocked].set_index("crm_id", drop=False)
    customs = [c for c, b in zip(customs, blocked, strict=True) if not b]
    index = pd.Index(records["crm_id"], name="crm_id")

    as_of, labels = (_lead_time if kind == "lead" else _opportunity_time)(records, now_ts, context)
    if for_training:
        keep = labels.notna()
        records, as_of, labels = records.loc[keep], as_of.loc[keep], labels.loc[keep]
        customs = [c for c, k in zip(customs, keep, strict=True) if k]
        index = pd.Index(records["crm_id"], name="crm_id")

    feats: dict[str, pd.Series] = {}
    cats: list[str] = []
    evidence: dict[str, dict[str, list[str]]] = {}
    owner_ids = _col(records, "owner_id")
    user_by_id = _users(users)

    if kind == "lead":
        _lead_columns(records, as_of, feats, cats)
        region, source = _col(records, "region"), _col(records, "source")
        employees = _num(records, "employees")
    else:
        acc = _accounts_for(records, accounts)
        _opportunity_columns(records, acc, as_of, feats, cats)
        region, source = acc["region"], _col(records, "lead_source")
        employees = acc["employees"]

    territory = owner_ids.map(lambda o: user_by_id.get(o, {}).get("territory"))
    feats["owner_territory_match"] = pd.Series(
        [
            float(str(t).strip().lower() == str(r).strip().lower()) if t and r else np.nan
            for t, r in zip(territory, region, strict=True)
        ],
        index=index,
    )
    custom_frame, custom_cats, skipped = _custom_columns(customs, index, as_of)
    record_tokens = _tokens_per_row(custom_frame, custom_cats, feats, cats)
    feats["owner_custom_overlap"] = pd.Series(
        [
            float(len(user_by_id.get(o, {}).get("tokens", set()) & toks))
            if o in user_by_id
            else np.nan
            for o, toks in zip(owner_ids, record_tokens, strict=True)
        ],
        index=index,
    )
    _activity_columns(kind, activities, as_of, feats, evidence)
    _note_columns(kind, notes, as_of, context, feats, evidence)

    frame = pd.DataFrame(feats, index=index)
    for name in custom_frame.columns:
        frame[name] = custom_frame[name]
    cats = cats + custom_cats
    sensitive = sorted(
        c
        for c in frame.columns
        if c.startswith(CUSTOM_PREFIX) and SENSITIVE_FIELD_PATTERN.search(c)
    )
    dropped = [c for c in frame.columns if _is_excluded(c, excluded)] + sensitive
    frame = frame.drop(columns=sorted(set(dropped)))
    cats = [c for c in cats if c in frame.columns]
    for c in cats:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), MISSING).astype(str)
    for c in frame.columns:
        if c not in cats:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    evidence = {
        i: {f: v for f, v in ev.items() if f in frame.columns} for i, ev in evidence.items()
    }
    segments = pd.DataFrame(
        {
            "region": _cat_values(region, index),
            "segment": _cat_values(employees.map(size_band), index),
            "source": _cat_values(source, index),
        },
        index=index,
    )
    has_label = labels.notna().any()
    return FeatureFrame(
        kind=kind,
        frame=frame,
        cat_features=cats,
        labels=labels.astype(float) if has_label else None,
        as_of=as_of,
        evidence={i: ev for i, ev in evidence.items() if ev and i in frame.index},
        segments=segments,
        info={
            "horizon_days": context.horizon_days,
            "maturity_days": context.maturity_days,
            "now": now_ts.isoformat(),
            "consent_blocked": int(blocked.sum()),
            "rows_read": n_before,
            "excluded_fields": sorted(excluded),
            "excluded_sensitive_fields": sorted(set(sensitive) | set(PERSONAL_FIELDS)),
            "skipped_custom_fields": skipped,
        },
        sources=evidence_sources(activities, notes),
    )


def size_band(employees: Any) -> str | None:
    """Company size band of a head count (``1-50`` ... ``5000+``), None when unknown."""
    if employees is None or (isinstance(employees, float) and math.isnan(employees)):
        return None
    count = float(employees)
    return next((label for upper, label in _SIZE_BANDS if count <= upper), "5000+")


def title_level(title: Any) -> str:
    """Seniority of a job title: c-level, vp, director, manager, student or individual."""
    if not title or not isinstance(title, str):
        return MISSING
    return next((level for level, pattern in _TITLE_LEVELS if pattern.search(title)), "individual")


# --------------------------------------------------------------------------------------------------
# Prediction time and labels


def _lead_time(
    records: pd.DataFrame, now: pd.Timestamp, context: TenantContext
) -> tuple[pd.Series, pd.Series]:
    created = _utc(_col(records, "created_at")).fillna(_utc(_col(records, "updated_at")))
    converted_at = _utc(_col(records, "converted_at"))
    is_converted = _col(records, "is_converted").fillna(False).astype(bool)
    converted_by_now = is_converted & (converted_at.isna() | (converted_at <= now))
    point = (created + pd.Timedelta(days=context.horizon_days)).clip(upper=now)
    early = converted_by_now & converted_at.notna() & (converted_at < point)
    point = point.where(~early, converted_at)
    status = _col(records, "status").fillna("").astype(str)
    mature = (created + pd.Timedelta(days=context.maturity_days)) <= now
    closed = status.str.contains(_CLOSED_STATUS) & ~is_converted
    labels = pd.Series(np.nan, index=records.index)
    labels[(mature | closed) & ~converted_by_now] = 0.0
    labels[converted_by_now] = 1.0
    return point.rename("as_of"), labels


def _opportunity_time(
    records: pd.DataFrame, now: pd.Timestamp, context: TenantContext
) -> tuple[pd.Series, pd.Series]:
    closed = _col(records, "is_closed").fillna(False).astype(bool)
    close_day = _utc(pd.to_datetime(_col(records, "close_date"), errors="coerce"))
    closed_by_now = closed & close_day.notna() & (close_day <= now)
    point = pd.Series(now, index=records.index).where(~closed_by_now, close_day)
    won = _col(records, "is_won").fillna(False).astype(bool).astype(float)
    labels = won.where(closed_by_now, np.nan)
    return point.rename("as_of"), labels


# --------------------------------------------------------------------------------------------------
# Column groups


def _lead_columns(
    records: pd.DataFrame, as_of: pd.Series, feats: dict[str, pd.Series], cats: list[str]
) -> None:
    for name in ("industry", "country", "region", "source"):
        feats[name] = _col(records, name)
        cats.append(name)
    titles = _col(records, "title")
    feats["title"] = titles.fillna(MISSING).astype(str).str.strip().str.lower()
    feats["title_level"] = titles.map(title_level)
    cats += ["title", "title_level"]
    emails = _col(records, "email").fillna("").astype(str).str.lower()
    domain = emails.str.rsplit("@", n=1).str[-1]
    feats["email_personal_domain"] = (
        domain.isin(_PERSONAL_DOMAINS).astype(float).where(emails != "", np.nan)
    )
    for name in ("employees", "annual_revenue"):
        feats[name] = _num(records, name)
    counts = {
        n: _num(records, n) for n in ("email_opens", "email_clicks", "page_visits", "form_fills")
    }
    feats.update(counts)
    feats["engagement_total"] = sum(c.fillna(0) for c in counts.values())
    feats["click_rate"] = counts["email_clicks"] / counts["email_opens"].where(
        counts["email_opens"] > 0
    )
    engaged = _utc(_col(records, "last_engaged_at"))
    feats["days_since_engaged"] = ((as_of - engaged.where(engaged <= as_of, as_of)) / _DAY).astype(
        float
    )


def _accounts_for(records: pd.DataFrame, accounts: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["industry", "employees", "annual_revenue", "country", "region"]
    out = pd.DataFrame(index=records.index, columns=cols, dtype=object)
    if accounts is not None and not accounts.empty and "account_id" in records:
        table = accounts.drop_duplicates("crm_id").set_index("crm_id")
        joined = table.reindex(
            records["account_id"].astype(object).where(records["account_id"].notna(), "")
        )
        for c in cols:
            if c in joined:
                out[c] = joined[c].to_numpy()
    out["employees"] = pd.to_numeric(out["employees"], errors="coerce")
    out["annual_revenue"] = pd.to_numeric(out["annual_revenue"], errors="coerce")
    return out


def _opportunity_columns(
    records: pd.DataFrame,
    acc: pd.DataFrame,
    as_of: pd.Series,
    feats: dict[str, pd.Series],
    cats: list[str],
) -> None:
    feats["lead_source"] = _col(records, "lead_source")
    cats.append("lead_source")
    for name in ("industry", "country", "region"):
        feats[name] = acc[name]
        cats.append(name)
    amount = _num(records, "amount")
    feats["amount"] = amount
    feats["employees"] = acc["employees"]
    feats["annual_revenue"] = acc["annual_revenue"]
    feats["log_amount_per_employee"] = np.log(amount.where(amount > 0)) - np.log(
        acc["employees"].where(acc["employees"] > 0)
    )
    competitors = _col(records, "competitors")
    names = competitors.map(lambda v: sorted(str(x) for x in v) if v is not None and len(v) else [])
    feats["n_competitors"] = names.map(len).astype(float)
    feats["competitor_set"] = names.map(lambda v: ";".join(v) if v else "none")
    cats.append("competitor_set")
    created = _utc(_col(records, "created_at"))
    feats["days_open"] = ((as_of - created) / _DAY).clip(lower=0).astype(float)


def _activity_columns(
    kind: Kind,
    activities: pd.DataFrame | None,
    as_of: pd.Series,
    feats: dict[str, pd.Series],
    evidence: dict[str, dict[str, list[str]]],
) -> None:
    link = "lead_id" if kind == "lead" else "opportunity_id"
    names = [f"n_{t}s" for t in ACTIVITY_TYPES] + ["n_activities", "n_inbound"]
    index = as_of.index
    if activities is None or activities.empty or link not in activities:
        for n in names:
            feats[n] = pd.Series(0.0, index=index)
        feats["days_since_activity"] = pd.Series(np.nan, index=index)
        if kind == "opportunity":
            feats["activities_per_30d"] = pd.Series(0.0, index=index)
        return
    acts = activities[activities[link].isin(index)].copy()
    acts["occurred_at"] = _utc(acts["occurred_at"])
    acts = acts[acts["occurred_at"] < acts[link].map(as_of)]
    grouped = acts.groupby(link)
    for t in ACTIVITY_TYPES:
        sub = acts[acts["type"] == t]
        feats[f"n_{t}s"] = sub.groupby(link).size().reindex(index, fill_value=0).astype(float)
        _add_evidence(evidence, sub, link, f"n_{t}s")
    feats["n_activities"] = grouped.size().reindex(index, fill_value=0).astype(float)
    inbound = acts[acts.get("direction", pd.Series(dtype=object)) == "inbound"]
    feats["n_inbound"] = inbound.groupby(link).size().reindex(index, fill_value=0).astype(float)
    last = grouped["occurred_at"].max().reindex(index)
    feats["days_since_activity"] = ((as_of - last) / _DAY).astype(float)
    if kind == "opportunity":
        months = (feats["days_open"] / 30.0).clip(lower=0.5)
        feats["activities_per_30d"] = feats["n_activities"] / months


def _note_columns(
    kind: Kind,
    notes: pd.DataFrame | None,
    as_of: pd.Series,
    context: TenantContext,
    feats: dict[str, pd.Series],
    evidence: dict[str, dict[str, list[str]]],
) -> None:
    link = "lead_id" if kind == "lead" else "opportunity_id"
    index = as_of.index
    signal_names = [*NOTE_SIGNALS, "competitor_named"]
    totals = ("n_notes", "buying_signals", "objections", "competitor_mentions")
    if notes is None or notes.empty or link not in notes:
        for n in (*totals, *signal_names):
            feats[n] = pd.Series(0.0, index=index)
        feats["sentiment"] = pd.Series(np.nan, index=index)
        feats["sentiment_last"] = pd.Series(np.nan, index=index)
        return
    sub = notes[notes[link].isin(index)].copy()
    sub["created_at"] = _utc(sub["created_at"])
    sub = sub[sub["created_at"] < sub[link].map(as_of)]
    text = (
        sub.get("title", pd.Series("", index=sub.index)).fillna("").astype(str)
        + ". "
        + sub["body"].fillna("").astype(str)
    )
    signals = note_signals(text, context.competitors)
    sub = pd.concat([sub, signals], axis=1)
    groups = {name: group for name, (group, _) in NOTE_SIGNALS.items()}
    sub["buying_signals"] = sum(sub[n] for n, g in groups.items() if g == "buying")
    sub["objections"] = sum(sub[n] for n, g in groups.items() if g == "objection")
    sub["competitor_mentions"] = ((sub["competitive"] + sub["competitor_named"]) > 0).astype(
        np.int8
    )
    grouped = sub.groupby(link)
    feats["n_notes"] = grouped.size().reindex(index, fill_value=0).astype(float)
    for name in (*signal_names, "buying_signals", "objections", "competitor_mentions"):
        feats[name] = grouped[name].sum().reindex(index, fill_value=0).astype(float)
        _add_evidence(evidence, sub[sub[name] > 0], link, name)
    feats["sentiment"] = grouped["sentiment"].mean().reindex(index).astype(float)
    latest = sub.sort_values("created_at").groupby(link)["sentiment"].last()
    feats["sentiment_last"] = latest.reindex(index).astype(float)
    _add_evidence(evidence, sub[sub["sentiment"] != 0], link, "sentiment")


def _add_evidence(
    evidence: dict[str, dict[str, list[str]]], rows: pd.DataFrame, link: str, feature: str
) -> None:
    if rows.empty:
        return
    for record_id, ids in rows.groupby(link)["crm_id"]:
        evidence.setdefault(str(record_id), {})[feature] = [str(i) for i in ids]


SOURCE_COLUMNS = ("kind", "at", "title", "body")


def no_sources() -> pd.DataFrame:
    """A sources frame with nothing in it (see :func:`evidence_sources`)."""
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in SOURCE_COLUMNS})
    frame["at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame.rename_axis("crm_id")


def evidence_sources(activities: pd.DataFrame | None, notes: pd.DataFrame | None) -> pd.DataFrame:
    """The notes and activities a reason may cite, as it cites them, from rows already read.

    Columns are selected and renamed, nothing is done per row: a batch cites a few hundred of
    the thousands of rows its features read, and :func:`scoring.reasons.explain_batch` cleans
    only those.

    Args:
        activities: activity rows (``crm_id``, ``type``, ``occurred_at``, ``subject``; a ``body``
            is searched for competitor names where present).
        notes: note rows (``crm_id``, ``title``, ``body``, ``created_at``, ``updated_at``).

    Returns:
        Index crm_id, a note after an activity with the same id: ``kind`` (``note`` or the
        activity's type), ``at`` (when it happened or was written; a note without a creation
        time falls back to its last change), ``title`` (or subject) and ``body``.
    """
    parts = []
    for rows, is_note in ((activities, False), (notes, True)):
        if rows is None or rows.empty or "crm_id" not in rows:
            continue
        if is_note:
            at = _utc(_col(rows, "created_at")).fillna(_utc(_col(rows, "updated_at")))
        else:
            at = _utc(_col(rows, "occurred_at"))
        parts.append(
            pd.DataFrame(
                {
                    "kind": "note" if is_note else _col(rows, "type").array,
                    "at": at.array,
                    "title": _col(rows, "title" if is_note else "subject").array,
                    "body": _col(rows, "body").array,
                },
                index=pd.Index(rows["crm_id"].astype(str), name="crm_id"),
            )
        )
    if not parts:
        return no_sources()
    return pd.concat(parts) if len(parts) > 1 else parts[0]


def _custom_columns(
    customs: list[dict[str, Any]], index: pd.Index, as_of: pd.Series
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every custom key as a column, typed by its values.

    Numbers and booleans become numeric, dates days before ``as_of``, text and lists categorical.
    Nested objects are skipped (named in the returned list).
    """
    raw = pd.DataFrame.from_records(customs, index=index) if customs else pd.DataFrame(index=index)
    out = pd.DataFrame(index=index)
    cats: list[str] = []
    skipped: list[str] = []
    for key in sorted(raw.columns, key=str):
        values = raw[key]
        present = values.dropna()
        name = f"{CUSTOM_PREFIX}{key}"
        if present.empty:
            continue
        if present.map(lambda v: isinstance(v, dict)).any():
            skipped.append(str(key))
            continue
        if present.map(
            lambda v: isinstance(v, bool | int | float) and not isinstance(v, str)
        ).all():
            out[name] = values.map(lambda v: float(v) if v is not None and v == v else np.nan)
            continue
        if present.map(lambda v: isinstance(v, list | tuple)).any():
            out[name] = values.map(
                lambda v: ";".join(sorted(str(x) for x in v)) if isinstance(v, list | tuple) else v
            )
            cats.append(name)
            continue
        as_text = present.astype(str)
        if as_text.str.match(r"^\d{4}-\d{2}-\d{2}").all():
            moments = _utc(pd.to_datetime(values, errors="coerce", utc=True, format="mixed"))
            days = (as_of - moments) / _DAY
            out[name] = days.where(days >= 0)  # a date after the prediction time is not known yet
            continue
        out[name] = values.map(lambda v: None if v is None or v != v else str(v))
        cats.append(name)
    return out, cats, skipped


def _tokens_per_row(
    custom_frame: pd.DataFrame,
    custom_cats: list[str],
    feats: Mapping[str, pd.Series],
    cats: list[str],
) -> list[set[str]]:
    """Lower-cased text values of a row (categoricals and custom text, ``;`` lists split)."""
    columns = [feats[c] for c in cats if c in feats] + [custom_frame[c] for c in custom_cats]
    if not columns:
        return [set() for _ in range(len(custom_frame))]
    rows: list[set[str]] = [set() for _ in range(len(custom_frame))]
    for column in columns:
        for i, value in enumerate(column.tolist()):
            if isinstance(value, str) and value and value != MISSING:
                rows[i].update(t.strip().lower() for t in value.split(";") if t.strip())
    return rows


def _users(users: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if users is None or users.empty:
        return out
    for row in users.to_dict("records"):
        tokens: set[str] = set()
        for value in _custom_dict(row.get("custom")).values():
            values = value if isinstance(value, list | tuple) else str(value).split(";")
            tokens.update(str(v).strip().lower() for v in values if str(v).strip())
        out[str(row["crm_id"])] = {"territory": row.get("territory"), "tokens": tokens}
    return out


def _is_excluded(feature: str, excluded: set[str]) -> bool:
    if not excluded:
        return False
    if feature in excluded:
        return True
    if feature.startswith(CUSTOM_PREFIX) and feature[len(CUSTOM_PREFIX) :] in excluded:
        return True
    return any(source in excluded for source in FEATURE_SOURCES.get(feature, ()))


# --------------------------------------------------------------------------------------------------
# Reading and small helpers


def _read(
    store: Any,
    tenant_id: str,
    entity: str,
    crm_ids: Sequence[str] | None,
    columns: list[str] | None,
    filters: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    where = dict(filters or {})
    if crm_ids is not None:
        where["crm_id"] = list(crm_ids)
    for value in where.values():
        if isinstance(value, list) and not value:
            return pd.DataFrame(columns=columns or [])
    try:
        table = store.to_arrow(tenant_id, entity, filters=where or None, columns=columns)
    except ValueError:
        return pd.DataFrame(columns=columns or [])
    return table.to_pandas()


def _now(moment: datetime | pd.Timestamp | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if isinstance(moment, pd.Timestamp):
        moment = moment.to_pydatetime()
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(moment, date):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    raise TypeError(f"as_of must be a datetime, got {type(moment).__name__}")


def _utc(values: Any) -> pd.Series:
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if not pd.api.types.is_datetime64_any_dtype(series):
        series = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    elif series.dt.tz is None:
        series = series.dt.tz_localize("UTC")
    else:
        series = series.dt.tz_convert("UTC")
    return series.astype("datetime64[us, UTC]")


def _col(records: pd.DataFrame, name: str) -> pd.Series:
    if name in records:
        return records[name]
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def _num(records: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(_col(records, name), errors="coerce").astype(float)


def _cat_values(values: pd.Series, index: pd.Index) -> pd.Series:
    out = pd.Series(values.to_numpy(), index=index, dtype=object)
    return out.where(out.notna() & (out.astype(str) != ""), MISSING).astype(str)
