"""``GET /healthz``: whether Fieldwise can do its work right now, as JSON.

Reports the queue backend (Redis reachable, queue depths), the store (reachable, tables), scoring
models and installed tenants' tokens. The answer is 200 when every dependency works and 503
otherwise, so load balancers and orchestrators can act on it. ``fieldwise status`` prints the same.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify

from core.queue import JobQueue, QueueUnavailable
from core.store import Store
from handlers import context
from sync.jobs import backfill_progress

bp = Blueprint("health", __name__)


def collect_status(queue: JobQueue, store: Store) -> dict[str, Any]:
    """Check each dependency and say how it is."""
    checks: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        checks["redis"] = {"ok": True, **queue.health()}
        checks["redis"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    except QueueUnavailable as exc:
        checks["redis"] = {"ok": False, "error": str(exc)}
    try:
        tables = store.table_names()
        checks["store"] = {"ok": True, "uri": store.uri, "tables": tables}
    except Exception as exc:  # any storage failure is reported, not raised
        checks["store"] = {"ok": False, "uri": store.uri, "error": f"{type(exc).__name__}: {exc}"}
    checks["model"] = _model_status(store, checks["store"]["ok"])
    checks["tenants"] = _tenant_status(store, checks["store"]["ok"])
    healthy = checks["redis"]["ok"] and checks["store"]["ok"]
    return {"status": "ok" if healthy else "degraded", **checks}


def _model_status(store: Store, store_ok: bool) -> dict[str, Any]:
    if not store_ok:
        return {"ok": False, "error": "store unavailable"}
    # The model registry table appears with the first trained model.
    trained = "models" in store.table_names()
    detail = "models registered" if trained else "no model trained yet: run `fieldwise train`"
    return {"ok": True, "trained": trained, "detail": detail}


def _tenant_status(store: Store, store_ok: bool) -> dict[str, Any]:
    if not store_ok:
        return {"ok": False, "error": "store unavailable"}
    tenants = []
    for row in store.list_tenants():
        entry: dict[str, Any] = {
            "tenant_id": row["tenant_id"],
            "crm": row["crm"],
            "status": row["status"],
            "backfill": backfill_progress(store, row["tenant_id"]),
            # Brought over by the reconcile sweeps after an embedding model change.
            "notes_to_embed_again": store.count_older_note_vectors(row["tenant_id"]),
        }
        if row["status"] == "needs_reauth":
            # Syncing is paused until an admin installs again; queued work waits for it.
            entry["reason"] = row["status_reason"]
            entry["reinstall"] = f"/install/{row['crm']}"
        tenants.append(entry)
    if not tenants:
        return {"ok": True, "installed": [], "detail": "no CRM installed yet: see /install/<crm>"}
    return {"ok": all(t["status"] != "needs_reauth" for t in tenants), "installed": tenants}


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Report dependency status; 503 when any dependency is down."""
    services = context.services()
    status = collect_status(services.queue, services.store)
    return jsonify(status), 200 if status["status"] == "ok" else 503
