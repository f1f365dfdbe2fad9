"""Object types, property definitions and property-value validation, as HubSpot's Properties API has them.

Each object type starts with HubSpot's own (``hubspotDefined``) properties; integrations add custom
ones through ``/crm/v3/properties/{objectType}``. Definitions and groups are persisted in the
:class:`~sandbox.common.RecordStore` side table, so a restart keeps what an install created.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from typing import Any

from sandbox.common import RecordStore
from sandbox.hubspot.errors import HubSpotError, validation_error

OBJECT_TYPE_IDS: dict[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tasks": "0-27",
    "notes": "0-46",
    "meetings": "0-47",
    "calls": "0-48",
    "emails": "0-49",
}
"""Canonical (plural) object type name to HubSpot's objectTypeId."""

SINGULAR: dict[str, str] = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "tasks": "task",
    "notes": "note",
    "meetings": "meeting",
    "calls": "call",
    "emails": "email",
}

ENGAGEMENTS = ("notes", "calls", "emails", "meetings", "tasks")

_ALIASES: dict[str, str] = {}
for _plural, _type_id in OBJECT_TYPE_IDS.items():
    _ALIASES[_plural] = _plural
    _ALIASES[_type_id] = _plural
    _ALIASES[SINGULAR[_plural]] = _plural


def canonical_type(name: str) -> str | None:
    """Map ``contacts``/``contact``/``0-1`` (any case) to ``contacts``; None when unknown."""
    return _ALIASES.get(name.strip().lower())


def object_type_for_id(type_id: str) -> str | None:
    """Map an objectTypeId such as ``0-1`` to its plural name."""
    return _ALIASES.get(type_id) if "-" in type_id else None


VALID_FIELD_TYPES: dict[str, set[str]] = {
    "string": {"text", "textarea", "html", "phonenumber", "file"},
    "number": {"number", "calculation_equation"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
    "datetime": {"date"},
    "date": {"date"},
}
"""The ``type``/``fieldType`` pairs HubSpot accepts when a property is created."""

READ_ONLY = {"hs_object_id", "lastmodifieddate", "hs_lastmodifieddate", "hs_createdate"}
"""Properties HubSpot maintains itself; writing them is rejected with ``READ_ONLY_VALUE``."""

CALCULATED = {"hs_is_closed_won", "hs_is_closed"}

_LIFECYCLE = [
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
]
_LEAD_STATUS = [
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
]
DEAL_STAGES = [
    ("appointmentscheduled", "Appointment Scheduled", "0.2"),
    ("qualifiedtobuy", "Qualified To Buy", "0.4"),
    ("presentationscheduled", "Presentation Scheduled", "0.6"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8"),
    ("contractsent", "Contract Sent", "0.9"),
    ("closedwon", "Closed Won", "1.0"),
    ("closedlost", "Closed Lost", "0.0"),
]
"""The default sales pipeline's stages: internal value, label, win probability."""

_SOURCES = [
    ("ORGANIC_SEARCH", "Organic Search"),
    ("PAID_SEARCH", "Paid Search"),
    ("EMAIL_MARKETING", "Email Marketing"),
    ("SOCIAL_MEDIA", "Organic Social"),
    ("REFERRALS", "Referrals"),
    ("OTHER_CAMPAIGNS", "Other Campaigns"),
    ("DIRECT_TRAFFIC", "Direct Traffic"),
    ("OFFLINE", "Offline Sources"),
    ("PAID_SOCIAL", "Paid Social"),
]

# (name, label, type, fieldType, options)
_Spec = tuple[str, str, str, str, list[tuple[str, str]] | None]

_COMMON: list[_Spec] = [
    ("hs_object_id", "Record ID", "number", "number", None),
    ("hubspot_owner_id", "Owner", "enumeration", "select", None),
]

_DEFAULTS: dict[str, tuple[str, list[_Spec]]] = {
    "contacts": (
        "contactinformation",
        [
            ("createdate", "Create Date", "datetime", "date", None),
            ("lastmodifieddate", "Last Modified Date", "datetime", "date", None),
            ("hs_lastmodifieddate", "Object last modified date/time", "datetime", "date", None),
            ("email", "Email", "string", "text", None),
            ("firstname", "First Name", "string", "text", None),
            ("lastname", "Last Name", "string", "text", None),
            ("phone", "Phone Number", "string", "phonenumber", None),
            ("jobtitle", "Job Title", "string", "text", None),
            ("company", "Company Name", "string", "text", None),
            ("industry", "Industry", "string", "text", None),
            ("numemployees", "Number of Employees", "string", "text", None),
            ("annualrevenue", "Annual Revenue", "string", "text", None),
            ("country", "Country/Region", "string", "text", None),
            ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", _LIFECYCLE),
            ("hs_lead_status", "Lead Status", "enumeration", "radio", _LEAD_STATUS),
            ("hs_analytics_source", "Original Source", "enumeration", "select", _SOURCES),
            ("hs_email_open", "Marketing emails opened", "number", "number", None),
            ("hs_email_click", "Marketing emails clicked", "number", "number", None),
            ("hs_email_last_open_date", "Last marketing email open date", "datetime", "date", None),
            ("hs_analytics_num_page_views", "Number of Pageviews", "number", "number", None),
            ("hs_analytics_last_visit_timestamp", "Time of Last Session", "datetime", "date", None),
            ("num_conversion_events", "Number of Form Submissions", "number", "number", None),
            ("recent_conversion_date", "Recent Conversion Date", "datetime", "date", None),
            ("hs_lifecyclestage_lead_date", "Became a Lead Date", "datetime", "date", None),
            ("associatedcompanyid", "Primary Associated Company ID", "number", "number", None),
        ],
    ),
    "companies": (
        "companyinformation",
        [
            ("createdate", "Create Date", "datetime", "date", None),
            ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", None),
            ("name", "Company name", "string", "text", None),
            ("domain", "Company Domain Name", "string", "text", None),
            ("industry", "Industry", "string", "text", None),
            ("numberofemployees", "Number of Employees", "number", "number", None),
            ("annualrevenue", "Annual Revenue", "number", "number", None),
            ("country", "Country/Region", "string", "text", None),
            ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", _LIFECYCLE),
        ],
    ),
    "deals": (
        "dealinformation",
        [
            ("createdate", "Create Date", "datetime", "date", None),
            ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", None),
            ("dealname", "Deal Name", "string", "text", None),
            ("amount", "Amount", "number", "number", None),
            ("closedate", "Close Date", "datetime", "date", None),
            (
                "dealstage",
                "Deal Stage",
                "enumeration",
                "radio",
                [(v, lb) for v, lb, _ in DEAL_STAGES],
            ),
            ("pipeline", "Pipeline", "enumeration", "select", [("default", "Sales Pipeline")]),
            ("hs_is_closed_won", "Is Closed Won", "bool", "booleancheckbox", None),
            ("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox", None),
            ("hs_deal_stage_probability", "Deal probability", "number", "number", None),
            ("closed_lost_reason", "Closed Lost Reason", "string", "textarea", None),
            ("hs_analytics_source", "Original Source Type", "enumeration", "select", _SOURCES),
            ("description", "Deal Description", "string", "textarea", None),
        ],
    ),
    "notes": (
        "note",
        [("hs_note_body", "Note body", "string", "html", None)],
    ),
    "calls": (
        "call",
        [
            ("hs_call_title", "Call Title", "string", "text", None),
            ("hs_call_body", "Call notes", "string", "html", None),
            ("hs_call_duration", "Call duration", "number", "number", None),
            (
                "hs_call_direction",
                "Call direction",
                "enumeration",
                "select",
                [("INBOUND", "Inbound"), ("OUTBOUND", "Outbound")],
            ),
            (
                "hs_call_status",
                "Call status",
                "enumeration",
                "select",
                [("COMPLETED", "Completed"), ("NO_ANSWER", "No answer"), ("BUSY", "Busy")],
            ),
        ],
    ),
    "emails": (
        "email",
        [
            ("hs_email_subject", "Email subject", "string", "text", None),
            ("hs_email_text", "Email body", "string", "textarea", None),
            (
                "hs_email_direction",
                "Email direction",
                "enumeration",
                "select",
                [("EMAIL", "Sent"), ("INCOMING_EMAIL", "Received"), ("FORWARDED_EMAIL", "Fwd")],
            ),
            (
                "hs_email_status",
                "Email send status",
                "enumeration",
                "select",
                [("SENT", "Sent"), ("SCHEDULED", "Scheduled"), ("FAILED", "Failed")],
            ),
        ],
    ),
    "meetings": (
        "meeting",
        [
            ("hs_meeting_title", "Meeting name", "string", "text", None),
            ("hs_meeting_body", "Meeting description", "string", "html", None),
            ("hs_meeting_start_time", "Start time", "datetime", "date", None),
            ("hs_meeting_end_time", "End time", "datetime", "date", None),
            (
                "hs_meeting_outcome",
                "Meeting outcome",
                "enumeration",
                "select",
                [("SCHEDULED", "Scheduled"), ("COMPLETED", "Completed"), ("NO_SHOW", "No show")],
            ),
        ],
    ),
    "tasks": (
        "task",
        [
            ("hs_task_subject", "Task title", "string", "text", None),
            ("hs_task_body", "Task notes", "string", "html", None),
            (
                "hs_task_status",
                "Task status",
                "enumeration",
                "select",
                [("NOT_STARTED", "Not started"), ("COMPLETED", "Completed")],
            ),
            (
                "hs_task_priority",
                "Priority",
                "enumeration",
                "select",
                [("LOW", "Low"), ("MEDIUM", "Medium"), ("HIGH", "High")],
            ),
        ],
    ),
}

_ENGAGEMENT_COMMON: list[_Spec] = [
    ("hs_timestamp", "Activity date", "datetime", "date", None),
    ("hs_createdate", "Create date", "datetime", "date", None),
    ("hs_lastmodifieddate", "Last modified date", "datetime", "date", None),
]

DEFAULT_RETURNED: dict[str, list[str]] = {
    "contacts": [
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ],
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "deals": [
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ],
}
"""Properties a read returns when the caller names none (engagements: the three below)."""

ALWAYS_RETURNED: dict[str, list[str]] = {
    "contacts": ["createdate", "hs_object_id", "lastmodifieddate"],
    "companies": ["createdate", "hs_lastmodifieddate", "hs_object_id"],
    "deals": ["createdate", "hs_lastmodifieddate", "hs_object_id"],
}
"""Properties HubSpot adds to every record it returns, whatever the caller asked for."""

ENGAGEMENT_RETURNED = ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"]

GROUP_LABELS = {
    "contactinformation": "Contact information",
    "companyinformation": "Company information",
    "dealinformation": "Deal information",
    "note": "Note information",
    "call": "Call information",
    "email": "Email information",
    "meeting": "Meeting information",
    "task": "Task information",
}

_EPOCH_ISO = "1970-01-01T00:00:00Z"


def iso_ms(moment: datetime) -> str:
    """Format a datetime as HubSpot does: ISO-8601, UTC, milliseconds, ``Z``."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    """The current time in HubSpot's ISO format."""
    return iso_ms(datetime.now(UTC))


def parse_instant(value: str) -> datetime | None:
    """Parse epoch milliseconds, an ISO datetime or an ISO date into an aware datetime."""
    text = str(value).strip()
    if not text:
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
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def epoch_ms(value: str) -> int | None:
    """Epoch milliseconds for a stored or filter datetime value, None when it is not one."""
    moment = parse_instant(value)
    return None if moment is None else int(moment.timestamp() * 1000)


def _definition(spec: _Spec, group: str, order: int, hubspot_defined: bool) -> dict[str, Any]:
    name, label, ptype, field_type, options = spec
    return {
        "name": name,
        "label": label,
        "type": ptype,
        "fieldType": field_type,
        "description": "",
        "groupName": group,
        "options": [
            {"label": lbl, "value": val, "displayOrder": i, "hidden": False}
            for i, (val, lbl) in enumerate(options or [])
        ],
        "displayOrder": order,
        "calculated": name in CALCULATED,
        "externalOptions": name == "hubspot_owner_id",
        "hasUniqueValue": name == "email",
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "formField": not hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": name in READ_ONLY or name in CALCULATED,
        },
        "createdAt": _EPOCH_ISO,
        "updatedAt": _EPOCH_ISO,
        "archived": False,
    }


def default_definitions(object_type: str) -> dict[str, dict[str, Any]]:
    """HubSpot's built-in properties of one object type."""
    group, specs = _DEFAULTS[object_type]
    all_specs = list(specs) + list(_COMMON)
    if object_type in ENGAGEMENTS:
        all_specs += _ENGAGEMENT_COMMON
    return {spec[0]: _definition(spec, group, order, True) for order, spec in enumerate(all_specs)}


class PropertyRegistry:
    """Property definitions and groups per object type, persisted in the store's side table."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._props: dict[str, dict[str, dict[str, Any]]] = {}
        self._groups: dict[str, dict[str, dict[str, Any]]] = {}
        for object_type in OBJECT_TYPE_IDS:
            saved = store.get_meta(f"properties:{object_type}")
            if saved is None:
                saved = default_definitions(object_type)
                store.set_meta(f"properties:{object_type}", saved)
            self._props[object_type] = saved
            groups = store.get_meta(f"groups:{object_type}")
            if groups is None:
                group = _DEFAULTS[object_type][0]
                groups = {
                    group: {
                        "name": group,
                        "label": GROUP_LABELS[group],
                        "displayOrder": -1,
                        "archived": False,
                    }
                }
                store.set_meta(f"groups:{object_type}", groups)
            self._groups[object_type] = groups

    # -- reads -------------------------------------------------------------------------------

    def get(self, object_type: str, name: str, include_archived: bool = False) -> dict | None:
        """One property definition, or None."""
        with self._lock:
            prop = self._props[object_type].get(name)
        if prop is None or (prop["archived"] and not include_archived):
            return None
        return prop

    def all(self, object_type: str, archived: bool = False) -> list[dict[str, Any]]:
        """All live (or, with ``archived``, all archived) definitions of a type."""
        with self._lock:
            return [p for p in self._props[object_type].values() if p["archived"] == archived]

    def groups(self, object_type: str) -> list[dict[str, Any]]:
        """All live property groups of a type."""
        with self._lock:
            return [g for g in self._groups[object_type].values() if not g["archived"]]

    def unique_properties(self, object_type: str) -> set[str]:
        """Properties usable as ``idProperty``: ``hs_object_id`` and those with unique values."""
        with self._lock:
            names = {n for n, p in self._props[object_type].items() if p["hasUniqueValue"]}
        return names | {"hs_object_id"}

    # -- writes ------------------------------------------------------------------------------

    def create(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a custom property from a ``PropertyCreate`` body; HubSpot's 400/409 on bad input."""
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise validation_error(
                f"Invalid input JSON: missing required field(s) {', '.join(missing)}",
                errors=[{"message": f"{k} is required", "code": "REQUIRED_FIELD"} for k in missing],
            )
        name = str(body["name"])
        if not name.replace("_", "").isalnum() or name != name.lower() or name[0].isdigit():
            raise validation_error(
                f"Property name '{name}' is not valid: use lowercase letters, digits and"
                " underscores, starting with a letter"
            )
        self._check_types(str(body["type"]), str(body["fieldType"]), body)
        with self._lock:
            existing = self._props[object_type].get(name)
            if existing is not None and not existing["archived"]:
                raise HubSpotError(
                    409,
                    "OBJECT_ALREADY_EXISTS",
                    f"Property {name} already exists",
                    {"subCategory": "Property.PROPERTY_EXISTS"},
                )
            if body["groupName"] not in self._groups[object_type]:
                raise validation_error(f"Property group {body['groupName']} does not exist")
            order = len(self._props[object_type])
            prop = _definition(
                (name, str(body["label"]), str(body["type"]), str(body["fieldType"]), None),
                str(body["groupName"]),
                int(body.get("displayOrder", order) or order),
                False,
            )
            prop["description"] = str(body.get("description") or "")
            prop["options"] = self._options(body)
            prop["hasUniqueValue"] = bool(body.get("hasUniqueValue", False))
            prop["hidden"] = bool(body.get("hidden", False))
            prop["formField"] = bool(body.get("formField", False))
            prop["createdAt"] = prop["updatedAt"] = now_iso()
            self._props[object_type][name] = prop
            self._save(object_type)
            return prop

    def update(self, object_type: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a ``PropertyUpdate`` body to an existing definition."""
        with self._lock:
            prop = self.get(object_type, name)
            if prop is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
            if prop["hubspotDefined"] and set(body) & {"type", "fieldType", "name"}:
                raise validation_error(f"Property {name} is HubSpot-defined and read-only")
            new_type = str(body.get("type", prop["type"]))
            new_field = str(body.get("fieldType", prop["fieldType"]))
            merged = {**prop, **body}
            self._check_types(new_type, new_field, merged)
            for key in ("label", "description", "groupName", "displayOrder", "hidden", "formField"):
                if key in body and body[key] is not None:
                    prop[key] = body[key]
            if "options" in body:
                prop["options"] = self._options(body)
            prop["type"], prop["fieldType"] = new_type, new_field
            prop["updatedAt"] = now_iso()
            self._save(object_type)
            return prop

    def archive(self, object_type: str, name: str) -> None:
        """Archive a custom property; HubSpot-defined ones cannot be archived."""
        with self._lock:
            prop = self.get(object_type, name)
            if prop is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
            if prop["hubspotDefined"]:
                raise validation_error(f"Property {name} is HubSpot-defined and cannot be archived")
            prop["archived"] = True
            prop["archivedAt"] = now_iso()
            self._save(object_type)

    def create_group(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a property group from a ``PropertyGroupCreate`` body."""
        name, label = body.get("name"), body.get("label")
        if not name or not label:
            raise validation_error("Invalid input JSON: name and label are required")
        with self._lock:
            existing = self._groups[object_type].get(str(name))
            if existing is not None and not existing["archived"]:
                raise HubSpotError(409, "OBJECT_ALREADY_EXISTS", f"Group {name} already exists")
            group = {
                "name": str(name),
                "label": str(label),
                "displayOrder": int(body.get("displayOrder", -1) or -1),
                "archived": False,
            }
            self._groups[object_type][str(name)] = group
            self._store.set_meta(f"groups:{object_type}", self._groups[object_type])
            return group

    def get_group(self, object_type: str, name: str) -> dict[str, Any]:
        """One live group, or HubSpot's 404."""
        with self._lock:
            group = self._groups[object_type].get(name)
        if group is None or group["archived"]:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property group {name}")
        return group

    def update_group(self, object_type: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a ``PropertyGroupUpdate`` body (label, displayOrder) to a live group."""
        with self._lock:
            group = self.get_group(object_type, name)
            if body.get("label"):
                group["label"] = str(body["label"])
            if body.get("displayOrder") is not None:
                group["displayOrder"] = int(body["displayOrder"])
            self._store.set_meta(f"groups:{object_type}", self._groups[object_type])
            return group

    def archive_group(self, object_type: str, name: str) -> None:
        """Archive an empty custom group; HubSpot's 400 while live properties are still in it."""
        with self._lock:
            group = self.get_group(object_type, name)
            if name == _DEFAULTS[object_type][0]:
                raise validation_error(f"Property group {name} is HubSpot-defined")
            inside = sorted(p["name"] for p in self.all(object_type) if p["groupName"] == name)
            if inside:
                raise validation_error(
                    f"Property group {name} still holds properties: {', '.join(inside)}"
                )
            group["archived"] = True
            self._store.set_meta(f"groups:{object_type}", self._groups[object_type])

    def register_many(self, object_type: str, bodies: list[dict[str, Any]]) -> None:
        """Create custom properties (and their groups) that do not exist yet; used by the loader."""
        for body in bodies:
            if body["groupName"] not in self._groups[object_type]:
                self.create_group(
                    object_type, {"name": body["groupName"], "label": body["groupName"].title()}
                )
            if self.get(object_type, body["name"]) is None:
                self.create(object_type, body)

    def _save(self, object_type: str) -> None:
        self._store.set_meta(f"properties:{object_type}", self._props[object_type])

    @staticmethod
    def _check_types(ptype: str, field_type: str, body: dict[str, Any]) -> None:
        allowed = VALID_FIELD_TYPES.get(ptype)
        if allowed is None:
            raise validation_error(
                f"Invalid property type '{ptype}'; valid types are {sorted(VALID_FIELD_TYPES)}"
            )
        if field_type not in allowed:
            raise validation_error(
                f"Property type '{ptype}' is not compatible with field type '{field_type}';"
                f" allowed field types for '{ptype}' are {sorted(allowed)}",
                subCategory="Property.INVALID_FIELD_TYPE",
            )
        if ptype == "enumeration" and field_type != "booleancheckbox" and not body.get("options"):
            raise validation_error(
                f"Enumeration property with field type '{field_type}' needs at least one option"
            )

    @staticmethod
    def _options(body: dict[str, Any]) -> list[dict[str, Any]]:
        raw = body.get("options") or []
        if body.get("type") == "bool" and not raw:
            raw = [{"label": "Yes", "value": "true"}, {"label": "No", "value": "false"}]
        options = []
        for i, option in enumerate(raw):
            if not isinstance(option, dict) or "value" not in option or "label" not in option:
                raise validation_error("Each option needs a label and a value")
            options.append(
                {
                    "label": str(option["label"]),
                    "value": str(option["value"]),
                    "description": str(option.get("description") or ""),
                    "displayOrder": int(option.get("displayOrder", i)),
                    "hidden": bool(option.get("hidden", False)),
                }
            )
        return options

    # -- values ------------------------------------------------------------------------------

    def normalize_values(
        self, object_type: str, values: dict[str, Any], portal_id: int, *, creating: bool
    ) -> dict[str, str]:
        """Validate property values for a write and return them as stored strings.

        Raises:
            HubSpotError: HubSpot's 400 ``Property values were not valid`` with one detail per
                bad property (unknown, read-only, or a value its type does not allow).
        """
        if not isinstance(values, dict):
            raise validation_error("Invalid input JSON: properties must be an object")
        out: dict[str, str] = {}
        problems: list[dict[str, Any]] = []
        for name, raw in values.items():
            prop = self.get(object_type, str(name))
            value = "" if raw is None else (str(raw).lower() if isinstance(raw, bool) else str(raw))
            if prop is None:
                problems.append(
                    _problem(
                        name,
                        "PROPERTY_DOESNT_EXIST",
                        f'Property "{name}" does not exist',
                        portal_id,
                    )
                )
                continue
            if name in READ_ONLY or name in CALCULATED or (name == "createdate" and not creating):
                problems.append(
                    _problem(
                        name,
                        "READ_ONLY_VALUE",
                        f'"{name}" is a read only property; its value cannot be set.',
                        portal_id,
                    )
                )
                continue
            try:
                out[name] = _coerce(prop, value)
            except ValueError as exc:
                code, message = exc.args
                problems.append(_problem(name, code, message, portal_id))
        if problems:
            raise validation_error(
                "Property values were not valid: " + json.dumps(problems, separators=(",", ":"))
            )
        return out


def _problem(name: str, code: str, message: str, portal_id: int) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
        "portalId": portal_id,
    }


def _coerce(prop: dict[str, Any], value: str) -> str:
    """One value as HubSpot stores it; raises ``ValueError(code, message)`` when it is invalid."""
    if value == "":
        return ""
    ptype = prop["type"]
    if ptype == "number":
        try:
            number = float(value)
        except ValueError:
            raise ValueError("INVALID_DECIMAL", f"{value} is not a valid number.") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("INVALID_DECIMAL", f"{value} is not a valid number.")
        return value.strip()
    if ptype == "bool":
        if value.lower() not in ("true", "false"):
            raise ValueError("INVALID_BOOLEAN", f"{value} is not a valid boolean value.")
        return value.lower()
    if ptype == "enumeration":
        if prop.get("externalOptions"):
            return value
        allowed = [o["value"] for o in prop["options"]]
        chosen = value.split(";") if prop["fieldType"] == "checkbox" else [value]
        for item in chosen:
            if item not in allowed:
                raise ValueError(
                    "INVALID_OPTION",
                    f"{item} was not one of the allowed options: {json.dumps(allowed)}",
                )
        return value
    if ptype == "date":
        moment = parse_instant(value)
        if moment is None:
            raise ValueError("INVALID_DATE", f"{value} is not a valid date.")
        if value.strip().isdigit() and (moment.hour, moment.minute, moment.second) != (0, 0, 0):
            raise ValueError(
                "INVALID_DATE", f"{value} is not a valid date; it must be midnight UTC."
            )
        return moment.date().isoformat()
    if ptype == "datetime":
        moment = parse_instant(value)
        if moment is None:
            raise ValueError("INVALID_DATETIME", f"{value} is not a valid datetime.")
        return iso_ms(moment)
    return value


def date_string(day: date) -> str:
    """A date property value."""
    return day.isoformat()
