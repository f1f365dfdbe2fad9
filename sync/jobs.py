"""Jobs that move data between a tenant's CRM and the store.

Every job is a module-level function taking ids, enqueued by dotted path. A tenant that needs
re-authorisation cannot be worked for, but its work must not be lost: such jobs are parked in the
store and queued again by the provisioning that follows the next successful install.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from connectors.base import Connector, ReauthRequired, connector_for
from core.services import Services, current
from core.store import Store, UpsertResult

log = logging.getLogger(__name__)

BACKFILL_ENTITIES = ("user", "account", "lead", "contact", "opportunity", "activity", "note")
"""Backfilled in this order, so records arrive after the owners and accounts they point to."""
BACKFILL_SLICE_S = 240.0
"""A backfill job hands over to a fresh job after this long, staying far inside rq's timeout."""
PREFETCH_SKIPPED = frozenset({"opportunity"})
"""Entities whose storing calls the CRM itself (deals read their field history): their pages are
read one at a time, so a connector is never used by two threads at once."""
RECONCILE_INTERVAL_S = 900.0
"""How often each tenant is swept for changes whose webhooks never arrived."""
RECONCILE_OVERLAP_S = 300.0
"""Each sweep starts this long before the last one ended: CRM timestamps are set at commit, and a
long transaction can commit a change stamped earlier than a sweep that already ran."""
VECTORS_PER_SWEEP = 5000
"""Notes embedded again per sweep when their vectors come from an older embedding model (45-65 s
of CPU); a store of 100,000 such notes is brought over in 20 sweeps."""

T = TypeVar("T")


def run_for_tenant(
    func: str, tenant_id: str, args: tuple[Any, ...], work: Callable[[Services, Connector], T]
) -> T | None:
    """Run ``work`` for an active tenant; park it when the tenant needs re-authorisation."""
    services = current()
    tenant = services.registry.get(tenant_id)
    job_id = f"{func}:{':'.join(str(a) for a in args)}"
    if tenant.status == "uninstalled":
        log.info("skipping %s: tenant %s is uninstalled", func, tenant_id)
        return None
    if tenant.status == "needs_reauth":
        services.store.park_job(
            tenant_id, job_id, func, args, tenant.status_reason or "needs_reauth"
        )
        log.warning("parked %s until tenant %s is installed again", job_id, tenant_id)
        return None
    try:
        return work(services, connector_for(tenant_id, services.connector_context))
    except ReauthRequired as exc:
        if services.registry.get(tenant_id).status != "needs_reauth":
            services.registry.set_status(tenant_id, "needs_reauth", exc.message)
        services.store.park_job(tenant_id, job_id, func, args, exc.message)
        log.warning("parked %s: %s", job_id, exc.message)
        return None


def store_records(
    services: Services,
    tenant_id: str,
    crm: str,
    entity: str,
    records: list[dict[str, Any]],
    connector: Connector | None = None,
    *,
    backfill: bool = False,
) -> UpsertResult:
    """Upsert synced records, honouring consent: the one way sync jobs write to the store.

    Notes of a lead or contact whose consent forbids processing are stored without an embedding,
    and when a synced person now forbids it, the embeddings of their notes are dropped. With the
    connector given, deals also bring their stage, close-date and amount history (forecast flags
    read it from ``copilot.field_history``). Deals that closed since the store last saw them (or
    arrive closed, outside a backfill) queue ``copilot.jobs.learn_from_closed_deals``; a backfill
    leaves that to the segment clustering that follows it.
    """
    from scoring.features import consent_blocked

    unembedded: set[str] = set()
    if entity == "note":
        for link, parent in (("lead_id", "lead"), ("contact_id", "contact")):
            parent_ids = sorted({str(r[link]) for r in records if r.get(link)})
            blocked = {
                p["crm_id"]
                for p in services.store.get_many(tenant_id, parent, parent_ids)
                if consent_blocked(p, crm)
            }
            unembedded.update(r["crm_id"] for r in records if r.get(link) in blocked)
    closed = []
    if entity == "opportunity":
        closed = _newly_closed(services.store, tenant_id, records, backfill)
    result = services.store.upsert(tenant_id, entity, records, unembedded=unembedded)
    if closed:
        services.queue.enqueue(
            "copilot.jobs.learn_from_closed_deals", tenant_id, closed, queue="low"
        )
    if entity == "opportunity" and connector is not None and records:
        from copilot.field_history import save_history

        history = connector.field_history(entity, [r["crm_id"] for r in records])
        save_history(services.store, tenant_id, history)
    if entity in ("lead", "contact"):
        withdrawn = [r["crm_id"] for r in records if consent_blocked(r, crm)]
        if withdrawn:
            services.store.clear_note_vectors(tenant_id, f"{entity}_id", withdrawn)
    return result


def _newly_closed(
    store: Store, tenant_id: str, records: list[dict[str, Any]], backfill: bool
) -> list[str]:
    """Ids of closed deals in a synced batch that the store held open (or, live, not at all)."""
    closed = [str(r["crm_id"]) for r in records if r.get("is_closed")]
    if not closed:
        return []
    held = {
        r["crm_id"]: bool(r["is_closed"])
        for r in store.query(
            tenant_id, "opportunity", filters={"crm_id": closed}, columns=["crm_id", "is_closed"]
        )
    }
    return [i for i in closed if held.get(i) is False or (i not in held and not backfill)]


def provision_tenant(tenant_id: str) -> dict[str, Any]:
    """Create or complete everything the manifest defines, then start syncing.

    After a re-install, jobs parked while the tenant needed re-authorisation are queued again.
    """
    services = current()
    connector = connector_for(tenant_id, services.connector_context)
    plan = connector.install()
    services.registry.set_status(tenant_id, "active")
    resumed = resume_parked_jobs(tenant_id)
    services.queue.enqueue(
        "sync.jobs.backfill_tenant", tenant_id, job_id=f"backfill:{tenant_id}", queue="low"
    )
    schedule_reconcile(tenant_id)
    return {
        "tenant_id": tenant_id,
        "changes": [f"{item.action} {item.kind} {item.target}" for item in plan.changes],
        "resumed_jobs": resumed,
    }


def resume_parked_jobs(tenant_id: str) -> int:
    """Queue again every job parked for a tenant; returns how many."""
    services = current()
    resumed = 0
    for parked in services.store.parked_jobs(tenant_id):
        services.queue.enqueue(parked["func"], *parked["args"], queue="default")
        services.store.unpark_job(tenant_id, parked["job_id"])
        resumed += 1
    return resumed


def backfill_tenant(tenant_id: str) -> list[str]:
    """Queue the backfill of every entity for a tenant (each resumes from its checkpoint)."""
    services = current()
    queued = []
    started = datetime.now(UTC).isoformat()
    for entity in BACKFILL_ENTITIES:
        # Reconciliation takes over from the moment the backfill started, so nothing falls between.
        if services.store.get_checkpoint(tenant_id, f"reconcile:{entity}") is None:
            services.store.put_checkpoint(tenant_id, f"reconcile:{entity}", {"since": started})
        job_id = services.queue.enqueue(
            "sync.jobs.backfill_stream",
            tenant_id,
            entity,
            job_id=f"backfill:{tenant_id}:{entity}",
            queue="low",
        )
        if job_id:
            queued.append(job_id)
    return queued


def backfill_stream(tenant_id: str, entity: str) -> dict[str, Any] | None:
    """Copy every record of one entity into the store, handing over to a fresh job when long."""

    def work(services: Services, connector: Connector) -> dict[str, Any]:
        progress = run_backfill(services, connector, tenant_id, entity, BACKFILL_SLICE_S)
        if not progress["done"]:
            services.queue.enqueue("sync.jobs.backfill_stream", tenant_id, entity, queue="low")
        elif _backfill_complete(services.store, tenant_id):
            services.queue.enqueue(
                "sync.jobs.after_backfill", tenant_id, job_id=f"after-backfill:{tenant_id}",
                queue="default",
            )  # fmt: skip
        return progress

    return run_for_tenant("sync.jobs.backfill_stream", tenant_id, (tenant_id, entity), work)


def run_backfill(
    services: Services,
    connector: Connector,
    tenant_id: str,
    entity: str,
    slice_s: float | None = None,
    on_page: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Copy an entity page by page, saving a checkpoint after each page is stored.

    A crash or a kill loses at most the page in flight: the next run starts after the last saved
    checkpoint, and the store's newer-only upsert makes a repeated page harmless.

    Args:
        services: this process's services.
        connector: the tenant's connector.
        tenant_id: the tenant.
        entity: the canonical entity to copy.
        slice_s: stop after this long (the caller continues later); None runs to the end.
        on_page: called with the number of records in each stored page (progress bars).

    Returns:
        ``{"entity", "records", "done"}``, where ``records`` counts every run so far.
    """
    stream = f"backfill:{entity}"
    checkpoint = services.store.get_checkpoint(tenant_id, stream) or {}
    total = int(checkpoint.get("records", 0))
    if checkpoint.get("done"):
        return {"entity": entity, "records": total, "done": True}
    resume = {k: v for k, v in checkpoint.items() if k not in {"done", "records"}} or None
    started = time.monotonic()
    pages = connector.changed(entity, since=None, checkpoint=resume)
    with _Prefetch(pages, enabled=entity not in PREFETCH_SKIPPED) as ahead:
        for page in ahead:
            if page.records:
                store_records(
                    services, tenant_id, connector.crm, entity, page.records, connector,
                    backfill=True,
                )  # fmt: skip
                total += len(page.records)
                if on_page is not None:
                    on_page(len(page.records))
            saved = {**page.checkpoint, "done": page.done, "records": total}
            services.store.put_checkpoint(tenant_id, stream, saved)
            if page.done:
                return {"entity": entity, "records": total, "done": True}
            if slice_s is not None and time.monotonic() - started > slice_s:
                return {"entity": entity, "records": total, "done": False}
    last = services.store.get_checkpoint(tenant_id, stream) or {}
    services.store.put_checkpoint(tenant_id, stream, {**last, "done": True, "records": total})
    return {"entity": entity, "records": total, "done": True}


class _Prefetch:
    """Read a backfill's pages one step ahead on a thread, so the CRM is read while a page is stored.

    Storing a page is mostly CPU (mapping, embedding notes, LanceDB) and reading the next one is
    mostly waiting (the CRM, the request budget); side by side, neither waits for the other. At
    most one page waits in the hand-off while the next is read. Leaving the ``with`` block early (a
    time slice ran out) stops the reader at its next hand-off; pages it read ahead are dropped,
    unsaved, and read again from the checkpoint by the job that continues. An error reading a page
    is raised where the page would have been used.
    """

    _END = object()

    def __init__(self, pages: Iterator[T], *, enabled: bool = True) -> None:
        self._pages = pages
        self._enabled = enabled
        self._handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()

    def __enter__(self) -> Iterator[Any]:
        if not self._enabled:
            return self._pages
        threading.Thread(target=self._read, name="backfill-prefetch", daemon=True).start()
        return self._ahead()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _ahead(self) -> Iterator[Any]:
        while True:
            page, error = self._handoff.get()
            if error is not None:
                raise error
            if page is self._END:
                return
            yield page

    def _read(self) -> None:
        try:
            for page in self._pages:
                if not self._hand_over(page, None):
                    return
            self._hand_over(self._END, None)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            self._hand_over(self._END, exc)

    def _hand_over(self, page: Any, error: BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._handoff.put((page, error), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


def _backfill_complete(store: Store, tenant_id: str) -> bool:
    progress = backfill_progress(store, tenant_id)
    return all(progress.get(entity, {}).get("done") for entity in BACKFILL_ENTITIES)


def after_backfill(tenant_id: str) -> dict[str, Any]:
    """Once a tenant's history is in: train both models and score every open record with them.

    Each kind is trained by a job of its own, so the two models train side by side on two workers
    and each kind's batch scoring starts as soon as its own model is ready.
    """
    services = current()
    queued = []
    for kind in ("lead", "opportunity"):
        job_id = services.queue.enqueue(
            "sync.jobs.train_and_score", tenant_id, kind,
            job_id=f"after-backfill:{tenant_id}:{kind}", queue="default",
        )  # fmt: skip
        if job_id:
            queued.append(job_id)
    # Segments are formed once the history is in, then daily (the job reschedules itself).
    services.queue.enqueue(
        "copilot.jobs.refresh_segments", tenant_id, job_id=f"segments:{tenant_id}", queue="low"
    )
    return {"queued": queued}


def train_and_score(tenant_id: str, kind: str) -> dict[str, Any]:
    """Train a tenant's model of one kind, then queue the batch scoring of its open records."""
    from scoring.training import train_job

    report = train_job(tenant_id, kind)
    current().queue.enqueue(
        "scoring.jobs.score_all", tenant_id, kind, job_id=f"score-all:{tenant_id}:{kind}",
        queue="default",
    )  # fmt: skip
    return {k: report.get(k) for k in ("model_version", "promoted", "auc")}


def backfill_progress(store: Store, tenant_id: str) -> dict[str, dict[str, Any]]:
    """Per entity: records copied so far and whether the backfill is done."""
    progress = {}
    for entity in BACKFILL_ENTITIES:
        checkpoint = store.get_checkpoint(tenant_id, f"backfill:{entity}")
        if checkpoint is not None:
            progress[entity] = {
                "records": int(checkpoint.get("records", 0)),
                "done": bool(checkpoint.get("done")),
            }
    return progress


# --------------------------------------------------------------------------------------------------
# Real-time changes from webhooks

FETCH_CHUNK = 500
"""Ids fetched per connector call; the connector splits further to the API's batch size."""
CHILD_LINKS = {
    "lead": "lead_id",
    "contact": "contact_id",
    "account": "account_id",
    "opportunity": "opportunity_id",
}
"""Entities whose deletion or merge carries over to the notes and activities that point at them."""


SHARED_OBJECTS = {("hubspot", "contacts"): ("lead", "contact")}
"""CRM objects that feed more than their manifest entity. HubSpot keeps leads and customers in
one object; its connector sorts contacts into ``lead`` and ``contact`` by lifecycle stage, and a
converted lead is both (``connectors.hubspot.mappers.is_lead``/``is_contact``). A change to a
contact must reach both tables: reading it as a ``lead`` only left every customer-stage contact
stale after its first backfill."""


def _entity(tenant_crm: str, object_name: str) -> str:
    from manifests.loader import load_manifest

    return load_manifest(tenant_crm).canonical_entity(object_name)


def _entities(tenant_crm: str, object_name: str) -> tuple[str, ...]:
    """Every canonical entity a CRM object's records may belong to."""
    return SHARED_OBJECTS.get((tenant_crm, object_name)) or (_entity(tenant_crm, object_name),)


def fetch_changes(tenant_id: str, object_name: str) -> dict[str, Any] | None:
    """Fetch every record id pending for (tenant, object) and upsert the records.

    Ids are claimed when the job starts and released only once their records are stored, so ids
    that arrive meanwhile schedule another fetch, and a failed fetch is retried with all of them.
    """

    def work(services: Services, connector: Connector) -> dict[str, Any]:
        scope = f"{tenant_id}:{object_name}"
        claim = services.events.claim(scope)
        ids = claim.ids
        entities = _entities(connector.crm, object_name)
        stored = 0
        found: dict[str, list[str]] = {entity: [] for entity in entities}
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            for entity in entities:
                records = connector.fetch(entity, chunk)
                if records:
                    result = store_records(
                        services, tenant_id, connector.crm, entity, records, connector
                    )
                    stored += result.inserted + result.updated
                    found[entity].extend(r["crm_id"] for r in records)
            # Only ids not changed again since the claim: a newer change needs the next fetch.
            services.events.done_pending(scope, chunk, claim.generation)
        for entity, crm_ids in found.items():
            if crm_ids:
                # Scoring decides what changed materially; unchanged results cost no write.
                services.queue.enqueue(
                    "scoring.jobs.score_changed", tenant_id, entity, crm_ids, queue="default"
                )
        return {"object": object_name, "ids": len(ids), "stored": stored}

    return run_for_tenant("sync.jobs.fetch_changes", tenant_id, (tenant_id, object_name), work)


def delete_records(tenant_id: str, object_name: str, crm_ids: list[str]) -> dict[str, int]:
    """Remove deleted records, and the notes and activities attached to them, from the store."""
    services = current()
    tenant = services.registry.get(tenant_id)
    removed: dict[str, int] = {}
    for entity in _entities(tenant.crm, object_name):
        for name, count in _remove(services, tenant_id, entity, crm_ids).items():
            removed[name] = removed.get(name, 0) + count
    return removed


def _remove(services: Services, tenant_id: str, entity: str, crm_ids: list[str]) -> dict[str, int]:
    removed = {entity: services.store.delete(tenant_id, entity, crm_ids)}
    if entity in CHILD_LINKS:
        for child in ("note", "activity"):
            link = CHILD_LINKS[entity]
            removed[child] = services.store.delete_where(tenant_id, child, link, crm_ids)
    return removed


def merge_records(
    tenant_id: str, object_name: str, primary_id: str, merged_ids: list[str]
) -> dict[str, int]:
    """Apply a CRM merge: drop the merged-away records and re-point what referred to them.

    The surviving record is fetched again, since a merge changes its fields.
    """
    services = current()
    tenant = services.registry.get(tenant_id)
    moved: dict[str, int] = {}
    for entity in _entities(tenant.crm, object_name):
        moved[entity] = services.store.delete(tenant_id, entity, merged_ids)
        if entity in CHILD_LINKS:
            for child in ("note", "activity"):
                moved[child] = moved.get(child, 0) + services.store.repoint(
                    tenant_id, child, CHILD_LINKS[entity], merged_ids, primary_id
                )
    scope = f"{tenant_id}:{object_name}"
    if services.events.add_pending(scope, [primary_id]):
        services.queue.enqueue("sync.jobs.fetch_changes", tenant_id, object_name, queue="high")
    return moved


def refetch_object(tenant_id: str, object_name: str) -> dict[str, Any] | None:
    """Re-read every record of an object after a gap or overflow the CRM could not itemise."""

    def work(services: Services, connector: Connector) -> dict[str, Any]:
        stored = 0
        for entity in _entities(connector.crm, object_name):
            for page in connector.changed(entity, since=None):
                if page.records:
                    result = store_records(
                        services, tenant_id, connector.crm, entity, page.records, connector
                    )
                    stored += result.inserted + result.updated
        return {"object": object_name, "stored": stored}

    return run_for_tenant("sync.jobs.refetch_object", tenant_id, (tenant_id, object_name), work)


# --------------------------------------------------------------------------------------------------
# Reconciliation


def schedule_reconcile(tenant_id: str, delay_s: float = RECONCILE_INTERVAL_S) -> str | None:
    """Queue the tenant's next sweep; one per interval slot, so repeated calls do not pile up."""
    slot = int((time.time() + delay_s) // RECONCILE_INTERVAL_S)
    return current().queue.enqueue_in(
        delay_s, "sync.jobs.reconcile_tenant", tenant_id, job_id=f"reconcile:{tenant_id}:{slot}",
        queue="low",
    )  # fmt: skip


def reconcile_tenant(tenant_id: str, reschedule: bool = True) -> dict[str, Any] | None:
    """Sweep every entity for changes and deletions since the last sweep, then schedule the next.

    This is what catches webhooks the CRM never delivered (or delivered to a Fieldwise that was
    down past the CRM's retries): it reads by modification time, so nothing depends on events.
    A sweep also embeds again a batch of notes whose vectors an older embedding model made.
    """

    def work(services: Services, connector: Connector) -> dict[str, Any]:
        now = datetime.now(UTC)
        summary: dict[str, Any] = {}
        for entity in BACKFILL_ENTITIES:
            stream = f"reconcile:{entity}"
            checkpoint = services.store.get_checkpoint(tenant_id, stream)
            if checkpoint is None:
                # Never backfilled: a sweep cannot stand in for the first full copy.
                continue
            since = datetime.fromisoformat(checkpoint["since"]) - timedelta(
                seconds=RECONCILE_OVERLAP_S
            )
            stored = 0
            changed: list[str] = []
            for page in connector.changed(entity, since=since):
                if page.records:
                    result = store_records(
                        services, tenant_id, connector.crm, entity, page.records, connector
                    )
                    stored += result.inserted + result.updated
                    if result.inserted + result.updated:
                        changed.extend(r["crm_id"] for r in page.records)
            deleted = connector.deleted(entity, since, now)
            removed = _remove(services, tenant_id, entity, deleted) if deleted else {}
            if changed and entity in ("note", "activity"):
                # Salesforce sends no event for notes, so a sweep is how they arrive: they go
                # through scoring like fetched records, which refreshes their deals' copilot too.
                # Leads and deals are left out: a sweep also sees Fieldwise's own writes to them,
                # and their real changes come by webhook.
                services.queue.enqueue(
                    "scoring.jobs.score_changed", tenant_id, entity, changed, queue="default"
                )
            services.store.put_checkpoint(tenant_id, stream, {"since": now.isoformat()})
            summary[entity] = {"stored": stored, "deleted": removed.get(entity, 0)}
        refreshed, older = services.store.refresh_note_vectors(tenant_id, VECTORS_PER_SWEEP)
        if refreshed or older:
            summary["note_vectors"] = {"refreshed": refreshed, "older_model": older}
        return summary

    try:
        return run_for_tenant("sync.jobs.reconcile_tenant", tenant_id, (tenant_id,), work)
    finally:
        if reschedule and current().registry.get(tenant_id).status == "active":
            schedule_reconcile(tenant_id)
