"""Scoring jobs: real time after each sync fetch, and batch over a whole tenant.

Both are module-level functions taking ids, enqueued by dotted path. They score, route new and
unassigned leads, and hand the records whose results changed to the write-back job
(``sync.writeback.write_results``), which diffs against what it last wrote and writes through the
CRM's API. Scoring itself never calls the CRM, so it runs for a tenant that awaits
re-authorisation too; the write-back job parks itself in that case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.services import Services, current
from scoring.matching import match_leads
from scoring.predict import KINDS, ScoreResult, score_records
from scoring.settings import load_settings
from sync.writeback import queue_writeback

log = logging.getLogger(__name__)

BATCH_INTERVAL_S = 24 * 3600
"""Every open record is rescored (and drift checked) this often, besides event-driven scoring."""
PARENT_LINKS = {"lead": "lead_id", "opportunity": "opportunity_id"}
"""How a note or activity points at the records it changes the score of."""


def score_changed(tenant_id: str, entity: str, crm_ids: list[str]) -> dict[str, Any] | None:
    """Score records that just changed, route new leads, and queue their write-back.

    ``entity`` is the canonical entity that changed: ``lead`` and ``opportunity`` records are
    scored themselves; for a ``note`` or ``activity`` the leads and opportunities it belongs to are.
    """
    services = current()
    tenant = services.registry.get(tenant_id)
    if tenant.status == "uninstalled":
        log.info("skipping scoring: tenant %s is uninstalled", tenant_id)
        return None
    summary: dict[str, Any] = {}
    for kind, ids in targets(services, tenant_id, entity, crm_ids).items():
        results = score_and_match(services, tenant_id, kind, ids)
        changed = _changed_ids(results)
        queued = queue_writeback(services, tenant_id, kind, changed)
        summary[kind] = {"scored": len(results), "changed": len(changed), "writeback_jobs": queued}
        # Every targeted deal, not only rescored ones: a new note or activity moves its flags.
        summary[kind]["copilot_jobs"] = queue_copilot(services, tenant_id, kind, ids, results)
    return summary


def score_all(tenant_id: str, kind: str) -> dict[str, Any]:
    """Score every open record of a kind (batch), route unassigned leads, queue write-back."""
    services = current()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    results = score_and_match(services, tenant_id, kind, None)
    changed = _changed_ids(results)
    queued = queue_writeback(services, tenant_id, kind, changed)
    copilot_jobs = queue_copilot(services, tenant_id, kind, [r.crm_id for r in results], results)
    day = int(time.time() // BATCH_INTERVAL_S) + 1
    services.queue.enqueue_in(
        BATCH_INTERVAL_S, "scoring.jobs.score_all", tenant_id, kind,
        job_id=f"score-all:{tenant_id}:{kind}:{day}", queue="low",
    )  # fmt: skip
    return {
        "scored": len(results),
        "changed": len(changed),
        "writeback_jobs": queued,
        "copilot_jobs": copilot_jobs,
    }


def score_and_match(
    services: Services,
    tenant_id: str,
    kind: str,
    crm_ids: Sequence[str] | None,
    *,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[ScoreResult]:
    """Score records and, for leads, attach owner suggestions to the new and unassigned ones."""
    results = score_records(services, tenant_id, kind, crm_ids, dry_run=dry_run, on_batch=on_batch)
    if kind != "lead" or not results:
        return results
    tenant = services.registry.get(tenant_id)
    outcomes = match_leads(
        services.store,
        tenant_id,
        [r.crm_id for r in results],
        load_settings(services.registry, tenant_id),
        integration_user_id=tenant.integration_user_id,
        record=not dry_run,
    )
    for result in results:
        outcome = outcomes.get(result.crm_id)
        if outcome is not None:
            result.suggested_owner = outcome.suggested_owner
            result.match_reason = outcome.match_reason
            result.assign_owner = outcome.assign_owner
            result.extra["routed"] = True
    return results


def targets(
    services: Services, tenant_id: str, entity: str, crm_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The records to score for a change of ``entity`` records, by kind."""
    if entity in KINDS:
        return {entity: list(dict.fromkeys(crm_ids))} if crm_ids else {}
    if entity not in ("note", "activity") or not crm_ids:
        return {}
    rows = services.store.get_many(tenant_id, entity, list(crm_ids))
    found: dict[str, list[str]] = {}
    for kind, link in PARENT_LINKS.items():
        ids = list(dict.fromkeys(r[link] for r in rows if r.get(link)))
        if ids:
            found[kind] = ids
    return found


def queue_copilot(
    services: Services,
    tenant_id: str,
    kind: str,
    crm_ids: Sequence[str],
    results: Sequence[ScoreResult],
) -> list[str]:
    """Queue the copilot's refresh: every given deal, and the leads that are Hot now."""
    from copilot.jobs import queue_refresh

    if kind == "lead":
        hot = load_settings(services.registry, tenant_id).grades[0][0]
        crm_ids = [r.crm_id for r in results if r.grade == hot]
    return queue_refresh(services, tenant_id, kind, crm_ids) if crm_ids else []


def _changed_ids(results: Sequence[ScoreResult]) -> list[str]:
    """Records whose fields may need writing: material change, stale, or newly routed."""
    return [r.crm_id for r in results if r.material or r.stale or r.extra.get("routed")]
