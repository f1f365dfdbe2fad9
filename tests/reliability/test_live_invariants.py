"""Faults, echo loops, isolation, erasure and LLM privacy on one live deployment (module-shared).

One :class:`LiveSync` (both sandbox CRMs, the web app, one rq worker on real Redis, the copilot
calling ``tests/fake_anthropic.py``, which records every request) runs every test here, so the
module pays for one install and backfill. The last test searches every LLM request of the whole
run for the CRMs' people. After each fault run the same invariants are
checked from the CRMs' side:

* every record's Fieldwise fields in the CRM equal what Fieldwise's write ledger says it last wrote
  (nothing lost, nothing half-written);
* the sandbox request log shows no value written successfully twice to the same record and field
  (a retry is only ever of an attempt that failed);
* every edited record reads in the store as it reads in the CRM.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import time
from typing import Any

import pytest
import requests
from fake_anthropic import FakeAnthropic, evidence_blocks, tool_answer
from live_harness import LiveSync, live_redis_url, wait_until

from core.config import Config, Secret
from core.services import current
from handlers.webhooks import relay_signature
from handlers.widget_auth import salesforce_headers
from manifests.loader import load_manifest
from scoring.ledger import ScoreLedger
from sync.erasure import forget
from sync.writeback import _same_value

pytestmark = [pytest.mark.redis, pytest.mark.slow]

API_KEY = "sk-ant-test-privacy"

LEAD_OBJECT = {"hubspot": "contacts", "salesforce": "Lead"}


class LiveSyncWithLLM(LiveSync):
    """A LiveSync whose web app and workers call the fake Anthropic server."""

    llm_url: str = ""

    def _config(self) -> Config:
        return dataclasses.replace(
            super()._config(),
            anthropic_api_key=Secret(API_KEY),
            anthropic_base_url=self.llm_url,
        )

    def worker_env(self) -> dict[str, str]:
        # Workers read the key and URL from Anthropic's standard variables, as the SDK does.
        env = super().worker_env()
        env.pop("FIELDWISE_ANTHROPIC_API_KEY", None)
        env.pop("FIELDWISE_ANTHROPIC_BASE_URL", None)
        return env | {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": self.llm_url}


def people_of(live: LiveSync) -> set[str]:
    """Every email, phone number and full name of both CRMs' leads, contacts, owners and users."""
    assert live.hubspot is not None and live.salesforce is not None
    found: set[str] = set()

    def add(first: Any, last: Any, *values: Any) -> None:
        if first and last:
            found.add(f"{str(first).strip()} {str(last).strip()}")
        found.update(str(v).strip() for v in values if v)

    for record in live.hubspot.repo.all("contacts"):
        props = record["properties"]
        add(props.get("firstname"), props.get("lastname"), props.get("email"), props.get("phone"),
            props.get("mobilephone"))  # fmt: skip
    for owner in live.hubspot.owners():
        add(owner.get("firstName"), owner.get("lastName"), owner.get("email"))
    for object_name in ("Lead", "Contact", "User"):
        for _, record in live.salesforce.state.store.iter(object_name):
            add(record.get("FirstName"), record.get("LastName"), record.get("Email"),
                record.get("Phone"), record.get("MobilePhone"))  # fmt: skip
    return {p for p in found if len(p) >= 5}


def cite_everything(request: dict[str, Any]) -> dict[str, Any]:
    """A plausible answer: one bullet per evidence block, citing it."""
    refs = [ref for ref, _ in evidence_blocks(request)]
    return {
        "summary": "Competitor mentioned in recent notes; next step is a pricing review.",
        "sections": [{"title": "Evidence", "bullets": [
            {"text": "Mentioned in a note.", "cites": [ref]} for ref in refs[:3]]}],
        "quotes": [],
        "flags": [],
    }  # fmt: skip


@pytest.fixture(scope="module")
def fake_llm():
    server = FakeAnthropic()
    server.respond = tool_answer(cite_everything)
    yield server
    server.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, fake_llm):
    deployment = LiveSyncWithLLM(
        tmp_path_factory.mktemp("live-invariants"),
        live_redis_url(),
        crms=("hubspot", "salesforce"),
        hubspot_leads=30,
        salesforce_leads=30,
        backfill_timeout=150,
    )
    deployment.llm_url = fake_llm.url
    with deployment:
        yield deployment


# -- reading the CRMs ------------------------------------------------------------------------------


def crm_leads(live: LiveSync, crm: str) -> dict[str, dict[str, Any]]:
    """Every lead-like record in a sandbox CRM, as field -> value."""
    if crm == "hubspot":
        assert live.hubspot is not None
        return {str(r["id"]): r["properties"] for r in live.hubspot.repo.all("contacts")}
    assert live.salesforce is not None
    return {rid: rec for rid, rec in live.salesforce.state.store.iter("Lead")}


def assert_crm_matches_ledger(live: LiveSync, crm: str) -> int:
    """Every field Fieldwise says it wrote holds exactly that value in the CRM; returns how many."""
    assert live.store is not None
    records = crm_leads(live, crm)
    ledger = live.store.last_written(live.tenants[crm], LEAD_OBJECT[crm], sorted(records))
    checked = 0
    for crm_id, fields in ledger.items():
        for field, value_json in fields.items():
            held = records[crm_id].get(field)
            assert _same_value(held, json.loads(value_json)), (
                f"{crm} {LEAD_OBJECT[crm]} {crm_id}: field {field} holds {held!r} in the CRM "
                f"but Fieldwise recorded writing {value_json}"
            )
            checked += 1
    return checked


def successful_writes(live: LiveSync, crm: str, since: float) -> collections.Counter:
    """(record, field, value) -> how many write requests that succeeded carried it, from the log."""
    sandbox = live.hubspot if crm == "hubspot" else live.salesforce
    assert sandbox is not None
    counted: collections.Counter = collections.Counter()
    for entry in sandbox.state.log.snapshot()["requests"]:
        if entry["t"] < since or entry["status"] >= 300 or entry["method"] not in ("POST", "PATCH"):
            continue
        path = entry["path"]
        if crm == "hubspot" and path.endswith("/batch/update"):
            items = [(i["id"], i["properties"]) for i in entry["body"]["inputs"]]
        elif crm == "salesforce" and "composite/sobjects" in path and entry["method"] == "PATCH":
            items = [(r.get("id") or r.get("Id"),
                      {k: v for k, v in r.items() if k not in ("id", "Id", "attributes")})
                     for r in entry["body"]["records"]]  # fmt: skip
        else:
            continue
        assert "truncated" not in entry["body"], "a write body too large for the request log"
        for record_id, fields in items:
            for field, value in fields.items():
                counted[(str(record_id), field, json.dumps(value, sort_keys=True))] += 1
    return counted


def assert_written_once(live: LiveSync, crm: str, since: float) -> None:
    twice = {k: n for k, n in successful_writes(live, crm, since).items() if n > 1}
    assert not twice, f"{crm}: the same value written more than once: {sorted(twice)[:5]}"


def assert_store_matches_crm(live: LiveSync, crm: str, expected: dict[str, str]) -> None:
    field = "jobtitle" if crm == "hubspot" else "Title"
    records = crm_leads(live, crm)
    for crm_id, title in expected.items():
        assert records[crm_id][field] == title, f"{crm} {crm_id}: the CRM lost the edit"
        row = live.stored(crm, "lead", crm_id) or live.stored(crm, "contact", crm_id)
        assert row is not None, f"{crm} {crm_id}: missing from the store"
        assert row["title"] == title, f"{crm} {crm_id}: store has {row['title']!r}, CRM {title!r}"


# -- changing the CRMs -----------------------------------------------------------------------------


def edit_titles(live: LiveSync, crm: str, ids: list[str], tag: str) -> dict[str, str]:
    """Edit each record's title as a person would; returns the values written."""
    expected = {}
    if crm == "salesforce":
        _, token = live.salesforce_rep()
    for index, crm_id in enumerate(ids):
        title = f"{tag} {index}"
        if crm == "hubspot":
            live.hubspot_ui_edit("contacts", crm_id, {"jobtitle": title})
        else:
            live.salesforce_call("PATCH", f"sobjects/Lead/{crm_id}", token, {"Title": title},
                                 ok=(204,))  # fmt: skip
        expected[crm_id] = title
    return expected


def lead_ids(live: LiveSync, crm: str, count: int, skip: int = 0) -> list[str]:
    if crm == "hubspot":
        return live.hubspot_contact_ids(skip + count)[skip:]
    return live.salesforce_lead_ids(skip + count)[skip:]


def queue_rescore(live: LiveSync, crm: str, ids: list[str], score: int) -> None:
    """Queue a write-back of new scores for ``ids`` as the scoring job would (by dotted path)."""
    results = {i: {"score": score, "grade": "Hot" if score >= 70 else "Warm",
                   "reasons": f"Rescored to {score}"} for i in ids}  # fmt: skip
    current().queue.enqueue(
        "sync.writeback.write_values", live.tenants[crm], "lead", results, queue="high"
    )


def clear_faults(live: LiveSync) -> None:
    for crm in live.crms:
        live.set_faults(crm, error_rate=0.0, storm_429_until=0.0, webhooks_paused=False,
                        drop_rate=0.0, duplicate_rate=0.0, reorder=False)  # fmt: skip


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_429_storm_and_5_percent_5xx_lose_no_change_and_write_each_value_once(live, crm):
    since = time.time()
    ids = lead_ids(live, crm, 12)
    live.set_faults(crm, webhooks_paused=True)
    expected = edit_titles(live, crm, ids[:8], f"storm-{crm}")
    live.set_faults(crm, error_rate=0.05, error_status=503, storm_429_seconds=1.5,
                    webhooks_paused=False)  # fmt: skip
    # Disjoint from the edited records, whose own rescoring (the model's) follows their fetch.
    queue_rescore(live, crm, ids[8:], 81)
    try:
        live.wait_idle(timeout=90)
    finally:
        clear_faults(live)
    live.wait_idle(timeout=30)
    assert live.failed_count() == 0, live.failures()
    sandbox = live.hubspot if crm == "hubspot" else live.salesforce
    assert sandbox is not None
    statuses = collections.Counter(
        e["status"] for e in sandbox.state.log.snapshot()["requests"] if e["t"] >= since
    )
    assert statuses[429] > 0, f"no call met the 429 storm: {statuses}"
    assert_store_matches_crm(live, crm, expected)
    records = crm_leads(live, crm)
    score_field = "fieldwise_ai_score" if crm == "hubspot" else "Fieldwise_AI_Score__c"
    for crm_id in ids[8:]:
        assert float(records[crm_id][score_field]) == 81, f"{crm} {crm_id}: rescore not written"
    assert assert_crm_matches_ledger(live, crm) > 0
    assert_written_once(live, crm, since)


def test_duplicated_reordered_delayed_and_dropped_webhooks_end_consistent_after_reconcile(live):
    since = time.time()
    hubspot = live.hubspot
    assert hubspot is not None
    ids = lead_ids(live, "hubspot", 10, skip=12)
    # Dropped: these deliveries are never sent.
    live.set_faults("hubspot", drop_rate=1.0)
    dropped = edit_titles(live, "hubspot", ids[:3], "dropped")
    hubspot.webhooks.flush()
    # Duplicated, reordered and delayed: held back, then sent twice each in shuffled order; one
    # record is edited twice so its two deliveries can arrive newest first.
    live.set_faults("hubspot", drop_rate=0.0, duplicate_rate=1.0, reorder=True,
                    webhooks_paused=True)  # fmt: skip
    expected = {}
    for crm_id in ids[3:]:
        expected |= edit_titles(live, "hubspot", [crm_id], f"dup {crm_id}")
        hubspot.webhooks.flush()
    expected |= edit_titles(live, "hubspot", [ids[3]], "dup newest")
    hubspot.webhooks.flush()
    time.sleep(1.0)
    live.set_faults("hubspot", webhooks_paused=False)
    live.wait_idle(timeout=60)
    clear_faults(live)
    outcomes = collections.Counter(
        a["outcome"] for a in live.deliverer_attempts("hubspot") if a["t"] >= since
    )
    assert outcomes["dropped"] >= 1 and outcomes["accepted"] >= 2 * (len(ids) - 3), outcomes
    assert live.counters().get("hubspot.duplicate", 0) > 0, live.counters()
    assert_store_matches_crm(live, "hubspot", expected)
    stale = [
        i for i in dropped if (live.stored("hubspot", "lead", i) or {}).get("title") != dropped[i]
    ]
    assert stale, "the dropped deliveries' changes arrived anyway: the drop fault did nothing"

    live.services.queue.enqueue(
        "sync.jobs.reconcile_tenant", live.tenants["hubspot"], False, queue="high"
    )
    live.wait_idle(timeout=60)
    assert live.failed_count() == 0, live.failures()
    assert_store_matches_crm(live, "hubspot", expected | dropped)
    assert_crm_matches_ledger(live, "hubspot")
    assert_written_once(live, "hubspot", since)


def test_expired_token_is_refreshed_and_revoked_one_parks_the_tenant_until_reinstalled(live):
    services = live.services
    assert services is not None and live.hubspot is not None
    tenant_id = live.tenants["hubspot"]
    base = live.hubspot.base_url
    first, second = lead_ids(live, "hubspot", 2, skip=24)

    requests.post(f"{base}/__admin/expire-tokens", json={}, timeout=10).raise_for_status()
    expected = edit_titles(live, "hubspot", [first], "after expiry")
    live.wait_idle(timeout=60)
    assert_store_matches_crm(live, "hubspot", expected)
    assert services.registry.get(tenant_id).status == "active"

    requests.post(f"{base}/__admin/revoke-refresh-tokens", json={}, timeout=10).raise_for_status()
    requests.post(f"{base}/__admin/expire-tokens", json={}, timeout=10).raise_for_status()
    parked = edit_titles(live, "hubspot", [second], "while revoked")
    wait_until(
        lambda: services.registry.get(tenant_id).status == "needs_reauth", 60,
        what="the tenant to be parked for re-authorisation",
    )  # fmt: skip
    tenant = services.registry.get(tenant_id)
    assert tenant.status_reason and len(tenant.status_reason) > 10, tenant
    live.wait_idle(timeout=60)
    assert services.store.parked_jobs(tenant_id), "the failed fetch was not parked"
    assert live.stored("hubspot", "lead", second)["title"] != parked[second]

    live.install("hubspot")  # the admin re-authorises: provisioning resumes the parked work
    wait_until(lambda: services.registry.get(tenant_id).status == "active", 60,
               what="the tenant to be active again")  # fmt: skip
    live.wait_idle(timeout=90)
    assert_store_matches_crm(live, "hubspot", parked)
    assert not services.store.parked_jobs(tenant_id)
    assert live.failed_count() == 0, live.failures()


SALESFORCE_AI_FIELDS = tuple(f.api_name for f in load_manifest("salesforce").owned_fields("Lead"))


def salesforce_ai_fields(live: LiveSync, crm_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The Fieldwise fields of some Salesforce leads, as the CRM holds them."""
    records = crm_leads(live, "salesforce")
    return {i: {f: records[i].get(f) for f in SALESFORCE_AI_FIELDS} for i in crm_ids}


def test_salesforce_refresh_token_revoked_mid_run_parks_work_and_reinstall_completes_it(live):
    services, sandbox = live.services, live.salesforce
    assert services is not None and sandbox is not None
    tenant_id = live.tenants["salesforce"]
    live.wait_idle(timeout=60)
    since = time.time()
    # Leads Fieldwise has not scored yet: their first score is always written, so the parked
    # work is sure to include AI fields (a rescore that moves too little writes nothing).
    open_ids = live.salesforce_lead_ids(30)
    scored = ScoreLedger(live.store).last(tenant_id, "lead", open_ids)
    ids = [i for i in open_ids if i not in scored][:6]
    assert len(ids) == 6, f"only {len(ids)} open Salesforce leads are unscored; 6 are needed"

    def sandbox_hook(name: str) -> None:
        answer = sandbox.session().post(f"{sandbox.instance_url}/__admin/{name}", json={},
                                        timeout=10)  # fmt: skip
        assert answer.status_code == 200, answer.text

    # Mid-run: these edits' change events are being delivered and fetched when the org revokes
    # Fieldwise's refresh token (and its access tokens); the next edits arrive after it.
    in_flight = edit_titles(live, "salesforce", ids[:3], "Chief Revenue Officer")
    sandbox_hook("revoke-refresh-tokens")
    sandbox_hook("expire-tokens")
    after_revoke = edit_titles(live, "salesforce", ids[3:], "Student intern")
    wait_until(lambda: services.registry.get(tenant_id).status == "needs_reauth", 60,
               what="the Salesforce tenant to be parked for re-authorisation")  # fmt: skip
    reason = services.registry.get(tenant_id).status_reason or ""
    assert "/install/salesforce" in reason, f"no re-install link in {reason!r}"
    health = requests.get(f"{live.public_url}/healthz", timeout=10).json()
    shown = {t["tenant_id"]: t for t in health["tenants"]["installed"]}[tenant_id]
    assert shown["status"] == "needs_reauth" and shown["reinstall"] == "/install/salesforce", shown
    live.wait_idle(timeout=60)
    parked = services.store.parked_jobs(tenant_id)
    assert parked, "nothing was parked: the revocation met no work"
    assert all("/install/salesforce" in p["reason"] for p in parked), parked
    waiting = [i for i in after_revoke if live.stored("salesforce", "lead", i)["title"]
               != after_revoke[i]]  # fmt: skip
    assert waiting, "edits made after the revocation reached the store without a token"
    assert live.failed_count() == 0, live.failures()  # parked, not failed

    reinstalled_at = time.time()
    live.install("salesforce")  # the admin re-authorises; provisioning queues the parked work
    wait_until(lambda: services.registry.get(tenant_id).status == "active", 60,
               what="the Salesforce tenant to be active again")  # fmt: skip
    live.wait_idle(timeout=90)
    assert not services.store.parked_jobs(tenant_id)
    assert live.failed_count() == 0, live.failures()
    assert_store_matches_crm(live, "salesforce", in_flight | after_revoke)
    assert assert_crm_matches_ledger(live, "salesforce") > 0
    assert_written_once(live, "salesforce", since)
    landed = {key[0] for key in successful_writes(live, "salesforce", reinstalled_at)}
    assert set(after_revoke) <= landed, "the parked work wrote no AI field after the re-install"

    # What a clean run writes for these records: scoring them again and writing their results
    # with nothing failing must find every AI field already holding its value.
    recovered = salesforce_ai_fields(live, ids)
    assert all(fields["Fieldwise_AI_Score__c"] is not None for fields in recovered.values())
    clean_since = time.time()
    settled = live.job_ids()
    services.queue.enqueue("scoring.jobs.score_changed", tenant_id, "lead", ids, queue="high")
    services.queue.enqueue("sync.writeback.write_results", tenant_id, "lead", ids, queue="high")
    live.wait_idle(timeout=60)
    assert live.failed_count() == 0, live.failures()
    writebacks = live.new_jobs(settled, func="sync.writeback.write_results")
    assert writebacks, "the clean write-back did not run"
    for job in writebacks:
        assert job.return_value()["fields_written"] == 0, job.return_value()
    touched = {key[0] for key in successful_writes(live, "salesforce", clean_since)}
    assert not touched & set(ids), f"the clean run rewrote {sorted(touched & set(ids))}"
    assert salesforce_ai_fields(live, ids) == recovered


# -- loops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_fieldwise_own_writes_cause_no_further_jobs(live, crm):
    live.wait_idle(timeout=60)
    echoes_before = sum(v for k, v in live.counters().items() if "echo" in k)
    ids = lead_ids(live, crm, 10)
    queue_rescore(live, crm, ids, 64)
    live.wait_idle(timeout=60)
    settled = live.job_ids()
    time.sleep(1.0)  # the CRM's webhooks for those writes arrive now
    live.wait_idle(timeout=60)
    new = live.new_jobs(settled)
    assert not new, f"{crm}: own writes caused jobs: {[(j.func_name, j.args) for j in new][:5]}"
    records = crm_leads(live, crm)
    score_field = "fieldwise_ai_score" if crm == "hubspot" else "Fieldwise_AI_Score__c"
    landed = [i for i in ids if float(records[i][score_field]) == 64]
    assert landed == ids, f"{crm}: the writes did not land, so nothing was tested"
    echoes = sum(v for k, v in live.counters().items() if "echo" in k)
    if crm == "salesforce":  # its change events report our writes; they are counted and dropped
        assert echoes > echoes_before, live.counters()


# -- isolation -------------------------------------------------------------------------------------


def test_one_tenant_can_never_read_or_write_another_tenants_records(live):
    assert live.store is not None and live.services is not None and live.salesforce is not None
    hs_tenant, sf_tenant = live.tenants["hubspot"], live.tenants["salesforce"]
    hs_id = lead_ids(live, "hubspot", 1)[0]
    sf_id = lead_ids(live, "salesforce", 1)[0]
    store = live.store
    assert store.get(hs_tenant, "lead", hs_id) is not None
    assert store.get(sf_tenant, "lead", hs_id) is None
    assert store.get_many(sf_tenant, "lead", [hs_id]) == []
    assert all(r["tenant_id"] == sf_tenant for r in store.query(sf_tenant, "lead", limit=1000))
    for bad in ("", None, f"{sf_tenant}' OR '1'='1"):
        with pytest.raises((ValueError, KeyError, TypeError)):
            store.query(bad, "lead", limit=5)

    # A widget call signed by the Salesforce org asking for a HubSpot record finds nothing.
    secret = live.services.registry.widget_secret(sf_tenant, create=True)
    path = f"/cards/salesforce/{hs_id}"
    headers = salesforce_headers(
        secret, "GET", path, live.salesforce.org_id, live.salesforce.user_id
    )
    answer = requests.get(f"{live.public_url}{path}", headers=headers, timeout=10)
    assert answer.status_code in (403, 404), answer.text
    assert hs_id not in answer.text or "error" in answer.json()

    # A change event relayed and signed for the Salesforce org is work for the Salesforce tenant
    # only: it reads Salesforce, never HubSpot. It names a lead id Salesforce does not have (a
    # well-formed one: Salesforce rejects malformed ids in a query, and the fetch then retries).
    before = store.get(hs_tenant, "lead", hs_id)
    foreign_id = "00Q" + "0" * 9 + "ZZZ"
    body = json.dumps([{"payload": {"ChangeEventHeader": {
        "entityName": "Lead", "changeType": "UPDATE", "recordIds": [foreign_id],
        "transactionKey": f"isolation-{time.time()}", "sequenceNumber": 1,
        "commitUser": "005000000000OTHER", "changeOrigin": ""}}}]).encode()  # fmt: skip
    stamp = str(int(time.time()))
    relay_secret = live.services.registry.relay_secret(sf_tenant, create=True)
    assert relay_secret is not None
    answer = requests.post(
        f"{live.public_url}/webhooks/salesforce/events", data=body, timeout=10,
        headers={"X-Fieldwise-Org-Id": live.salesforce.org_id, "X-Fieldwise-Timestamp": stamp,
                 "X-Fieldwise-Signature": f"sha256={relay_signature(relay_secret, stamp, body)}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    live.wait_idle(timeout=30)
    assert live.failed_count() == 0, live.failures()
    assert store.get(hs_tenant, "lead", hs_id) == before
    assert store.get(sf_tenant, "lead", foreign_id) is None
    assert store.get(hs_tenant, "lead", foreign_id) is None
    assert store.get(sf_tenant, "lead", sf_id) is not None


# -- erasure ---------------------------------------------------------------------------------------


def test_an_erased_person_is_gone_from_every_table_and_index(live):
    assert live.store is not None and live.services is not None
    tenant_id = live.tenants["hubspot"]
    store = live.store
    notes = store.query(tenant_id, "note", limit=10_000)
    people = {r["crm_id"]: r for r in store.query(tenant_id, "lead", limit=10_000)}
    noted = [n for n in notes if n.get("lead_id") in people or n.get("contact_id") in people]
    assert noted, "the history has no note on a lead to erase"
    person_id = noted[0].get("lead_id") or noted[0].get("contact_id")
    email = people[person_id]["email"]
    assert email and store.search_notes_text(tenant_id, email.split("@")[0], limit=50) is not None

    reports = forget(live.services, email, [tenant_id])
    assert reports[0].total > 0, reports

    leftovers = []
    for name in store.table_names():
        table = store._db.open_table(name).to_arrow()
        for column in table.column_names:
            if not str(table.schema.field(column).type).startswith(("string", "large_string")):
                continue
            for value in table.column(column).to_pylist():
                if value and (email in value or person_id == value):
                    leftovers.append((name, column))
    assert not leftovers, f"{email} / {person_id} survives in {sorted(set(leftovers))}"
    hits = store.search_notes_text(tenant_id, email, limit=50)
    assert all(email not in (h.get("body") or "") for h in hits), hits
    assert store.get(tenant_id, "lead", person_id) is None


# -- privacy ---------------------------------------------------------------------------------------


def test_no_personal_data_reached_the_llm_over_the_whole_run(live, fake_llm):
    """Runs last: every LLM request of the module's run (install, backfill, scoring, copilot, edits)."""
    live.wait_idle(timeout=60)
    bodies = [r.body for r in fake_llm.requests]
    assert bodies, "the copilot made no LLM request over the run: nothing was checked"
    wire = json.dumps(bodies, ensure_ascii=False).lower()
    people = people_of(live)
    leaked = sorted(p for p in people if p.lower() in wire)
    assert not leaked, f"{len(leaked)} personal values reached the LLM, e.g. {leaked[:5]}"
    emails = re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", wire)
    assert not emails, f"email addresses in LLM requests: {emails[:5]}"
