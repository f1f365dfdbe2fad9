"""Translate a generated CRM-neutral :class:`~sandbox.history_model.History` into HubSpot records.

Reps become owners, accounts companies, leads contacts in an early lifecycle stage (converted
ones become opportunity or customer and absorb their converted contact), opportunities deals
with dealstage/amount/closedate history, and activities and notes engagements with their
associations. Timestamps come from the history. Records are written in bulk into the store
(no HTTP, no webhook events), so thousands of leads load in seconds.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.history_model import Activity, History, Lead, Opportunity
from sandbox.hubspot import associations as assoc_types
from sandbox.hubspot.objects import created_property, modified_property
from sandbox.hubspot.properties import iso_ms

if TYPE_CHECKING:
    from sandbox.hubspot.server import HubSpotSandbox

STAGE_MAP = {
    "Prospecting": "appointmentscheduled",
    "Qualification": "qualifiedtobuy",
    "Needs Analysis": "presentationscheduled",
    "Proposal": "decisionmakerboughtin",
    "Negotiation": "contractsent",
    "Closed Won": "closedwon",
    "Closed Lost": "closedlost",
}
"""History stage names to the default pipeline's internal stage values."""

SOURCE_MAP = {
    "Web": "ORGANIC_SEARCH",
    "Webinar": "OTHER_CAMPAIGNS",
    "Referral": "REFERRALS",
    "Paid Search": "PAID_SEARCH",
    "Trade Show": "OFFLINE",
    "Partner": "REFERRALS",
    "Outbound": "OFFLINE",
}
"""History lead sources to HubSpot's original-source values (the raw value is kept too)."""

LEAD_STATUS_MAP = {
    "Open - Not Contacted": "NEW",
    "Working - Contacted": "IN_PROGRESS",
    "Closed - Converted": "OPEN_DEAL",
    "Closed - Not Converted": "UNQUALIFIED",
}

HISTORY_GROUP = "fieldwise_history"

_OBJECT_FOR_ACTIVITY = {"call": "calls", "email": "emails", "meeting": "meetings", "task": "tasks"}


def custom_property_name(key: str) -> str:
    """A HubSpot-style internal name for a tenant custom field.

    ``Budget_Confirmed__c`` becomes ``budget_confirmed``.
    """
    name = re.sub(r"__c$", "", key)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    return name if name and not name[0].isdigit() else f"custom_{name}"


def _value(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        return f"{raw:.2f}".rstrip("0").rstrip(".")
    return str(raw)


def _custom_definition(name: str, label: str, sample: object) -> dict[str, Any]:
    if isinstance(sample, bool):
        ptype, field = "bool", "booleancheckbox"
    elif isinstance(sample, int | float):
        ptype, field = "number", "number"
    elif isinstance(sample, datetime):
        ptype, field = "datetime", "date"
    else:
        ptype, field = "string", "text"
    return {
        "name": name,
        "label": label,
        "type": ptype,
        "fieldType": field,
        "groupName": HISTORY_GROUP,
    }


class _Builder:
    """Builds stored records and their two-way associations before one bulk insert per type."""

    def __init__(self, sb: HubSpotSandbox) -> None:
        self.sb = sb
        self.records: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)

    def record(
        self,
        object_type: str,
        record_id: str,
        props: dict[str, str | None],
        created: datetime,
        updated: datetime,
        source_id: str | None,
        history: dict[str, list[tuple[str, datetime, str, str | None]]] | None = None,
    ) -> dict[str, Any]:
        created_iso, updated_iso = iso_ms(created), iso_ms(max(created, updated))
        values = {k: v for k, v in props.items() if v not in (None, "")}
        values["hs_object_id"] = record_id
        values[created_property(object_type)] = created_iso
        values[modified_property(object_type)] = updated_iso
        if object_type == "contacts":
            values["hs_lastmodifieddate"] = updated_iso
        entries: dict[str, list[dict[str, Any]]] = {}
        for name, value in values.items():
            entries[name] = [_entry(str(value), created_iso, "CRM_UI", source_id)]
        for name, changes in (history or {}).items():
            entries[name] = [_entry(v, iso_ms(at), kind, sid) for v, at, kind, sid in changes]
            last = changes[-1][0]
            if last:
                values[name] = last
        rec = {
            "id": record_id,
            "properties": {k: str(v) for k, v in values.items()},
            "createdAt": created_iso,
            "updatedAt": updated_iso,
            "archived": False,
            "history": entries,
            "associations": {},
        }
        self.records[object_type][record_id] = rec
        return rec

    def link(
        self, from_type: str, from_id: str, to_type: str, to_id: str | None, *type_ids: int
    ) -> None:
        if (
            to_id is None
            or to_id not in self.records[to_type]
            or from_id not in self.records[from_type]
        ):
            return
        left = self.records[from_type][from_id]["associations"].setdefault(to_type, {})
        right = self.records[to_type][to_id]["associations"].setdefault(from_type, {})
        for type_id in type_ids:
            forward = left.setdefault(to_id, [])
            backward = right.setdefault(from_id, [])
            if type_id not in forward:
                forward.append(type_id)
            reverse = assoc_types.TYPES[type_id].reverse_id
            if reverse not in backward:
                backward.append(reverse)

    def link_default(self, from_type: str, from_id: str, to_type: str, to_id: str | None) -> None:
        default = assoc_types.default_type(from_type, to_type)
        if default is not None:
            self.link(from_type, from_id, to_type, to_id, default.type_id)

    def flush(self) -> None:
        for object_type, records in self.records.items():
            self.sb.repo.bulk_insert(object_type, list(records.values()))


def _entry(value: str, stamp: str, source_type: str, source_id: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": value, "timestamp": stamp, "sourceType": source_type}
    if source_id is not None:
        entry["sourceId"] = source_id
    return entry


def _day_start(day: Any) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def load_history(sb: HubSpotSandbox, history: History) -> dict[str, str]:
    """Load ``history`` into the sandbox portal; returns generator key -> HubSpot id.

    Loading the same seed into the same data directory again returns the saved mapping.
    """
    saved = sb.store.get_meta(f"history_loaded:{history.seed}")
    if saved is not None:
        return dict(saved)
    _register_properties(sb, history)
    ids: dict[str, str] = {}
    user_ids: dict[str, str] = {}

    # Owners (reps)
    owners = []
    for i, rep in enumerate(history.reps):
        owner_id = str(70_000_000 + sb.portal_id % 1000 * 1000 + i + 1)
        user_id = 9_000_000 + i + 1
        stamp = iso_ms(history.now - timedelta(days=3 * 365))
        owners.append(
            {
                "id": owner_id,
                "email": rep.email,
                "firstName": rep.first_name,
                "lastName": rep.last_name,
                "userId": user_id,
                "userIdIncludingInactive": user_id,
                "type": "PERSON",
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "teams": [
                    {
                        "id": str(zlib.crc32(rep.territory.encode()) % 10_000_000),
                        "name": rep.territory,
                        "primary": True,
                    }
                ],
            }
        )
        ids[rep.key] = owner_id
        user_ids[rep.key] = f"userId:{user_id}"
    sb.add_owners(owners)

    leads_by_key = {lead.key: lead for lead in history.leads}
    opps_by_key = {opp.key: opp for opp in history.opportunities}
    absorbed = {c.key for c in history.contacts if c.from_lead_key in leads_by_key}
    accounts_won: set[str] = {o.account_key for o in history.opportunities if o.is_won}
    accounts_open: set[str] = {o.account_key for o in history.opportunities if not o.is_closed}
    activities_by_lead: dict[str, list[Activity]] = defaultdict(list)
    for activity in history.activities:
        if activity.lead_key:
            activities_by_lead[activity.lead_key].append(activity)

    total = (
        len(history.accounts)
        + len(history.leads)
        + len(history.contacts)
        + len(history.opportunities)
        + len(history.activities)
        + len(history.notes)
    )
    fresh = iter(sb.repo.allocate_ids(total))
    build = _Builder(sb)

    # Companies (accounts)
    for account in history.accounts:
        rid = next(fresh)
        ids[account.key] = rid
        stage = (
            "customer"
            if account.key in accounts_won
            else ("opportunity" if account.key in accounts_open else "lead")
        )
        build.record(
            "companies",
            rid,
            {
                "name": account.name,
                "domain": account.domain,
                "industry": account.industry,
                "numberofemployees": str(account.employees),
                "annualrevenue": _value(account.annual_revenue),
                "country": account.country,
                "region": account.region,
                "lifecyclestage": stage,
                "hubspot_owner_id": ids.get(account.owner_key),
            },
            account.created_at,
            account.created_at,
            user_ids.get(account.owner_key),
        )

    # Contacts from leads (a converted lead is the same person as its converted contact)
    for lead in history.leads:
        rid = next(fresh)
        ids[lead.key] = rid
        if lead.converted_contact_key:
            ids[lead.converted_contact_key] = rid
        _lead_contact(
            build, sb, lead, rid, ids, user_ids, opps_by_key, activities_by_lead[lead.key]
        )

    # Other contacts
    for contact in history.contacts:
        if contact.key in absorbed:
            continue
        rid = next(fresh)
        ids[contact.key] = rid
        stage = (
            "customer"
            if contact.account_key in accounts_won
            else ("opportunity" if contact.account_key in accounts_open else "other")
        )
        build.record(
            "contacts",
            rid,
            {
                "firstname": contact.first_name,
                "lastname": contact.last_name,
                "email": contact.email,
                "phone": contact.phone,
                "jobtitle": contact.title,
                "lifecyclestage": stage,
                "hubspot_owner_id": ids.get(contact.owner_key),
                "associatedcompanyid": ids.get(contact.account_key),
            },
            contact.created_at,
            contact.created_at,
            user_ids.get(contact.owner_key),
        )
    for contact in history.contacts:
        cid = ids.get(contact.key)
        if cid is not None:
            build.link("contacts", cid, "companies", ids.get(contact.account_key), 1, 279)
    for lead in history.leads:
        if lead.account_key:
            build.link("contacts", ids[lead.key], "companies", ids.get(lead.account_key), 1, 279)

    # Deals
    for opp in history.opportunities:
        rid = next(fresh)
        ids[opp.key] = rid
        _deal(build, opp, rid, ids, user_ids)
        build.link("deals", rid, "companies", ids.get(opp.account_key), 5, 341)
        if opp.contact_key:
            build.link("deals", rid, "contacts", ids.get(opp.contact_key), 3)

    # Engagements
    for activity in history.activities:
        rid = next(fresh)
        ids[activity.key] = rid
        object_type = _OBJECT_FOR_ACTIVITY[activity.type]
        build.record(
            object_type,
            rid,
            _activity_properties(activity, ids),
            activity.at,
            activity.at,
            user_ids.get(activity.owner_key),
        )
        _link_engagement(
            build,
            object_type,
            rid,
            ids,
            activity.lead_key,
            activity.contact_key,
            activity.opportunity_key,
            activity.account_key,
        )
    for note in history.notes:
        rid = next(fresh)
        ids[note.key] = rid
        build.record(
            "notes",
            rid,
            {
                "hs_note_body": f"{note.title}\n\n{note.body}",
                "hs_timestamp": iso_ms(note.at),
                "hubspot_owner_id": ids.get(note.author_key),
            },
            note.at,
            note.at,
            user_ids.get(note.author_key),
        )
        _link_engagement(
            build,
            "notes",
            rid,
            ids,
            note.lead_key,
            note.contact_key,
            note.opportunity_key,
            note.account_key,
        )

    build.flush()
    sb.store.set_meta(f"history_loaded:{history.seed}", ids)
    return ids


def _lead_contact(
    build: _Builder,
    sb: HubSpotSandbox,
    lead: Lead,
    rid: str,
    ids: dict[str, str],
    user_ids: dict[str, str],
    opps: dict[str, Opportunity],
    activities: list[Activity],
) -> None:
    events = sorted(lead.engagement, key=lambda e: e.at)
    opens = [e.at for e in events if e.type == "email_open"]
    clicks = [e.at for e in events if e.type == "email_click"]
    visits = [e.at for e in events if e.type == "page_visit"]
    forms = [e.at for e in events if e.type == "form_fill"]
    touches = [e.at for e in events] + [a.at for a in activities]
    last_touch = max(touches) if touches else None
    owner_source = user_ids.get(lead.owner_key)

    stages: list[tuple[str, datetime, str, str | None]] = [
        ("lead", lead.created_at, "CRM_UI", owner_source)
    ]
    if forms:
        stages.append(("marketingqualifiedlead", max(forms[0], lead.created_at), "FORM", None))
    if lead.status == "Working - Contacted" or lead.converted:
        worked = min((a.at for a in activities), default=lead.created_at)
        stages.append(("salesqualifiedlead", max(worked, stages[-1][1]), "CRM_UI", owner_source))
    updated = last_touch or lead.created_at
    if lead.converted and lead.converted_at:
        stages.append(
            ("opportunity", max(lead.converted_at, stages[-1][1]), "CRM_UI", owner_source)
        )
        updated = max(updated, lead.converted_at)
        opp = opps.get(lead.converted_opportunity_key or "")
        if opp is not None and opp.is_won and opp.closed_at:
            stages.append(("customer", max(opp.closed_at, stages[-1][1]), "CRM_UI", owner_source))
            updated = max(updated, opp.closed_at)
    props: dict[str, str | None] = {
        "firstname": lead.first_name,
        "lastname": lead.last_name,
        "email": lead.email,
        "phone": lead.phone,
        "jobtitle": lead.title,
        "company": lead.company,
        "industry": lead.industry,
        "numemployees": str(lead.employees),
        "annualrevenue": _value(lead.annual_revenue),
        "country": lead.country,
        "region": lead.region,
        "lead_source": lead.source,
        "hs_analytics_source": SOURCE_MAP.get(lead.source, "OFFLINE"),
        "product_interest": lead.product_interest,
        "hubspot_owner_id": ids.get(lead.owner_key),
        "hs_lead_status": LEAD_STATUS_MAP.get(lead.status, "OPEN"),
        "hs_lifecyclestage_lead_date": iso_ms(lead.created_at),
        "hs_email_open": str(len(opens)),
        "hs_email_click": str(len(clicks)),
        "hs_email_last_open_date": iso_ms(opens[-1]) if opens else None,
        "hs_analytics_num_page_views": str(len(visits)),
        "hs_analytics_last_visit_timestamp": iso_ms(visits[-1]) if visits else None,
        "num_conversion_events": str(len(forms)),
        "recent_conversion_date": iso_ms(forms[-1]) if forms else None,
        "last_engagement_date": iso_ms(last_touch) if last_touch else None,
        "lead_converted": "true" if lead.converted else "false",
        "lead_converted_date": iso_ms(lead.converted_at) if lead.converted_at else None,
        "associatedcompanyid": ids.get(lead.account_key) if lead.account_key else None,
    }
    for key, raw in lead.custom.items():
        if raw is not None:
            props[custom_property_name(key)] = (
                iso_ms(raw) if isinstance(raw, datetime) else _value(raw)
            )
    build.record(
        "contacts",
        rid,
        props,
        lead.created_at,
        updated,
        owner_source,
        history={"lifecyclestage": stages},
    )


def _deal(
    build: _Builder, opp: Opportunity, rid: str, ids: dict[str, str], user_ids: dict[str, str]
) -> None:
    source = user_ids.get(opp.owner_key)
    fields = {"StageName": "dealstage", "Amount": "amount", "CloseDate": "closedate"}

    def convert(field: str, raw: object) -> str:
        if field == "StageName":
            return STAGE_MAP.get(str(raw), "appointmentscheduled")
        if field == "Amount":
            return _value(float(raw)) if raw is not None else ""  # type: ignore[arg-type]
        if isinstance(raw, datetime):
            return iso_ms(raw)
        return iso_ms(_day_start(raw)) if raw is not None else ""

    current = {
        "StageName": opp.stage,
        "Amount": opp.amount,
        "CloseDate": opp.close_date,
    }
    history: dict[str, list[tuple[str, datetime, str, str | None]]] = {}
    updated = opp.created_at
    for field, prop in fields.items():
        changes = sorted((c for c in opp.history if c.field == field), key=lambda c: c.at)
        initial = changes[0].old_value if changes else current[field]
        entries = [(convert(field, initial), opp.created_at, "CRM_UI", source)]
        for change in changes:
            entries.append(
                (
                    convert(field, change.new_value),
                    change.at,
                    "CRM_UI",
                    user_ids.get(change.by_rep_key),
                )
            )
            updated = max(updated, change.at)
        if entries[-1][0] != convert(field, current[field]):
            entries.append(
                (convert(field, current[field]), max(updated, opp.created_at), "CRM_UI", source)
            )
        history[prop] = entries
    if opp.closed_at:
        updated = max(updated, opp.closed_at)
    stage = STAGE_MAP.get(opp.stage, "appointmentscheduled")
    build.record(
        "deals",
        rid,
        {
            "dealname": opp.name,
            "pipeline": "default",
            "hubspot_owner_id": ids.get(opp.owner_key),
            "hs_is_closed_won": "true" if opp.is_won else "false",
            "hs_is_closed": "true" if opp.is_closed else "false",
            "hs_deal_stage_probability": {v: p for v, p in _PROBABILITIES}.get(stage, "0.5"),
            "closed_lost_reason": opp.loss_reason,
            "competitors": ";".join(opp.competitors) if opp.competitors else None,
            "deal_product": opp.product,
            "lead_source": opp.lead_source,
            "hs_analytics_source": SOURCE_MAP.get(opp.lead_source, "OFFLINE"),
        },
        opp.created_at,
        updated,
        source,
        history=history,
    )


def _activity_properties(activity: Activity, ids: dict[str, str]) -> dict[str, str | None]:
    at = iso_ms(activity.at)
    props: dict[str, str | None] = {
        "hs_timestamp": at,
        "hubspot_owner_id": ids.get(activity.owner_key),
    }
    inbound = activity.direction == "inbound"
    if activity.type == "call":
        props.update(
            hs_call_title=activity.subject,
            hs_call_body=activity.body,
            hs_call_duration=str((activity.duration_minutes or 0) * 60_000),
            hs_call_direction="INBOUND" if inbound else "OUTBOUND",
            hs_call_status="COMPLETED" if activity.completed else "NO_ANSWER",
        )
    elif activity.type == "email":
        props.update(
            hs_email_subject=activity.subject,
            hs_email_text=activity.body,
            hs_email_direction="INCOMING_EMAIL" if inbound else "EMAIL",
            hs_email_status="SENT",
        )
    elif activity.type == "meeting":
        end = activity.at + timedelta(minutes=activity.duration_minutes or 30)
        props.update(
            hs_meeting_title=activity.subject,
            hs_meeting_body=activity.body,
            hs_meeting_start_time=at,
            hs_meeting_end_time=iso_ms(end),
            hs_meeting_outcome="COMPLETED" if activity.completed else "SCHEDULED",
        )
    else:
        props.update(
            hs_task_subject=activity.subject,
            hs_task_body=activity.body,
            hs_task_status="COMPLETED" if activity.completed else "NOT_STARTED",
            hs_task_priority="MEDIUM",
        )
    return props


def _link_engagement(
    build: _Builder,
    object_type: str,
    rid: str,
    ids: dict[str, str],
    lead_key: str | None,
    contact_key: str | None,
    opportunity_key: str | None,
    account_key: str | None,
) -> None:
    contact_ids = {ids.get(k) for k in (lead_key, contact_key) if k}
    for contact_id in contact_ids:
        build.link_default(object_type, rid, "contacts", contact_id)
    if opportunity_key:
        build.link_default(object_type, rid, "deals", ids.get(opportunity_key))
    if account_key:
        build.link_default(object_type, rid, "companies", ids.get(account_key))


_PROBABILITIES = [
    ("appointmentscheduled", "0.2"),
    ("qualifiedtobuy", "0.4"),
    ("presentationscheduled", "0.6"),
    ("decisionmakerboughtin", "0.8"),
    ("contractsent", "0.9"),
    ("closedwon", "1.0"),
    ("closedlost", "0.0"),
]


def _register_properties(sb: HubSpotSandbox, history: History) -> None:
    """Register the custom properties the loaded records carry."""
    registry = sb.registry
    text = {"type": "string", "fieldType": "text", "groupName": HISTORY_GROUP}
    contact_props = [
        {"name": "region", "label": "Region", **text},
        {"name": "lead_source", "label": "Lead Source", **text},
        {"name": "product_interest", "label": "Product Interest", **text},
        {
            "name": "last_engagement_date",
            "label": "Last Engagement Date",
            "type": "datetime",
            "fieldType": "date",
            "groupName": HISTORY_GROUP,
        },
        {
            "name": "lead_converted",
            "label": "Lead Converted",
            "type": "bool",
            "fieldType": "booleancheckbox",
            "groupName": HISTORY_GROUP,
        },
        {
            "name": "lead_converted_date",
            "label": "Lead Converted Date",
            "type": "datetime",
            "fieldType": "date",
            "groupName": HISTORY_GROUP,
        },
    ]
    samples: dict[str, tuple[str, object]] = {}
    for lead in history.leads:
        for key, raw in lead.custom.items():
            if raw is not None and custom_property_name(key) not in samples:
                samples[custom_property_name(key)] = (key, raw)
    for name, (key, raw) in samples.items():
        contact_props.append(
            _custom_definition(name, key.removesuffix("__c").replace("_", " "), raw)
        )
    registry.register_many("contacts", contact_props)
    registry.register_many("companies", [{"name": "region", "label": "Region", **text}])
    competitors = sorted(
        set(history.competitors) | {c for o in history.opportunities for c in o.competitors}
    )
    registry.register_many(
        "deals",
        [
            {
                "name": "competitors",
                "label": "Competitors",
                "type": "enumeration",
                "fieldType": "checkbox",
                "groupName": HISTORY_GROUP,
                "options": [{"label": c, "value": c} for c in competitors]
                or [{"label": "None", "value": "none"}],
            },
            {"name": "deal_product", "label": "Product", **text},
            {"name": "lead_source", "label": "Lead Source", **text},
        ],
    )
