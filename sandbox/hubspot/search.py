"""The CRM search endpoint's request validation, filter evaluation, sorting and paging.

``filterGroups`` are ORed, the filters inside a group ANDed. Limits follow HubSpot's search docs:
five groups, ten filters per group, twenty-five filters in all, one sort, 200 results per page, and
no paging past the 10,000th result.
"""

from __future__ import annotations

import bisect
import fnmatch
import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot.errors import validation_error
from sandbox.hubspot.objects import ObjectRepo
from sandbox.hubspot.properties import PropertyRegistry, epoch_ms

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_LIMIT = 200
RESULT_CAP = 10_000

OPERATORS = {
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}

QUERY_PROPERTIES: dict[str, list[str]] = {
    "contacts": ["firstname", "lastname", "email", "phone", "company", "hs_object_id"],
    "companies": ["name", "domain", "website", "phone", "hs_object_id"],
    "deals": ["dealname", "pipeline", "dealstage", "description", "hs_object_id"],
    "notes": ["hs_note_body"],
    "calls": ["hs_call_title", "hs_call_body"],
    "emails": ["hs_email_subject", "hs_email_text"],
    "meetings": ["hs_meeting_title", "hs_meeting_body"],
    "tasks": ["hs_task_subject", "hs_task_body"],
}
"""Default searchable properties a free-text ``query`` looks in."""

_TOKEN = re.compile(r"[\w*]+", re.UNICODE)
_RANGE_OPERATORS = frozenset({"GT", "GTE", "EQ", "LT", "LTE", "BETWEEN"})
"""Operators a keyset window on the sort property is made of."""
_ORDERED_TYPES = frozenset({"number", "datetime", "date"})


class SearchRequest:
    """A validated ``PublicObjectSearchRequest``."""

    def __init__(self, registry: PropertyRegistry, object_type: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: the request body must be an object")
        self.object_type = object_type
        self._registry = registry
        self.groups = self._groups(body.get("filterGroups") or [])
        self.sorts = self._sorts(body.get("sorts") or [])
        self.query = str(body.get("query") or "").strip()
        props = body.get("properties") or []
        if not isinstance(props, list):
            raise validation_error("Invalid input JSON: properties must be a list of names")
        self.properties = [str(p) for p in props]
        limit = body.get("limit", 10)
        try:
            self.limit = int(limit)
        except (TypeError, ValueError):
            raise validation_error(f"Invalid input JSON: limit {limit!r} is not a number") from None
        if self.limit < 1 or self.limit > MAX_LIMIT:
            raise validation_error(
                f"limit must be between 1 and {MAX_LIMIT} (got {self.limit})",
                subCategory="ObjectSearchRequest.LIMIT_OUT_OF_RANGE",
            )
        after = body.get("after") or 0
        try:
            self.after = int(after)
        except (TypeError, ValueError):
            raise validation_error(
                f"Invalid input JSON: after {after!r} is not a valid cursor"
            ) from None
        if self.after < 0:
            raise validation_error("after must not be negative")
        if self.after >= RESULT_CAP:
            # HubSpot caps every search at 10,000 results; paging past them is a 400, not an empty page.
            raise validation_error(
                f"The search API returns at most {RESULT_CAP} results for a query; narrow the"
                f" filters instead of paging past them (after={self.after})",
                subCategory="ObjectSearchRequest.RESULT_LIMIT_EXCEEDED",
            )

    def _groups(self, raw: Any) -> list[list[dict[str, Any]]]:
        if not isinstance(raw, list):
            raise validation_error("Invalid input JSON: filterGroups must be a list")
        if len(raw) > MAX_GROUPS:
            raise validation_error(
                f"Too many filter groups ({len(raw)}); the maximum is {MAX_GROUPS}"
            )
        groups, total = [], 0
        for group in raw:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise validation_error("Invalid input JSON: each filter group needs a filters list")
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise validation_error(
                    f"Too many filters in a group ({len(filters)}); the maximum is"
                    f" {MAX_FILTERS_PER_GROUP}"
                )
            total += len(filters)
            groups.append([self._filter(f) for f in filters])
        if total > MAX_FILTERS:
            raise validation_error(f"Too many filters ({total}); the maximum is {MAX_FILTERS}")
        return groups

    def _filter(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw.get("propertyName") or not raw.get("operator"):
            raise validation_error(
                "Invalid input JSON: each filter needs propertyName and operator"
            )
        operator = str(raw["operator"])
        if operator not in OPERATORS:
            raise validation_error(
                f"Invalid operator {operator}; valid operators are {sorted(OPERATORS)}"
            )
        name = str(raw["propertyName"])
        prop = self._registry.get(self.object_type, name)
        if prop is None:
            raise validation_error(f"Property {name} does not exist on {self.object_type}")
        if operator in ("IN", "NOT_IN"):
            if not isinstance(raw.get("values"), list):
                raise validation_error(f"Operator {operator} needs a values list")
        elif operator == "BETWEEN":
            if raw.get("value") is None or raw.get("highValue") is None:
                raise validation_error("Operator BETWEEN needs value and highValue")
        elif operator not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY") and raw.get("value") is None:
            raise validation_error(f"Operator {operator} needs a value")
        return {**raw, "operator": operator, "type": prop["type"]}

    def _sorts(self, raw: Any) -> list[tuple[str, bool]]:
        if not isinstance(raw, list):
            raise validation_error("Invalid input JSON: sorts must be a list")
        if len(raw) > 1:
            raise validation_error("Only one sort is supported per search request")
        sorts = []
        for item in raw:
            if isinstance(item, str):
                name, descending = item.lstrip("-"), item.startswith("-")
            elif isinstance(item, dict) and item.get("propertyName"):
                name = str(item["propertyName"])
                descending = str(item.get("direction", "ASCENDING")).upper() == "DESCENDING"
            else:
                raise validation_error("Invalid input JSON: a sort needs a propertyName")
            sorts.append((name, descending))
        return sorts

    # -- evaluation --------------------------------------------------------------------------

    def run(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int | None]:
        """Filter, sort and page records; returns ``(page, total, next_after)``."""
        hits = [r for r in records if self._matches(r)]
        if self.sorts:
            name, descending = self.sorts[0]
            prop = self._registry.get(self.object_type, name)
            ptype = prop["type"] if prop else "string"
            present = [r for r in hits if r["properties"].get(name) not in (None, "")]
            absent = [r for r in hits if r["properties"].get(name) in (None, "")]
            present.sort(key=lambda r: _sort_key(r["properties"][name], ptype), reverse=descending)
            hits = present + absent
        total = len(hits)
        capped = hits[:RESULT_CAP]
        page = capped[self.after : self.after + self.limit]
        next_after = self.after + self.limit if self.after + self.limit < total else None
        return page, total, next_after

    def keyset_window(self) -> Window | None:
        """The request as a window on its ascending sort property plus other filters, if it is one.

        That is how a client pages through everything: every group holds the same range filters
        on the sort property (``GT`` the last value read) beside filters that do not change from
        page to page. None for anything else (a text query, no or a descending sort, a group
        without such a range, windows that differ between groups, bounds that are not numbers).
        """
        if self.query or len(self.sorts) != 1 or self.sorts[0][1] or not self.groups:
            return None
        name = self.sorts[0][0]
        prop = self._registry.get(self.object_type, name)
        if prop is None or prop["type"] not in _ORDERED_TYPES:
            return None
        ranges, others = [], []
        for group in self.groups:
            on_sort = [
                f for f in group if f["propertyName"] == name and f["operator"] in _RANGE_OPERATORS
            ]
            if not on_sort:
                return None
            ranges.append(on_sort)
            others.append([f for f in group if f not in on_sort])
        if any(r != ranges[0] for r in ranges):
            return None
        low, high = (-math.inf, True), (math.inf, True)
        for flt in ranges[0]:
            value = _comparable(flt["value"], prop["type"])
            top = (
                _comparable(flt["highValue"], prop["type"])
                if flt["operator"] == "BETWEEN"
                else value
            )
            if (
                not isinstance(value, float)
                or not isinstance(top, float)
                or math.isnan(value + top)
            ):
                return None
            operator = flt["operator"]
            if operator in ("GT", "GTE", "EQ", "BETWEEN"):
                low = max(low, (value, operator != "GT"), key=_lower_bound_order)
            if operator in ("LT", "LTE", "EQ", "BETWEEN"):
                # At one value an exclusive bound (False) sorts first: the tighter one.
                high = min(high, (top, operator != "LT"))
        return Window(name, prop["type"], low, high, others)

    def _matches(self, rec: dict[str, Any]) -> bool:
        if self.query and not self._query_matches(rec):
            return False
        if not self.groups:
            return True
        return any(all(_test(f, rec["properties"]) for f in group) for group in self.groups)

    def _query_matches(self, rec: dict[str, Any]) -> bool:
        tokens: list[str] = []
        for name in QUERY_PROPERTIES.get(self.object_type, []):
            value = rec["properties"].get(name)
            if value:
                tokens.extend(t.lower() for t in _TOKEN.findall(value))
                tokens.append(value.lower())
        words = [w.lower() for w in _TOKEN.findall(self.query)]
        return all(any(t.startswith(w) for t in tokens) for w in words)


@dataclass(frozen=True)
class Window:
    """A keyset page request: a range on the sort property, and the filters beside it."""

    name: str
    ptype: str
    low: tuple[float, bool]
    """Lowest value and whether it is included."""
    high: tuple[float, bool]
    """Highest value and whether it is included."""
    others: list[list[dict[str, Any]]]
    """Per filter group, its filters other than the range (an empty group lets everything in)."""


def _lower_bound_order(bound: tuple[float, bool]) -> tuple[float, bool]:
    value, inclusive = bound
    return value, not inclusive  # at one value, an exclusive bound is the tighter one


@dataclass(frozen=True)
class _Order:
    """A type's records that hold a number in one property, in search order."""

    version: int
    keys: list[float]
    """The property's value of each record, ascending (ties in id order, as the scan sorts)."""
    records: list[dict[str, Any]]


class SearchIndex:
    """Keyset searches answered without reading every record.

    A client reading a whole object type pages with a window on the sort property and repeats its
    other filters on every page. Answered by filtering and sorting every record, each page cost
    seconds at 100,000 contacts. Here a type's records are kept in sort order, rebuilt after it
    is written to; a window is two bisections, and the other filters are evaluated once per
    record and write, with running counts for the total. The answer is the scan's, record for
    record (``tests/contract/test_hubspot_sandbox_search.py`` compares them); any request this
    does not cover is scanned.
    """

    SELECTIONS_KEPT = 16
    """Sets of other filters remembered per type and version (a client uses one or two)."""

    def __init__(self, records: ObjectRepo) -> None:
        self._records = records
        self._lock = threading.Lock()
        self._orders: dict[tuple[str, str, str], _Order] = {}
        self._selections: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()

    def run(self, request: SearchRequest) -> tuple[list[dict[str, Any]], int, int | None]:
        """The request's ``(page, total, next_after)``, as :meth:`SearchRequest.run` gives it."""
        window = request.keyset_window()
        order = self._order(request.object_type, window) if window is not None else None
        if window is None or order is None:
            return request.run(self._records.all(request.object_type))
        value, inclusive = window.low
        start = (bisect.bisect_left if inclusive else bisect.bisect_right)(order.keys, value)
        value, inclusive = window.high
        stop = (bisect.bisect_right if inclusive else bisect.bisect_left)(order.keys, value)
        stop = max(start, stop)
        passed = self._passed(request.object_type, window, order)
        total = passed[stop] - passed[start]
        wanted = range(request.after, min(request.after + request.limit, RESULT_CAP, total))
        page: list[dict[str, Any]] = []
        if len(wanted):
            # The hit ranked r is at the first position where the running count reaches r + 1.
            first = bisect.bisect_left(passed, passed[start] + wanted.start + 1, start, stop + 1)
            for at in range(first - 1, stop):
                if passed[at + 1] > passed[at]:
                    page.append(order.records[at])
                    if len(page) == len(wanted):
                        break
        after = request.after + request.limit
        return page, total, after if after < total else None

    def _order(self, object_type: str, window: Window) -> _Order | None:
        """The records in order of the window's property; None where the scan would differ."""
        key = (object_type, window.name, window.ptype)
        with self._lock:
            held = self._orders.get(key)
            if held is not None and held.version == self._records.version(object_type):
                return held
            version, records = self._records.snapshot(object_type)
            entries = []
            for rec in records:
                raw = rec["properties"].get(window.name)
                if raw in (None, ""):
                    continue  # no value: outside every range
                value = _comparable(raw, window.ptype)
                if not isinstance(value, float):
                    continue  # not a number: a range filter never matches it either
                if math.isnan(value) or _sort_key(raw, window.ptype) != (0, value, ""):
                    return None  # sorted and filtered by different readings: scan instead
                entries.append((value, int(rec["id"]), rec))
            entries.sort(key=lambda entry: entry[:2])
            order = _Order(version, [e[0] for e in entries], [e[2] for e in entries])
            self._orders[key] = order
            return order

    def _passed(self, object_type: str, window: Window, order: _Order) -> list[int]:
        """Running count of the ordered records that pass the other filters (one more entry)."""
        # Keyed as the order is (a property's type can change without a record being written),
        # plus its version and the filters.
        others = json.dumps(window.others, sort_keys=True)
        key = (object_type, window.name, window.ptype, order.version, others)
        with self._lock:
            held = self._selections.get(key)
            if held is not None:
                self._selections.move_to_end(key)
                return held
        groups = window.others
        passes = (
            any(all(_test(f, rec["properties"]) for f in group) for group in groups)
            for rec in order.records
        )
        counts = list(itertools.accumulate(passes, initial=0))
        with self._lock:
            self._selections[key] = counts
            while len(self._selections) > self.SELECTIONS_KEPT:
                self._selections.popitem(last=False)
        return counts


def _sort_key(value: str, ptype: str) -> Any:
    if ptype == "number":
        try:
            return (0, float(value), "")
        except ValueError:
            return (1, 0.0, value.lower())
    if ptype in ("datetime", "date"):
        ms = epoch_ms(value)
        return (0, float(ms), "") if ms is not None else (1, 0.0, value.lower())
    return (0, 0.0, value.lower())


def _comparable(value: Any, ptype: str) -> Any:
    """A filter or stored value in a form that compares as HubSpot compares that type."""
    text = str(value).strip()
    if ptype == "number":
        try:
            return float(text)
        except ValueError:
            return text.lower()
    if ptype in ("datetime", "date"):
        ms = epoch_ms(text)
        return float(ms) if ms is not None else text.lower()
    return text.lower()


def _test(flt: dict[str, Any], properties: dict[str, str]) -> bool:
    operator, ptype = flt["operator"], flt["type"]
    raw = properties.get(flt["propertyName"])
    has = raw not in (None, "")
    if operator == "HAS_PROPERTY":
        return has
    if operator == "NOT_HAS_PROPERTY":
        return not has
    if operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN") and not has:
        return True
    if not has:
        return False
    current = _comparable(raw, ptype)
    if operator in ("IN", "NOT_IN"):
        inside = any(_equal(current, _comparable(v, ptype)) for v in flt["values"])
        return inside if operator == "IN" else not inside
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        found = _contains_token(str(raw), str(flt["value"]))
        return found if operator == "CONTAINS_TOKEN" else not found
    wanted = _comparable(flt["value"], ptype)
    if operator == "EQ":
        return _equal(current, wanted)
    if operator == "NEQ":
        return not _equal(current, wanted)
    if operator == "BETWEEN":
        high = _comparable(flt["highValue"], ptype)
        return _ordered(wanted, current) and _ordered(current, high)
    if type(current) is not type(wanted):
        return False
    return {
        "LT": current < wanted,
        "LTE": current <= wanted,
        "GT": current > wanted,
        "GTE": current >= wanted,
    }[operator]


def _equal(left: Any, right: Any) -> bool:
    return type(left) is type(right) and left == right


def _ordered(low: Any, high: Any) -> bool:
    return type(low) is type(high) and low <= high


def _contains_token(value: str, pattern: str) -> bool:
    pattern = pattern.lower()
    text = value.lower()
    if "*" in pattern:
        return fnmatch.fnmatchcase(text, pattern) or any(
            fnmatch.fnmatchcase(token, pattern) for token in _TOKEN.findall(text)
        )
    return text == pattern or pattern in _TOKEN.findall(text)
