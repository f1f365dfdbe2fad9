"""The org's data model: standard objects, custom fields, describe output and value checking.

Standard objects carry the fields integrations use; custom fields are added at run time through the
Metadata or Tooling API (or by the history loader) and persisted in the store's key-value table, so
they survive a restart. Field names are matched case-insensitively, as the API does, and every value
written is checked and normalised to the JSON the REST API answers with.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.common import RecordStore
from sandbox.salesforce.errors import SalesforceError, json_parser_error
from sandbox.salesforce.ids import format_datetime, parse_date, parse_datetime, to18

CUSTOM_FIELDS_KEY = "salesforce.custom_fields"

STRING_TYPES = {
    "string",
    "textarea",
    "picklist",
    "multipicklist",
    "email",
    "phone",
    "url",
    "combobox",
}
NUMBER_TYPES = {"double", "currency", "percent"}
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "anyType": "xsd:anyType",
}


@dataclass
class FieldDef:
    """One field of an sObject, with the attributes describe reports and writes are checked against."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    precision: int = 0
    scale: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    required: bool = False
    """Required on create (Salesforce reports this as ``nillable: false`` with no default)."""
    default: Any = None
    custom: bool = False
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    picklist: list[str] = field(default_factory=list)
    restricted: bool = False
    external_id: bool = False
    unique: bool = False
    extra_type_info: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """For custom fields: the CustomField metadata it was created from (readMetadata answers it)."""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name.removesuffix("__c").replace("_", " ")
        if self.type == "reference" and self.relationship_name is None:
            if self.name.endswith("__c"):
                self.relationship_name = self.name[:-3] + "__r"
            elif self.name.endswith("Id"):
                self.relationship_name = self.name[:-2]

    def describe(self) -> dict[str, Any]:
        """The field's entry in an sObject describe."""
        is_text = self.type in STRING_TYPES
        return {
            "aggregatable": self.type not in {"textarea"},
            "autoNumber": False,
            "byteLength": self.length * 3
            if is_text
            else (18 if self.type in {"id", "reference"} else 0),
            "calculated": False,
            "caseSensitive": False,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default if self.type == "boolean" else None,
            "defaultedOnCreate": self.default is not None or not self.createable,
            "digits": 0,
            "externalId": self.external_id,
            "extraTypeInfo": self.extra_type_info,
            "filterable": self.type not in {"textarea"},
            "groupable": self.type not in {"textarea", "double", "currency", "percent", "datetime"},
            "htmlFormatted": self.extra_type_info == "richtextarea",
            "idLookup": self.type == "id" or self.external_id,
            "label": self.label,
            "length": self.length if is_text else 0,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "polymorphicForeignKey": len(self.reference_to) > 1,
            "precision": self.precision,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted,
            "scale": self.scale,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.type not in {"textarea"},
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }


@dataclass
class ObjectDef:
    """One sObject type."""

    name: str
    label: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    """Keyed by lower-cased field name, in describe order."""
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    computed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Read-only fields derived from others, e.g. Name from FirstName and LastName."""

    def field(self, name: str) -> FieldDef | None:
        """The field named ``name`` (any case), or None."""
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """The reference field whose relationship name is ``name`` (any case), or None."""
        lowered = name.lower()
        for fdef in self.fields.values():
            if fdef.relationship_name and fdef.relationship_name.lower() == lowered:
                return fdef
        return None

    def urls(self, version: str) -> dict[str, str]:
        """The describe ``urls`` block."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "describe": f"{base}/describe",
            "sobject": base,
        }

    def describe_global_entry(self, version: str) -> dict[str, Any]:
        """The object's entry in ``GET sobjects/``."""
        return {
            "activateable": False,
            "createable": self.createable,
            "custom": self.name.endswith("__c"),
            "customSetting": False,
            "deletable": self.deletable,
            "deprecatedAndHidden": False,
            "feedEnabled": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label + "s",
            "layoutable": True,
            "mergeable": self.name in {"Lead", "Contact", "Account"},
            "name": self.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": self.deletable,
            "updateable": self.updateable,
            "urls": self.urls(version),
        }

    def describe(self, version: str) -> dict[str, Any]:
        """The full ``sobjects/<name>/describe`` body."""
        body = self.describe_global_entry(version)
        body.update(
            {
                "childRelationships": [],
                "fields": [fdef.describe() for fdef in self.fields.values()],
                "recordTypeInfos": [],
                "supportedScopes": [{"label": "All " + self.label + "s", "name": "everything"}],
            }
        )
        return body


def _f(name: str, type_: str, **kw: Any) -> FieldDef:
    if type_ in STRING_TYPES and "length" not in kw:
        kw["length"] = 255
    if type_ in NUMBER_TYPES and "precision" not in kw:
        kw["precision"] = 18
    return FieldDef(name, type_, **kw)


def _system_fields(prefix_fields: list[FieldDef], with_owner: bool = True) -> list[FieldDef]:
    ro = {"createable": False, "updateable": False}
    out = [_f("Id", "id", nillable=False, **ro)]
    out += prefix_fields
    if with_owner:
        out.append(
            _f(
                "OwnerId",
                "reference",
                reference_to=["User"],
                nillable=False,
                default="<current user>",
            )
        )
    out += [
        _f("IsDeleted", "boolean", nillable=False, default=False, **ro),
        _f("CreatedDate", "datetime", nillable=False, **ro),
        _f("CreatedById", "reference", reference_to=["User"], nillable=False, **ro),
        _f("LastModifiedDate", "datetime", nillable=False, **ro),
        _f("LastModifiedById", "reference", reference_to=["User"], nillable=False, **ro),
        _f("SystemModstamp", "datetime", nillable=False, **ro),
    ]
    return out


def _object(name: str, prefix: str, fields: list[FieldDef], **kw: Any) -> ObjectDef:
    obj = ObjectDef(name, kw.pop("label", name), prefix, **kw)
    for fdef in fields:
        obj.fields[fdef.name.lower()] = fdef
    return obj


LEAD_STATUSES = [
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
]
LEAD_SOURCES = [
    "Web",
    "Webinar",
    "Referral",
    "Paid Search",
    "Trade Show",
    "Partner",
    "Outbound",
    "Phone Inquiry",
    "Other",
]
STAGES = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Proposal",
    "Negotiation",
    "Closed Won",
    "Closed Lost",
]
RO = {"createable": False, "updateable": False}


def standard_objects() -> dict[str, ObjectDef]:
    """Build the standard objects the sandbox serves, keyed by lower-cased name."""
    name_ro = _f("Name", "string", length=121, **RO)
    objects = [
        _object(
            "User",
            "005",
            _system_fields(
                [
                    _f("Username", "string", length=80, required=True, nillable=False, unique=True),
                    _f("FirstName", "string", length=40),
                    _f("LastName", "string", length=80, required=True, nillable=False),
                    name_ro,
                    _f("Email", "email", length=128, required=True, nillable=False),
                    _f("Alias", "string", length=8),
                    _f("Title", "string", length=80),
                    _f("Department", "string", length=80),
                    _f("Division", "string", length=80),
                    _f("IsActive", "boolean", nillable=False, default=True),
                    _f("UserType", "picklist", picklist=["Standard"], **RO),
                    _f("TimeZoneSidKey", "picklist", picklist=["America/Los_Angeles", "GMT"]),
                ],
                with_owner=False,
            ),
            computed={"name": ("FirstName", "LastName")},
        ),
        _object(
            "Account",
            "001",
            _system_fields(
                [
                    _f("Name", "string", required=True, nillable=False),
                    _f(
                        "Type",
                        "picklist",
                        picklist=["Prospect", "Customer - Direct", "Partner", "Other"],
                    ),
                    _f("Industry", "picklist", picklist=[]),
                    _f("Website", "url"),
                    _f("Phone", "phone", length=40),
                    _f("NumberOfEmployees", "int", precision=8),
                    _f("AnnualRevenue", "currency"),
                    _f("BillingCity", "string", length=40),
                    _f("BillingState", "string", length=80),
                    _f("BillingCountry", "string", length=80),
                    _f("Description", "textarea", length=32000),
                ]
            ),
        ),
        _object(
            "Contact",
            "003",
            _system_fields(
                [
                    _f("FirstName", "string", length=40),
                    _f("LastName", "string", length=80, required=True, nillable=False),
                    name_ro,
                    _f("AccountId", "reference", reference_to=["Account"]),
                    _f("Title", "string", length=128),
                    _f("Email", "email", length=80),
                    _f("Phone", "phone", length=40),
                    _f("LeadSource", "picklist", picklist=LEAD_SOURCES),
                    _f("MailingCountry", "string", length=80),
                    _f("Description", "textarea", length=32000),
                ]
            ),
            computed={"name": ("FirstName", "LastName")},
        ),
        _object(
            "Lead",
            "00Q",
            _system_fields(
                [
                    _f("FirstName", "string", length=40),
                    _f("LastName", "string", length=80, required=True, nillable=False),
                    name_ro,
                    _f("Company", "string", required=True, nillable=False),
                    _f("Title", "string", length=128),
                    _f("Email", "email", length=80),
                    _f("Phone", "phone", length=40),
                    _f(
                        "Status",
                        "picklist",
                        picklist=LEAD_STATUSES,
                        nillable=False,
                        default="Open - Not Contacted",
                    ),
                    _f("LeadSource", "picklist", picklist=LEAD_SOURCES),
                    _f("Industry", "picklist", picklist=[]),
                    _f("Rating", "picklist", picklist=["Hot", "Warm", "Cold"]),
                    _f("NumberOfEmployees", "int", precision=8),
                    _f("AnnualRevenue", "currency"),
                    _f("Country", "string", length=80),
                    _f("State", "string", length=80),
                    _f("Website", "url"),
                    _f("Description", "textarea", length=32000),
                    _f("IsConverted", "boolean", nillable=False, default=False, **RO),
                    _f("ConvertedDate", "date", **RO),
                    _f("ConvertedAccountId", "reference", reference_to=["Account"], **RO),
                    _f("ConvertedContactId", "reference", reference_to=["Contact"], **RO),
                    _f("ConvertedOpportunityId", "reference", reference_to=["Opportunity"], **RO),
                ]
            ),
            computed={"name": ("FirstName", "LastName")},
        ),
        _object(
            "Opportunity",
            "006",
            _system_fields(
                [
                    _f("Name", "string", length=120, required=True, nillable=False),
                    _f("AccountId", "reference", reference_to=["Account"]),
                    _f("ContactId", "reference", reference_to=["Contact"]),
                    _f("Amount", "currency", precision=18, scale=2),
                    _f("StageName", "picklist", picklist=STAGES, required=True, nillable=False),
                    _f("CloseDate", "date", required=True, nillable=False),
                    _f("Probability", "percent", precision=3),
                    _f("Type", "picklist", picklist=["New Business", "Existing Business"]),
                    _f("LeadSource", "picklist", picklist=LEAD_SOURCES),
                    _f("NextStep", "string"),
                    _f("Description", "textarea", length=32000),
                    _f(
                        "ForecastCategoryName",
                        "picklist",
                        picklist=["Pipeline", "Best Case", "Commit", "Omitted", "Closed"],
                    ),
                    _f("IsClosed", "boolean", nillable=False, default=False, **RO),
                    _f("IsWon", "boolean", nillable=False, default=False, **RO),
                ]
            ),
        ),
        _object(
            "Task",
            "00T",
            _system_fields(
                [
                    _f("Subject", "combobox"),
                    _f("Description", "textarea", length=32000),
                    _f("ActivityDate", "date"),
                    _f(
                        "Status",
                        "picklist",
                        picklist=["Not Started", "In Progress", "Completed"],
                        nillable=False,
                        default="Not Started",
                    ),
                    _f(
                        "Priority",
                        "picklist",
                        picklist=["High", "Normal", "Low"],
                        nillable=False,
                        default="Normal",
                    ),
                    _f("TaskSubtype", "picklist", picklist=["Task", "Email", "Call"]),
                    _f("Type", "picklist", picklist=["Call", "Email", "Meeting", "Other"]),
                    _f("CallType", "picklist", picklist=["Inbound", "Outbound", "Internal"]),
                    _f("CallDurationInSeconds", "int", precision=8),
                    _f(
                        "WhoId",
                        "reference",
                        reference_to=["Contact", "Lead"],
                        relationship_name="Who",
                    ),
                    _f(
                        "WhatId",
                        "reference",
                        reference_to=["Account", "Opportunity"],
                        relationship_name="What",
                    ),
                    _f("CompletedDateTime", "datetime", **RO),
                    _f("IsClosed", "boolean", nillable=False, default=False, **RO),
                ]
            ),
        ),
        _object(
            "Event",
            "00U",
            _system_fields(
                [
                    _f("Subject", "combobox"),
                    _f("Description", "textarea", length=32000),
                    _f("Location", "string"),
                    _f("StartDateTime", "datetime"),
                    _f("EndDateTime", "datetime"),
                    _f("ActivityDateTime", "datetime"),
                    _f("DurationInMinutes", "int", precision=8),
                    _f("Type", "picklist", picklist=["Call", "Email", "Meeting", "Other"]),
                    _f(
                        "WhoId",
                        "reference",
                        reference_to=["Contact", "Lead"],
                        relationship_name="Who",
                    ),
                    _f(
                        "WhatId",
                        "reference",
                        reference_to=["Account", "Opportunity"],
                        relationship_name="What",
                    ),
                ]
            ),
        ),
        _object(
            "Note",
            "002",
            _system_fields(
                [
                    _f("Title", "string", length=80, required=True, nillable=False),
                    _f("Body", "textarea", length=32000),
                    _f("IsPrivate", "boolean", nillable=False, default=False),
                    _f(
                        "ParentId",
                        "reference",
                        reference_to=["Account", "Contact", "Lead", "Opportunity"],
                        required=True,
                        nillable=False,
                        updateable=False,
                    ),
                ]
            ),
        ),
        _object(
            "OpportunityFieldHistory",
            "017",
            [
                _f("Id", "id", nillable=False, **RO),
                _f("OpportunityId", "reference", reference_to=["Opportunity"], **RO),
                _f(
                    "Field",
                    "picklist",
                    picklist=["StageName", "Amount", "CloseDate", "created"],
                    **RO,
                ),
                _f(
                    "DataType",
                    "picklist",
                    picklist=["Text", "Currency", "Date", "DynamicEnum"],
                    **RO,
                ),
                _f("OldValue", "anyType", **RO),
                _f("NewValue", "anyType", **RO),
                _f("IsDeleted", "boolean", nillable=False, default=False, **RO),
                _f("CreatedDate", "datetime", **RO),
                _f("CreatedById", "reference", reference_to=["User"], **RO),
            ],
            label="Opportunity Field History",
            createable=False,
            updateable=False,
            deletable=False,
        ),
    ]
    return {obj.name.lower(): obj for obj in objects}


class Schema:
    """Standard objects plus the persisted custom fields; thread-safe."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._lock = threading.RLock()
        self.objects = standard_objects()
        self.by_prefix = {obj.key_prefix: obj for obj in self.objects.values()}
        for entry in store.get_meta(CUSTOM_FIELDS_KEY, []):
            self._attach(entry["object"], FieldDef(**entry["field"]))

    def object(self, name: str) -> ObjectDef | None:
        """The object named ``name`` (any case), or None."""
        return self.objects.get(name.lower()) if isinstance(name, str) else None

    def object_for_id(self, record_id: str) -> ObjectDef | None:
        """The object an id belongs to, from its key prefix."""
        return self.by_prefix.get(record_id[:3]) if isinstance(record_id, str) else None

    def _attach(self, object_name: str, fdef: FieldDef) -> None:
        obj = self.objects[object_name.lower()]
        obj.fields[fdef.name.lower()] = fdef

    def custom_field(self, object_name: str, field_name: str) -> FieldDef | None:
        """A custom field by object and field name, or None."""
        obj = self.object(object_name)
        fdef = obj.field(field_name) if obj else None
        return fdef if fdef is not None and fdef.custom else None

    def add_custom_fields(self, items: list[tuple[str, FieldDef]], replace: bool = False) -> None:
        """Add (or, with ``replace``, redefine) custom fields and persist the set.

        Args:
            items: ``(object name, field)`` pairs; the object must exist.
            replace: allow redefining a field that already exists.
        """
        with self._lock:
            for object_name, fdef in items:
                obj = self.objects[object_name.lower()]
                if not replace and fdef.name.lower() in obj.fields:
                    raise ValueError(f"{object_name}.{fdef.name} exists")
                self._attach(object_name, fdef)
            self._persist()

    def remove_custom_field(self, object_name: str, field_name: str) -> bool:
        """Drop a custom field; False when there was none."""
        with self._lock:
            obj = self.object(object_name)
            fdef = obj.field(field_name) if obj else None
            if obj is None or fdef is None or not fdef.custom:
                return False
            del obj.fields[field_name.lower()]
            self._persist()
            return True

    def _persist(self) -> None:
        entries = [
            {"object": obj.name, "field": asdict(fdef)}
            for obj in self.objects.values()
            for fdef in obj.fields.values()
            if fdef.custom
        ]
        self._store.set_meta(CUSTOM_FIELDS_KEY, entries)


def _type_error(fdef: FieldDef, value: Any, wanted: str) -> SalesforceError:
    kind = {str: "VALUE_STRING", bool: "VALUE_TRUE" if value else "VALUE_FALSE"}.get(
        type(value), "VALUE_NUMBER_INT" if isinstance(value, int) else "START_OBJECT"
    )
    if isinstance(value, float):
        kind = "VALUE_NUMBER_FLOAT"
    return json_parser_error(
        f"Cannot deserialize instance of {wanted} from {kind} value {value} or request may be"
        f" missing a required field"
    )


def coerce_value(obj: ObjectDef, fdef: FieldDef, value: Any) -> Any:
    """Check a value written to a field and return it in the stored (and answered) form.

    Args:
        obj: the object the field belongs to (for error messages).
        fdef: the field.
        value: the JSON value the client sent.

    Raises:
        SalesforceError: with the code Salesforce answers for that kind of bad value.
    """
    if value is None:
        return None
    kind = fdef.type
    if kind in STRING_TYPES:
        if isinstance(value, bool | dict | list):
            raise _type_error(fdef, value, "string")
        text = value if isinstance(value, str) else str(value)
        if kind == "picklist" and fdef.restricted and text not in fdef.picklist:
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{fdef.label}: bad value for restricted picklist field: {text}",
                [fdef.name],
            )
        if kind == "multipicklist" and fdef.restricted:
            for part in text.split(";"):
                if part and part not in fdef.picklist:
                    raise SalesforceError(
                        400,
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        f"{fdef.label}: bad value for restricted picklist field: {part}",
                        [fdef.name],
                    )
        if fdef.length and len(text) > fdef.length:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{fdef.label}: data value too large: {text[:60]} (max length={fdef.length})",
                [fdef.name],
            )
        if text == "" and kind != "textarea":
            return None
        return text
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise _type_error(fdef, value, "boolean")
    if kind in NUMBER_TYPES or kind == "int":
        if isinstance(value, bool):
            raise _type_error(fdef, value, "double" if kind != "int" else "int")
        if isinstance(value, str):
            try:
                value = float(value) if kind != "int" else int(value)
            except ValueError:
                raise _type_error(fdef, value, "double" if kind != "int" else "int") from None
        if not isinstance(value, int | float):
            raise _type_error(fdef, value, "double" if kind != "int" else "int")
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise _type_error(fdef, value, "int")
            return int(value)
        number = float(value)
        whole_digits = fdef.precision - fdef.scale if fdef.precision else 18
        if abs(number) >= 10**whole_digits:
            raise SalesforceError(
                400,
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{fdef.label}: value outside of valid range on numeric field: {value}",
                [fdef.name],
            )
        return round(number, fdef.scale) if fdef.precision else number
    if kind == "date":
        parsed = parse_date(value) if isinstance(value, str) else None
        if parsed is None and isinstance(value, str):
            as_dt = parse_datetime(value)
            parsed = as_dt.date() if as_dt else None
        if parsed is None:
            raise _type_error(fdef, value, "date")
        return parsed.isoformat()
    if kind == "datetime":
        parsed_dt = parse_datetime(value) if isinstance(value, str) else None
        if parsed_dt is None:
            raise _type_error(fdef, value, "datetime")
        return format_datetime(parsed_dt)
    if kind in {"reference", "id"}:
        if not isinstance(value, str):
            raise _type_error(fdef, value, "id")
        if value == "":
            return None
        normal = to18(value)
        if normal is None:
            raise SalesforceError(
                400,
                "MALFORMED_ID",
                f"{fdef.label}: id value of incorrect type: {value}",
                [fdef.name],
            )
        return normal
    return value
