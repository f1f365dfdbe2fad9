"""Real-time sync end to end: sandbox CRMs -> webhooks -> Fieldwise web app -> rq workers -> LanceDB.

One live deployment (both sandboxes, the web app on a loopback port, one ``fieldwise worker``
process, a Redis database of its own) serves every test of this module; each test changes
records in the sandbox CRMs as a person would and waits, with a deadline, for the store to agree.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import lancedb
import numpy as np
import pytest
from live_harness import REPO, LiveSync, live_redis_url, wait_until

from core.embeddings import MODEL_ID, get_embedder
from core.store import TABLES
from sync.writeback import write_values

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORK_JOBS = (
    "sync.jobs.fetch_changes",
    "sync.jobs.delete_records",
    "sync.jobs.merge_records",
    "sync.jobs.refetch_object",
)
"""Jobs a webhook can cause."""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveSync(tmp_path_factory.mktemp("live"), live_redis_url(), workers=1) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def _clean_faults(live):
    live.wait_idle(timeout=60)
    yield
    live.hubspot_faults(drop_rate=0.0, duplicate_rate=0.0, reorder=False, webhooks_paused=False)
    live.salesforce_faults(drop_rate=0.0, duplicate_rate=0.0, reorder=False, webhooks_paused=False)
    assert live.failed_count() == 0, live.failures()


def unique(label):
    return f"{label} {uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------------
# Create, update, delete, merge


def test_hubspot_create_change_delete_and_merge_arrive_in_the_store(live):
    email = f"{uuid.uuid4().hex[:10]}@newco.example"
    created = live.hubspot_ui_create(
        "contacts", {"email": email, "firstname": "Ada", "lastname": "Newcomer"}
    )
    row = live.wait_stored("hubspot", "lead", created, lambda r: r is not None, what="creation")
    assert row["email"] == email and row["last_name"] == "Newcomer"

    title = unique("VP Revenue")
    live.hubspot_ui_edit("contacts", created, {"jobtitle": title})
    live.wait_stored("hubspot", "lead", created, lambda r: r and r["title"] == title)

    live.hubspot_ui_delete("contacts", created)
    live.wait_stored("hubspot", "lead", created, lambda r: r is None, what="deletion")

    primary, merged = live.hubspot_contact_ids(2)
    assert live.stored("hubspot", "lead", merged) is not None
    live.hubspot_ui_merge("contacts", primary, merged)
    live.wait_stored("hubspot", "lead", merged, lambda r: r is None, what="merged-away record")
    assert live.stored("hubspot", "lead", primary) is not None
    assert live.hubspot is not None and live.hubspot.repo.get("contacts", merged) is None


def test_salesforce_create_and_update_arrive_by_outbound_message_and_deletes_by_sweep_or_relay(
    live,
):
    _, rep = live.salesforce_rep()
    made = live.salesforce_call(
        "POST", "sobjects/Lead", rep, {"LastName": "Okafor", "Company": "Newco"}, ok=(201,)
    )
    lead_id = made["id"]
    row = live.wait_stored("salesforce", "lead", lead_id, lambda r: r is not None, what="create")
    assert row["last_name"] == "Okafor" and row["company"] == "Newco"

    title = unique("Head of Sales")
    live.salesforce_call("PATCH", f"sobjects/Lead/{lead_id}", rep, {"Title": title}, ok=(204,))
    live.wait_stored("salesforce", "lead", lead_id, lambda r: r and r["title"] == title)

    # Outbound messages never announce a deletion: the sweep finds it in getDeleted.
    live.salesforce_call("DELETE", f"sobjects/Lead/{lead_id}", rep, ok=(204,))
    live.wait_idle(timeout=30)
    assert live.stored("salesforce", "lead", lead_id) is not None
    assert live.services is not None
    tenant_id = live.tenants["salesforce"]
    live.services.queue.enqueue("sync.jobs.reconcile_tenant", tenant_id, False, queue="high")
    live.wait_stored("salesforce", "lead", lead_id, lambda r: r is None, what="swept deletion")

    # With the change-event relay configured, a deletion arrives as a DELETE event at once.
    secret = live.services.registry.relay_secret(tenant_id, create=True)
    assert live.salesforce is not None
    relay = live.salesforce.session().post(
        f"{live.salesforce.instance_url}/__admin/cdc-relay",
        json={
            "url": f"{live.public_url}/webhooks/salesforce/events",
            "secret": secret,
            "objects": ["Lead"],
        },
        timeout=10,
    )
    assert relay.status_code == 200, relay.text
    try:
        doomed = live.salesforce_lead_ids(1)[0]
        assert live.stored("salesforce", "lead", doomed) is not None
        live.salesforce_call("DELETE", f"sobjects/Lead/{doomed}", rep, ok=(204,))
        live.wait_stored("salesforce", "lead", doomed, lambda r: r is None, what="CDC deletion")
    finally:
        live.salesforce.session().post(
            f"{live.salesforce.instance_url}/__admin/cdc-relay", json={"url": None}, timeout=10
        )


def test_a_sweep_embeds_again_the_notes_whose_vectors_an_older_model_made(live):
    assert live.services is not None
    tenant_id = live.tenants["salesforce"]
    noted = live.services.store.query(tenant_id, "note", columns=["crm_id"], limit=2)
    ids = [row["crm_id"] for row in noted]
    # As a store upgraded in place holds them: a made-up vector under another model's name.
    table = lancedb.connect(str(live.folder / "lancedb")).open_table(TABLES["note"])
    table.update(
        where=f"tenant_id = '{tenant_id}' AND crm_id IN ('{ids[0]}', '{ids[1]}')",
        values={"vector": [1.0] + [0.0] * 383, "embedding_model": "older-model"},
    )
    assert live.stored("salesforce", "note", ids[0])["embedding_model"] == "older-model"
    live.services.queue.enqueue("sync.jobs.reconcile_tenant", tenant_id, False, queue="high")
    for crm_id in ids:
        row = live.wait_stored(
            "salesforce", "note", crm_id, lambda r: r and r["embedding_model"] == MODEL_ID,
            what="vector refresh",
        )  # fmt: skip
        assert row is not None
        text = " ".join(part for part in (row["title"], row["body"]) if part)
        assert np.allclose(row["vector"], get_embedder().embed([text])[0], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Duplicated and out-of-order deliveries


def test_duplicated_and_reordered_deliveries_leave_each_record_at_its_last_value(live):
    live.hubspot_faults(duplicate_rate=1.0, reorder=True)
    live.salesforce_faults(duplicate_rate=1.0, reorder=True)
    before = live.counters()
    _, rep = live.salesforce_rep()
    hubspot_ids = live.hubspot_contact_ids(6)[2:6]
    salesforce_ids = live.salesforce_lead_ids(4)
    final = {}
    for round_number in range(5):
        for record_id in hubspot_ids:
            value = f"HS title {record_id} r{round_number}"
            live.hubspot_ui_edit("contacts", record_id, {"jobtitle": value})
            final[("hubspot", record_id)] = value
        for record_id in salesforce_ids:
            value = f"SF title {record_id} r{round_number}"
            live.salesforce_call(
                "PATCH", f"sobjects/Lead/{record_id}", rep, {"Title": value}, ok=(204,)
            )
            final[("salesforce", record_id)] = value
        time.sleep(0.06)  # let each round go out as its own (duplicated, shuffled) deliveries
    for (crm, record_id), value in final.items():
        live.wait_stored(crm, "lead", record_id, lambda r, v=value: r and r["title"] == v)
    live.wait_idle(timeout=60)
    for (crm, record_id), value in final.items():
        assert live.stored(crm, "lead", record_id)["title"] == value
    after = live.counters()
    assert after.get("hubspot.duplicate", 0) > before.get("hubspot.duplicate", 0)
    assert after.get("salesforce.duplicate", 0) > before.get("salesforce.duplicate", 0)
    for crm in ("hubspot", "salesforce"):
        table = live.store.to_arrow(live.tenants[crm], "lead", columns=["crm_id"])
        ids = table.column("crm_id").to_pylist()
        assert len(ids) == len(set(ids)), f"{crm} leads hold duplicate rows"


# --------------------------------------------------------------------------------------------------
# Echoes of Fieldwise's own writes


def test_fieldwise_own_writes_come_back_as_echoes_and_cause_no_jobs(live):
    live.wait_idle(timeout=60)
    before_jobs = live.job_ids()
    before = live.counters()
    since = time.time()
    hubspot_lead = live.hubspot_contact_ids(8)[7]
    salesforce_lead = live.salesforce_lead_ids(6)[5]

    # Write-back of AI results, as the scoring pipeline does it (a score it has not written yet:
    # an unchanged value is not written at all).
    for crm, lead_id in (("hubspot", hubspot_lead), ("salesforce", salesforce_lead)):
        tenant_id = live.tenants[crm]
        score = next(
            s for s in (91, 92) if write_values(tenant_id, "lead", {lead_id: {"score": s}},
                                                dry_run=True)[0].writes
        )  # fmt: skip
        plan, summary = write_values(tenant_id, "lead", {lead_id: {"score": score}})
        assert plan.writes and summary is not None, (crm, plan)
    # And a write of a field Fieldwise listens to, made with Fieldwise's own HubSpot token (as an
    # owner assignment would be): HubSpot announces it, Fieldwise must recognise it as its own.
    live.hubspot_app_write("contacts", hubspot_lead, {"jobtitle": unique("Set by Fieldwise")})

    def echoes_arrived():
        counters = live.counters()
        return all(
            counters.get(f"{crm}.echo", 0) > before.get(f"{crm}.echo", 0)
            for crm in ("hubspot", "salesforce")
        )

    wait_until(echoes_arrived, 30, what="the echoes to be delivered and dropped")
    live.wait_idle(timeout=60)
    accepted = [
        a
        for crm in ("hubspot", "salesforce")
        for a in live.deliverer_attempts(crm)
        if a["t"] >= since and a["outcome"] == "accepted"
    ]
    assert accepted, "the sandboxes delivered no webhook for Fieldwise's writes"
    caused = [j for j in live.new_jobs(before_jobs) if j.func_name in WORK_JOBS]
    assert caused == [], [(j.func_name, j.args, j.enqueued_at) for j in caused]


# --------------------------------------------------------------------------------------------------
# Dropped deliveries


def test_changes_whose_webhooks_were_dropped_are_brought_in_by_reconciliation(live):
    live.hubspot_faults(drop_rate=1.0)
    live.salesforce_faults(drop_rate=1.0)
    _, rep = live.salesforce_rep()
    hubspot_lead = live.hubspot_contact_ids(9)[8]
    salesforce_lead = live.salesforce_lead_ids(7)[6]
    hubspot_title, salesforce_title = unique("Dropped HS"), unique("Dropped SF")
    live.hubspot_ui_edit("contacts", hubspot_lead, {"jobtitle": hubspot_title})
    live.salesforce_call(
        "PATCH", f"sobjects/Lead/{salesforce_lead}", rep, {"Title": salesforce_title}, ok=(204,)
    )
    for crm in ("hubspot", "salesforce"):
        wait_until(
            lambda c=crm: any(a["outcome"] == "dropped" for a in live.deliverer_attempts(c)),
            10,
            what=f"{crm} to drop its delivery",
        )
    live.wait_idle(timeout=30)
    assert live.stored("hubspot", "lead", hubspot_lead)["title"] != hubspot_title
    assert live.stored("salesforce", "lead", salesforce_lead)["title"] != salesforce_title

    # The operator's (or cron's) sweep, in its own process, as `fieldwise sync --reconcile` runs.
    swept = subprocess.run(
        [sys.executable, "-m", "core", "sync", "--reconcile"],
        cwd=REPO,
        env=live.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert live.stored("hubspot", "lead", hubspot_lead)["title"] == hubspot_title
    assert live.stored("salesforce", "lead", salesforce_lead)["title"] == salesforce_title
