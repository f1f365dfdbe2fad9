"""A worker SIGKILLed in the middle of a backfill: its replacement finishes the job, exactly once."""

from __future__ import annotations

import dataclasses

import pytest
from live_harness import LiveSync, live_redis_url, wait_until

from connectors.base import connector_for
from sync.jobs import BACKFILL_ENTITIES

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def fewer_engagements(history):
    """Keep every lead, contact, account and deal; keep a few hundred activities and notes."""
    return dataclasses.replace(
        history, activities=history.activities[:600], notes=history.notes[:150]
    )


def test_a_backfill_killed_mid_way_is_finished_by_a_restarted_worker_with_every_record_once(
    tmp_path,
):
    # Every API call is slowed down until the kill, so the lead backfill (30 pages of 100) takes
    # several seconds and the kill lands in the middle of it.
    live = LiveSync(
        tmp_path,
        live_redis_url(),
        crms=("hubspot",),
        hubspot_leads=3000,
        trim=fewer_engagements,
        wait_for_backfill=False,
        faults={"hubspot": {"latency_ms": 60}},
    )
    with live:
        assert live.store is not None and live.hubspot is not None and live.services is not None
        tenant_id = live.tenants["hubspot"]

        def lead_backfill_under_way():
            checkpoint = live.store.get_checkpoint(tenant_id, "backfill:lead") or {}
            return checkpoint.get("records", 0) >= 300 and not checkpoint.get("done")

        wait_until(lead_backfill_under_way, 90, interval=0.05, what="the lead backfill to start")
        live.kill_worker(0)
        killed_at = live.store.get_checkpoint(tenant_id, "backfill:lead")
        assert killed_at is not None and not killed_at["done"]
        stored_at_kill = live.store.count(tenant_id, "lead")
        # The slowdown only had to make the kill land mid-way; the rest of the backfill runs at
        # full speed once the abandoned job is retried.
        live.hubspot_faults(latency_ms=0)

        live.start_worker()
        live.wait_backfilled(timeout=150, idle=False)

        # What the CRM holds, read again from scratch, is exactly what the store holds. (The read
        # is a set: write-back after the backfill moves records in HubSpot's modified-date order,
        # so a paged read can meet one record twice.)
        connector = connector_for(tenant_id, live.services.connector_context)
        total = 0
        for entity in BACKFILL_ENTITIES:
            in_crm = {r["crm_id"] for page in connector.changed(entity, None) for r in page.records}
            stored = live.store.to_arrow(tenant_id, entity, columns=["crm_id"])
            stored_ids = stored.column("crm_id").to_pylist()
            assert len(stored_ids) == len(set(stored_ids)), f"duplicate {entity} rows"
            assert set(stored_ids) == in_crm, (
                f"{entity}: {len(in_crm - set(stored_ids))} missing from the store, "
                f"{len(set(stored_ids) - in_crm)} not in the CRM"
            )
            total += len(stored_ids)
        assert stored_at_kill < live.store.count(tenant_id, "lead")
        assert total > 5000
