"""Deal field history: every stage entry, close-date move and amount change of an opportunity.

Forecast risk flags need to know when a deal entered its stage, how often its close date slipped
and how much its amount moved; the canonical opportunity holds only today's values. The connectors
read the CRM's own history (Salesforce ``OpportunityFieldHistory``, HubSpot's
``propertiesWithHistory`` on ``dealstage``, ``closedate`` and ``amount``) as canonical rows, and
this module keeps them in the feature table ``deal_field_history``.

Values are stored as text in canonical form: stage names as the CRM names them, close dates as ISO
dates, amounts as decimal numbers. A row is keyed by deal, field and change time, so a history
read again (every change fetch re-reads a changed deal's history) writes nothing twice. The table
has ``crm_id``, so erasure of a deal removes its history with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from core.store import Store

TABLE = "deal_field_history"
SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("crm_id", pa.string()),
        ("field", pa.string()),
        ("old_value", pa.string()),
        ("new_value", pa.string()),
        ("changed_at", pa.timestamp("us", tz="UTC")),
        ("changed_by", pa.string()),
    ]
)
FIELDS = ("stage", "close_date", "amount")
"""The canonical fields whose history is kept."""
KEYS = ("crm_id", "field", "changed_at")
_GENERATED_FIELDS = {"StageName": "stage", "CloseDate": "close_date", "Amount": "amount"}
_READ_CHUNK = 500


class FieldHistoryError(ValueError):
    """A history row is malformed; the message names the row and the reason."""


@dataclass(frozen=True)
class FieldChange:
    """One change of one tracked field of a deal."""

    crm_id: str
    field: str
    old_value: str | None
    new_value: str | None
    changed_at: datetime
    changed_by: str | None = None

    def old_date(self) -> date | None:
        """The old value as a date (close-date changes)."""
        return _as_date(self.old_value)

    def new_date(self) -> date | None:
        """The new value as a date (close-date changes)."""
        return _as_date(self.new_value)

    def old_number(self) -> float | None:
        """The old value as a number (amount changes)."""
        return _as_number(self.old_value)

    def new_number(self) -> float | None:
        """The new value as a number (amount changes)."""
        return _as_number(self.new_value)


def canonical_value(field: str, value: Any) -> str | None:
    """A tracked field's value in the stored text form.

    Args:
        field: ``stage``, ``close_date`` or ``amount``.
        value: the value as a CRM or the generator gives it (date, ISO text, number, text).

    Returns:
        The text form, or None for an empty value.

    Raises:
        FieldHistoryError: the field is not tracked, or the value does not fit it.
    """
    if field not in FIELDS:
        raise FieldHistoryError(f"field {field!r} is not tracked; expected one of {FIELDS}")
    if value is None or value == "":
        return None
    if field == "close_date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        parsed = _as_date(str(value))
        if parsed is None:
            raise FieldHistoryError(f"close_date value {value!r} is not a date")
        return parsed.isoformat()
    if field == "amount":
        number = _as_number(value)
        if number is None:
            raise FieldHistoryError(f"amount value {value!r} is not a number")
        return repr(float(number))
    return str(value)


def save_history(store: Store, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert or replace history rows of a tenant's deals; returns how many were given.

    Every row is checked before anything is written, so a bad row stores nothing.

    Args:
        store: the store.
        tenant_id: whose deals.
        rows: ``{crm_id, field, old_value, new_value, changed_at, changed_by}`` each, values in
            any form :func:`canonical_value` accepts, ``changed_at`` timezone-aware.

    Raises:
        FieldHistoryError: a row lacks its deal id, names an untracked field, has a value that
            does not fit the field, or a naive or missing change time.
    """
    prepared = [_prepared(tenant_id, row) for row in rows]
    unique = {(r["crm_id"], r["field"], r["changed_at"]): r for r in prepared}
    return store.put_rows(tenant_id, TABLE, SCHEMA, list(unique.values()), keys=list(KEYS))


def load_history(
    store: Store, tenant_id: str, opportunity_ids: Sequence[str] | None = None
) -> dict[str, list[FieldChange]]:
    """Field history per deal, oldest change first.

    Args:
        store: the store.
        tenant_id: whose deals.
        opportunity_ids: the deals; None reads every deal of the tenant.
    """
    rows: list[dict[str, Any]] = []
    if opportunity_ids is None:
        rows = store.read_rows(tenant_id, TABLE, SCHEMA)
    else:
        ids = list(dict.fromkeys(opportunity_ids))
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = ids[start : start + _READ_CHUNK]
            rows += store.read_rows(tenant_id, TABLE, SCHEMA, {"crm_id": chunk})
    found: dict[str, list[FieldChange]] = {}
    for row in sorted(rows, key=lambda r: (r["crm_id"], r["changed_at"], _FIELD_ORDER[r["field"]])):
        found.setdefault(row["crm_id"], []).append(
            FieldChange(
                crm_id=row["crm_id"],
                field=row["field"],
                old_value=row["old_value"],
                new_value=row["new_value"],
                changed_at=row["changed_at"],
                changed_by=row["changed_by"],
            )
        )
    return found


def generated_history_rows(history: Any, id_of: Mapping[str, str] | None = None) -> list[dict]:
    """History rows for the deals of a generated history (:func:`sandbox.history.generate`).

    Args:
        history: the generated :class:`~sandbox.history_model.History`.
        id_of: generator key -> CRM id; the generator's keys are the ids when None (as
            :func:`sandbox.canonical.load_history_into_store` stores them).
    """
    rows: list[dict[str, Any]] = []
    for opp in history.opportunities:
        crm_id = (id_of or {}).get(opp.key, opp.key)
        for change in opp.history:
            field = _GENERATED_FIELDS[change.field]
            rows.append(
                {
                    "crm_id": crm_id,
                    "field": field,
                    "old_value": change.old_value,
                    "new_value": change.new_value,
                    "changed_at": change.at,
                    "changed_by": (id_of or {}).get(change.by_rep_key, change.by_rep_key),
                }
            )
    return rows


def load_generated_history(store: Store, history: Any, tenant_id: str) -> int:
    """Store the field history of a generated history's deals (the connectors' fast path).

    Returns:
        How many history rows were stored.
    """
    return save_history(store, tenant_id, generated_history_rows(history))


def stage_entered_at(changes: Iterable[FieldChange], stage: str) -> datetime | None:
    """When a deal last entered ``stage`` (None when its history does not say)."""
    entered = None
    for change in changes:
        if change.field == "stage" and change.new_value == stage:
            entered = change.changed_at
    return entered


_FIELD_ORDER = {name: i for i, name in enumerate(FIELDS)}


def _prepared(tenant_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    crm_id = str(row.get("crm_id") or "")
    if not crm_id:
        raise FieldHistoryError(f"history row {dict(row)!r} has no deal id (crm_id)")
    field = str(row.get("field") or "")
    changed_at = row.get("changed_at")
    if not isinstance(changed_at, datetime) or changed_at.tzinfo is None:
        raise FieldHistoryError(
            f"history row of deal {crm_id} field {field!r}: changed_at must be a timezone-aware "
            f"datetime, not {changed_at!r}"
        )
    try:
        old_value = canonical_value(field, row.get("old_value"))
        new_value = canonical_value(field, row.get("new_value"))
    except FieldHistoryError as exc:
        raise FieldHistoryError(f"history row of deal {crm_id}: {exc}") from None
    return {
        "tenant_id": tenant_id,
        "crm_id": crm_id,
        "field": field,
        "old_value": old_value,
        "new_value": new_value,
        "changed_at": changed_at.astimezone(UTC),
        "changed_by": None if row.get("changed_by") is None else str(row["changed_by"]),
    }


def _as_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if text.isdigit():
        # HubSpot sends date properties as epoch milliseconds in some payloads.
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC).date()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _as_number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
