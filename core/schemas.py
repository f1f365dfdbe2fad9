"""Canonical records: the one shape every step after ``connectors/`` sees.

Each CRM object maps to one marshmallow schema here, keyed by ``(tenant_id, crm, crm_id)``. A tenant
is one Salesforce org or one HubSpot portal. Fields both CRMs share are named here once; anything
else a tenant has (custom fields, extra properties) travels in ``custom``. Timestamps are
timezone-aware UTC. The LanceDB table layouts in ``core.store`` are derived from these schemas.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

CRMS = ("salesforce", "hubspot")
ACTIVITY_TYPES = ("call", "email", "meeting", "task")
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class RecordValidationError(ValueError):
    """A record failed validation; the message names the entity, the record and the fields."""

    def __init__(self, entity: str, record: Any, messages: dict[str, Any]) -> None:
        self.entity = entity
        self.messages = messages
        identity = _identity(record)
        details = "; ".join(
            f"{name}: {flatten_messages(msg)}" for name, msg in sorted(messages.items())
        )
        super().__init__(f"{entity} {identity}: {details}")


class CanonicalSchema(Schema):
    """Fields every canonical record carries."""

    class Meta:
        """Drop unknown keys (mappers pass through only what they know); keep field order."""

        unknown = EXCLUDE
        ordered = True

    tenant_id = fields.String(
        required=True,
        validate=validate.Regexp(TENANT_ID_PATTERN, error="must be letters, digits and _.:- only"),
    )
    crm = fields.String(required=True, validate=validate.OneOf(CRMS))
    crm_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    created_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    updated_at = fields.AwareDateTime(required=True)
    custom = fields.Dict(keys=fields.String(), load_default=dict)


class PersonMixin(Schema):
    """Name and contact details shared by leads, contacts and users."""

    first_name = fields.String(load_default=None, allow_none=True)
    last_name = fields.String(load_default=None, allow_none=True)
    email = fields.Email(load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True)
    title = fields.String(load_default=None, allow_none=True)


class FirmographicsMixin(Schema):
    """Company facts shared by leads and accounts."""

    industry = fields.String(load_default=None, allow_none=True)
    employees = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    annual_revenue = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0)
    )
    country = fields.String(load_default=None, allow_none=True)
    region = fields.String(load_default=None, allow_none=True)


class LeadSchema(CanonicalSchema, PersonMixin, FirmographicsMixin):
    """A lead (Salesforce Lead; HubSpot contact before it becomes an opportunity)."""

    company = fields.String(load_default=None, allow_none=True)
    source = fields.String(load_default=None, allow_none=True)
    status = fields.String(load_default=None, allow_none=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    is_converted = fields.Boolean(load_default=False)
    converted_at = fields.AwareDateTime(load_default=None, allow_none=True)
    converted_contact_id = fields.String(load_default=None, allow_none=True)
    converted_opportunity_id = fields.String(load_default=None, allow_none=True)
    email_opens = fields.Integer(load_default=0, validate=validate.Range(min=0))
    email_clicks = fields.Integer(load_default=0, validate=validate.Range(min=0))
    page_visits = fields.Integer(load_default=0, validate=validate.Range(min=0))
    form_fills = fields.Integer(load_default=0, validate=validate.Range(min=0))
    last_engaged_at = fields.AwareDateTime(load_default=None, allow_none=True)


class ContactSchema(CanonicalSchema, PersonMixin):
    """A contact at an account."""

    account_id = fields.String(load_default=None, allow_none=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    lifecycle_stage = fields.String(load_default=None, allow_none=True)


class AccountSchema(CanonicalSchema, FirmographicsMixin):
    """A company (Salesforce Account; HubSpot company)."""

    name = fields.String(required=True, validate=validate.Length(min=1))
    domain = fields.String(load_default=None, allow_none=True)
    owner_id = fields.String(load_default=None, allow_none=True)


class OpportunitySchema(CanonicalSchema):
    """A deal (Salesforce Opportunity; HubSpot deal)."""

    name = fields.String(required=True, validate=validate.Length(min=1))
    account_id = fields.String(load_default=None, allow_none=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    amount = fields.Float(load_default=None, allow_none=True)
    stage = fields.String(required=True)
    close_date = fields.Date(load_default=None, allow_none=True)
    is_closed = fields.Boolean(load_default=False)
    is_won = fields.Boolean(load_default=False)
    lead_source = fields.String(load_default=None, allow_none=True)
    competitors = fields.List(fields.String(), load_default=list)

    @validates_schema
    def _won_implies_closed(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("is_won") and not data.get("is_closed"):
            raise ValidationError("a won opportunity must also be closed", "is_won")


class ActivitySchema(CanonicalSchema):
    """A call, email, meeting or task logged against a record."""

    type = fields.String(required=True, validate=validate.OneOf(ACTIVITY_TYPES))
    subject = fields.String(load_default=None, allow_none=True)
    body = fields.String(load_default=None, allow_none=True)
    occurred_at = fields.AwareDateTime(required=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    lead_id = fields.String(load_default=None, allow_none=True)
    contact_id = fields.String(load_default=None, allow_none=True)
    account_id = fields.String(load_default=None, allow_none=True)
    opportunity_id = fields.String(load_default=None, allow_none=True)
    duration_minutes = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=0)
    )
    direction = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(("inbound", "outbound"))
    )
    status = fields.String(load_default=None, allow_none=True)


class NoteSchema(CanonicalSchema):
    """A free-text note or call summary attached to a record."""

    title = fields.String(load_default=None, allow_none=True)
    body = fields.String(required=True)
    author_id = fields.String(load_default=None, allow_none=True)
    lead_id = fields.String(load_default=None, allow_none=True)
    contact_id = fields.String(load_default=None, allow_none=True)
    account_id = fields.String(load_default=None, allow_none=True)
    opportunity_id = fields.String(load_default=None, allow_none=True)


class UserSchema(CanonicalSchema, PersonMixin):
    """A CRM user: a rep who owns records (Salesforce User; HubSpot owner)."""

    is_active = fields.Boolean(load_default=True)
    territory = fields.String(load_default=None, allow_none=True)


SCHEMAS: dict[str, type[CanonicalSchema]] = {
    "lead": LeadSchema,
    "contact": ContactSchema,
    "account": AccountSchema,
    "opportunity": OpportunitySchema,
    "activity": ActivitySchema,
    "note": NoteSchema,
    "user": UserSchema,
}
"""Entity name to its schema; the entity names are the store's table names in the singular."""

_instances: dict[str, CanonicalSchema] = {}


def schema_for(entity: str) -> CanonicalSchema:
    """The shared schema instance for an entity.

    Raises:
        KeyError: the entity is not one of :data:`SCHEMAS`.
    """
    if entity not in SCHEMAS:
        raise KeyError(f"unknown entity {entity!r}; expected one of {', '.join(SCHEMAS)}")
    if entity not in _instances:
        _instances[entity] = SCHEMAS[entity]()
    return _instances[entity]


def load_record(entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate and deserialise one record.

    Raises:
        RecordValidationError: naming the entity, the record's ``tenant/crm:id`` and each bad field.
    """
    try:
        return dict(schema_for(entity).load(data))
    except ValidationError as exc:
        raise RecordValidationError(entity, data, _as_dict(exc.messages)) from None


def load_records(entity: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate many records; the first failure raises, naming that record."""
    return [load_record(entity, row) for row in rows]


def dump_record(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """Serialise a record to JSON-ready data (ISO timestamps)."""
    return dict(schema_for(entity).dump(record))


def _identity(record: Any) -> str:
    if not isinstance(record, dict):
        return "<not an object>"
    return f"{record.get('tenant_id', '?')}/{record.get('crm', '?')}:{record.get('crm_id', '?')}"


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def flatten_messages(message: Any) -> str:
    """A marshmallow error message (nested dicts and lists of strings) as one line."""
    if isinstance(message, dict):
        return "; ".join(f"{k}: {flatten_messages(v)}" for k, v in message.items())
    if isinstance(message, list):
        return " ".join(flatten_messages(m) for m in message)
    return str(message).rstrip(".")
