"""One stream per Salesforce object: which fields to read, how to page through changes, deletes.

Each stream class declares ``name`` (the sObject), ``entity`` (the canonical entity),
``primary_keys`` and ``replication_key``; :class:`SalesforceStream` holds the SOQL, paging and
mapping they share. Streams talk to Salesforce only through :class:`SalesforceApi`, which the
connector in ``client.py`` implements with tokens, budgets and the error table.

Paging is keyset paging on ``(SystemModstamp, Id)`` rather than ``nextRecordsUrl`` cursors: each page
is one query that starts after the last record of the previous page, so a checkpoint is two values
that stay valid forever (a query locator expires after 15 minutes of inactivity and cannot be
saved), and records modified while a sync runs are picked up again at the end instead of being
skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from simple_salesforce.format import format_soql

from connectors.base import FatalError, Page
from connectors.salesforce.mappers import (
    ENGAGEMENT_FIELDS,
    HISTORY_FIELDS,
    MAPPERS,
    parse_datetime,
    to_field_history,
)
from core.schemas import SCHEMAS, CanonicalSchema, RecordValidationError
from manifests.loader import load_manifest

log = logging.getLogger(__name__)

REPLICATION_KEYS = ("SystemModstamp", "LastModifiedDate", "CreatedDate")
"""Cursor fields in order of preference. SystemModstamp also moves on system changes (a formula's
inputs, a roll-up) that LastModifiedDate misses; getUpdated uses it for the same reason
(https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getupdated.md)."""


class SalesforceApi(Protocol):
    """The calls a stream needs; the connector answers them with tokens, budget and errors mapped."""

    def query(self, soql: str) -> dict[str, Any]:
        """Run one SOQL query and return its first page (``records``, ``done``, ``totalSize``)."""
        ...

    def describe(self, object_name: str) -> dict[str, Any]:
        """The object's describe (cached by the implementation)."""
        ...

    def get_deleted(self, object_name: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The getDeleted resource for the window."""
        ...


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal with milliseconds, ``2026-11-22T15:04:05.123Z``.

    ``format_soql`` drops the milliseconds of a datetime, but SystemModstamp has millisecond
    precision: resuming after ``12:00:00.500`` from ``12:00:00`` would read the same records again,
    and a second holding more than a page of changes would never be left. The literal is built here
    and passed to ``format_soql`` with ``:literal``.
    """
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def pick_replication_key(field_names: Collection[str]) -> str:
    """The preferred cursor field the object has.

    Raises:
        FatalError: the object has none of :data:`REPLICATION_KEYS`.
    """
    for name in REPLICATION_KEYS:
        if name in field_names:
            return name
    raise FatalError(f"the object has none of {', '.join(REPLICATION_KEYS)} to sync changes by")


class SalesforceStream:
    """Reading one sObject: by id, by change, and its deletions.

    Args:
        api: the connector's calls.
        tenant_id: the tenant the records belong to.
        excluded_fields: custom fields the admin excluded from sync on this object.
    """

    name: ClassVar[str]
    """The sObject API name."""
    entity: ClassVar[str]
    """The canonical entity its records map to."""
    primary_keys: ClassVar[tuple[str, ...]] = ("Id",)
    replication_key: ClassVar[str] = "SystemModstamp"
    """The preferred cursor; :meth:`cursor_field` falls back when an object lacks it."""
    extra_fields: ClassVar[tuple[str, ...]] = ()
    """Fields the mapper reads beyond the manifest's inputs, when the object has them."""

    PAGE_SIZE: ClassVar[int] = 2000
    """Records per changes page: the REST query page maximum."""
    FETCH_CHUNK: ClassVar[int] = 200
    """Ids per ``WHERE Id IN`` query. 200 quoted 18-character ids are about 4,400 characters, which
    with a wide field list keeps the GET URL well under Salesforce's 16,384-character limit."""

    def __init__(
        self, api: SalesforceApi, tenant_id: str, excluded_fields: Collection[str] = ()
    ) -> None:
        self.api = api
        self.tenant_id = tenant_id
        self.excluded_fields = frozenset(excluded_fields)
        self._fields: list[str] | None = None
        self._cursor: str | None = None

    @property
    def schema(self) -> type[CanonicalSchema]:
        """The canonical schema this stream's records are validated with."""
        return SCHEMAS[self.entity]

    def fields(self) -> list[str]:
        """The fields to select: the manifest's inputs this org has, plus every custom field.

        Fieldwise's own result fields are left out (they are outputs, and reading them back would
        feed scores into scoring); so are custom fields the admin excluded. Computed once per
        stream from the cached describe.
        """
        if self._fields is None:
            manifest = load_manifest("salesforce")
            described = self.api.describe(self.name)["fields"]
            available = {f["name"] for f in described}
            owned = manifest.owned_field_names(self.name)
            self._cursor = pick_replication_key(available)
            wanted = ["Id", self._cursor]
            wanted += [f for f in manifest.input_fields(self.name) if f in available]
            wanted += [f for f in self.extra_fields if f in available]
            wanted += [
                f["name"]
                for f in described
                if f.get("custom")
                and f["name"] not in owned
                and f["name"] not in self.excluded_fields
            ]
            self._fields = list(dict.fromkeys(wanted))
        return self._fields

    def cursor_field(self) -> str:
        """The replication key this org's object offers (SystemModstamp where it exists)."""
        if self._cursor is None:
            self.fields()
        assert self._cursor is not None
        return self._cursor

    def map(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        """One raw record as a canonical record; None (logged) when it fails validation."""
        try:
            return MAPPERS[self.entity](raw, self.tenant_id)
        except RecordValidationError as exc:
            # One malformed value must not stop the sync of every record after it; the record is
            # reported and left out until it is fixed in Salesforce.
            log.warning("skipping %s %s: %s", self.name, raw.get("Id"), exc)
            return None

    def _mapped(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [record for record in (self.map(row) for row in rows) if record is not None]

    def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by id, :attr:`FETCH_CHUNK` ids per query; ids Salesforce does not have are left out."""
        unique = list(dict.fromkeys(ids))
        out: list[dict[str, Any]] = []
        for start in range(0, len(unique), self.FETCH_CHUNK):
            chunk = unique[start : start + self.FETCH_CHUNK]
            soql = format_soql(
                "SELECT {fields:literal} FROM {sobject:literal} WHERE Id IN {ids}",
                fields=", ".join(self.fields()),
                sobject=self.name,
                ids=chunk,
            )
            out.extend(self._mapped(self.api.query(soql)["records"]))
        return out

    def changed_soql(self, since: datetime | None, position: Mapping[str, Any]) -> str:
        """The query for the page after ``position`` (or the first page at or after ``since``)."""
        cursor = self.cursor_field()
        head = "SELECT {fields:literal} FROM {sobject:literal}"
        tail = " ORDER BY {cursor:literal}, Id LIMIT {limit:literal}"
        values: dict[str, Any] = {
            "fields": ", ".join(self.fields()),
            "sobject": self.name,
            "cursor": cursor,
            "limit": str(self.PAGE_SIZE),
        }
        if position.get("stamp"):
            stamp = parse_datetime(position["stamp"])
            assert stamp is not None
            values.update(stamp=soql_datetime(stamp), last_id=position["id"])
            where = (
                " WHERE ({cursor:literal} > {stamp:literal})"
                " OR ({cursor:literal} = {stamp:literal} AND Id > {last_id})"
            )
        elif since is not None:
            values["since"] = soql_datetime(since)
            where = " WHERE {cursor:literal} >= {since:literal}"
        else:
            where = ""
        return format_soql(head + where + tail, **values)

    def changed(
        self, since: datetime | None, checkpoint: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Pages of up to :attr:`PAGE_SIZE` records, oldest change first, each one query.

        The checkpoint of a page is ``{"stamp", "id"}`` of its last record; passing it back
        resumes right after that record. The last page has ``done`` set.

        Raises:
            FatalError: a page would not advance the checkpoint (a paging bug, never silent).
        """
        position = {k: v for k, v in (checkpoint or {}).items() if k in {"stamp", "id"}}
        while True:
            result = self.api.query(self.changed_soql(since, position))
            rows = result.get("records") or []
            if rows:
                last = rows[-1]
                advanced = {"stamp": last[self.cursor_field()], "id": last["Id"]}
                if advanced == position:
                    raise FatalError(
                        f"paging {self.name} changes did not advance past {position}; stopping"
                    )
                position = advanced
            # A full page may have more behind it; Salesforce may also cut a page short (wide
            # records) and say so with done = false.
            done = not rows or (len(rows) < self.PAGE_SIZE and bool(result.get("done", True)))
            yield Page(self._mapped(rows), dict(position), done=done)
            if done:
                return

    def deleted(self, since: datetime, until: datetime) -> list[str]:
        """Ids deleted in the window, from getDeleted (which covers the last 15 days only)."""
        answer = self.api.get_deleted(self.name, since, until)
        return [str(item["id"]) for item in answer.get("deletedRecords") or []]


class Lead(SalesforceStream):
    """Leads, with marketing engagement roll-ups."""

    name = "Lead"
    entity = "lead"
    extra_fields = tuple(ENGAGEMENT_FIELDS)


class Contact(SalesforceStream):
    """Contacts."""

    name = "Contact"
    entity = "contact"


class Account(SalesforceStream):
    """Accounts."""

    name = "Account"
    entity = "account"


class Opportunity(SalesforceStream):
    """Opportunities, with competitors and their stage, amount and close-date history."""

    name = "Opportunity"
    entity = "opportunity"
    HISTORY_CHUNK: ClassVar[int] = 50
    """Deals per history query: at a few dozen changes each, one 2,000-row page holds them."""

    def field_history(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical field-history rows of deals from ``OpportunityFieldHistory``, oldest first.

        Only StageName, Amount and CloseDate rows are read; the ``created`` row carries no value.
        """
        unique = list(dict.fromkeys(ids))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(unique), self.HISTORY_CHUNK):
            soql = format_soql(
                "SELECT OpportunityId, Field, OldValue, NewValue, CreatedDate, CreatedById"
                " FROM OpportunityFieldHistory WHERE OpportunityId IN {ids}"
                " AND Field IN {fields} ORDER BY CreatedDate",
                ids=unique[start : start + self.HISTORY_CHUNK],
                fields=list(HISTORY_FIELDS),
            )
            result = self.api.query(soql)
            if not result.get("done", True):
                log.warning("field history of %d deals exceeded one page", self.HISTORY_CHUNK)
            rows.extend(to_field_history(raw) for raw in result.get("records") or [])
        return rows


class Task(SalesforceStream):
    """Calls, emails and to-dos."""

    name = "Task"
    entity = "activity"
    extra_fields = ("TaskSubtype",)


class Event(SalesforceStream):
    """Meetings."""

    name = "Event"
    entity = "activity"
    extra_fields = ("ActivityDateTime",)


class Note(SalesforceStream):
    """Notes attached to records."""

    name = "Note"
    entity = "note"


class User(SalesforceStream):
    """Users: the reps who own records."""

    name = "User"
    entity = "user"


STREAMS: Mapping[str, type[SalesforceStream]] = {
    cls.name: cls for cls in (Lead, Contact, Account, Opportunity, Task, Event, Note, User)
}
"""sObject name -> stream class."""
