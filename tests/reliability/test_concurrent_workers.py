"""Three worker processes sync one tenant at once: no update is lost, no table is corrupted."""

from __future__ import annotations

import time

import pytest
from live_harness import LiveSync, live_redis_url, wait_until

from core.store import Store

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_three_workers_syncing_one_tenant_lose_no_update_and_keep_every_table_whole(tmp_path):
    with LiveSync(
        tmp_path, live_redis_url(), workers=3, crms=("hubspot",), hubspot_leads=260
    ) as live:
        assert live.hubspot is not None and live.store is not None
        tenant_id = live.tenants["hubspot"]
        repo, source = live.hubspot.repo, live.hubspot.ui_source
        ids = live.hubspot_contact_ids(300)
        assert len(ids) == 300
        before_jobs = live.job_ids()

        # Bursts: every record changes once, then a third of them again, then a tenth a third
        # time, each burst landing while the fetches of the one before are still running.
        expected: dict[str, str] = {}
        for burst, share in enumerate((ids, ids[:100], ids[:30])):
            for index, contact_id in enumerate(share):
                value = f"Title {contact_id} burst {burst}"
                repo.update("contacts", contact_id, {"jobtitle": value}, source)
                expected[contact_id] = value
                if index % 20 == 19:
                    time.sleep(0.1)  # a delivery per group: fetches overlap on three workers

        def people():
            rows = {}
            for entity in ("lead", "contact"):
                for row in live.store.to_arrow(
                    tenant_id, entity, columns=["crm_id", "title"]
                ).to_pylist():
                    rows[row["crm_id"]] = row["title"]
            return rows

        def caught_up():
            held = people()
            return all(held.get(i) == v for i, v in expected.items())

        wait_until(caught_up, 90, interval=0.25, what="every update to reach the store")
        live.wait_idle(timeout=90)
        assert live.failed_count() == 0, live.failures()

        fetches = live.new_jobs(before_jobs, "sync.jobs.fetch_changes")
        assert len({job.worker_name for job in fetches}) >= 2, "the fetches did not overlap"

        # A store opened afresh reads whole tables: every row once, every value the CRM's.
        fresh = Store(live.store.uri)
        for entity in ("lead", "contact"):
            table = fresh.to_arrow(tenant_id, entity)
            crm_ids = table.column("crm_id").to_pylist()
            assert len(crm_ids) == len(set(crm_ids)), f"duplicate {entity} rows"
            assert fresh.count(tenant_id, entity) == table.num_rows
        held = {}
        for entity in ("lead", "contact"):
            for row in fresh.to_arrow(tenant_id, entity, columns=["crm_id", "title"]).to_pylist():
                held[row["crm_id"]] = row["title"]
        for contact_id in ids:
            crm_title = repo.get("contacts", contact_id)["properties"]["jobtitle"]
            assert held[contact_id] == crm_title == expected[contact_id]
        assert len(held) == repo.count("contacts")
