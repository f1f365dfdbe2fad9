"""The record engine: validated writes with system fields, field history and change events.

Create, update, delete and upsert run inside all-or-none transactions.

Every write path (REST rows, sObject Collections, composite, Tooling-created fields becoming
writable) goes through :class:`RecordEngine`, so the checks, the ``OpportunityFieldHistory`` rows and
the change events that feed outbound messages and the CDC relay are the same everywhere. Writes run
inside a :class:`Transaction`; when it fails with ``all_or_none`` the undo log restores every record
it touched and no change event is emitted.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox.common import RecordStore
from sandbox.salesforce.errors import SalesforceError, entity_deleted, not_found
from sandbox.salesforce.ids import IdFactory, now_string, to18
from sandbox.salesforce.schema import FieldDef, ObjectDef, Schema, coerce_value

HISTORY_TRACKED = {"StageName": "DynamicEnum", "Amount": "Currency", "CloseDate": "Date"}
"""Opportunity fields whose changes are kept as OpportunityFieldHistory, with their DataType."""

SYSTEM_FIELDS = {
    "Id",
    "IsDeleted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
}


@dataclass
class CallContext:
    """Who is writing and through which API, for system fields and ``changeOrigin``.

    Attributes:
        user_id: the token's user; becomes CreatedById / LastModifiedById.
        api_version: the version in the request URL, e.g. ``"62.0"``.
        client: the ``client=`` value of the ``Sforce-Call-Options`` header, if any.
        api: ``rest`` or ``soap``.
    """

    user_id: str
    api_version: str = "62.0"
    client: str | None = None
    api: str = "rest"

    @property
    def change_origin(self) -> str:
        """The CDC ``changeOrigin`` string for writes made in this context."""
        origin = f"com/salesforce/api/{self.api}/{self.api_version}"
        return f"{origin};client={self.client}" if self.client else origin


@dataclass
class Change:
    """One committed record change, as the outbound-message and CDC relays see it."""

    object_name: str
    record_id: str
    change_type: str
    """CREATE, UPDATE, DELETE or UNDELETE."""
    changed_fields: list[str]
    record: dict[str, Any]
    context: CallContext
    commit_timestamp_ms: int
    transaction_key: str
    sequence_number: int


@dataclass
class Transaction:
    """The undo log and pending change events of one unit of work."""

    context: CallContext
    all_or_none: bool = True
    undo: list[tuple[str, str, dict[str, Any] | None, bool]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    key: str = field(default_factory=lambda: str(uuid.uuid4()))


class RecordEngine:
    """Reads and writes sObject records in the RecordStore on behalf of the API handlers."""

    def __init__(self, store: RecordStore, schema: Schema) -> None:
        self.store = store
        self.schema = schema
        self.ids = IdFactory(
            lambda prefix: store.get_meta(f"salesforce.idseq.{prefix}", 1),
            lambda prefix, value: store.set_meta(f"salesforce.idseq.{prefix}", value),
        )
        self.lock = threading.RLock()
        self.listeners: list[Callable[[list[Change]], None]] = []
        self._commit_counter = itertools.count(int(time.time() * 1000))

    # ----------------------------------------------------------------------------------------------
    # Transactions

    @contextmanager
    def transaction(self, context: CallContext, all_or_none: bool = True) -> Iterator[Transaction]:
        """Run writes as one unit: on an exception everything is undone and re-raised.

        Change events are handed to the listeners only after the block finishes without error.
        """
        with self.lock:
            tx = Transaction(context, all_or_none)
            try:
                yield tx
            except BaseException:
                self.rollback(tx)
                raise
        self._emit(tx)

    def rollback(self, tx: Transaction) -> None:
        """Restore every record the transaction touched, newest first, and drop its events."""
        with self.lock:
            for object_name, record_id, before, was_deleted in reversed(tx.undo):
                if before is None:
                    self.store.purge(object_name, record_id)
                else:
                    self.store.put(object_name, record_id, before)
                    if was_deleted:
                        self.store.delete(object_name, record_id)
            tx.undo.clear()
            tx.changes.clear()

    def _emit(self, tx: Transaction) -> None:
        if not tx.changes:
            return
        for listener in list(self.listeners):
            listener(list(tx.changes))

    def _remember(self, tx: Transaction, object_name: str, record_id: str) -> None:
        before = self.store.get(object_name, record_id, include_deleted=True)
        was_deleted = before is not None and self.store.get(object_name, record_id) is None
        tx.undo.append((object_name, record_id, before, was_deleted))

    def _record_change(
        self,
        tx: Transaction,
        obj: ObjectDef,
        record: dict[str, Any],
        change_type: str,
        changed: list[str],
    ) -> None:
        tx.changes.append(
            Change(
                object_name=obj.name,
                record_id=record["Id"],
                change_type=change_type,
                changed_fields=changed,
                record=dict(record),
                context=tx.context,
                commit_timestamp_ms=int(time.time() * 1000),
                transaction_key=tx.key,
                sequence_number=len(tx.changes) + 1,
            )
        )

    # ----------------------------------------------------------------------------------------------
    # Lookups

    def object_or_404(self, name: str) -> ObjectDef:
        """The object named ``name`` or the REST NOT_FOUND error."""
        obj = self.schema.object(name)
        if obj is None:
            raise not_found()
        return obj

    def get(self, obj: ObjectDef, record_id: str, include_deleted: bool = False) -> dict[str, Any]:
        """Read one record by id (15 or 18 characters).

        Raises:
            SalesforceError: NOT_FOUND, MALFORMED_ID or ENTITY_IS_DELETED.
        """
        normal = self.check_id(obj, record_id)
        record = self.store.get(obj.name, normal, include_deleted=True)
        if record is None:
            raise not_found()
        if record.get("IsDeleted") and not include_deleted:
            raise entity_deleted()
        return record

    @staticmethod
    def check_id(obj: ObjectDef, record_id: str) -> str:
        """Normalise an id in a URL or body for ``obj``.

        Raises:
            SalesforceError: NOT_FOUND for something that is not an id, MALFORMED_ID for an id of
                another object.
        """
        normal = to18(record_id)
        if normal is None:
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {record_id}",
            )
        if normal[:3] != obj.key_prefix:
            raise SalesforceError(
                400,
                "MALFORMED_ID",
                f"{obj.name} ID: id value of incorrect type: {record_id}",
                ["Id"],
            )
        return normal

    def find_by_field(self, obj: ObjectDef, fdef: FieldDef, value: Any) -> list[dict[str, Any]]:
        """Live records whose ``fdef`` equals ``value`` (text compared case-insensitively)."""
        wanted = coerce_value(obj, fdef, value)
        if isinstance(wanted, str) and fdef.type not in {"id", "reference"}:
            wanted = wanted.lower()
        out = []
        for _, record in self.store.iter(obj.name):
            have = record.get(fdef.name)
            if isinstance(have, str) and fdef.type not in {"id", "reference"}:
                have = have.lower()
            if have == wanted and have is not None:
                out.append(record)
        return out

    # ----------------------------------------------------------------------------------------------
    # Writes

    def _clean(self, obj: ObjectDef, values: dict[str, Any], creating: bool) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "The request body must be a JSON object of field values"
            )
        clean: dict[str, Any] = {}
        not_writable: list[str] = []
        for name, value in values.items():
            if name == "attributes":
                continue
            fdef = obj.field(name)
            if fdef is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {obj.name}",
                    [name],
                )
            if isinstance(value, dict | list):
                raise SalesforceError(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {fdef.type} from START_OBJECT value for"
                    f" field {fdef.name}",
                )
            if (creating and not fdef.createable) or (not creating and not fdef.updateable):
                if fdef.name == "Id" and not creating:
                    continue
                not_writable.append(fdef.name)
                continue
            clean[fdef.name] = coerce_value(obj, fdef, value)
        if not_writable:
            raise SalesforceError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(not_writable)}. Please check the"
                " security settings of this field and verify that it is read/write for your"
                " profile or permission set.",
                not_writable,
            )
        for fdef_name, value in clean.items():
            fdef = obj.field(fdef_name)
            if fdef is not None and fdef.type == "reference" and value is not None:
                self._check_reference(fdef, value)
        return clean

    def _check_reference(self, fdef: FieldDef, value: str) -> None:
        target = self.schema.object_for_id(value)
        if target is None or target.name not in fdef.reference_to:
            raise SalesforceError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"{fdef.label}: id value of incorrect type: {value}",
                [fdef.name],
            )
        parent = self.store.get(target.name, value)
        if parent is None:
            raise SalesforceError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                [fdef.name],
            )

    @staticmethod
    def derive(obj: ObjectDef, record: dict[str, Any]) -> None:
        """Fill the read-only fields Salesforce computes (Name, IsClosed, IsWon, ...)."""
        for target, sources in obj.computed.items():
            fdef = obj.field(target)
            if fdef is None:
                continue
            parts = [str(record[s]) for s in sources if record.get(s)]
            record[fdef.name] = " ".join(parts) if parts else None
        if obj.name == "Opportunity":
            stage = record.get("StageName") or ""
            record["IsClosed"] = stage.startswith("Closed")
            record["IsWon"] = stage == "Closed Won"
        if obj.name == "Task":
            closed = record.get("Status") == "Completed"
            if closed and not record.get("IsClosed"):
                record["CompletedDateTime"] = record.get("LastModifiedDate")
            record["IsClosed"] = closed

    def blank_record(self, obj: ObjectDef) -> dict[str, Any]:
        """A record with every field present: null, or its default."""
        record: dict[str, Any] = {}
        for fdef in obj.fields.values():
            default = fdef.default if fdef.default != "<current user>" else None
            record[fdef.name] = default
        return record

    def create(self, tx: Transaction, obj: ObjectDef, values: dict[str, Any]) -> str:
        """Insert one record and return its id.

        Raises:
            SalesforceError: INVALID_FIELD, INVALID_FIELD_FOR_INSERT_UPDATE, REQUIRED_FIELD_MISSING,
                JSON_PARSER_ERROR, STRING_TOO_LONG, ... exactly as the REST API names them.
        """
        if not obj.createable:
            raise SalesforceError(
                400, "INVALID_TYPE_FOR_OPERATION", f"entity type {obj.name} does not support insert"
            )
        clean = self._clean(obj, values, creating=True)
        missing = [
            fdef.name
            for fdef in obj.fields.values()
            if fdef.required and fdef.createable and clean.get(fdef.name) in (None, "")
        ]
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        user = tx.context.user_id
        now = now_string()
        record = self.blank_record(obj)
        record.update(clean)
        record_id = self.ids.make(obj.key_prefix)[0]
        record.update(
            {
                "Id": record_id,
                "IsDeleted": False,
                "CreatedDate": now,
                "CreatedById": user,
                "LastModifiedDate": now,
                "LastModifiedById": user,
                "SystemModstamp": now,
            }
        )
        if "OwnerId" in record and not record.get("OwnerId"):
            record["OwnerId"] = user
        self.derive(obj, record)
        tx.undo.append((obj.name, record_id, None, False))
        self.store.put(obj.name, record_id, record)
        if obj.name == "Opportunity":
            self._history(tx, record, [("created", None, None)], now)
        changed = sorted(k for k, v in record.items() if v is not None and k not in SYSTEM_FIELDS)
        self._record_change(tx, obj, record, "CREATE", changed)
        return record_id

    def update(
        self, tx: Transaction, obj: ObjectDef, record_id: str, values: dict[str, Any]
    ) -> None:
        """Change fields of one live record; a no-op write still moves LastModifiedDate.

        Raises:
            SalesforceError: as :meth:`create`, plus NOT_FOUND / ENTITY_IS_DELETED.
        """
        record = self.get(obj, record_id)
        clean = self._clean(obj, values, creating=False)
        for fdef in obj.fields.values():
            if fdef.required and fdef.name in clean and clean[fdef.name] in (None, ""):
                raise SalesforceError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{fdef.name}]",
                    [fdef.name],
                )
        self._remember(tx, obj.name, record["Id"])
        before = dict(record)
        record.update(clean)
        now = now_string()
        record.update(
            {"LastModifiedDate": now, "LastModifiedById": tx.context.user_id, "SystemModstamp": now}
        )
        self.derive(obj, record)
        self.store.put(obj.name, record["Id"], record)
        changed = sorted(
            k for k in record if k not in SYSTEM_FIELDS and record.get(k) != before.get(k)
        )
        if obj.name == "Opportunity":
            entries = [
                (name, before.get(name), record.get(name))
                for name in HISTORY_TRACKED
                if before.get(name) != record.get(name)
            ]
            self._history(tx, record, entries, now)
        self._record_change(tx, obj, record, "UPDATE", changed)

    def delete(self, tx: Transaction, obj: ObjectDef, record_id: str) -> None:
        """Move one record to the recycle bin (``IsDeleted`` true; queryAll still sees it)."""
        if not obj.deletable:
            raise SalesforceError(
                400, "INVALID_TYPE_FOR_OPERATION", f"entity type {obj.name} does not support delete"
            )
        record = self.get(obj, record_id)
        self._remember(tx, obj.name, record["Id"])
        now = now_string()
        record.update(
            {
                "IsDeleted": True,
                "LastModifiedDate": now,
                "LastModifiedById": tx.context.user_id,
                "SystemModstamp": now,
            }
        )
        self.store.put(obj.name, record["Id"], record)
        self.store.delete(obj.name, record["Id"])
        self._record_change(tx, obj, record, "DELETE", [])

    def upsert(
        self, tx: Transaction, obj: ObjectDef, field_name: str, value: str, values: dict[str, Any]
    ) -> tuple[str, bool]:
        """Create or update by an external-id field (or Id); returns ``(id, created)``.

        Raises:
            SalesforceError: NOT_FOUND for a field that is not an external id, 300-style
                MULTIPLE_CHOICES when several records match.
        """
        fdef = obj.field(field_name)
        if fdef is None or not (fdef.external_id or fdef.type == "id"):
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if fdef.type == "id":
            self.update(tx, obj, value, values)
            return to18(value) or value, False
        matches = self.find_by_field(obj, fdef, value)
        if len(matches) > 1:
            raise SalesforceError(
                300,
                "MULTIPLE_CHOICES",
                f"The value provided for foreign key reference {fdef.name} is not unique",
            )
        body = {k: v for k, v in values.items() if k.lower() != fdef.name.lower()}
        if matches:
            self.update(tx, obj, matches[0]["Id"], body)
            return matches[0]["Id"], False
        body[fdef.name] = value
        return self.create(tx, obj, body), True

    def _history(
        self, tx: Transaction, opp: dict[str, Any], entries: list[tuple[str, Any, Any]], when: str
    ) -> None:
        if not entries:
            return
        hist = self.schema.object("OpportunityFieldHistory")
        assert hist is not None
        ids = self.ids.make(hist.key_prefix, len(entries))
        for hist_id, (name, old, new) in zip(ids, entries, strict=True):
            row = {
                "Id": hist_id,
                "OpportunityId": opp["Id"],
                "Field": name,
                "DataType": HISTORY_TRACKED.get(name, "Text"),
                "OldValue": old,
                "NewValue": new,
                "IsDeleted": False,
                "CreatedDate": when,
                "CreatedById": tx.context.user_id,
            }
            tx.undo.append((hist.name, hist_id, None, False))
            self.store.put(hist.name, hist_id, row)
