"""CRM records: create, update, archive, merge and associate, with property history and change events.

Records live in the shared :class:`~sandbox.common.RecordStore` (one row per record, so a restart
keeps them) and in an in-memory index that reads and searches use. Each stored record is::

    {"id", "properties", "createdAt", "updatedAt", "archived", "archivedAt"?,
     "history": {name: [{"value", "timestamp", "sourceType", "sourceId"}, ...]},   # oldest first
     "associations": {toType: {toId: [typeId, ...]}}}

Every change is announced to the listeners (the webhook hub) as a plain event dict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sandbox.common import RecordStore
from sandbox.hubspot import associations as assoc_types
from sandbox.hubspot.errors import HubSpotError, not_found, validation_error
from sandbox.hubspot.properties import (
    ALWAYS_RETURNED,
    DEAL_STAGES,
    DEFAULT_RETURNED,
    ENGAGEMENT_RETURNED,
    ENGAGEMENTS,
    OBJECT_TYPE_IDS,
    PropertyRegistry,
    canonical_type,
    now_iso,
)

Event = dict[str, Any]

_STAGE_PROBABILITY = {value: prob for value, _, prob in DEAL_STAGES}


@dataclass(frozen=True)
class ChangeSource:
    """Who made a change: HubSpot's ``changeSource``/``sourceType`` and ``sourceId``.

    Writes through an app's OAuth token are ``INTEGRATION`` with the app id; edits in the record
    page are ``CRM_UI`` with ``userId:<id>``.
    """

    source_type: str
    source_id: str | None = None


def modified_property(object_type: str) -> str:
    """The last-modified property of a type (contacts use ``lastmodifieddate``)."""
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def created_property(object_type: str) -> str:
    """The create-date property of a type (engagements use ``hs_createdate``)."""
    return "hs_createdate" if object_type in ENGAGEMENTS else "createdate"


class ObjectRepo:
    """All CRM records of one portal, thread-safe, persisted on every write."""

    def __init__(self, store: RecordStore, registry: PropertyRegistry, portal_id: int) -> None:
        self._store = store
        self._registry = registry
        self._portal_id = portal_id
        self.lock = threading.RLock()
        self.listeners: list[Callable[[Event], None]] = []
        self._versions = dict.fromkeys(OBJECT_TYPE_IDS, 0)
        """Bumped on every write to a type's records: what the search index checks."""
        self._live: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPE_IDS}
        self._archived: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPE_IDS}
        for object_type in OBJECT_TYPE_IDS:
            for record_id, rec in store.iter(object_type, include_deleted=True):
                target = self._archived if rec.get("archived") else self._live
                target[object_type][record_id] = rec

    # -- ids ---------------------------------------------------------------------------------

    def allocate_ids(self, count: int) -> list[str]:
        """Reserve ``count`` new numeric record ids (HubSpot ids are numeric strings)."""
        with self.lock:
            first = int(self._store.get_meta("next_record_id", 1001))
            self._store.set_meta("next_record_id", first + count)
        return [str(first + i) for i in range(count)]

    # -- reads -------------------------------------------------------------------------------

    def get(self, object_type: str, record_id: str, archived: bool = False) -> dict | None:
        """A live record (or an archived one with ``archived``), or None."""
        with self.lock:
            source = self._archived if archived else self._live
            return source[object_type].get(str(record_id))

    def all(self, object_type: str, archived: bool = False) -> list[dict[str, Any]]:
        """Every live (or archived) record of a type, ordered by numeric id."""
        with self.lock:
            source = (self._archived if archived else self._live)[object_type]
            records = list(source.values())
        return sorted(records, key=lambda r: int(r["id"]))

    def snapshot(self, object_type: str) -> tuple[int, list[dict[str, Any]]]:
        """The type's write version and its live records at that version, in no set order."""
        with self.lock:
            return self._versions[object_type], list(self._live[object_type].values())

    def version(self, object_type: str) -> int:
        """How many writes the type's records have seen (any change moves it)."""
        return self._versions[object_type]

    def count(self, object_type: str) -> int:
        """Number of live records of a type."""
        with self.lock:
            return len(self._live[object_type])

    def find_unique(self, object_type: str, prop: str, value: str) -> dict | None:
        """The live record whose unique property equals ``value`` (case-insensitive for email)."""
        if prop == "hs_object_id":
            return self.get(object_type, value)
        wanted = value.strip().lower()
        with self.lock:
            for rec in self._live[object_type].values():
                current = rec["properties"].get(prop)
                if current is not None and current.strip().lower() == wanted:
                    return rec
        return None

    def resolve(self, object_type: str, key: str, id_property: str | None) -> dict | None:
        """A record by id, or by the unique ``id_property`` when one is given."""
        if id_property and id_property != "hs_object_id":
            if id_property not in self._registry.unique_properties(object_type):
                raise validation_error(
                    f"Property {id_property} is not a unique identifier property for {object_type}"
                )
            return self.find_unique(object_type, id_property, key)
        return self.get(object_type, key)

    # -- serialization -----------------------------------------------------------------------

    def to_wire(
        self,
        object_type: str,
        rec: dict[str, Any],
        properties: list[str] | None = None,
        with_history: list[str] | None = None,
        associations: list[str] | None = None,
    ) -> dict[str, Any]:
        """A record as HubSpot's ``SimplePublicObject(WithAssociations)`` JSON."""
        if properties:
            names = list(
                dict.fromkeys(properties + ALWAYS_RETURNED.get(object_type, ENGAGEMENT_RETURNED))
            )
            names = [n for n in names if self._registry.get(object_type, n) is not None]
        else:
            names = DEFAULT_RETURNED.get(object_type, ENGAGEMENT_RETURNED)
        props = rec["properties"]
        out: dict[str, Any] = {
            "id": rec["id"],
            "properties": {n: (props.get(n) if props.get(n) != "" else None) for n in names},
            "createdAt": rec["createdAt"],
            "updatedAt": rec["updatedAt"],
            "archived": bool(rec.get("archived")),
        }
        if rec.get("archived"):
            out["archivedAt"] = rec.get("archivedAt")
        if with_history:
            history: dict[str, list[dict[str, Any]]] = {}
            for name in with_history:
                if self._registry.get(object_type, name) is None:
                    continue
                history[name] = [dict(entry) for entry in reversed(rec["history"].get(name, []))]
            out["propertiesWithHistory"] = history
        if associations:
            linked: dict[str, Any] = {}
            for requested in associations:
                to_type = canonical_type(requested)
                if to_type is None:
                    continue
                results = []
                for to_id, type_ids in rec["associations"].get(to_type, {}).items():
                    for type_id in type_ids:
                        assoc = assoc_types.TYPES.get(type_id)
                        results.append(
                            {"id": to_id, "type": assoc.v3_name if assoc else str(type_id)}
                        )
                if results:
                    linked[to_type] = {"results": results}
            if linked:
                out["associations"] = linked
        return out

    # -- writes ------------------------------------------------------------------------------

    def create(
        self,
        object_type: str,
        properties: dict[str, Any],
        source: ChangeSource,
        *,
        associations: list[dict[str, Any]] | None = None,
        record_id: str | None = None,
    ) -> dict[str, Any]:
        """Create one record; HubSpot's 400 for bad values and 409 for a duplicate unique value."""
        values = self._registry.normalize_values(
            object_type, properties, self._portal_id, creating=True
        )
        links = self._parse_association_inputs(object_type, associations or [])
        with self.lock:
            self._check_unique(object_type, values, None)
            (new_id,) = [record_id] if record_id else self.allocate_ids(1)
            stamp = now_iso()
            created = values.pop(created_property(object_type), None) or stamp
            rec = {
                "id": new_id,
                "properties": {},
                "createdAt": created,
                "updatedAt": stamp,
                "archived": False,
                "history": {},
                "associations": {},
            }
            system = {
                "hs_object_id": new_id,
                created_property(object_type): created,
                modified_property(object_type): stamp,
            }
            if object_type == "contacts":
                system["hs_lastmodifieddate"] = stamp
            for name, value in {**system, **values}.items():
                if value != "":
                    self._set(rec, name, value, created if name in system else stamp, source)
            self._derive(object_type, rec, stamp, source)
            self._live[object_type][new_id] = rec
            self._save(object_type, [rec])
        self._emit({"kind": "creation", "objectType": object_type, "objectId": new_id}, source)
        for to_type, to_id, type_id in links:
            self.associate(object_type, new_id, to_type, to_id, [type_id], source)
        return rec

    def update(
        self,
        object_type: str,
        record_id: str,
        properties: dict[str, Any],
        source: ChangeSource,
        *,
        id_property: str | None = None,
        validate: bool = True,
    ) -> dict[str, Any]:
        """Change properties of one record; only values that differ are recorded and announced."""
        if validate:
            values = self._registry.normalize_values(
                object_type, properties, self._portal_id, creating=False
            )
        else:
            values = {k: ("" if v is None else str(v)) for k, v in properties.items()}
        changed: list[tuple[str, str]] = []
        with self.lock:
            rec = self.resolve(object_type, record_id, id_property)
            if rec is None:
                raise not_found(
                    f"Object not found.  objectId are usually numeric.  id: {record_id}"
                )
            self._check_unique(object_type, values, rec["id"])
            stamp = now_iso()
            for name, value in values.items():
                if rec["properties"].get(name, "") != value:
                    self._set(rec, name, value, stamp, source)
                    changed.append((name, value))
            if changed:
                changed += self._derive(object_type, rec, stamp, source)
                self._touch(object_type, rec, stamp, source)
                self._save(object_type, [rec])
        for name, value in changed:
            self._emit(
                {
                    "kind": "propertyChange",
                    "objectType": object_type,
                    "objectId": rec["id"],
                    "propertyName": name,
                    "propertyValue": value,
                },
                source,
            )
        return rec

    def archive(self, object_type: str, record_id: str, source: ChangeSource) -> bool:
        """Move a record to the recycle bin; False when no live record has that id."""
        with self.lock:
            rec = self._live[object_type].pop(str(record_id), None)
            if rec is None:
                return False
            rec["archived"] = True
            rec["archivedAt"] = now_iso()
            self._archived[object_type][rec["id"]] = rec
            self._save(object_type, [rec])
            self._store.delete(object_type, rec["id"])
        self._emit({"kind": "deletion", "objectType": object_type, "objectId": rec["id"]}, source)
        return True

    def merge(
        self, object_type: str, primary_id: str, merged_id: str, source: ChangeSource
    ) -> dict[str, Any]:
        """Merge ``merged_id`` into ``primary_id`` as HubSpot does.

        The primary keeps its values, fills its empty ones from the merged record and takes over
        its associations; the merged record disappears.
        """
        if str(primary_id) == str(merged_id):
            raise validation_error("Cannot merge an object with itself")
        with self.lock:
            primary = self.get(object_type, primary_id)
            merged = self.get(object_type, merged_id)
            if primary is None or merged is None:
                raise not_found(
                    f"Object not found.  objectId: {merged_id if primary else primary_id}"
                )
            stamp = now_iso()
            moved = 0
            for name, value in merged["properties"].items():
                if name in ("hs_object_id", created_property(object_type)) or value == "":
                    continue
                if primary["properties"].get(name, "") == "":
                    self._set(primary, name, value, stamp, source)
                    moved += 1
            links = [
                (to_type, to_id, type_ids)
                for to_type, targets in merged["associations"].items()
                for to_id, type_ids in targets.items()
                if not (to_type == object_type and to_id == primary["id"])
            ]
            merged_ids = [*primary.get("mergedObjectIds", []), merged["id"]]
            primary["mergedObjectIds"] = merged_ids
            self._touch(object_type, primary, stamp, source)
            self._save(object_type, [primary])
        for to_type, to_id, type_ids in links:
            self.disassociate(object_type, merged["id"], to_type, to_id, None, source, emit=False)
            self.associate(object_type, primary["id"], to_type, to_id, type_ids, source, emit=False)
        with self.lock:
            gone = self._live[object_type].pop(merged["id"], None)
            if gone is not None:
                gone["archived"] = True
                gone["archivedAt"] = stamp
                self._archived[object_type][gone["id"]] = gone
                self._save(object_type, [gone])
                self._store.delete(object_type, gone["id"])
        self._emit(
            {
                "kind": "merge",
                "objectType": object_type,
                "objectId": primary["id"],
                "primaryObjectId": int(primary["id"]),
                "mergedObjectIds": [int(merged["id"])],
                "newObjectId": int(primary["id"]),
                "numberOfPropertiesMoved": moved,
            },
            source,
        )
        return primary

    def associate(
        self,
        from_type: str,
        from_id: str,
        to_type: str,
        to_id: str,
        type_ids: Iterable[int],
        source: ChangeSource,
        *,
        emit: bool = True,
    ) -> list[int]:
        """Add association types between two records (both directions); returns the from-side ids.

        Raises:
            HubSpotError: 404 when either record is missing, 400 for a type that does not join
                these two object types.
        """
        type_ids = [int(t) for t in type_ids]
        for type_id in type_ids:
            assoc = assoc_types.TYPES.get(type_id)
            if assoc is None or (assoc.from_type, assoc.to_type) != (from_type, to_type):
                raise validation_error(
                    f"association type id {type_id} doesn't exist between {from_type} and {to_type}"
                )
        added: list[int] = []
        with self.lock:
            left, right = self.get(from_type, from_id), self.get(to_type, to_id)
            if left is None or right is None:
                missing = from_id if left is None else to_id
                raise not_found(
                    f"No {from_type if left is None else to_type} with ID {missing} exist"
                )
            forward = left["associations"].setdefault(to_type, {}).setdefault(right["id"], [])
            backward = right["associations"].setdefault(from_type, {}).setdefault(left["id"], [])
            for type_id in type_ids:
                if type_id not in forward:
                    forward.append(type_id)
                    added.append(type_id)
                reverse = assoc_types.TYPES[type_id].reverse_id
                if reverse not in backward:
                    backward.append(reverse)
            self._save(from_type, [left])
            self._save(to_type, [right])
        if emit:
            for type_id in added:
                self._emit_association(
                    from_type, left["id"], to_type, right["id"], type_id, False, source
                )
        return list(forward)

    def disassociate(
        self,
        from_type: str,
        from_id: str,
        to_type: str,
        to_id: str,
        type_ids: Iterable[int] | None,
        source: ChangeSource,
        *,
        emit: bool = True,
    ) -> list[int]:
        """Remove association types (all of them when ``type_ids`` is None); returns those removed."""
        removed: list[int] = []
        with self.lock:
            left, right = self.get(from_type, from_id), self.get(to_type, to_id)
            if left is None or right is None:
                return removed
            forward = left["associations"].get(to_type, {}).get(right["id"], [])
            backward = right["associations"].get(from_type, {}).get(left["id"], [])
            wanted = list(forward) if type_ids is None else [int(t) for t in type_ids]
            for type_id in wanted:
                if type_id in forward:
                    forward.remove(type_id)
                    removed.append(type_id)
                    reverse = assoc_types.TYPES[type_id].reverse_id
                    if reverse in backward:
                        backward.remove(reverse)
            if not forward:
                left["associations"].get(to_type, {}).pop(right["id"], None)
            if not backward:
                right["associations"].get(from_type, {}).pop(left["id"], None)
            self._save(from_type, [left])
            self._save(to_type, [right])
        if emit:
            for type_id in removed:
                self._emit_association(
                    from_type, left["id"], to_type, right["id"], type_id, True, source
                )
        return removed

    def bulk_insert(self, object_type: str, records: list[dict[str, Any]]) -> None:
        """Insert fully built records without events (the history loader's fast path)."""
        with self.lock:
            for rec in records:
                self._live[object_type][rec["id"]] = rec
            self._save(object_type, records)

    # -- internals ---------------------------------------------------------------------------

    def _save(self, object_type: str, records: list[dict[str, Any]]) -> None:
        """Persist records changed in place (the lock is held) and move the type's version."""
        self._versions[object_type] += 1
        self._store.put_many(object_type, [(rec["id"], rec) for rec in records])

    def _set(self, rec: dict, name: str, value: str, stamp: str, source: ChangeSource) -> None:
        if value == "":
            rec["properties"].pop(name, None)
        else:
            rec["properties"][name] = value
        entry: dict[str, Any] = {
            "value": value,
            "timestamp": stamp,
            "sourceType": source.source_type,
        }
        if source.source_id is not None:
            entry["sourceId"] = source.source_id
        rec["history"].setdefault(name, []).append(entry)

    def _touch(self, object_type: str, rec: dict, stamp: str, source: ChangeSource) -> None:
        rec["updatedAt"] = stamp
        self._set(rec, modified_property(object_type), stamp, stamp, source)
        if object_type == "contacts":
            self._set(rec, "hs_lastmodifieddate", stamp, stamp, source)

    def _derive(
        self, object_type: str, rec: dict, stamp: str, source: ChangeSource
    ) -> list[tuple[str, str]]:
        """Keep HubSpot's calculated deal properties in step with ``dealstage``."""
        if object_type != "deals" or "dealstage" not in rec["properties"]:
            return []
        stage = rec["properties"]["dealstage"]
        derived = {
            "hs_is_closed_won": "true" if stage == "closedwon" else "false",
            "hs_is_closed": "true" if stage in ("closedwon", "closedlost") else "false",
            "hs_deal_stage_probability": _STAGE_PROBABILITY.get(stage, "0.5"),
        }
        if "pipeline" not in rec["properties"]:
            derived["pipeline"] = "default"
        changed = []
        for name, value in derived.items():
            if rec["properties"].get(name) != value:
                self._set(rec, name, value, stamp, source)
                changed.append((name, value))
        return changed

    def _check_unique(self, object_type: str, values: dict[str, str], own_id: str | None) -> None:
        for prop in self._registry.unique_properties(object_type) - {"hs_object_id"}:
            value = values.get(prop)
            if not value:
                continue
            existing = self.find_unique(object_type, prop, value)
            if existing is not None and existing["id"] != own_id:
                label = object_type[:-1].capitalize() if object_type != "companies" else "Company"
                raise HubSpotError(
                    409, "CONFLICT", f"{label} already exists. Existing ID: {existing['id']}"
                )

    def _parse_association_inputs(
        self, object_type: str, inputs: list[dict[str, Any]]
    ) -> list[tuple[str, str, int]]:
        links = []
        for item in inputs:
            try:
                to_id = str(item["to"]["id"])
                specs = item["types"]
            except (KeyError, TypeError):
                raise validation_error("Invalid association input: needs to.id and types") from None
            for spec in specs:
                type_id = int(spec.get("associationTypeId", -1))
                assoc = assoc_types.TYPES.get(type_id)
                if assoc is None or assoc.from_type != object_type:
                    raise validation_error(
                        f"association type id {type_id} doesn't exist for {object_type}"
                    )
                if self.get(assoc.to_type, to_id) is None:
                    raise validation_error(f"No {assoc.to_type} with ID {to_id} exist")
                links.append((assoc.to_type, to_id, type_id))
        return links

    def _emit_association(
        self,
        from_type: str,
        from_id: str,
        to_type: str,
        to_id: str,
        type_id: int,
        removed: bool,
        source: ChangeSource,
    ) -> None:
        assoc = assoc_types.TYPES[type_id]
        self._emit(
            {
                "kind": "associationChange",
                "objectType": from_type,
                "objectId": from_id,
                "associationType": f"{assoc.v3_name.removesuffix('_unlabeled')}".upper(),
                "associationTypeId": type_id,
                "associationCategory": "HUBSPOT_DEFINED",
                "fromObjectId": int(from_id),
                "toObjectId": int(to_id),
                "fromObjectTypeId": OBJECT_TYPE_IDS[from_type],
                "toObjectTypeId": OBJECT_TYPE_IDS[to_type],
                "associationRemoved": removed,
                "isPrimaryAssociation": assoc.label == "Primary",
            },
            source,
        )

    def _emit(self, event: Event, source: ChangeSource) -> None:
        event["changeSource"] = source.source_type
        event["sourceId"] = source.source_id
        event["occurredAt"] = int(time.time() * 1000)
        for listener in list(self.listeners):
            listener(event)
