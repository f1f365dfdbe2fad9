"""What the console's pages show, read so no request scans a large tenant's rows in full.

* Logs (write-back audit, score ledger) are paginated newest first. Filters, the time range,
  the order and the page's offset all go into one LanceDB query (``Store.read_sorted``), which
  keeps only the top rows while it scans; the total is a ``count_rows`` with the same filter.
  Neither turns rows into Python objects beyond the 50 shown.
* The weekly grade distribution reads three columns of the score ledger once and is cached for
  :data:`AGGREGATE_TTL_S` per tenant and kind.
* Overview figures come from the registry, the queue backend and the shared request counter.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from connectors.hubspot import client as hubspot_client
from connectors.salesforce import client as salesforce_client
from core.queue import QueueUnavailable
from core.services import Services
from core.store import AUDIT_SCHEMA, SCORE_LEDGER_SCHEMA
from sync.jobs import BACKFILL_ENTITIES, backfill_progress

PAGE_SIZE = 50
MAX_PAGE = 200
"""Deepest page served; filters narrow further back than 10,000 rows."""
AGGREGATE_TTL_S = 60.0
DAY_S = 86_400.0


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

_cache: dict[tuple[str, ...], tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def cached(key: tuple[str, ...], build: Callable[[], Any], ttl_s: float = AGGREGATE_TTL_S) -> Any:
    """``build()``'s value, kept for ``ttl_s`` per key in this process."""
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl_s:
            return hit[1]
    value = build()
    with _cache_lock:
        _cache[key] = (time.monotonic(), value)
    return value


def grade_weeks(
    services: Services, tenant_id: str, kind: str, labels: Sequence[str], weeks: int = 26
) -> list[dict[str, Any]]:
    """Per week (Monday), how many records held each grade at the week's end (last ``weeks``)."""

    def build() -> list[dict[str, Any]]:
        rows = services.store.read_rows(
            tenant_id, "score_ledger", SCORE_LEDGER_SCHEMA, {"kind": kind},
            columns=["crm_id", "scored_at", "new_grade"],
        )  # fmt: skip
        if not rows:
            return []
        rows.sort(key=lambda r: r["scored_at"])
        held: dict[str, str] = {}
        counts: Counter[str] = Counter()
        out: list[dict[str, Any]] = []

        def week_of(moment: datetime) -> str:
            return (moment - timedelta(days=moment.weekday())).date().isoformat()

        current = week_of(rows[0]["scored_at"])
        for row in rows:
            week = week_of(row["scored_at"])
            if week != current:
                out.append({"week": current, "counts": dict(counts)})
                current = week
            previous = held.get(row["crm_id"])
            if previous is not None:
                counts[previous] -= 1
            held[row["crm_id"]] = row["new_grade"]
            counts[row["new_grade"]] += 1
        out.append({"week": current, "counts": dict(counts)})
        return [
            {"week": w["week"], "counts": {g: w["counts"].get(g, 0) for g in labels}}
            for w in out[-weeks:]
        ]

    result: list[dict[str, Any]] = cached(("grade_weeks", tenant_id, kind, *labels), build)
    return result
