"""Pure functions between Salesforce records and Fieldwise's canonical records.

``to_<entity>(raw, tenant_id)`` turns one REST/SOQL record (the ``attributes`` envelope included)
into a canonical record validated by :func:`core.schemas.load_record`. Which Salesforce field feeds
which canonical attribute comes from the manifest's ``inputs``; the few rules a table cannot say
(engagement roll-ups, activity types, polymorphic ids, date-only values) live here and nowhere
else. Every other custom field the record carries lands in the canonical ``custom`` map.

:func:`to_salesforce_values` goes the other way for write-back: manifest field values to the JSON
Salesforce accepts for each field type.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from core.schemas import load_record
from manifests.loader import FieldSpec, load_manifest

CRM = "salesforce"

ENGAGEMENT_FIELDS: Mapping[str, str] = {
    "Email_Opens__c": "email_opens",
    "Email_Clicks__c": "email_clicks",
    "Page_Visits__c": "page_visits",
    "Form_Fills__c": "form_fills",
    "Last_Engagement_Date__c": "last_engaged_at",
}
"""Marketing engagement roll-ups on Lead (Pardot/Account Engagement-style custom fields) and the
canonical lead attributes they fill."""
COMPETITORS_FIELD = "Competitors__c"
"""Multi-select picklist of competitors on Opportunity; values are ``;``-separated on the wire."""
TERRITORY_FIELD = "Territory__c"
"""Custom territory on User, used when the standard ``Division`` is empty."""

ID_PREFIX_ATTRS: Mapping[str, str] = {
    "00Q": "lead_id",
    "003": "contact_id",
    "001": "account_id",
    "006": "opportunity_id",
}
"""Key prefix of a polymorphic id (WhoId, WhatId, ParentId) -> the canonical link it fills."""

SYSTEM_FIELDS = frozenset(
    {
        "attributes",
        "Id",
        "IsDeleted",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
        "CreatedDate",
    }
)
"""Bookkeeping fields never copied into ``custom``."""

_INT_ATTRS = frozenset(
    {"employees", "email_opens", "email_clicks", "page_visits", "form_fills", "duration_minutes"}
)
_DATETIME_ATTRS = frozenset(
    {"created_at", "updated_at", "converted_at", "occurred_at", "last_engaged_at"}
)
_SF_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def parse_datetime(value: Any) -> datetime | None:
    """A Salesforce datetime (``2026-11-22T15:04:05.000+0000``) or date as an aware UTC datetime.

    Date-only values (``ActivityDate``, ``ConvertedDate``) become midnight UTC: Salesforce stores
    them without a time zone, and UTC keeps them on the same calendar day everywhere Fieldwise runs.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value)
    if not _SF_DATETIME.match(text):
        parsed_day = date.fromisoformat(text)
        return datetime(parsed_day.year, parsed_day.month, parsed_day.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """A datetime in the REST API's own form, ``2026-11-22T15:04:05.000+0000`` (UTC)."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return round(float(value))


def _convert(attr: str, value: Any) -> Any:
    if attr in _INT_ATTRS:
        return _as_int(value)
    if attr in _DATETIME_ATTRS:
        return parse_datetime(value)
    return value


def _linked(record_id: Any) -> tuple[str, str] | None:
    if not isinstance(record_id, str) or len(record_id) < 3:
        return None
    attr = ID_PREFIX_ATTRS.get(record_id[:3])
    return (attr, record_id) if attr else None


def _base(
    object_name: str,
    raw: Mapping[str, Any],
    tenant_id: str,
    promoted: Mapping[str, str] = {},
) -> dict[str, Any]:
    """Copy the manifest's inputs onto canonical attributes and the rest into ``custom``."""
    inputs = load_manifest(CRM).input_map(object_name)
    owned = load_manifest(CRM).owned_field_names(object_name)
    out: dict[str, Any] = {"tenant_id": tenant_id, "crm": CRM, "crm_id": raw["Id"]}
    custom: dict[str, Any] = {}
    for field, attr in inputs.items():
        if attr is None or field not in raw:
            continue
        if attr == "custom":
            custom[field] = raw[field]
        else:
            out[attr] = _convert(attr, raw[field])
    for field, value in raw.items():
        if field in inputs or field in SYSTEM_FIELDS or field in owned:
            continue
        if field in promoted:
            converted = _convert(promoted[field], value)
            if converted is not None:
                out[promoted[field]] = converted
        elif field.endswith("__c"):
            custom[field] = value
    out["custom"] = custom
    return out


def _drop_none(record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Leave out attributes whose schema default should apply instead of an explicit null."""
    for name in names:
        if record.get(name) is None:
            record.pop(name, None)
    return record


def to_lead(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Salesforce Lead as a canonical lead, engagement roll-ups included."""
    record = _base("Lead", raw, tenant_id, ENGAGEMENT_FIELDS)
    _drop_none(record, ("email_opens", "email_clicks", "page_visits", "form_fills", "is_converted"))
    return load_record("lead", record)


def to_contact(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Salesforce Contact as a canonical contact."""
    return load_record("contact", _base("Contact", raw, tenant_id))


def to_account(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Salesforce Account as a canonical account."""
    return load_record("account", _base("Account", raw, tenant_id))


def to_opportunity(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Salesforce Opportunity as a canonical opportunity, competitors split into a list."""
    record = _base("Opportunity", raw, tenant_id)
    # The manifest reads Competitors__c into ``competitors``; an org whose manifest copy predates
    # that input still carries it in ``custom``.
    picked = record.pop("competitors", None) or record["custom"].pop(COMPETITORS_FIELD, None)
    record["custom"].pop(COMPETITORS_FIELD, None)
    record["competitors"] = split_multiselect(picked)
    _drop_none(record, ("is_closed", "is_won"))
    return load_record("opportunity", record)


def split_multiselect(value: Any) -> list[str]:
    """A multi-select picklist value (``"A;B"`` on the wire, None when empty) as a list.

    Values are trimmed and repeated values dropped, keeping the order Salesforce sent.
    """
    if value is None:
        return []
    parts = value if isinstance(value, list | tuple) else str(value).split(";")
    return list(dict.fromkeys(str(p).strip() for p in parts if str(p).strip()))


HISTORY_FIELDS = {"StageName": "stage", "CloseDate": "close_date", "Amount": "amount"}
"""OpportunityFieldHistory field names to the canonical fields whose history is kept."""


def to_field_history(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One ``OpportunityFieldHistory`` row as a canonical deal field-history row."""
    return {
        "crm_id": raw["OpportunityId"],
        "field": HISTORY_FIELDS[raw["Field"]],
        "old_value": raw.get("OldValue"),
        "new_value": raw.get("NewValue"),
        "changed_at": parse_datetime(raw["CreatedDate"]),
        "changed_by": raw.get("CreatedById"),
    }


def _task_type(raw: Mapping[str, Any]) -> str:
    """Calls and emails are Tasks told apart by ``TaskSubtype`` (API 39+), else by ``Type``."""
    for value in (raw.get("TaskSubtype"), raw.get("Type")):
        kind = str(value or "").lower()
        if kind in {"call", "email"}:
            return kind
    return "task"


def to_activity(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Task (call, email or task) or an Event (meeting) as a canonical activity."""
    object_name = _object_of(raw, {"00T": "Task", "00U": "Event"})
    record = _base(object_name, raw, tenant_id)
    if object_name == "Event":
        record["type"] = "meeting"
        record["occurred_at"] = (
            parse_datetime(raw.get("StartDateTime"))
            or parse_datetime(raw.get("ActivityDateTime"))
            or parse_datetime(raw.get("CreatedDate"))
        )
    else:
        record["type"] = _task_type(raw)
        seconds = raw.get("CallDurationInSeconds")
        record["duration_minutes"] = None if seconds is None else _as_int(float(seconds) / 60)
        direction = str(raw.get("CallType") or "").lower()
        record["direction"] = direction if direction in {"inbound", "outbound"} else None
        record["occurred_at"] = parse_datetime(raw.get("ActivityDate")) or parse_datetime(
            raw.get("CreatedDate")
        )
    for link in (raw.get("WhoId"), raw.get("WhatId")):
        found = _linked(link)
        if found:
            record[found[0]] = found[1]
    return load_record("activity", record)


def to_note(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A Note as a canonical note linked to its parent by the parent id's key prefix."""
    record = _base("Note", raw, tenant_id)
    record["body"] = record.get("body") or ""
    found = _linked(raw.get("ParentId"))
    if found:
        record[found[0]] = found[1]
    return load_record("note", record)


def to_user(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A User as a canonical user (a rep); territory from Division, else ``Territory__c``."""
    record = _base("User", raw, tenant_id)
    if not record.get("territory"):
        record["territory"] = record["custom"].get(TERRITORY_FIELD)
    _drop_none(record, ("is_active",))
    return load_record("user", record)


def _object_of(raw: Mapping[str, Any], by_prefix: Mapping[str, str]) -> str:
    kind = (raw.get("attributes") or {}).get("type")
    if kind in by_prefix.values():
        return str(kind)
    prefix = str(raw.get("Id", ""))[:3]
    if prefix in by_prefix:
        return by_prefix[prefix]
    raise ValueError(f"record {raw.get('Id')!r} is none of {', '.join(by_prefix.values())}")


MAPPERS: Mapping[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "lead": to_lead,
    "contact": to_contact,
    "account": to_account,
    "opportunity": to_opportunity,
    "activity": to_activity,
    "note": to_note,
    "user": to_user,
}
"""Canonical entity -> its mapper."""


# --------------------------------------------------------------------------------------------------
# Write-back


def _looks_like_html(text: str) -> bool:
    return bool(re.search(r"<[a-zA-Z][^>]*>", text))


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


def _format_one(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None  # null clears the field in a PATCH
    kind = spec.type
    if kind in {"Number", "Currency", "Percent"}:
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"{spec.api_name}: {value!r} is not a finite number")
        scale = spec.scale or 0
        return round(number) if scale == 0 else round(number, scale)
    if kind == "Checkbox":
        return bool(value)
    if kind == "DateTime":
        moment = parse_datetime(value)
        assert moment is not None  # None returned above
        return format_datetime(moment)
    if kind == "Date":
        return (value.date() if isinstance(value, datetime) else value).isoformat()
    if kind in {"Picklist", "MultiselectPicklist"}:
        if isinstance(value, list | tuple | set):
            return ";".join(str(v) for v in value)
        return str(value)
    if kind == "Html":
        # Rich text areas take HTML; plain text would lose its line breaks, so escape it and
        # keep the lines. Salesforce sanitises the tags it allows on save.
        text = _text(value)
        return text if _looks_like_html(text) else html.escape(text).replace("\n", "<br>")
    return _text(value)


def to_salesforce_values(
    values: Mapping[str, Any], field_specs: Mapping[str, FieldSpec] | Iterable[FieldSpec]
) -> dict[str, Any]:
    """Field values keyed by manifest API name, formatted as Salesforce's REST API takes them.

    Numbers are rounded to the field's scale (whole numbers for scale 0), DateTimes become
    ``2026-11-22T15:04:05.000+0000``, picklists their value text (multi-select joined with ``;``),
    rich text escaped HTML unless it already is HTML, text fields strings (lists one per line).
    Restricted picklist values and lengths are left to Salesforce, which reports them per record.

    Raises:
        KeyError: a value for a field that is not one of ``field_specs`` (not Fieldwise's).
        ValueError: a number that is NaN or infinite.
    """
    specs = (
        dict(field_specs)
        if isinstance(field_specs, Mapping)
        else {spec.api_name: spec for spec in field_specs}
    )
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in specs:
            raise KeyError(
                f"{name!r} is not a Fieldwise field here; expected one of {', '.join(sorted(specs))}"
            )
        out[name] = _format_one(specs[name], value)
    return out
