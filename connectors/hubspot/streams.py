"""One stream class per HubSpot object Fieldwise reads, on one base class that knows HubSpot's APIs.

A stream declares what it reads (``name``, ``object_type``, ``entity``, ``primary_keys``,
``replication_key``, ``schema``, the associations it needs) and how one raw object becomes a
canonical record; :class:`HubSpotStream` does the reading:

* ``fetch(ids)``: batch read, 100 ids per call (HubSpot's batch limit).
* ``changed(since, cursor)``: CRM search sorted by the replication key ascending, 200 per page.
  HubSpot's search returns at most 10,000 results per query (paging past them is a 400), and
  records that change while a sync pages through them move to the end of the order. Both are met
  with *keyset* windows: every query starts at the newest timestamp already read (``GTE``), so no
  query ever pages past its first 200 results, and a record modified mid-run is read again rather
  than skipped. Records at that exact timestamp that were already read are left out by id; when
  more records share one millisecond than a page holds, they are drained in id order
  (``hs_object_id`` sort) before the window moves on: that is the id tiebreak.
* ``deleted(since, until)``: HubSpot has no "deleted since" endpoint and search never returns
  archived records, so the recycle bin (list endpoint with ``archived=true``) is paged and
  filtered on ``archivedAt``. HubSpot empties the bin after 90 days and merges do not always land
  there, so deletion webhooks stay the primary signal; this is the reconciliation.

Custom properties come from the properties API (:class:`PropertyCatalog`, cached per connector)
and land in the canonical ``custom`` map.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.objects import (
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
)

from connectors.hubspot import mappers
from core.schemas import (
    AccountSchema,
    ActivitySchema,
    CanonicalSchema,
    ContactSchema,
    LeadSchema,
    NoteSchema,
    OpportunitySchema,
    RecordValidationError,
    UserSchema,
)
from manifests.loader import Manifest

if TYPE_CHECKING:
    from connectors.hubspot.client import HubSpotApi

log = logging.getLogger(__name__)

BATCH_READ_SIZE = 100
"""Inputs per batch read (HubSpot's limit)."""
HISTORY_BATCH_SIZE = 50
"""Inputs per batch read that asks for property history (HubSpot's lower limit)."""
SEARCH_PAGE_SIZE = 200
"""Results per search page (HubSpot's maximum)."""
LIST_PAGE_SIZE = 100
"""Results per page of the object list endpoint (HubSpot's maximum)."""
OWNERS_PAGE_SIZE = 500
"""Results per page of the owners endpoint (HubSpot's maximum)."""
ASSOCIATIONS_BATCH_SIZE = 1000
"""Inputs per v4 associations batch read (HubSpot's limit)."""

T = TypeVar("T")


class PaginationLoopError(RuntimeError):
    """The API handed back the paging token it was just asked with: following it would never end."""


class Paginator(Generic[T]):
    """Follows a paging token (an ``after`` value or a search cursor) and refuses to loop.

    Args:
        start: the token of the first request (None: from the beginning).
        label: what is being paged, for the loop error.
    """

    def __init__(self, start: T | None = None, label: str = "") -> None:
        self.token: T | None = start
        self.label = label
        self.finished = False
        self.pages = 0

    def advance(self, next_token: T | None) -> None:
        """Move to the next token; None (no next page) finishes.

        Raises:
            PaginationLoopError: ``next_token`` equals the current one.
        """
        self.pages += 1
        if next_token is None:
            self.finished = True
            return
        if next_token == self.token:
            raise PaginationLoopError(
                f"{self.label}: page {self.pages} hands back the token it was read with "
                f"({next_token!r}); stopping instead of reading the same page forever"
            )
        self.token = next_token


@dataclass(frozen=True)
class SearchCursor:
    """Where an incremental read stands: every record before this point has been read.

    Attributes:
        ms: the replication key value (epoch milliseconds) reached.
        seen: ids of records at exactly ``ms`` already read.
        tie_after: while draining records at exactly ``ms`` in id order, the last id read.
        exclusive: every record at ``ms`` has been read; the next window starts after it.
    """

    ms: int
    seen: tuple[str, ...] = ()
    tie_after: int | None = None
    exclusive: bool = False

    @classmethod
    def starting(cls, since: datetime | None) -> SearchCursor:
        """The cursor for records modified at or after ``since`` (all records when None)."""
        return cls(ms=0 if since is None else round(since.timestamp() * 1000))

    def to_json(self) -> dict[str, Any]:
        """The cursor as JSON-ready data for a checkpoint."""
        return {
            "ms": self.ms,
            "seen": list(self.seen),
            "tie_after": self.tie_after,
            "exclusive": self.exclusive,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchCursor:
        """A cursor from :meth:`to_json` data."""
        tie = data.get("tie_after")
        return cls(
            ms=int(data["ms"]),
            seen=tuple(str(i) for i in data.get("seen") or ()),
            tie_after=None if tie is None else int(tie),
            exclusive=bool(data.get("exclusive", False)),
        )


@dataclass
class StreamPage:
    """One page a stream read: canonical records and the cursor after them."""

    records: list[dict[str, Any]]
    cursor: SearchCursor
    more: bool


@dataclass
class PropertyCatalog:
    """A portal's property definitions per object type, read once per connector.

    Args:
        api: the portal's API.
        manifest: decides which properties are Fieldwise's own (never read back as inputs) and
            which HubSpot-defined inputs the manifest routes to ``custom``.
    """

    api: HubSpotApi
    manifest: Manifest
    _definitions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def definitions(self, object_type: str) -> dict[str, dict[str, Any]]:
        """Property name -> definition (HubSpot's ``Property`` JSON) for live properties."""
        if object_type not in self._definitions:
            data = self.api.call_json(
                f"property list of {object_type}",
                lambda hs: hs.crm.properties.core_api.get_all(
                    object_type, archived=False, _preload_content=False
                ),
            )
            self._definitions[object_type] = {p["name"]: p for p in data.get("results", [])}
        return self._definitions[object_type]

    def forget(self, object_type: str | None = None) -> None:
        """Drop cached definitions (after provisioning changed them)."""
        if object_type is None:
            self._definitions.clear()
        else:
            self._definitions.pop(object_type, None)

    def custom_types(self, object_type: str) -> dict[str, str]:
        """Properties whose values go to ``custom`` -> their HubSpot types.

        These are the portal's own properties (not HubSpot-defined), minus Fieldwise's outputs and
        anything in Fieldwise's property group, plus HubSpot-defined inputs the manifest maps to
        ``custom``.
        """
        definitions = self.definitions(object_type)
        owned = self._owned(object_type)
        group = self.manifest.property_group.name if self.manifest.property_group else None
        out = {
            name: str(p.get("type") or "string")
            for name, p in definitions.items()
            if not p.get("hubspotDefined") and name not in owned and p.get("groupName") != group
        }
        if object_type in self.manifest.object_specs:
            for name, attribute in self.manifest.input_map(object_type).items():
                if attribute == "custom" and name in definitions:
                    out[name] = str(definitions[name].get("type") or "string")
        return out

    def _owned(self, object_type: str) -> frozenset[str]:
        if object_type not in self.manifest.object_specs:
            return frozenset()
        return self.manifest.owned_field_names(object_type)


class HubSpotStream:
    """The base of every HubSpot stream: batch reads, keyset search, recycle bin, enrichment.

    Subclasses set the class attributes and :meth:`to_record`; a stream that covers only part of
    an object type (leads vs contacts) also sets :meth:`filter_groups` and :meth:`includes`.
    """

    name: ClassVar[str]
    """The stream's name (also accepted by the connector in place of an entity)."""
    object_type: ClassVar[str]
    """HubSpot object type, as the manifest and the CRM v3 paths name it."""
    entity: ClassVar[str]
    """Canonical entity (``core.schemas``) the records are."""
    schema: ClassVar[type[CanonicalSchema]]
    primary_keys: ClassVar[tuple[str, ...]] = ("id",)
    replication_key: ClassVar[str] = "hs_lastmodifieddate"
    associations: ClassVar[tuple[str, ...]] = ()
    """Object types whose associated ids the mapper needs (read with the v4 associations API)."""

    def __init__(self, api: HubSpotApi, catalog: PropertyCatalog, manifest: Manifest) -> None:
        self.api = api
        self.catalog = catalog
        self.manifest = manifest

    # -- what a stream declares --------------------------------------------------------------

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """The canonical record for one raw object."""
        raise NotImplementedError

    def filter_groups(self) -> list[list[dict[str, Any]]]:
        """Search filter groups (ORed) that select this stream's part of the object type."""
        return [[]]

    def includes(self, raw: Mapping[str, Any]) -> bool:
        """Whether a raw object belongs to this stream (the same rule as :meth:`filter_groups`)."""
        return True

    def needs_associations(self, raw: mappers.RawObject) -> bool:
        """Whether :attr:`associations` must be read for this record."""
        return True

    def needs_history(self, raw: mappers.RawObject) -> bool:
        """Whether property history must be read for this record (see :meth:`history_properties`)."""
        return False

    history_properties: ClassVar[tuple[str, ...]] = ()

    # -- reading -----------------------------------------------------------------------------

    def properties(self) -> list[str]:
        """Every property the stream reads: the manifest's inputs, the mappers' extras, custom."""
        names = [
            *self.manifest.input_fields(self.object_type),
            *mappers.EXTRA_PROPERTIES.get(self.object_type, ()),
            *self.catalog.custom_types(self.object_type),
        ]
        return list(dict.fromkeys(names))

    def custom_types(self) -> dict[str, str]:
        """Custom property name -> HubSpot type, for the mapper."""
        return self.catalog.custom_types(self.object_type)

    def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical records for ids of this object type; missing or other-stream ids are left out."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        raws = self._batch_read(wanted, self.properties())
        return self.records(raws)

    def changed(self, since: datetime | None, cursor: SearchCursor | None) -> Iterator[StreamPage]:
        """Pages of records modified at or after ``since`` (or after ``cursor``), oldest first."""
        pager: Paginator[SearchCursor] = Paginator(
            cursor or SearchCursor.starting(since), f"{self.name} search"
        )
        while not pager.finished:
            assert pager.token is not None
            raws, after, more = self._search_page(pager.token)
            yield StreamPage(self.records(raws), after, more)
            pager.advance(after if more else None)

    def deleted(self, since: datetime, until: datetime) -> list[str]:
        """Ids of this stream's records archived (deleted) at or after ``since``, before ``until``."""
        ids: list[str] = []
        properties = self._classification_properties()
        pager: Paginator[str] = Paginator(None, f"{self.object_type} recycle bin")
        while not pager.finished:
            data = self._archived_page(pager.token, properties)
            for raw in data.get("results", []):
                archived_at = mappers.instant(raw.get("archivedAt"))
                if archived_at and since <= archived_at < until and self.includes(raw):
                    ids.append(str(raw["id"]))
            pager.advance(((data.get("paging") or {}).get("next") or {}).get("after"))
        return ids

    def records(self, raws: Iterable[mappers.RawObject]) -> list[dict[str, Any]]:
        """Map raw objects of this stream to canonical records, after reading what they lack.

        A record the canonical schema rejects is logged and left out: one bad record must not
        stop a sync (the rest of its page is still written).
        """
        mine = [raw for raw in raws if self.includes(raw)]
        self._add_history(mine)
        self._add_associations(mine)
        out: list[dict[str, Any]] = []
        for raw in mine:
            try:
                out.append(self.to_record(raw))
            except RecordValidationError as exc:
                log.warning("skipping HubSpot %s %s: %s", self.object_type, raw.get("id"), exc)
        return out

    # -- HubSpot calls -----------------------------------------------------------------------

    def _batch_read(
        self, ids: list[str], properties: list[str], history: Sequence[str] = ()
    ) -> list[mappers.RawObject]:
        size = HISTORY_BATCH_SIZE if history else BATCH_READ_SIZE
        raws: list[mappers.RawObject] = []
        for start in range(0, len(ids), size):
            body = BatchReadInputSimplePublicObjectId(
                inputs=[{"id": i} for i in ids[start : start + size]],
                properties=properties,
                properties_with_history=list(history) or None,
            )
            # Missing ids come back in a 207's "errors" (OBJECT_NOT_FOUND): left out, as promised.
            raws.extend(self._read(body).get("results", []))
        return raws

    def _read(self, body: BatchReadInputSimplePublicObjectId) -> dict[str, Any]:
        return self.api.call_json(
            f"batch read of {self.object_type}",
            lambda hs: hs.crm.objects.batch_api.read(
                self.object_type, body, archived=False, _preload_content=False
            ),
        )

    def _archived_page(self, after: str | None, properties: list[str]) -> dict[str, Any]:
        return self.api.call_json(
            f"archived list of {self.object_type}",
            lambda hs: hs.crm.objects.basic_api.get_page(
                self.object_type,
                limit=LIST_PAGE_SIZE,
                after=after,
                archived=True,
                properties=properties or None,
                _preload_content=False,
            ),
        )

    def _associations_page(
        self, to_type: str, body: BatchInputPublicFetchAssociationsBatchRequest
    ) -> dict[str, Any]:
        # Records with no association of this type come back in a 207's "errors".
        return self.api.call_json(
            f"associations of {self.object_type} to {to_type}",
            lambda hs: hs.crm.associations.v4.batch_api.get_page(
                self.object_type, to_type, body, _preload_content=False
            ),
        )

    def _search_page(
        self, cursor: SearchCursor
    ) -> tuple[list[mappers.RawObject], SearchCursor, bool]:
        """One keyset page: the new raw objects, the cursor after them, and whether more follow."""
        key = self.replication_key
        if cursor.tie_after is not None:
            window = [
                _filter(key, "EQ", cursor.ms),
                _filter("hs_object_id", "GT", cursor.tie_after),
            ]
            results, more = self._search(window, sort="hs_object_id")
            fresh = [r for r in results if str(r["id"]) not in cursor.seen]
            if not more:
                # Every record at this millisecond has been read: the next window starts after it.
                return fresh, SearchCursor(ms=cursor.ms, exclusive=True), True
            return fresh, replace(cursor, tie_after=int(results[-1]["id"])), True
        window = [_filter(key, "GT" if cursor.exclusive else "GTE", cursor.ms)]
        results, more = self._search(window, sort=key)
        if not results:
            return [], cursor, False
        fresh = [
            r for r in results if not (_ms(r, key) == cursor.ms and str(r["id"]) in cursor.seen)
        ]
        if more and not fresh:
            # A full page of records already read, all at one millisecond: more of them share it
            # than a page holds, so read them in id order before moving on.
            return [], replace(cursor, tie_after=0), True
        last_ms = _ms(results[-1], key)
        at_last = [str(r["id"]) for r in results if _ms(r, key) == last_ms]
        if last_ms == cursor.ms and not cursor.exclusive:
            at_last = [*cursor.seen, *at_last]
        return fresh, SearchCursor(ms=last_ms, seen=tuple(dict.fromkeys(at_last))), more

    def _search(
        self, window: list[dict[str, Any]], sort: str
    ) -> tuple[list[mappers.RawObject], bool]:
        groups = [
            FilterGroup(filters=[Filter(**f) for f in [*selection, *window]])
            for selection in self.filter_groups()
        ]
        body = PublicObjectSearchRequest(
            filter_groups=groups,
            sorts=[{"propertyName": sort, "direction": "ASCENDING"}],
            properties=self.properties(),
            limit=SEARCH_PAGE_SIZE,
            after="0",
        )
        data = self.api.call_json(
            f"search of {self.object_type}",
            lambda hs: hs.crm.objects.search_api.do_search(
                self.object_type, body, _preload_content=False
            ),
            search=True,
        )
        more = bool(((data.get("paging") or {}).get("next") or {}).get("after"))
        return list(data.get("results", [])), more

    def _add_history(self, raws: list[mappers.RawObject]) -> None:
        pending = [raw for raw in raws if self.needs_history(raw)]
        if not pending:
            return
        by_id = {str(raw["id"]): raw for raw in pending}
        names = list(self.history_properties)
        for found in self._batch_read(list(by_id), names, history=names):
            raw = by_id.get(str(found["id"]))
            if raw is not None:
                raw["propertiesWithHistory"] = found.get("propertiesWithHistory") or {}

    def _add_associations(self, raws: list[mappers.RawObject]) -> None:
        pending = [raw for raw in raws if self.needs_associations(raw)]
        if not pending or not self.associations:
            return
        by_id = {str(raw["id"]): raw for raw in pending}
        for raw in pending:
            raw.setdefault("associations", {})
        ids = list(by_id)
        for to_type in self.associations:
            for start in range(0, len(ids), ASSOCIATIONS_BATCH_SIZE):
                body = BatchInputPublicFetchAssociationsBatchRequest(
                    inputs=[{"id": i} for i in ids[start : start + ASSOCIATIONS_BATCH_SIZE]]
                )
                data = self._associations_page(to_type, body)
                for result in data.get("results", []):
                    found = by_id.get(str((result.get("from") or {}).get("id")))
                    if found is not None:
                        found["associations"][to_type] = [
                            str(link["toObjectId"]) for link in result.get("to") or []
                        ]

    def _classification_properties(self) -> list[str]:
        return []


# --------------------------------------------------------------------------------------------------
# Streams


class Leads(HubSpotStream):
    """Contacts that are leads: open (lead stages, or no stage yet) or converted after being one.

    See :func:`connectors.hubspot.mappers.is_lead`. A converted lead's ``converted_at`` comes from
    HubSpot's "Became an Opportunity/Customer Date", or else from ``lifecyclestage`` history.
    """

    name = "leads"
    object_type = "contacts"
    entity = "lead"
    schema = LeadSchema
    replication_key = "lastmodifieddate"
    associations = ("deals",)
    history_properties = ("lifecyclestage",)

    def filter_groups(self) -> list[list[dict[str, Any]]]:
        """Open leads, contacts with no stage, and converted contacts that became a lead first."""
        return [
            [_filter_in("lifecyclestage", mappers.LEAD_STAGES)],
            [{"property_name": "lifecyclestage", "operator": "NOT_HAS_PROPERTY"}],
            [
                _filter_in("lifecyclestage", mappers.CONVERTED_STAGES),
                {"property_name": mappers.BECAME_LEAD_DATE, "operator": "HAS_PROPERTY"},
            ],
        ]

    def includes(self, raw: Mapping[str, Any]) -> bool:
        """See :func:`connectors.hubspot.mappers.is_lead`."""
        return mappers.is_lead(raw.get("properties") or {})

    def needs_associations(self, raw: mappers.RawObject) -> bool:
        """Only converted leads point at a deal."""
        return mappers.is_converted(raw.get("properties") or {})

    def needs_history(self, raw: mappers.RawObject) -> bool:
        """Converted leads without HubSpot's stage dates."""
        return mappers.needs_conversion_history(raw)

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_lead`."""
        return mappers.to_lead(raw, self.api.tenant_id, self.custom_types())

    def _classification_properties(self) -> list[str]:
        return ["lifecyclestage", mappers.BECAME_LEAD_DATE]


class Contacts(HubSpotStream):
    """Contacts past the lead stages (opportunity, customer, evangelist, other, custom stages)."""

    name = "contacts"
    object_type = "contacts"
    entity = "contact"
    schema = ContactSchema
    replication_key = "lastmodifieddate"

    def filter_groups(self) -> list[list[dict[str, Any]]]:
        """Any lifecycle stage that is set and is not a lead stage."""
        return [
            [
                {"property_name": "lifecyclestage", "operator": "HAS_PROPERTY"},
                {
                    "property_name": "lifecyclestage",
                    "operator": "NOT_IN",
                    "values": list(mappers.LEAD_STAGES),
                },
            ]
        ]

    def includes(self, raw: Mapping[str, Any]) -> bool:
        """See :func:`connectors.hubspot.mappers.is_contact`."""
        return mappers.is_contact(raw.get("properties") or {})

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_contact`."""
        return mappers.to_contact(raw, self.api.tenant_id, self.custom_types())

    def _classification_properties(self) -> list[str]:
        return ["lifecyclestage"]


class Companies(HubSpotStream):
    """Companies, as accounts."""

    name = "companies"
    object_type = "companies"
    entity = "account"
    schema = AccountSchema

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_account`."""
        return mappers.to_account(raw, self.api.tenant_id, self.custom_types())


class Deals(HubSpotStream):
    """Deals, as opportunities, with their company."""

    name = "deals"
    object_type = "deals"
    entity = "opportunity"
    schema = OpportunitySchema
    associations = ("companies",)

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_opportunity`."""
        return mappers.to_opportunity(raw, self.api.tenant_id, self.custom_types())

    def field_history(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical stage, close-date and amount history of deals (batch reads of 50)."""
        names = list(mappers.DEAL_HISTORY_PROPERTIES)
        wanted = list(dict.fromkeys(str(i) for i in ids))
        rows: list[dict[str, Any]] = []
        for raw in self._batch_read(wanted, names, history=names):
            rows.extend(mappers.to_field_history(raw))
        return rows


class Notes(HubSpotStream):
    """Notes, with the contact, company and deal they are attached to."""

    name = "notes"
    object_type = "notes"
    entity = "note"
    schema = NoteSchema
    associations = ("contacts", "companies", "deals")

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_note`."""
        return mappers.to_note(raw, self.api.tenant_id, self.custom_types())


class _Activities(HubSpotStream):
    """Engagements that are activities (one subclass per HubSpot engagement object)."""

    entity = "activity"
    schema = ActivitySchema
    associations = ("contacts", "companies", "deals")

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_activity`."""
        return mappers.to_activity(raw, self.api.tenant_id, self.object_type, self.custom_types())


class Calls(_Activities):
    """Logged calls."""

    name = "calls"
    object_type = "calls"


class Emails(_Activities):
    """Logged emails (bodies need the ``sales-email-read`` scope)."""

    name = "emails"
    object_type = "emails"


class Meetings(_Activities):
    """Meetings."""

    name = "meetings"
    object_type = "meetings"


class Tasks(_Activities):
    """Tasks."""

    name = "tasks"
    object_type = "tasks"


class Owners(HubSpotStream):
    """Owners (HubSpot's users who own records), as users.

    The owners API has no search and no batch read; a portal has at most a few thousand owners, so
    every read lists them all (500 per page) and filters here.
    """

    name = "owners"
    object_type = "owners"
    entity = "user"
    schema = UserSchema
    replication_key = "updatedAt"

    def to_record(self, raw: mappers.RawObject) -> dict[str, Any]:
        """See :func:`connectors.hubspot.mappers.to_user`."""
        return mappers.to_user(raw, self.api.tenant_id)

    def properties(self) -> list[str]:
        """Owners are not property-based objects."""
        return []

    def custom_types(self) -> dict[str, str]:
        """Owners carry no custom properties."""
        return {}

    def fetch(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Owners by id, active or archived."""
        wanted = {str(i) for i in ids}
        found = [
            o for o in self._all(archived=False) + self._all(archived=True) if o["id"] in wanted
        ]
        return self.records(found)

    def changed(self, since: datetime | None, cursor: SearchCursor | None) -> Iterator[StreamPage]:
        """Every owner updated at or after ``since`` (or after ``cursor``), in one page."""
        cursor = cursor or SearchCursor.starting(since)
        owners = self._all(archived=False) + self._all(archived=True)
        keyed = sorted(
            ((_ms(o, "updatedAt"), str(o["id"]), o) for o in owners), key=lambda t: t[:2]
        )
        fresh = [
            (ms, oid, o)
            for ms, oid, o in keyed
            if ms > cursor.ms
            or (ms == cursor.ms and not cursor.exclusive and oid not in cursor.seen)
        ]
        after = cursor
        if fresh:
            last = fresh[-1][0]
            seen = [oid for ms, oid, _ in keyed if ms == last]
            after = SearchCursor(ms=last, seen=tuple(seen))
        yield StreamPage(self.records([o for _, _, o in fresh]), after, False)

    def deleted(self, since: datetime, until: datetime) -> list[str]:
        """Owners archived (deactivated) in the window, by their last update time."""
        out = []
        for owner in self._all(archived=True):
            updated = mappers.instant(owner.get("updatedAt"))
            if updated is not None and since <= updated < until:
                out.append(str(owner["id"]))
        return out

    def _all(self, archived: bool) -> list[mappers.RawObject]:
        owners: list[mappers.RawObject] = []
        pager: Paginator[str] = Paginator(None, "owners list")
        while not pager.finished:
            data = self._owners_page(pager.token, archived)
            for owner in data.get("results", []):
                owners.append({**owner, "id": str(owner["id"])})
            pager.advance(((data.get("paging") or {}).get("next") or {}).get("after"))
        return owners

    def _owners_page(self, after: str | None, archived: bool) -> dict[str, Any]:
        return self.api.call_json(
            "owners list",
            lambda hs: hs.crm.owners.owners_api.get_page(
                limit=OWNERS_PAGE_SIZE, after=after, archived=archived, _preload_content=False
            ),
        )


STREAMS: tuple[type[HubSpotStream], ...] = (
    Leads,
    Contacts,
    Companies,
    Deals,
    Notes,
    Calls,
    Emails,
    Meetings,
    Tasks,
    Owners,
)
"""Every stream, in the order a full sync reads them (owners and companies before what points at them
does not matter: canonical records refer to each other by CRM id)."""


def streams_for(name: str) -> list[type[HubSpotStream]]:
    """The streams behind a canonical entity (``activity``: four) or one stream name (``calls``).

    Raises:
        KeyError: neither an entity nor a stream name.
    """
    found = [s for s in STREAMS if s.entity == name] or [s for s in STREAMS if s.name == name]
    if not found:
        known = sorted({s.entity for s in STREAMS} | {s.name for s in STREAMS})
        raise KeyError(f"HubSpot has no stream for {name!r}; expected one of {', '.join(known)}")
    return found


# --------------------------------------------------------------------------------------------------
# Helpers


def _filter(name: str, operator: str, value: Any) -> dict[str, Any]:
    return {"property_name": name, "operator": operator, "value": str(value)}


def _filter_in(name: str, values: Iterable[str]) -> dict[str, Any]:
    return {"property_name": name, "operator": "IN", "values": list(values)}


def _ms(raw: Mapping[str, Any], key: str) -> int:
    """A record's replication key value in epoch milliseconds (0 when it has none).

    CRM objects keep it among their properties; owners carry ``updatedAt`` at the top level.
    """
    value = (raw.get("properties") or {}).get(key) if "properties" in raw else raw.get(key)
    moment = mappers.instant(value)
    return round(moment.timestamp() * 1000) if moment else 0
