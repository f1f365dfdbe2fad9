"""What the console's pages show, read so no request scans a large tenant's rows in full.

* Logs (write-back audit, score ledger) are paginated newest first. Filters, the time range,
  the order and the page's offset all go into one LanceDB query (``Store.read_sorted``), which
  keeps only the top rows while it scans; the total is a ``count_rows`` with the same filter.
  Neither turns rows into Python objects beyond the 50 shown.
* The weekly grade distribution reads three columns of the score ledger and counts them with
  array operations; the store keeps the counts per tenant and kind until the ledger changes.
* Overview figures come from the registry, the queue backend and the shared request counter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.hubspot import client as hubspot_client
from connectors.salesforce import client as salesforce_client
from core.queue import QueueUnavailable
from core.services import Services
from core.store import AUDIT_SCHEMA, SCORE_LEDGER_SCHEMA
from sync.jobs import BACKFILL_ENTITIES, backfill_progress

PAGE_SIZE = 50
MAX_PAGE = 200
"""Deepest page served; filters narrow further back than 10,000 rows."""
DAY_S = 86_400.0
MICROS_PER_DAY = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True)
class Page:
    """One page of log rows, newest first."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int


def read_page(
    services: Services,
    tenant_id: str,
    table: str,
    schema: pa.Schema,
    time_column: str,
    *,
    filters: Mapping[str, Any],
    columns: Sequence[str],
    ties: Sequence[str] = ("crm_id",),
    present: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
) -> Page:
    """One page of ``table``'s rows matching ``filters`` and the time range, newest first.

    Args:
        services: the app's services.
        tenant_id: whose rows.
        table: a store table with ``schema``.
        schema: its schema.
        time_column: the column the log is ordered by.
        filters: equality filters (see ``Store.read_rows``).
        columns: the columns the page shows.
        ties: the columns that order rows of equal time (few: each one adds to the sort).
        present: columns that must hold a value (e.g. "any grade crossing").
        since: oldest time shown.
        until: newest time shown.
        page: 1-based page number (clamped to the last page and :data:`MAX_PAGE`).
    """
    span = (time_column, since, until) if since is not None or until is not None else None
    # Equal times are ordered by a record's key too, so pages never overlap or skip a row.
    order = [time_column, *ties]
    page = max(1, min(page, MAX_PAGE))
    rows, total = services.store.read_sorted(
        tenant_id, table, schema, filters, order_by=order, span=span, present=present,
        columns=columns, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
    )  # fmt: skip
    pages = max(1, -(-total // PAGE_SIZE))
    if not total:
        return Page([], 0, 1, 1)
    if page > pages:
        # Asked past the end: show the last page (a second, equally cheap read).
        page = min(pages, MAX_PAGE)
        rows, total = services.store.read_sorted(
            tenant_id, table, schema, filters, order_by=order, span=span, present=present,
            columns=columns, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
        )  # fmt: skip
    return Page(rows, total, page, pages)


def write_log(
    services: Services,
    tenant_id: str,
    *,
    crm_id: str | None = None,
    field: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
) -> Page:
    """The write-back audit log, newest first."""
    filters = {k: v for k, v in (("crm_id", crm_id), ("field", field), ("outcome", outcome)) if v}
    return read_page(
        services, tenant_id, "audit", AUDIT_SCHEMA, "at", filters=filters,
        columns=["object_name", "crm_id", "field", "old_json", "new_json", "model_version",
                 "reason", "outcome"], ties=["crm_id", "field"],
        since=since, until=until, page=page,
    )  # fmt: skip


def score_log(
    services: Services,
    tenant_id: str,
    *,
    kind: str = "lead",
    crm_id: str | None = None,
    grade: str | None = None,
    crossing: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
) -> Page:
    """The score ledger, newest first; ``crossing="any"`` keeps only grade changes."""
    filters: dict[str, Any] = {"kind": kind}
    if crm_id:
        filters["crm_id"] = crm_id
    if grade:
        filters["new_grade"] = grade
    present: tuple[str, ...] = ()
    if crossing == "any":
        present = ("crossing",)
    elif crossing:
        filters["crossing"] = crossing
    return read_page(
        services, tenant_id, "score_ledger", SCORE_LEDGER_SCHEMA, "scored_at", filters=filters,
        columns=["crm_id", "old_score", "new_score", "old_grade", "new_grade", "crossing",
                 "model_version", "reasons", "stale"],
        present=present, since=since, until=until, page=page,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Overview


def api_budget(services: Services, tenant: Mapping[str, Any]) -> dict[str, Any]:
    """Today's (rolling 24 h) calls against what Fieldwise may use for one tenant."""
    config = services.config
    if tenant["crm"] == "salesforce":
        share = config.salesforce_api_share
        key, allowed, allocation = salesforce_client.daily_budget(
            tenant["tenant_id"], tenant["external_id"], share
        )
        note = (
            f"{share:.0%} of the org's {allocation:,} daily calls"
            if allocation
            else f"{share:.0%} of the org's allocation (not seen yet)"
        )
    else:
        key, allowed, daily = hubspot_client.daily_budget(
            config, tenant["external_id"], tenant.get("integration_user_id"), _settings(tenant)
        )
        note = f"HubSpot's {daily:,} daily calls, less a safety margin"
    try:
        used: int | None = services.counter.used(key, DAY_S)
    except Exception as exc:  # a counter outage is shown on the page, not raised
        return {"used": None, "allowed": allowed, "note": f"counter unreachable: {exc}"}
    share_used = used / allowed if used is not None and allowed else None
    return {"used": used, "allowed": allowed, "share": share_used, "note": note}


def _settings(tenant: Mapping[str, Any]) -> dict[str, Any]:
    import json

    raw = tenant.get("settings_json")
    return json.loads(raw) if raw else {}


def overview(services: Services, failed_limit: int = 25) -> dict[str, Any]:
    """Everything the overview page shows."""
    store = services.store
    now = datetime.now(UTC)
    tenants = []
    for row in store.list_tenants():
        expires = row.get("token_expires_at")
        tenant_id = row["tenant_id"]
        progress = backfill_progress(store, tenant_id)
        streams = []
        for entity in BACKFILL_ENTITIES:
            reconcile = store.get_checkpoint(tenant_id, f"reconcile:{entity}") or {}
            streams.append(
                {
                    "entity": entity,
                    "records": progress.get(entity, {}).get("records"),
                    "backfill_done": progress.get(entity, {}).get("done", False),
                    "last_sync": reconcile.get("since"),
                }
            )
        tenants.append(
            {
                "tenant_id": tenant_id,
                "crm": row["crm"],
                "external_id": row["external_id"],
                "status": row["status"],
                "status_reason": row.get("status_reason"),
                "token_expires_at": expires,
                "token_expired": bool(expires and expires <= now),
                "budget": api_budget(services, row),
                "streams": streams,
                "parked": store.parked_jobs(tenant_id),
            }
        )
    queue: dict[str, Any]
    try:
        queue = {"ok": True, "depth": services.queue.depth(),
                 "failed": services.queue.failed(failed_limit)}  # fmt: skip
    except QueueUnavailable as exc:
        queue = {"ok": False, "error": str(exc), "depth": {}, "failed": []}
    try:
        events = {"ok": True, "counters": services.events.counters()}
    except QueueUnavailable as exc:
        events = {"ok": False, "error": str(exc), "counters": {}}
    return {"now": now, "tenants": tenants, "queue": queue, "events": events}


# --------------------------------------------------------------------------------------------------
# Aggregates for the model card


def grade_weeks(
    services: Services, tenant_id: str, kind: str, labels: Sequence[str], weeks: int = 26
) -> list[dict[str, Any]]:
    """Per week (Monday), how many records held each grade at the week's end (last ``weeks``).

    Only weeks with at least one ledger entry are listed, oldest first.
    """

    def build() -> list[dict[str, Any]]:
        table = services.store.read_arrow(
            tenant_id, "score_ledger", SCORE_LEDGER_SCHEMA, {"kind": kind},
            columns=["crm_id", "scored_at", "new_grade"],
        )  # fmt: skip
        return weekly_grade_counts(table, labels, weeks)

    # Kept until the next ledger write, by this process or another.
    key = ("grade_weeks", kind, weeks, *labels)
    result: list[dict[str, Any]] = services.store.memo(tenant_id, key, ["score_ledger"], build)
    return result


def weekly_grade_counts(
    table: pa.Table, labels: Sequence[str], weeks: int = 26
) -> list[dict[str, Any]]:
    """Grades held at the end of each week from ledger rows (``crm_id``, ``scored_at``, ``new_grade``).

    Entries are taken in time order (rows of equal time in table order); a record holds the grade
    of its latest entry. Computed on arrays: a large ledger has too many rows to visit one by one
    in Python within a page's time.

    Args:
        table: the ledger rows; rows without ``scored_at`` are left out.
        labels: the grades to count, in the order the page shows them.
        weeks: how many of the latest weeks to return.

    Returns:
        ``{"week": "YYYY-MM-DD" (the Monday), "counts": {label: records}}`` per week that has an
        entry, oldest first.
    """
    table = table.filter(pc.is_valid(table.column("scored_at")))
    if not table.num_rows:
        return []
    stamps = table.column("scored_at").cast(pa.int64()).to_numpy()
    order = np.argsort(stamps, kind="stable")
    record = _codes(table.column("crm_id"))[0][order]
    grade_codes, grade_names = _codes(table.column("new_grade"))
    grade = grade_codes[order]
    day = stamps[order] // MICROS_PER_DAY
    # 1970-01-01 was a Thursday (weekday 3): this is each entry's Monday, as a day number.
    monday = day - (day + 3) % 7
    week_starts = np.flatnonzero(np.r_[True, monday[1:] != monday[:-1]])
    week = np.cumsum(np.r_[True, monday[1:] != monday[:-1]]) - 1
    # Each entry moves its record from the grade of the record's previous entry to its own.
    by_record = np.argsort(record, kind="stable")
    same = record[by_record][1:] == record[by_record][:-1]
    previous = np.full(len(grade), -1, dtype=np.int64)
    previous[by_record[1:][same]] = grade[by_record[:-1][same]]
    grades = len(grade_names)
    cells = len(week_starts) * grades
    delta = np.bincount(week * grades + grade, minlength=cells)
    left = previous >= 0
    delta = delta - np.bincount(week[left] * grades + previous[left], minlength=cells)
    held = np.cumsum(delta.reshape(len(week_starts), grades), axis=0)
    column = {name: i for i, name in enumerate(grade_names)}
    out = []
    for position in range(max(0, len(week_starts) - weeks), len(week_starts)):
        start = _EPOCH_DAY + timedelta(days=int(monday[week_starts[position]]))
        counts = {g: int(held[position, column[g]]) if g in column else 0 for g in labels}
        out.append({"week": start.isoformat(), "counts": counts})
    return out


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """Each value's position in the column's distinct values (nulls too), and those values."""
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return indices, encoded.dictionary.to_pylist()
