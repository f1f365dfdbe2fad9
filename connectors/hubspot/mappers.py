"""Pure functions between HubSpot's wire JSON and Fieldwise's canonical records.

Reading: ``to_<entity>(raw, tenant_id, ...)`` turns one HubSpot object (:class:`RawObject`) into a
canonical record validated with :func:`core.schemas.load_record`. Writing:
:func:`to_hubspot_properties` formats Python values the way HubSpot's property types expect. No
function here does I/O; streams hand them everything they need.

Which HubSpot contact is a lead and which a contact is decided from ``lifecyclestage`` (see
:func:`is_lead` and :func:`is_contact`): HubSpot has one contact record where Salesforce has a Lead
that converts into a Contact, so a contact that reached ``opportunity`` or ``customer`` after being a
lead is both a converted lead (the history scoring learns from) and a contact.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypedDict

from marshmallow import ValidationError, validate

from core.schemas import load_record

CRM = "hubspot"

LEAD_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead")
"""Lifecycle stages of a contact that is still a lead (not yet sales-accepted as a deal)."""
CONVERTED_STAGES = ("opportunity", "customer")
"""Lifecycle stages that mean a lead converted: a deal was opened, or won."""
BECAME_LEAD_DATE = "hs_lifecyclestage_lead_date"
"""HubSpot sets "Became a Lead Date" when a contact enters the lead stage; a contact at opportunity
or customer that has it went through the lead funnel, so it is also a converted lead."""
CONVERTED_DATE_PROPERTIES = (
    "hs_lifecyclestage_opportunity_date",
    "hs_lifecyclestage_customer_date",
)
"""HubSpot's "Became an Opportunity/Customer Date": the conversion time, earliest first."""

ACTIVITY_TYPES = {"calls": "call", "emails": "email", "meetings": "meeting", "tasks": "task"}
"""HubSpot engagement object -> canonical activity type."""

ENGAGED_AT_PROPERTIES = (
    "hs_analytics_last_visit_timestamp",
    "hs_email_last_open_date",
    "hs_email_last_click_date",
    "recent_conversion_date",
    "hs_last_sales_activity_timestamp",
    "notes_last_contacted",
)
"""Contact timestamps of the last web visit, email open or click, form, or sales touch; the latest
one is the lead's ``last_engaged_at``."""

EXTRA_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": (
        BECAME_LEAD_DATE,
        *CONVERTED_DATE_PROPERTIES,
        *ENGAGED_AT_PROPERTIES,
        "associatedcompanyid",
        "region",
        "hs_lastmodifieddate",
    ),
    "companies": ("region", "state"),
    "deals": ("competitors",),
    "meetings": ("hs_meeting_end_time", "hs_timestamp"),
    "notes": ("hs_timestamp",),
}
"""Properties the mappers read beyond the manifest's ``inputs``; streams request both. HubSpot
leaves out unknown names, so a portal without ``region`` or ``competitors`` costs nothing."""


class RawObject(TypedDict, total=False):
    """One HubSpot CRM object as the v3 APIs send it, plus Fieldwise's flattened associations.

    ``associations`` is not HubSpot's nested shape: streams fill it from the v4 associations API as
    ``{"companies": ["123", ...], "deals": [...]}``.
    """

    id: str
    properties: dict[str, str | None]
    propertiesWithHistory: dict[str, list[dict[str, Any]]]
    createdAt: str
    updatedAt: str
    archived: bool
    archivedAt: str
    associations: dict[str, list[str]]


# --------------------------------------------------------------------------------------------------
# Classification


def is_lead(properties: Mapping[str, Any]) -> bool:
    """Whether a contact is a Fieldwise lead.

    Open leads are contacts in a lead stage (or with no stage yet: a fresh, unqualified contact);
    converted leads are contacts at opportunity or customer that became a lead first.
    """
    stage = _text(properties.get("lifecyclestage"))
    if stage is None or stage in LEAD_STAGES:
        return True
    return stage in CONVERTED_STAGES and _text(properties.get(BECAME_LEAD_DATE)) is not None


def is_contact(properties: Mapping[str, Any]) -> bool:
    """Whether a contact is a Fieldwise contact: any stage past the lead stages."""
    stage = _text(properties.get("lifecyclestage"))
    return stage is not None and stage not in LEAD_STAGES


def is_converted(properties: Mapping[str, Any]) -> bool:
    """Whether a contact's lifecycle stage says its lead converted."""
    return _text(properties.get("lifecyclestage")) in CONVERTED_STAGES


def needs_conversion_history(raw: RawObject) -> bool:
    """Whether a converted lead's conversion time can only come from ``lifecyclestage`` history."""
    props = raw.get("properties") or {}
    return (
        is_converted(props)
        and all(_text(props.get(name)) is None for name in CONVERTED_DATE_PROPERTIES)
        and "lifecyclestage" not in (raw.get("propertiesWithHistory") or {})
    )


# --------------------------------------------------------------------------------------------------
# HubSpot -> canonical


def to_lead(
    raw: RawObject, tenant_id: str, custom_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A HubSpot contact as a canonical lead.

    Args:
        raw: the contact (``propertiesWithHistory.lifecyclestage`` lets a converted lead without
            HubSpot's stage dates get its conversion time).
        tenant_id: the portal's tenant id.
        custom_types: the portal's custom property names -> HubSpot types; their values land in
            ``custom``.

    Raises:
        RecordValidationError: the mapped record breaks the canonical schema.
    """
    props = raw.get("properties") or {}
    converted = is_converted(props)
    record = {
        **_base(raw, tenant_id, "createdate", "lastmodifieddate", custom_types),
        **_person(props),
        "company": _text(props.get("company")),
        "industry": _text(props.get("industry")),
        "employees": _headcount(props.get("numemployees")),
        "annual_revenue": _money(props.get("annualrevenue")),
        "country": _text(props.get("country")),
        # A portal's own "region" property (sales territory) beats HubSpot's "state".
        "region": _text(props.get("region")) or _text(props.get("state")),
        "source": _text(props.get("hs_analytics_source")),
        "status": _text(props.get("hs_lead_status")),
        "owner_id": _text(props.get("hubspot_owner_id")),
        "is_converted": converted,
        "converted_at": _converted_at(raw) if converted else None,
        # The converted contact is the same HubSpot record.
        "converted_contact_id": str(raw["id"]) if converted else None,
        "converted_opportunity_id": _first(raw, "deals") if converted else None,
        "email_opens": _count(props.get("hs_email_open")),
        "email_clicks": _count(props.get("hs_email_click")),
        "page_visits": _count(props.get("hs_analytics_num_page_views")),
        "form_fills": _count(props.get("num_conversion_events")),
        "last_engaged_at": _latest(props.get(name) for name in ENGAGED_AT_PROPERTIES),
    }
    return load_record("lead", record)


def to_contact(
    raw: RawObject, tenant_id: str, custom_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A HubSpot contact as a canonical contact (see :func:`to_lead` for the arguments)."""
    props = raw.get("properties") or {}
    record = {
        **_base(raw, tenant_id, "createdate", "lastmodifieddate", custom_types),
        **_person(props),
        "account_id": _text(props.get("associatedcompanyid")) or _first(raw, "companies"),
        "owner_id": _text(props.get("hubspot_owner_id")),
        "lifecycle_stage": _text(props.get("lifecyclestage")),
    }
    return load_record("contact", record)


def to_account(
    raw: RawObject, tenant_id: str, custom_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A HubSpot company as a canonical account (see :func:`to_lead` for the arguments).

    HubSpot allows a company without a name; the domain, or ``Company <id>``, stands in.
    """
    props = raw.get("properties") or {}
    domain = _text(props.get("domain"))
    record = {
        **_base(raw, tenant_id, "createdate", "hs_lastmodifieddate", custom_types),
        "name": _text(props.get("name")) or domain or f"Company {raw['id']}",
        "domain": domain,
        "industry": _text(props.get("industry")),
        "employees": _headcount(props.get("numberofemployees")),
        "annual_revenue": _money(props.get("annualrevenue")),
        "country": _text(props.get("country")),
        "region": _text(props.get("region")) or _text(props.get("state")),
        "owner_id": _text(props.get("hubspot_owner_id")),
    }
    return load_record("account", record)


def to_opportunity(
    raw: RawObject, tenant_id: str, custom_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A HubSpot deal as a canonical opportunity.

    ``stage`` is the deal stage's internal value (``closedwon``). HubSpot calculates
    ``hs_is_closed``/``hs_is_closed_won``; when a portal lacks them the default pipeline's closed
    stages stand in. ``competitors`` reads a portal's ``competitors`` property (multiple checkboxes,
    ``;``-separated), the usual way HubSpot portals track them.

    Args:
        raw: the deal, with ``associations.companies`` for the account.
        tenant_id: the portal's tenant id.
        custom_types: property names -> HubSpot types for ``custom`` (the portal's own properties
            and the HubSpot-defined ones the manifest routes there, such as ``pipeline``).
    """
    props = raw.get("properties") or {}
    stage = _text(props.get("dealstage")) or "unknown"
    is_won = _bool(props.get("hs_is_closed_won")) or stage == "closedwon"
    is_closed = is_won or _bool(props.get("hs_is_closed")) or stage == "closedlost"
    record = {
        **_base(raw, tenant_id, "createdate", "hs_lastmodifieddate", custom_types),
        "name": _text(props.get("dealname")) or f"Deal {raw['id']}",
        "account_id": _first(raw, "companies"),
        "owner_id": _text(props.get("hubspot_owner_id")),
        "amount": _number(props.get("amount")),
        "stage": stage,
        "close_date": _day(props.get("closedate")),
        "is_closed": is_closed,
        "is_won": is_won,
        "lead_source": _text(props.get("hs_analytics_source")),
        "competitors": _multi(props.get("competitors")),
    }
    return load_record("opportunity", record)


DEAL_HISTORY_PROPERTIES = {"dealstage": "stage", "closedate": "close_date", "amount": "amount"}
"""Deal properties whose history is kept, to their canonical fields."""


def to_field_history(raw: RawObject) -> list[dict[str, Any]]:
    """A deal's ``propertiesWithHistory`` as canonical field-history rows, oldest first.

    HubSpot lists each property's values newest first, each with the time it was set; a row's old
    value is the value set before it. Close dates are kept as dates, amounts as numbers.
    """
    rows: list[dict[str, Any]] = []
    history = raw.get("propertiesWithHistory") or {}
    for name, field in DEAL_HISTORY_PROPERTIES.items():
        entries = sorted(
            (e for e in history.get(name) or [] if instant(e.get("timestamp")) is not None),
            key=lambda e: instant(e.get("timestamp")) or datetime.min,
        )
        previous: Any = None
        for entry in entries:
            value = entry.get("value")
            if field == "close_date":
                value = _day(value)
            elif field == "amount":
                value = _number(value)
            else:
                value = _text(value)
            rows.append(
                {
                    "crm_id": str(raw["id"]),
                    "field": field,
                    "old_value": previous,
                    "new_value": value,
                    "changed_at": instant(entry.get("timestamp")),
                    "changed_by": _text(entry.get("updatedByUserId") or entry.get("sourceId")),
                }
            )
            previous = value
    return rows


def to_activity(
    raw: RawObject,
    tenant_id: str,
    object_type: str,
    custom_types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A HubSpot call, email, meeting or task as a canonical activity.

    Args:
        raw: the engagement, with ``associations`` to contacts, companies and deals.
        tenant_id: the portal's tenant id.
        object_type: ``calls``, ``emails``, ``meetings`` or ``tasks``.
        custom_types: the portal's custom property names -> HubSpot types.

    Raises:
        KeyError: ``object_type`` is not an engagement that maps to an activity.
    """
    kind = ACTIVITY_TYPES[object_type]
    props = raw.get("properties") or {}
    base = _base(raw, tenant_id, "hs_createdate", "hs_lastmodifieddate", custom_types)
    prefix = {"call": "hs_call", "email": "hs_email", "meeting": "hs_meeting", "task": "hs_task"}[
        kind
    ]
    subject_property = {"call": "title", "email": "subject", "meeting": "title", "task": "subject"}
    body_property = {"call": "body", "email": "text", "meeting": "body", "task": "body"}
    status_property = {"call": "status", "email": "status", "meeting": "outcome", "task": "status"}
    occurred = (
        instant(props.get("hs_meeting_start_time")) if kind == "meeting" else None
    ) or instant(props.get("hs_timestamp"))
    contact = _first(raw, "contacts")
    record = {
        **base,
        "type": kind,
        "subject": _text(props.get(f"{prefix}_{subject_property[kind]}")),
        "body": _plain_text(props.get(f"{prefix}_{body_property[kind]}")),
        "occurred_at": occurred or base["created_at"] or base["updated_at"],
        "owner_id": _text(props.get("hubspot_owner_id")),
        # A HubSpot contact is both the lead and the contact (see the module docstring).
        "lead_id": contact,
        "contact_id": contact,
        "account_id": _first(raw, "companies"),
        "opportunity_id": _first(raw, "deals"),
        "duration_minutes": _duration_minutes(kind, props),
        "direction": _direction(kind, props),
        "status": _text(props.get(f"{prefix}_{status_property[kind]}")),
    }
    return load_record("activity", record)


def to_note(
    raw: RawObject, tenant_id: str, custom_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A HubSpot note as a canonical note: HTML reduced to text, the first line as title."""
    props = raw.get("properties") or {}
    body = _plain_text(props.get("hs_note_body")) or ""
    first_line, _, rest = body.partition("\n")
    contact = _first(raw, "contacts")
    record = {
        **_base(raw, tenant_id, "hs_createdate", "hs_lastmodifieddate", custom_types),
        "title": first_line.strip()[:200] if rest.strip() else None,
        "body": body,
        "author_id": _text(props.get("hubspot_owner_id")),
        "lead_id": contact,
        "contact_id": contact,
        "account_id": _first(raw, "companies"),
        "opportunity_id": _first(raw, "deals"),
    }
    return load_record("note", record)


def to_user(raw: Mapping[str, Any], tenant_id: str) -> dict[str, Any]:
    """A HubSpot owner (``/crm/v3/owners`` JSON) as a canonical user; territory: the primary team."""
    teams = raw.get("teams") or []
    primary = next((t for t in teams if t.get("primary")), teams[0] if teams else None)
    record = {
        "tenant_id": tenant_id,
        "crm": CRM,
        "crm_id": str(raw["id"]),
        "created_at": instant(raw.get("createdAt")),
        "updated_at": instant(raw.get("updatedAt")) or instant(raw.get("createdAt")),
        "custom": {"user_id": str(raw["userId"])} if raw.get("userId") is not None else {},
        "first_name": _text(raw.get("firstName")),
        "last_name": _text(raw.get("lastName")),
        "email": _email(raw.get("email")),
        "is_active": not bool(raw.get("archived")),
        "territory": _text(primary.get("name")) if primary else None,
    }
    return load_record("user", record)


# --------------------------------------------------------------------------------------------------
# canonical -> HubSpot


def to_hubspot_properties(
    values: Mapping[str, Any], types: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Format values for HubSpot property writes.

    HubSpot takes every property value as a string: numbers in plain decimal notation, booleans as
    ``true``/``false``, multi-select enumerations joined with ``;``, ``datetime`` properties as epoch
    milliseconds and ``date`` properties as ``YYYY-MM-DD`` (HubSpot rejects a ``date`` that is not
    midnight UTC). None clears the property (an empty string).

    Args:
        values: property name -> Python value.
        types: property name -> HubSpot type (``number``, ``datetime``, ``date``, ``enumeration``,
            ``string``, ``bool``); decides how dates and datetimes are written. Without it a
            ``datetime`` is written as epoch milliseconds and a ``date`` as ``YYYY-MM-DD``.

    Raises:
        ValueError: a value HubSpot cannot store (NaN, infinity, a naive datetime).
        TypeError: a value of a type with no HubSpot form.
    """
    types = types or {}
    return {name: _format(name, value, types.get(name)) for name, value in values.items()}


def _format(name: str, value: Any, hubspot_type: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return _decimal(name, value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: naive datetime {value!r}; give it a timezone (UTC)")
        if hubspot_type == "date":
            return value.astimezone(UTC).date().isoformat()
        return str(_epoch_ms(value))
    if isinstance(value, date):
        if hubspot_type == "datetime":
            return str(_epoch_ms(datetime(value.year, value.month, value.day, tzinfo=UTC)))
        return value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return ";".join(_format(name, item, None) for item in items)
    raise TypeError(f"{name}: cannot write a {type(value).__name__} to HubSpot")


def _decimal(name: str, value: float | Decimal) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: {value} is not a number HubSpot can store")
    number = Decimal(repr(value)) if isinstance(value, float) else value
    if not number.is_finite():
        raise ValueError(f"{name}: {value} is not a number HubSpot can store")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


# --------------------------------------------------------------------------------------------------
# Value parsing


def _base(
    raw: RawObject,
    tenant_id: str,
    created_property: str,
    modified_property: str,
    custom_types: Mapping[str, str] | None,
) -> dict[str, Any]:
    props = raw.get("properties") or {}
    created = instant(props.get(created_property)) or instant(raw.get("createdAt"))
    updated = (
        instant(props.get(modified_property))
        or instant(props.get("hs_lastmodifieddate"))
        or instant(raw.get("updatedAt"))
        or created
    )
    return {
        "tenant_id": tenant_id,
        "crm": CRM,
        "crm_id": str(raw["id"]),
        "created_at": created,
        "updated_at": updated,
        "custom": custom_values(props, custom_types or {}),
    }


def custom_values(properties: Mapping[str, Any], custom_types: Mapping[str, str]) -> dict[str, Any]:
    """The custom properties present on a record, typed by their HubSpot type.

    Numbers become int or float, ``bool`` becomes bool, multiple checkboxes a list of values,
    dates and datetimes ISO-8601 strings (the custom map is stored as JSON); the rest stays text.
    """
    out: dict[str, Any] = {}
    for name, hubspot_type in custom_types.items():
        raw = properties.get(name)
        if _text(raw) is None:
            continue
        value: Any
        if hubspot_type == "number":
            number = _number(raw)
            value = int(number) if number is not None and number.is_integer() else number
        elif hubspot_type == "bool":
            value = _bool(raw)
        elif hubspot_type in ("datetime", "date"):
            moment = instant(raw)
            value = moment.isoformat() if moment else _text(raw)
        elif hubspot_type == "enumeration" and ";" in str(raw):
            value = _multi(raw)
        else:
            value = _text(raw)
        if value is not None:
            out[name] = value
    return out


def _person(props: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "first_name": _text(props.get("firstname")),
        "last_name": _text(props.get("lastname")),
        "email": _email(props.get("email")),
        "phone": _text(props.get("phone")),
        "title": _text(props.get("jobtitle")),
    }


def _converted_at(raw: RawObject) -> datetime | None:
    props = raw.get("properties") or {}
    dates = [instant(props.get(name)) for name in CONVERTED_DATE_PROPERTIES]
    known = [d for d in dates if d is not None]
    if known:
        return min(known)
    # Without HubSpot's stage dates, the first time lifecyclestage took a converted value.
    history = (raw.get("propertiesWithHistory") or {}).get("lifecyclestage") or []
    moments = [
        instant(entry.get("timestamp"))
        for entry in history
        if _text(entry.get("value")) in CONVERTED_STAGES
    ]
    found = [m for m in moments if m is not None]
    return min(found) if found else None


def _first(raw: RawObject, object_type: str) -> str | None:
    ids = (raw.get("associations") or {}).get(object_type) or []
    return str(min(ids, key=_id_order)) if ids else None


def _id_order(value: str) -> tuple[int, str]:
    return (int(value), "") if str(value).isdigit() else (0, str(value))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


_EMAIL = validate.Email()


def _email(value: Any) -> str | None:
    # HubSpot stores what forms and imports hand it; an address the canonical schema would
    # reject is dropped rather than failing the whole record.
    text = _text(value)
    if text is None:
        return None
    try:
        return _EMAIL(text)
    except ValidationError:
        return None


def _number(value: Any) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        number = float(Decimal(text.replace(",", "")))
    except (InvalidOperation, ValueError):
        return None
    return number if math.isfinite(number) else None


def _money(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None and number > 0 else 0


_RANGE = re.compile(r"^\s*(\d[\d,]*)\s*(?:-|\+|to\b|$)")


def _headcount(value: Any) -> int | None:
    """Employees from a number or one of HubSpot's range options (``25-50``, ``1000+``: the low end)."""
    number = _number(value)
    if number is not None:
        return int(number) if number >= 0 else None
    text = _text(value)
    match = _RANGE.match(text) if text else None
    return int(match.group(1).replace(",", "")) if match else None


def _bool(value: Any) -> bool:
    return _text(value) in ("true", "True", "TRUE", "1", "yes")


def _multi(value: Any) -> list[str]:
    text = _text(value)
    return [part.strip() for part in text.split(";") if part.strip()] if text else []


def instant(value: Any) -> datetime | None:
    """An aware UTC datetime from HubSpot's ISO-8601 text or epoch milliseconds; None if neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = _text(value)
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        try:
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _day(value: Any) -> date | None:
    moment = instant(value)
    return moment.date() if moment else None


def _latest(values: Iterable[Any]) -> datetime | None:
    moments = [m for m in (instant(v) for v in values) if m is not None]
    return max(moments) if moments else None


def _duration_minutes(kind: str, props: Mapping[str, Any]) -> int | None:
    if kind == "call":
        millis = _number(props.get("hs_call_duration"))
        return round(millis / 60_000) if millis is not None and millis >= 0 else None
    if kind == "meeting":
        start = instant(props.get("hs_meeting_start_time"))
        end = instant(props.get("hs_meeting_end_time"))
        if start and end and end >= start:
            return round((end - start).total_seconds() / 60)
    return None


_INBOUND = {"INBOUND", "INCOMING_EMAIL"}
_OUTBOUND = {"OUTBOUND", "EMAIL", "FORWARDED_EMAIL"}


def _direction(kind: str, props: Mapping[str, Any]) -> str | None:
    if kind not in ("call", "email"):
        return None
    value = _text(props.get("hs_call_direction" if kind == "call" else "hs_email_direction"))
    if value in _INBOUND:
        return "inbound"
    if value in _OUTBOUND:
        return "outbound"
    return None


_TAG = re.compile(r"<[^>]+>")
_BREAK = re.compile(r"<\s*(br|/p|/div|/li)\s*/?>", re.IGNORECASE)


def _plain_text(value: Any) -> str | None:
    """Text from HubSpot's rich-text (HTML) note, call and task bodies; plain text passes through."""
    text = _text(value)
    if text is None:
        return None
    if "<" in text and ">" in text:
        text = _TAG.sub("", _BREAK.sub("\n", text))
    return html.unescape(text).strip() or None
