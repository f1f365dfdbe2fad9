"""What rescoring costs in CRM API calls, counted by the sandboxes themselves."""

from __future__ import annotations

import math

import pytest

from core.config import Config
from core.services import configure
from sandbox.history import generate
from sandbox.hubspot import HubSpotSandbox
from sandbox.runner import crm_settings, register_tenants
from sandbox.salesforce import SalesforceSandbox
from sync.writeback import write_values

LEADS = 10_000
CHANGED = 500


@pytest.fixture(scope="module")
def crms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("writeback-cost")
    history = generate(seed=5, n_leads=LEADS)
    salesforce, hubspot = SalesforceSandbox(folder / "sf"), HubSpotSandbox(folder / "hs")
    for sandbox in (salesforce, hubspot):
        sandbox.start()
        sandbox.load_history(history)
    services = configure(
        Config.for_demo(lancedb_uri=str(folder / "db"), **crm_settings(salesforce, hubspot))
    )
    tenants = register_tenants(services, salesforce, hubspot)
    lead_ids = {
        "salesforce": [rid for rid, _ in salesforce.state.store.iter("Lead")][:LEADS],
        "hubspot": [rid for rid, _ in hubspot.state.store.iter("contacts")][:LEADS],
    }
    yield {"salesforce": salesforce, "hubspot": hubspot}, tenants, lead_ids
    services.queue.stop()
    salesforce.stop()
    hubspot.stop()


def api_calls(sandbox):
    return sum(1 for entry in sandbox.state.log.snapshot()["requests"] if entry.get("api_call"))


def results(ids, bump=()):
    bumped = set(bump)
    return {
        crm_id: {"score": 71 if crm_id in bumped else 30 + i % 40,
                 "grade": "Hot" if crm_id in bumped else "Cold",
                 "reasons": "Opened 4 emails in the last 30 days"}
        for i, crm_id in enumerate(ids)
    }  # fmt: skip


@pytest.mark.parametrize(("crm", "batch"), [("salesforce", 200), ("hubspot", 100)])
def test_rescoring_10k_leads_costs_nothing_when_unchanged_and_one_call_per_batch_for_5_percent(
    crms, crm, batch
):
    sandboxes, tenants, lead_ids = crms
    sandbox, tenant_id, ids = sandboxes[crm], tenants[crm].tenant_id, lead_ids[crm]
    assert len(ids) == LEADS

    plan, summary = write_values(tenant_id, "lead", results(ids))
    assert summary is not None and summary.records == LEADS and summary.failed == []

    sandbox.state.log.reset()
    plan, summary = write_values(tenant_id, "lead", results(ids))
    assert plan.writes == [] and summary is None
    assert api_calls(sandbox) == 0

    changed = ids[:: LEADS // CHANGED][:CHANGED]
    sandbox.state.log.reset()
    plan, summary = write_values(tenant_id, "lead", results(ids, bump=changed))
    assert summary is not None and summary.records == CHANGED
    assert api_calls(sandbox) <= math.ceil(CHANGED / batch)


@pytest.mark.parametrize(
    ("crm", "object_type", "owner_field"),
    [("salesforce", "Lead", "OwnerId"), ("hubspot", "contacts", None)],
)
def test_auto_assign_writes_the_crm_owner_field_and_nothing_else_outside_fieldwise_fields(
    crms, crm, object_type, owner_field
):
    sandboxes, tenants, lead_ids = crms
    sandbox, tenant_id = sandboxes[crm], tenants[crm].tenant_id
    users = "User" if crm == "salesforce" else "owners"
    owner_ids = [uid for uid, _ in sandbox.state.store.iter(users)]
    lead = lead_ids[crm][-1]
    record = sandbox.state.store.get(object_type, lead)
    current = record["OwnerId"] if crm == "salesforce" else record["properties"]["hubspot_owner_id"]
    new_owner = next(str(o) for o in owner_ids if str(o) != str(current))
    plan, summary = write_values(tenant_id, "lead", {lead: {"assign_owner": new_owner}})
    assert summary is not None and summary.records == 1
    assert [w.field for w in plan.writes] == [owner_field or "hubspot_owner_id"]
    record = sandbox.state.store.get(object_type, lead)
    stored = record["OwnerId"] if crm == "salesforce" else record["properties"]["hubspot_owner_id"]
    assert str(stored) == new_owner
