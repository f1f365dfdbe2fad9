"""End to end: the Salesforce connector against real SalesforceSandbox orgs over HTTPS."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures", "salesforce_connector_fixtures"]

from connectors.base import ReauthRequired, RetriableError  # noqa: E402
from connectors.salesforce import auth, client  # noqa: E402
from connectors.salesforce.streams import SalesforceStream  # noqa: E402
from manifests.loader import load_manifest  # noqa: E402
from sandbox.salesforce.ids import to18  # noqa: E402

MANIFEST = load_manifest("salesforce")


def lead_ids(env, limit=None):
    rows = env.sb.state.store.iter("Lead")
    ids = [record_id for record_id, _ in rows]
    return ids[:limit] if limit else ids


def describe_fields(env, sobject):
    return {f["name"] for f in env.api.get(f"sobjects/{sobject}/describe").json()["fields"]}


# --------------------------------------------------------------------------------------------------
# Reading


def test_fetch_by_ids_maps_records_and_leaves_out_unknown_ids(sf_history_env):
    env = sf_history_env
    ids = lead_ids(env, 450)
    missing = to18("00Q8d0000000000")  # well formed, never issued
    conn = env.connector()
    env.reset_log()
    records = conn.fetch("lead", [*ids, missing, ids[0]])
    assert sorted(r["crm_id"] for r in records) == sorted(ids)
    assert env.sb.state.log.counters["GET query"] == 3  # 450 ids in chunks of 200
    lead = next(r for r in records if r["email_opens"] or r["page_visits"])
    assert lead["tenant_id"] == env.tenant.tenant_id and lead["crm"] == "salesforce"
    raw = env.sb.state.store.get("Lead", lead["crm_id"])
    assert lead["email_opens"] == int(raw["Email_Opens__c"])
    assert lead["page_visits"] == int(raw["Page_Visits__c"])
    assert lead["custom"]["Product_Interest__c"] == raw["Product_Interest__c"]
    assert "Email_Opens__c" not in lead["custom"]


def test_changed_pages_through_5k_leads_and_resumes_from_a_checkpoint(sf_history_env):
    env = sf_history_env
    conn = env.connector()
    env.reset_log()
    pages = list(conn.changed("lead", None))
    assert [len(p.records) for p in pages] == [2000, 2000, 1000]
    assert [p.done for p in pages] == [False, False, True]
    assert env.sb.state.log.counters["GET query"] == 3
    everything = [r["crm_id"] for p in pages for r in p.records]
    assert len(set(everything)) == 5000 == env.sb.state.store.count("Lead")
    stamps = [r["updated_at"] for p in pages for r in p.records]
    assert stamps == sorted(stamps)

    resumed = list(env.connector().changed("lead", None, pages[0].checkpoint))
    assert [r["crm_id"] for p in resumed for r in p.records] == everything[2000:]
    assert resumed[-1].checkpoint == pages[-1].checkpoint


def test_changed_since_breaks_ties_on_equal_timestamps(sf_history_env, monkeypatch):
    env = sf_history_env
    ids = lead_ids(env, 200)
    since = datetime.now(UTC) - timedelta(seconds=1)
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "Id": i, "Title": "CFO"} for i in ids],
    }
    assert all(r["success"] for r in env.api.patch("composite/sobjects", body).json())
    stamps = {env.sb.state.store.get("Lead", i)["SystemModstamp"] for i in ids}
    assert len(stamps) < len(ids)  # many records share a millisecond: the Id tiebreak matters
    monkeypatch.setattr(SalesforceStream, "PAGE_SIZE", 7)
    pages = list(env.connector().changed("lead", since))
    seen = [r["crm_id"] for p in pages for r in p.records]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert all(r["title"] == "CFO" for p in pages for r in p.records)


def test_activities_span_tasks_and_events_and_resume_across_objects(sf_history_env):
    env = sf_history_env
    pages = list(env.connector().changed("activity", None))
    kinds = {r["type"] for p in pages for r in p.records}
    assert kinds == {"call", "email", "task", "meeting"}
    total = env.sb.state.store.count("Task") + env.sb.state.store.count("Event")
    assert sum(len(p.records) for p in pages) == total
    handover = next(i for i, p in enumerate(pages) if p.checkpoint == {"object": "Event"})
    rest = list(env.connector().changed("activity", None, pages[handover].checkpoint))
    assert [r["crm_id"] for p in rest for r in p.records] == [
        r["crm_id"] for p in pages[handover + 1 :] for r in p.records
    ]
    meetings = env.connector().fetch("activity", [rest[0].records[0]["crm_id"]])
    assert meetings[0]["type"] == "meeting" and meetings[0]["duration_minutes"]


def test_deleted_lists_the_ids_deleted_in_the_window(sf_history_env):
    env = sf_history_env
    start = datetime.now(UTC) - timedelta(minutes=1)
    doomed = [env.api.create("Lead", LastName=f"Gone{n}", Company="C") for n in range(3)]
    for record_id in doomed:
        assert env.api.delete(f"sobjects/Lead/{record_id}").status_code == 204
    found = env.connector().deleted("lead", start, datetime.now(UTC) + timedelta(minutes=1))
    assert sorted(found) == sorted(doomed)
    assert env.connector().fetch("lead", doomed) == []


# --------------------------------------------------------------------------------------------------
# Provisioning


def owned_full_names():
    return {f"{obj}.{name}" for obj in MANIFEST.objects for name in MANIFEST.owned_field_names(obj)}


def test_dry_run_plan_is_exactly_what_install_does_and_fields_appear(sf_empty_env):
    env = sf_empty_env
    before = {obj: describe_fields(env, obj) for obj in ("Lead", "Contact", "Opportunity")}
    conn = env.connector()
    plan = conn.plan_install()
    assert not plan.applied
    assert owned_full_names() <= {i.target for i in plan.changes if i.kind == "field"}
    assert describe_fields(env, "Lead") == before["Lead"]  # the dry run changed nothing
    done = conn.install()
    assert done.applied
    assert [(i.kind, i.target, i.action) for i in done.items] == [
        (i.kind, i.target, i.action) for i in plan.items
    ]
    for obj in ("Lead", "Contact", "Opportunity"):
        assert describe_fields(env, obj) - before[obj] == set(MANIFEST.owned_field_names(obj))
    grade = next(
        f
        for f in env.api.get("sobjects/Lead/describe").json()["fields"]
        if f["name"] == "Fieldwise_AI_Grade__c"
    )
    assert [v["value"] for v in grade["picklistValues"]] == ["Hot", "Warm", "Cold"]
    assert grade["restrictedPicklist"] is True
    outbound = env.api.admin("outbound-messages").json()["outbound_messages"]
    assert {o["name"] for o in outbound} == {
        s.name for s in MANIFEST.subscriptions if s.kind == "outbound_message"
    }
    assert all(
        o["endpoint_url"] == "https://fieldwise.example/webhooks/salesforce/outbound"
        for o in outbound
    )
    widget = next(i for i in done.items if i.kind == "widget")
    assert widget.action == "keep" and "sf project deploy" in widget.detail

    second = env.connector().install()
    assert second.changes == [] and {i.action for i in second.items} == {"keep"}


def test_half_installed_org_is_completed(sf_empty_env):
    env = sf_empty_env
    conn = env.connector()
    conn.install()
    mdapi = conn._metadata_api()
    mdapi.CustomField.delete(["Lead.Fieldwise_AI_Segment__c", "Opportunity.Fieldwise_AI_Score__c"])
    relabelled = mdapi.CustomField(
        fullName="Contact.Fieldwise_AI_Score__c",
        label="Old label",
        type="Number",
        precision=3,
        scale=0,
    )
    mdapi.CustomField.update([relabelled])
    env.api.admin("outbound-messages", {"delete": "Fieldwise_Task_Changed"})

    plan = env.connector().plan_install()
    assert sorted((i.target, i.action) for i in plan.changes) == [
        ("Contact.Fieldwise_AI_Score__c", "update"),
        ("Lead.Fieldwise_AI_Segment__c", "create"),
        ("Opportunity.Fieldwise_AI_Score__c", "create"),
        ("Task.Fieldwise_Task_Changed", "create"),
    ]
    env.connector().install()
    assert env.connector().plan_install().changes == []
    assert "Fieldwise_AI_Segment__c" in describe_fields(env, "Lead")


def test_uninstall_leaves_describe_exactly_as_before_install(sf_empty_env):
    env = sf_empty_env
    objects = ("Lead", "Contact", "Account", "Opportunity")
    before = {obj: env.api.get(f"sobjects/{obj}/describe").json() for obj in objects}
    env.connector().install()
    kept = env.connector().uninstall(keep_data_fields=True)
    assert {i.action for i in kept.items if i.kind == "field"} == {"keep"}
    assert "Fieldwise_AI_Score__c" in describe_fields(env, "Lead")
    assert env.api.admin("outbound-messages").json()["outbound_messages"] == []
    removed = env.connector().uninstall()
    assert {i.target for i in removed.items if i.action == "delete"} == owned_full_names()
    after = {obj: env.api.get(f"sobjects/{obj}/describe").json() for obj in objects}
    assert after == before
    assert env.connector().uninstall().changes == []  # nothing of Fieldwise's is left


# --------------------------------------------------------------------------------------------------
# Tokens


def test_authorization_url_uses_pkce_s256_and_the_manifest_scopes(sf_empty_env):
    url = auth.authorization_url(
        sf_empty_env.config,
        redirect_uri="https://fieldwise.example/cb",
        state="s1",
        code_verifier="v" * 48,
        scopes=["api", "refresh_token"],
    )
    assert url.startswith(sf_empty_env.sb.instance_url + "/services/oauth2/authorize?")
    assert "code_challenge_method=S256" in url and "code_challenge=" in url
    assert "scope=api+refresh_token" in url and "state=s1" in url
    assert "v" * 48 not in url


def test_install_keys_the_tenant_on_the_org_and_integration_user(sf_empty_env):
    env = sf_empty_env
    tenant = env.tenant
    assert tenant.external_id == env.sb.org_id
    assert tenant.tenant_id == f"salesforce-{env.sb.org_id}"
    assert tenant.integration_user_id == env.sb.user_id
    assert tenant.instance_url == env.sb.instance_url and tenant.status == "installing"
    tokens = env.registry.tokens(tenant.tenant_id)
    assert tokens.refresh_token and tokens.expires_at > datetime.now(UTC) + timedelta(hours=1)


def test_expired_token_is_refreshed_once_and_persisted(sf_empty_env):
    env = sf_empty_env
    conn = env.connector()
    ids = [env.api.create("Lead", LastName="Tok", Company="C")]
    before = env.registry.tokens(env.tenant.tenant_id)
    env.api.admin("expire-tokens")
    assert [r["crm_id"] for r in conn.fetch("lead", ids)] == ids
    after = env.registry.tokens(env.tenant.tenant_id)
    assert after.access_token != before.access_token
    assert after.refresh_token == before.refresh_token  # no rotation: the old one is kept
    token_calls = env.sb.state.log.counters["POST oauth2/token"]
    # A second worker with the stale token adopts the stored one instead of refreshing again.
    stale = env.connector()
    stale._tokens = before
    stale._sf = None
    assert stale.fetch("lead", ids)
    assert env.sb.state.log.counters["POST oauth2/token"] == token_calls


def test_rotated_refresh_token_is_persisted_and_the_old_one_is_not_needed(sf_empty_env):
    env = sf_empty_env
    env.api.admin("oauth-settings", {"rotate_refresh_tokens": True})
    original = env.registry.tokens(env.tenant.tenant_id)
    conn = env.connector()
    env.api.admin("expire-tokens")
    conn.query("SELECT Id FROM Lead LIMIT 1")
    rotated = env.registry.tokens(env.tenant.tenant_id)
    assert rotated.refresh_token != original.refresh_token
    with pytest.raises(ReauthRequired):  # the old refresh token is dead
        auth.refresh(env.config, env.tenant, original)
    env.api.admin("expire-tokens")
    env.connector().query("SELECT Id FROM Lead LIMIT 1")  # the rotated one keeps working
    assert env.registry.get(env.tenant.tenant_id).status == "installing"


def test_revoked_refresh_token_marks_the_tenant_needs_reauth(sf_empty_env):
    env = sf_empty_env
    conn = env.connector()
    env.api.admin("revoke-refresh-tokens")
    env.api.admin("expire-tokens")
    with pytest.raises(ReauthRequired, match="/install/salesforce"):
        conn.query("SELECT Id FROM Lead LIMIT 1")
    tenant = env.registry.get(env.tenant.tenant_id)
    assert tenant.status == "needs_reauth" and "/install/salesforce" in tenant.status_reason


def test_jwt_bearer_install_works(sf_empty_env):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    env = sf_empty_env
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldwise-jwt")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    env.api.admin(
        "jwt-certificate",
        {"certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode()},
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    tenant, tokens = auth.jwt_bearer(
        env.config, username="integration@fieldwise-sandbox.example", private_key_pem=pem
    )
    assert tenant.external_id == env.sb.org_id and tenant.integration_user_id == env.sb.user_id
    assert tokens.refresh_token is None
    env.registry.save(tenant, tokens)
    assert env.connector().query("SELECT Id FROM User LIMIT 1")["records"]
    with pytest.raises(ReauthRequired):
        auth.jwt_bearer(env.config, username="nobody@example.com", private_key_pem=pem)


# --------------------------------------------------------------------------------------------------
# Daily budget


def test_fieldwise_never_uses_more_than_its_share_of_the_daily_allocation(sf_empty_env):
    env = sf_empty_env
    env.api.admin("api-limit", {"limit": 100, "reset": True})
    try:
        conn = env.connector()
        deferred = None
        for _ in range(40):
            try:
                conn.query("SELECT Id FROM Lead LIMIT 1")
            except RetriableError as exc:
                deferred = exc
                break
        assert deferred is not None and deferred.retry_after_s > 3600
        assert "20%" in deferred.message
        assert env.sb.api_used == 20  # 20% of 100, and not one call more
        with pytest.raises(RetriableError):
            env.connector().query("SELECT Id FROM Lead LIMIT 1")  # a new worker, same counter
        assert env.sb.api_used == 20
    finally:
        env.api.admin("api-limit", {"limit": 100_000, "reset": True})
        env.connector(counter=type(env.counter)()).query("SELECT Id FROM Lead LIMIT 1")
    assert client._allocations[env.sb.org_id] == 100_000


def test_org_wide_limit_exceeded_is_retriable_with_a_long_wait(sf_empty_env):
    env = sf_empty_env
    conn = env.connector()
    conn.query("SELECT Id FROM Lead LIMIT 1")
    env.api.admin("api-limit", {"used": 100_000})
    try:
        with pytest.raises(RetriableError, match="allocation frees up") as raised:
            conn.query("SELECT Id FROM Lead LIMIT 1")
        assert raised.value.crm_code == "REQUEST_LIMIT_EXCEEDED"
        assert raised.value.retry_after_s >= 3600
    finally:
        env.api.admin("api-limit", {"reset": True})


# --------------------------------------------------------------------------------------------------
# Write-back


def test_writing_10000_records_costs_50_calls(sf_write_env):
    env = sf_write_env
    ids = lead_ids(env)
    assert len(ids) == 10_000
    conn = env.connector()
    conn.query("SELECT Id FROM Lead LIMIT 1")  # learn the org's allocation before measuring
    changed_at = datetime(2026, 11, 22, 15, 4, 5, 123000, tzinfo=UTC)
    updates = {
        record_id: {
            "Fieldwise_AI_Score__c": n % 101,
            "Fieldwise_AI_Grade__c": ("Hot", "Warm", "Cold")[n % 3],
            "Fieldwise_AI_Score_Changed_At__c": changed_at,
        }
        for n, record_id in enumerate(ids)
    }
    env.reset_log()
    results = conn.write("lead", updates)
    assert env.api_calls() == 50
    assert env.sb.state.log.counters == {"PATCH composite/sobjects": 50}
    assert [r.crm_id for r in results] == ids and all(r.ok for r in results)
    last = env.sb.state.store.get("Lead", ids[-1])
    assert last["Fieldwise_AI_Score__c"] == (len(ids) - 1) % 101
    assert last["Fieldwise_AI_Score_Changed_At__c"] == "2026-11-22T15:04:05.123+0000"


def test_a_record_the_org_refuses_fails_alone(sf_write_env):
    env = sf_write_env
    ids = lead_ids(env, 5)
    deleted = env.api.create("Lead", LastName="Soon gone", Company="C")
    env.api.delete(f"sobjects/Lead/{deleted}")
    updates = {i: {"Fieldwise_AI_Grade__c": "Hot"} for i in ids}
    updates[ids[2]] = {"Fieldwise_AI_Grade__c": "Z"}
    updates[deleted] = {"Fieldwise_AI_Grade__c": "Warm"}
    results = {r.crm_id: r for r in env.connector().write("lead", updates)}
    bad = results[ids[2]]
    assert (bad.ok, bad.error_kind) == (False, "skippable")
    assert "restricted picklist" in bad.error
    assert (results[deleted].ok, results[deleted].error_kind) == (False, "skippable")
    assert all(results[i].ok for i in ids if i != ids[2])
    assert env.sb.state.store.get("Lead", ids[0])["Fieldwise_AI_Grade__c"] == "Hot"


def test_writes_carry_call_options_so_change_events_show_fieldwise(sf_write_env, sf_receiver):
    env = sf_write_env
    env.api.admin("cdc-relay", {"url": sf_receiver.url, "secret": "s" * 32, "objects": ["Lead"]})
    try:
        env.reset_log()
        ids = lead_ids(env, 3)
        env.connector().write("lead", {i: {"Fieldwise_AI_Segment__c": "Mid-market"} for i in ids})
        (posted,) = sf_receiver.wait_for(1)
    finally:
        env.api.admin("cdc-relay", {"url": None})
    import json

    events = json.loads(posted.body)
    assert {e["payload"]["ChangeEventHeader"]["changeOrigin"] for e in events} == {
        "com/salesforce/api/rest/62.0;client=Fieldwise"
    }
    logged = env.sb.state.log.snapshot()["requests"]
    assert logged and all(
        {k.lower(): v for k, v in e["headers"].items()}.get("sforce-call-options")
        == "client=Fieldwise"
        for e in logged
    )


def test_writes_refuse_fields_fieldwise_does_not_own(sf_write_env):
    env = sf_write_env
    env.reset_log()
    with pytest.raises(KeyError, match="Company"):
        env.connector().write("lead", {lead_ids(env, 1)[0]: {"Company": "Hijacked"}})
    with pytest.raises(ValueError, match="writes no fields"):
        env.connector().write("activity", {to18("00T8d0000000001"): {"Subject": "x"}})
    assert env.api_calls() == 0


def test_a_removed_fieldwise_field_is_fatal_with_the_install_hint(sf_write_env):
    env = sf_write_env
    conn = env.connector()
    conn._metadata_api().CustomField.delete(["Account.Fieldwise_AI_Segment__c"])
    try:
        account = next(i for i, _ in env.sb.state.store.iter("Account"))
        (result,) = conn.write("account", {account: {"Fieldwise_AI_Segment__c": "SMB"}})
        assert (result.ok, result.error_kind) == (False, "fatal")
        assert "install" in result.error
    finally:
        conn.install()
        env.drop_outbound_messages()


@pytest.mark.redis
def test_three_workers_sharing_a_redis_budget_all_land(sf_write_env, redis_url):
    import redis

    from core.ratelimit import RedisWindowCounter

    env = sf_write_env
    ids = lead_ids(env)[:1800]
    shares = [ids[n::3] for n in range(3)]
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            counter = RedisWindowCounter(redis.Redis.from_url(redis_url))
            results = env.connector(counter=counter).write(
                "lead", {i: {"Fieldwise_AI_Next_Step__c": f"worker {n}"} for i in shares[n]}
            )
            assert all(r.ok for r in results) and len(results) == 600
        except BaseException as exc:  # reported in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for n, share in enumerate(shares):
        for record_id in share:
            assert env.sb.state.store.get("Lead", record_id)["Fieldwise_AI_Next_Step__c"] == (
                f"worker {n}"
            )
    spent = redis.Redis.from_url(redis_url).zcard(
        f"fieldwise:budget:salesforce:{env.tenant.tenant_id}:daily"
    )
    assert spent == 9  # every call was counted in the shared budget: 3 workers x 3 batches
