"""Copilot jobs: the entry points the pipeline calls after scoring, sync and backfill.

Every job is a module-level function taking ids, enqueued by dotted path on ``services.queue``:

* :func:`refresh_deals` after deals are scored or a note or activity arrives on them: risk flags,
  the manager's forecast note, the deal's next step, and the battle card when a competitor is in
  play (``copilot.battle_cards``).
* :func:`refresh_leads` for Hot leads after scoring: an evidence-based next step and, when the
  tenant wants it (``auto_followup_hot``), a follow-up email draft.
* :func:`refresh_segments` after a backfill and then daily: ``copilot.segments.assign_segments``.
* :func:`learn_from_closed_deals` when sync sees deals close (``sync.jobs.store_records``):
  ``copilot.segments.on_deal_closed`` rebuilds the context documents of their segments.

Results go to the ``copilot_results`` table; records whose values changed get one write-back job
(``sync.writeback.write_results``), which merges them with scoring's results into one diff and one
batch per object. A generation that fails leaves the record's previous values in place and is
reported in the job result: a half result is never written. Records whose consent forbids
processing never reach the copilot.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from copilot.forecast import (
    FORECAST_NOTE_TASK,
    RiskFlag,
    deal_flags,
    deals_evidence,
    flags_value,
    load_open_deals,
    note_value,
    offline_note,
)
from copilot.llm import GenerationFailed, copilot_for
from copilot.next_steps import build_followup, lead_next_step, records_evidence, scored_reasons
from copilot.results import CopilotResult, load_results, save_results, values
from core.services import Services, current
from sync.writeback import queue_writeback

log = logging.getLogger(__name__)

REFRESH_CHUNK = 500
"""Record ids per copilot refresh job. A deal refresh job reads tenant-wide inputs once (stage
medians over the closed deals' history, the note matrix, each competitor's evidence: about 12 s
at 100,000 leads), so the 1,400 open deals of such a tenant are refreshed by three jobs."""
SEGMENTS_INTERVAL_S = 24 * 3600
"""Segments are re-clustered this often."""


def queue_refresh(
    services: Services, tenant_id: str, kind: str, crm_ids: Sequence[str]
) -> list[str]:
    """Queue copilot refresh jobs for deals (``opportunity``) or Hot leads (``lead``), chunked.

    Returns:
        The queued job ids.
    """
    func = {"opportunity": "copilot.jobs.refresh_deals", "lead": "copilot.jobs.refresh_leads"}[kind]
    unique = list(dict.fromkeys(crm_ids))
    queued = []
    for start in range(0, len(unique), REFRESH_CHUNK):
        job = services.queue.enqueue(
            func, tenant_id, unique[start : start + REFRESH_CHUNK], queue="default"
        )
        if job:
            queued.append(job)
    return queued


def refresh_deals(tenant_id: str, opportunity_ids: list[str]) -> dict[str, Any] | None:
    """Refresh the risk flags, forecast note, next step and battle card of open deals.

    A note is generated again only when its inputs (flags and evidence) changed. Deals whose CRM
    values changed are queued for write-back.

    Returns:
        ``{"deals", "generated", "unchanged", "failed": [(deal id, reason)], "battle_cards",
        "writeback_jobs"}``; None for an uninstalled tenant.
    """
    services = current()
    if services.registry.get(tenant_id).status == "uninstalled":
        return None
    store = services.store
    now = datetime.now(UTC)
    deals = load_open_deals(store, tenant_id, opportunity_ids)
    ids = sorted(deals)
    flags = deal_flags(services, tenant_id, ids, now=now, loaded=deals)
    evidence_of = deals_evidence(services, tenant_id, deals, flags)
    before = load_results(store, tenant_id, "opportunity", ids)
    summary: dict[str, Any] = {"deals": len(ids), "generated": 0, "unchanged": 0, "failed": []}
    saved: list[CopilotResult] = []
    stale_steps: list[str] = []
    for crm_id in ids:
        record = deals[crm_id].record
        deal_flags_now = flags.get(crm_id, [])
        evidence = evidence_of[crm_id]
        inputs = _digest(
            [f.detail() for f in deal_flags_now], [(e.ref, e.date, e.text) for e in evidence]
        )
        held = before.get(crm_id, {}).get("forecast_note")
        if held is not None and held.detail.get("inputs") == inputs:
            summary["unchanged"] += 1
            continue
        # Flags may rest on records the copilot must not see (consent): cite only what it saw.
        visible = _citing_only(deal_flags_now, {e.ref for e in evidence}, f"opportunity:{crm_id}")
        try:
            generated = copilot_for(services).generate(
                tenant_id,
                FORECAST_NOTE_TASK,
                evidence,
                facts=_deal_facts(record, visible),
                offline=functools.partial(offline_note, record, visible),
            )
        except GenerationFailed as exc:
            summary["failed"].append((crm_id, str(exc)))
            log.warning("forecast note of deal %s failed; previous values kept: %s", crm_id, exc)
            continue
        summary["generated"] += 1
        saved += _deal_results(crm_id, deal_flags_now, generated, inputs, now)
        if not any(not f.acknowledged for f in deal_flags_now):
            stale_steps.append(crm_id)  # no open risk: scoring's next step stands again
    if saved:
        save_results(store, tenant_id, saved)
    for crm_id in stale_steps:
        store.delete_rows(
            tenant_id,
            "copilot_results",
            _results_schema(),
            {"entity": "opportunity", "crm_id": crm_id, "result": "next_step"},
        )
    summary["battle_cards"] = _battle_cards(services, tenant_id, ids, flags)
    after = load_results(store, tenant_id, "opportunity", ids)
    changed = [i for i in ids if values(after.get(i, {})) != values(before.get(i, {}))]
    summary["writeback_jobs"] = queue_writeback(services, tenant_id, "opportunity", changed)
    return summary


def refresh_leads(tenant_id: str, lead_ids: list[str]) -> dict[str, Any] | None:
    """Give Hot leads an evidence-based next step and (when wanted) a follow-up draft.

    Leads that are not Hot now, are unknown, or whose consent forbids processing are skipped.

    Returns:
        ``{"leads", "next_steps", "drafts", "skipped", "failed", "writeback_jobs"}``; None for
        an uninstalled tenant.
    """
    from copilot.settings import load_settings
    from scoring.features import consent_blocked
    from scoring.predict import latest_results
    from scoring.settings import load_settings as scoring_settings

    services = current()
    tenant = services.registry.get(tenant_id)
    if tenant.status == "uninstalled":
        return None
    store = services.store
    hot = scoring_settings(services.registry, tenant_id).grades[0][0]
    settings = load_settings(services.registry, tenant_id)
    scored = latest_results(store, tenant_id, "lead", lead_ids)
    leads = {
        r["crm_id"]: r
        for r in store.get_many(tenant_id, "lead", list(dict.fromkeys(lead_ids)))
        if not consent_blocked(r, tenant.crm)
        and scored.get(r["crm_id"]) is not None
        and scored[r["crm_id"]].grade == hot
    }
    ids = sorted(leads)
    before = load_results(store, tenant_id, "lead", ids)
    now = datetime.now(UTC)
    summary: dict[str, Any] = {"leads": len(ids), "next_steps": 0, "drafts": 0, "failed": []}
    summary["skipped"] = len(set(lead_ids)) - len(ids)
    saved: list[CopilotResult] = []
    evidence_of = records_evidence(store, tenant_id, "lead", [leads[i] for i in ids])
    for crm_id in ids:
        lead = leads[crm_id]
        evidence = evidence_of[crm_id]
        step = lead_next_step(lead, evidence, now=now)
        if step is not None:
            saved.append(
                CopilotResult(
                    "lead",
                    crm_id,
                    "next_step",
                    step["text"],
                    {"next_step": step, "offline": True},
                    True,
                    None,
                    now,
                )
            )
            summary["next_steps"] += 1
        if not settings.auto_followup_hot:
            continue
        inputs = _digest(scored[crm_id].reasons, [(e.ref, e.date) for e in evidence])
        held = before.get(crm_id, {}).get("followup_draft")
        if held is not None and held.detail.get("inputs") == inputs:
            continue
        reasons, default_step = scored_reasons(scored[crm_id])
        try:
            draft = build_followup(
                services,
                tenant_id,
                "lead",
                lead,
                reasons,
                step["text"] if step else default_step,
                evidence,
            )
        except GenerationFailed as exc:
            summary["failed"].append((crm_id, str(exc)))
            continue
        draft.detail["inputs"] = inputs
        saved.append(draft)
        summary["drafts"] += 1
    if saved:
        save_results(store, tenant_id, saved)
    after = load_results(store, tenant_id, "lead", ids)
    changed = [i for i in ids if values(after.get(i, {})) != values(before.get(i, {}))]
    summary["writeback_jobs"] = queue_writeback(services, tenant_id, "lead", changed)
    return summary


def refresh_segments(tenant_id: str, reschedule: bool = True) -> dict[str, Any] | None:
    """Re-cluster a tenant's segments, queue write-back of changed ones, schedule the next run.

    Returns:
        ``{"segments", "writeback_jobs"}``; None for an uninstalled tenant.
    """
    from copilot.segments import assign_segments

    services = current()
    if services.registry.get(tenant_id).status == "uninstalled":
        return None
    entities = ("lead", "contact", "account")
    before = {e: load_results(services.store, tenant_id, e, results=["segment"]) for e in entities}
    segments = assign_segments(services, tenant_id)
    jobs: list[str] = []
    for entity in entities:
        after = load_results(services.store, tenant_id, entity, results=["segment"])
        changed = [i for i in after if values(after[i]) != values(before[entity].get(i, {}))]
        jobs += queue_writeback(services, tenant_id, entity, changed)
    if reschedule:
        day = int(time.time() // SEGMENTS_INTERVAL_S) + 1
        services.queue.enqueue_in(
            SEGMENTS_INTERVAL_S,
            "copilot.jobs.refresh_segments",
            tenant_id,
            job_id=f"segments:{tenant_id}:{day}",
            queue="low",
        )
    return {"segments": len(segments), "writeback_jobs": jobs}


def learn_from_closed_deals(tenant_id: str, opportunity_ids: list[str]) -> dict[str, Any] | None:
    """The learning loop: fold deals that just closed into their segments' context documents.

    Returns:
        ``{"deals", "segments"}`` (the segments whose documents were rebuilt); None for an
        uninstalled tenant.
    """
    from copilot.segments import on_deal_closed

    services = current()
    if services.registry.get(tenant_id).status == "uninstalled":
        return None
    ids = list(dict.fromkeys(opportunity_ids))
    return {"deals": len(ids), "segments": on_deal_closed(services, tenant_id, ids)}


def _deal_results(
    crm_id: str, flags: Sequence[RiskFlag], generated: Any, inputs: str, now: datetime
) -> list[CopilotResult]:
    open_flags = [f for f in flags if not f.acknowledged]
    offline, model = generated.offline, generated.model
    note = {
        **generated.data,
        "inputs": inputs,
        "offline": offline,
        "flags": [f.name for f in open_flags],
    }
    flag_detail = {"flags": [f.detail() for f in flags], "open": len(open_flags)}
    out = [
        CopilotResult(
            "opportunity", crm_id, "risk_flags", flags_value(flags), flag_detail, False, None, now
        ),
        CopilotResult(
            "opportunity",
            crm_id,
            "forecast_note",
            note_value(generated.data, offline=offline),
            note,
            offline,
            model,
            now,
        ),
    ]
    if open_flags:
        step = generated.data["next_step"]
        out.append(
            CopilotResult(
                "opportunity",
                crm_id,
                "next_step",
                step["text"][:255],
                {"next_step": step, "offline": offline},
                offline,
                model,
                now,
            )
        )
    return out


def _citing_only(flags: Sequence[RiskFlag], refs: set[str], fallback: str) -> list[RiskFlag]:
    return [replace(f, refs=tuple(r for r in f.refs if r in refs) or (fallback,)) for f in flags]


def _deal_facts(record: Mapping[str, Any], flags: Sequence[RiskFlag]) -> dict[str, Any]:
    close = record.get("close_date")
    return {
        "deal": record.get("name"),
        "stage": record.get("stage"),
        "amount": record.get("amount"),
        "close_date": close.isoformat() if close else None,
        "risk_flags": [f.detail() for f in flags],
    }


def _battle_cards(
    services: Services, tenant_id: str, ids: Sequence[str], flags: Mapping[str, list[RiskFlag]]
) -> int:
    """Refresh the battle cards of deals with a competitor in play (on the deal or in a note)."""
    contested = [i for i in ids if any(f.name == "competitor" for f in flags.get(i, []))]
    if not contested:
        return 0
    try:
        from copilot.battle_cards import refresh_battle_cards
    except ImportError:  # the battle-card feature is not installed in this build
        log.warning("battle cards unavailable; %d contested deals wait", len(contested))
        return 0
    return len(refresh_battle_cards(services, tenant_id, contested))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _results_schema() -> Any:
    from copilot.results import SCHEMA

    return SCHEMA
