"""End to end: the HubSpot connector against a real HubSpotSandbox over HTTP."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connectors.base import FatalError, ReauthRequired
from connectors.hubspot import auth, mappers
from connectors.hubspot.streams import SEARCH_PAGE_SIZE, PaginationLoopError, Paginator
from manifests.loader import load_manifest
from sandbox.history import generate
from sandbox.hubspot import HubSpotSandbox
from sandbox.hubspot import search as sandbox_search

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hubspot_connector_fixtures import (
    PUBLIC_URL,
    Env,
    config_for,
    insert_contacts,
    make_env,
)

MANIFEST = load_manifest("hubspot")


@pytest.fixture
def fresh_sandbox(tmp_path: Path) -> Iterator[HubSpotSandbox]:
    """An empty sandbox portal of its own."""
    sb = HubSpotSandbox(tmp_path / "hubspot").start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def history_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sb = HubSpotSandbox(tmp_path_factory.mktemp("hubspot-history")).start()
    sb.load_history(generate(7, 5000))
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def history_env(history_sandbox: HubSpotSandbox, tmp_path_factory: pytest.TempPathFactory) -> Env:
    return make_env(history_sandbox, tmp_path_factory.mktemp("fieldwise"))


def _expected_leads(sb: HubSpotSandbox) -> set[str]:
    return {r["id"] for r in sb.repo.all("contacts") if mappers.is_lead(r["properties"])}


def _search_requests(env: Env) -> list[dict[str, Any]]:
    return [e for e in env.sb.state.log.snapshot()["requests"] if e["endpoint"].endswith("/search")]


# -- reads ------------------------------------------------------------------------------------


def test_fetch_reads_leads_by_id_in_batches_of_100_and_leaves_out_missing_ids(history_env):
    sb = history_env.sb
    contacts = sb.repo.all("contacts")
    leads = [r["id"] for r in contacts if mappers.is_lead(r["properties"])][:240]
    not_lead = next(r["id"] for r in contacts if not mappers.is_lead(r["properties"]))
    history_env.reset_log()

    records = history_env.connector().fetch("lead", [*leads, not_lead, "999999999"])

    assert sorted(r["crm_id"] for r in records) == sorted(leads)
    assert history_env.counters()["POST crm/v3/objects/contacts/batch/read"] >= 3
    reads = [
        e
        for e in sb.state.log.snapshot()["requests"]
        if e["endpoint"] == "POST crm/v3/objects/contacts/batch/read"
    ]
    assert max(len(e["body"]["inputs"]) for e in reads) == 100
    converted = [r for r in records if r["is_converted"]]
    assert converted, "the history has converted leads among the first ones"
    for record in converted:
        assert record["converted_at"] is not None
        assert record["converted_at"] >= record["created_at"]
        assert record["converted_contact_id"] == record["crm_id"]


def test_fetch_activity_ids_of_mixed_engagement_types_with_their_links(history_env):
    sb = history_env.sb
    call = sb.repo.all("calls")[0]
    email = sb.repo.all("emails")[0]
    records = history_env.connector().fetch("activity", [call["id"], email["id"]])
    by_type = {r["type"]: r for r in records}
    assert set(by_type) == {"call", "email"}
    linked = next(iter(call["associations"].get("contacts", {})), None)
    assert by_type["call"]["contact_id"] == linked


def test_changed_pages_through_the_5k_history_and_resumes_from_a_checkpoint(history_env):
    connector = history_env.connector()
    expected = _expected_leads(history_env.sb)
    pages = list(connector.changed("lead", None))

    ids = [r["crm_id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    stamps = [r["updated_at"] for p in pages for r in p.records]
    assert stamps == sorted(stamps)
    assert pages[-1].done and not any(p.done for p in pages[:-1])
    assert all(len(p.records) <= SEARCH_PAGE_SIZE for p in pages)

    # A worker that stopped after page 6 resumes from its checkpoint with a new connector.
    first = [r["crm_id"] for p in pages[:6] for r in p.records]
    resumed = list(history_env.connector().changed("lead", None, pages[5].checkpoint))
    rest = [r["crm_id"] for p in resumed for r in p.records]
    assert not set(first) & set(rest)
    assert set(first) | set(rest) == expected


def test_changed_from_the_final_checkpoint_returns_only_records_edited_since(history_env):
    connector = history_env.connector()
    pages = list(connector.changed("account", None))
    final = pages[-1].checkpoint
    company = history_env.sb.repo.all("companies")[3]
    history_env.admin(
        "ui-edit",
        {"objectType": "companies", "id": company["id"], "properties": {"industry": "Robotics"}},
    )

    again = [r for p in history_env.connector().changed("account", None, final) for r in p.records]

    assert [(r["crm_id"], r["industry"]) for r in again] == [(company["id"], "Robotics")]


def test_search_cap_is_passed_by_keyset_windows(history_env, monkeypatch):
    # Lower the sandbox's 10,000-result cap so the 5k history is far past it.
    monkeypatch.setattr(sandbox_search, "RESULT_CAP", 1000)
    expected = _expected_leads(history_env.sb)
    assert len(expected) > 3 * 1000
    naive = requests.post(
        f"{history_env.sb.base_url}/crm/v3/objects/contacts/search",
        json={"limit": 200, "after": "1000"},
        headers={"Authorization": f"Bearer {history_env.sb.access_token}"},
        timeout=10,
    )
    assert naive.status_code == 400  # paging past the cap is refused, as HubSpot does
    history_env.admin("reset-rate-limits")  # that search was not made through the budget
    history_env.reset_log()

    ids = [r["crm_id"] for p in history_env.connector().changed("lead", None) for r in p.records]

    assert len(ids) == len(set(ids)) and set(ids) == expected
    searches = _search_requests(history_env)
    assert searches and all(e["status"] == 200 for e in searches)
    assert {e["body"]["after"] for e in searches} == {"0"}


def test_more_records_in_one_millisecond_than_a_page_are_drained_by_id(fresh_sandbox, tmp_path):
    stamp = "2025-03-01T10:00:00.000Z"
    tied = insert_contacts(fresh_sandbox, 450, stamp)
    later = insert_contacts(fresh_sandbox, 30, "2025-03-02T10:00:00.000Z")
    env = make_env(fresh_sandbox, tmp_path)

    pages = list(env.connector().changed("lead", None))

    ids = [r["crm_id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == 480
    assert set(ids) == set(tied) | set(later)
    sorts = {e["body"]["sorts"][0]["propertyName"] for e in _search_requests(env)}
    assert sorts == {"lastmodifieddate", "hs_object_id"}


def test_deleted_lists_records_archived_in_the_window(history_env):
    sb = history_env.sb
    lead = next(r for r in sb.repo.all("contacts") if mappers.is_lead(r["properties"]))
    before = datetime.now(UTC) - timedelta(seconds=1)
    response = requests.delete(
        f"{sb.base_url}/crm/v3/objects/contacts/{lead['id']}",
        headers={"Authorization": f"Bearer {sb.access_token}"},
        timeout=10,
    )
    assert response.status_code == 204
    after = datetime.now(UTC) + timedelta(seconds=1)
    connector = history_env.connector()

    assert connector.deleted("lead", before, after) == [lead["id"]]
    assert connector.deleted("lead", after, after + timedelta(hours=1)) == []
    assert connector.deleted("contact", before, after) == []


def test_owners_are_users_with_their_territory(history_env):
    users = [r for p in history_env.connector().changed("user", None) for r in p.records]
    assert len(users) == len(history_env.sb.owners())
    assert all(u["territory"] and u["is_active"] for u in users)


# -- provisioning -----------------------------------------------------------------------------


def _portal_shape(env: Env) -> dict[str, Any]:
    """Everything provisioning may touch: live properties and groups per object, subscriptions."""
    sb = env.sb
    shape: dict[str, Any] = {
        "subscriptions": sorted(
            (s["eventType"], s.get("propertyName") or "", s.get("objectTypeId") or "")
            for s in sb.webhooks.subscriptions()
        ),
        "settings": sb.webhooks.settings is not None,
    }
    for object_type in MANIFEST.objects:
        if object_type == "owners":
            continue
        shape[object_type] = (
            sorted(p["name"] for p in sb.registry.all(object_type)),
            sorted(g["name"] for g in sb.registry.groups(object_type)),
        )
    return shape


def test_install_does_exactly_the_dry_run_plan_and_a_second_install_keeps_all(
    fresh_sandbox, tmp_path
):
    env = make_env(fresh_sandbox, tmp_path)
    connector = env.connector()

    dry = connector.plan_install()
    assert not dry.applied and _portal_shape(env)["subscriptions"] == []
    done = connector.install()
    again = env.connector().install()

    assert done.applied and done.items == dry.items
    owned = sum(len(MANIFEST.owned_fields(o)) for o in MANIFEST.objects)
    creates = [i for i in dry.items if i.action == "create"]
    assert len([i for i in creates if i.kind == "field"]) == owned
    assert len([i for i in creates if i.kind == "subscription"]) == len(MANIFEST.subscriptions)
    assert again.changes == []
    assert [i.target for i in again.items] == [i.target for i in dry.items]
    widget = next(i for i in dry.items if i.kind == "widget")
    assert widget.action == "keep" and "hs project upload" in widget.detail


def test_installed_properties_match_the_manifest_in_the_properties_api(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    env.connector().install()
    headers = {"Authorization": f"Bearer {fresh_sandbox.access_token}"}
    for object_type in ("contacts", "companies", "deals"):
        answer = requests.get(
            f"{fresh_sandbox.base_url}/crm/v3/properties/{object_type}", headers=headers, timeout=10
        ).json()
        live = {p["name"]: p for p in answer["results"]}
        for spec in MANIFEST.owned_fields(object_type):
            prop = live[spec.api_name]
            assert (prop["label"], prop["type"], prop["fieldType"]) == (
                spec.label,
                spec.type,
                spec.field_type,
            )
            assert prop["description"] == spec.help_text
            assert prop["groupName"] == MANIFEST.property_group.name
            assert [o["value"] for o in prop["options"]] == [v.value for v in spec.values]
    settings = fresh_sandbox.webhooks.settings
    assert settings["targetUrl"] == PUBLIC_URL + "/webhooks/hubspot"
    subscribed = {s.get("propertyName") for s in fresh_sandbox.webhooks.subscriptions()}
    owned = {f.api_name for o in MANIFEST.objects for f in MANIFEST.owned_fields(o)}
    assert not subscribed & owned


def test_half_installed_portal_is_completed_and_changed_labels_are_updated(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    connector = env.connector()
    connector.install()
    # Cut the install short after the fact: lose two properties and three subscriptions, and let
    # an admin relabel one property in HubSpot.
    fresh_sandbox.registry.archive("contacts", "fieldwise_ai_reasons")
    fresh_sandbox.registry.archive("deals", "fieldwise_ai_battle_card")
    for sub in fresh_sandbox.webhooks.subscriptions()[:3]:
        fresh_sandbox.webhooks.unsubscribe(sub["id"])
    fresh_sandbox.registry.update("contacts", "fieldwise_ai_score", {"label": "Robot Score"})

    plan = env.connector().plan_install()
    actions = {(i.target, i.action) for i in plan.changes}
    assert ("contacts.fieldwise_ai_reasons", "create") in actions
    assert ("deals.fieldwise_ai_battle_card", "create") in actions
    assert ("contacts.fieldwise_ai_score", "update") in actions
    assert len([i for i in plan.changes if i.kind == "subscription"]) == 3
    assert len(plan.changes) == 6

    env.connector().install()
    assert env.connector().plan_install().changes == []
    assert fresh_sandbox.registry.get("contacts", "fieldwise_ai_score")["label"] == "AI Score"


def test_uninstall_leaves_the_portal_as_it_was_before_install(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    # Something that is not Fieldwise's: a custom property of the portal.
    fresh_sandbox.registry.register_many(
        "contacts",
        [
            {
                "name": "favourite_colour",
                "label": "Colour",
                "type": "string",
                "fieldType": "text",
                "groupName": "contactinformation",
            }
        ],
    )
    before = _portal_shape(env)
    env.connector().install()
    assert _portal_shape(env) != before

    plan = env.connector().uninstall()

    assert plan.applied and {i.action for i in plan.items} == {"delete", "keep"}
    assert _portal_shape(env) == before
    assert env.connector().uninstall().changes == []


def test_uninstall_keeping_data_fields_keeps_properties_and_group(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    env.connector().install()
    plan = env.connector().uninstall(keep_data_fields=True)
    assert fresh_sandbox.registry.get("contacts", "fieldwise_ai_score") is not None
    assert fresh_sandbox.webhooks.subscriptions() == []
    assert all(i.action == "keep" for i in plan.items if i.kind in ("field", "property_group"))


# -- OAuth and tokens -------------------------------------------------------------------------


def _consent(sb: HubSpotSandbox, config: Any, scopes: list[str]) -> tuple[str, str]:
    verifier = "v" * 64
    url = auth.authorization_url(
        config,
        redirect_uri="http://fieldwise.test/oauth/hubspot/callback",
        state="state-123",
        code_verifier=verifier,
        scopes=scopes,
    )
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] == ["state-123"]
    assert "v" * 64 not in url
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    back = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert back["state"] == ["state-123"]
    return back["code"][0], verifier


def test_install_flow_exchanges_the_code_for_a_tenant_and_tokens(fresh_sandbox, tmp_path):
    config = config_for(fresh_sandbox, tmp_path)
    code, verifier = _consent(fresh_sandbox, config, MANIFEST.scopes())

    tenant, tokens = auth.exchange_code(
        config,
        code=code,
        redirect_uri="http://fieldwise.test/oauth/hubspot/callback",
        code_verifier=verifier,
    )

    assert tenant.tenant_id == f"hubspot-{fresh_sandbox.portal_id}"
    assert tenant.external_id == str(fresh_sandbox.portal_id)
    assert tenant.integration_user_id == str(fresh_sandbox.app_id)
    assert tenant.status == "installing" and tenant.instance_url == fresh_sandbox.base_url
    assert set(tenant.scopes) == set(MANIFEST.scopes())
    assert tokens.refresh_token and tokens.expires_within(1801) and not tokens.expires_within(60)
    with pytest.raises(FatalError, match="BAD_AUTH_CODE"):
        auth.exchange_code(
            config,
            code=code,
            redirect_uri="http://fieldwise.test/oauth/hubspot/callback",
            code_verifier=verifier,
        )


def test_missing_scope_is_fatal_and_names_the_scope(fresh_sandbox, tmp_path):
    config = config_for(fresh_sandbox, tmp_path)
    code, verifier = _consent(fresh_sandbox, config, ["oauth", "crm.objects.contacts.read"])
    tenant, tokens = auth.exchange_code(
        config,
        code=code,
        redirect_uri="http://fieldwise.test/oauth/hubspot/callback",
        code_verifier=verifier,
    )
    env = make_env(fresh_sandbox, tmp_path)
    env.registry.save(tenant, tokens)

    with pytest.raises(FatalError) as raised:
        env.connector().fetch("opportunity", ["1"])

    assert "crm.objects.deals.read" in raised.value.message
    assert "/install/hubspot" in raised.value.message


def test_expired_token_mid_run_is_refreshed_transparently_and_persisted(history_env):
    old = history_env.registry.tokens(history_env.tenant_id)
    connector = history_env.connector()
    pages = connector.changed("opportunity", None)
    first = next(pages)
    history_env.admin("expire-tokens")
    history_env.reset_log()

    rest = list(pages)

    assert first.records and rest and rest[-1].done
    new = history_env.registry.tokens(history_env.tenant_id)
    assert new.access_token != old.access_token and new.refresh_token == old.refresh_token
    assert new.expires_at > datetime.now(UTC) + timedelta(minutes=20)
    statuses = history_env.statuses()
    assert statuses[401] == 1  # one refused call, refreshed, then repeated
    assert history_env.registry.get(history_env.tenant_id).status == "active"


def test_token_close_to_expiry_is_refreshed_before_the_call(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path, expires_in_s=60)
    old = env.registry.tokens(env.tenant_id).access_token

    env.connector().fetch("lead", ["1"])

    assert env.registry.tokens(env.tenant_id).access_token != old
    assert env.statuses()[401] == 0


def test_revoked_refresh_token_puts_the_tenant_in_needs_reauth(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    connector = env.connector()
    env.admin("revoke-refresh-tokens")

    with pytest.raises(ReauthRequired) as raised:
        connector.fetch("lead", ["1"])

    assert "/install/hubspot" in raised.value.message
    tenant = env.registry.get(env.tenant_id)
    assert tenant.status == "needs_reauth"
    assert "BAD_REFRESH_TOKEN" in (tenant.status_reason or "")


# -- write-back -------------------------------------------------------------------------------


def _installed(sb: HubSpotSandbox, tmp_path: Path, **kwargs: Any) -> Env:
    env = make_env(sb, tmp_path, **kwargs)
    env.connector().install()
    env.reset_log()
    return env


def test_writing_10k_changed_records_costs_at_most_100_calls(fresh_sandbox, tmp_path):
    ids = insert_contacts(fresh_sandbox, 10_000, "2025-01-01T00:00:00.000Z")
    env = _installed(fresh_sandbox, tmp_path)
    stamp = datetime(2025, 5, 1, 8, 30, tzinfo=UTC)
    updates = {
        crm_id: {
            "fieldwise_ai_score": n % 101,
            "fieldwise_ai_grade": ("Hot", "Warm", "Cold")[n % 3],
            "fieldwise_ai_score_changed_at": stamp,
        }
        for n, crm_id in enumerate(ids)
    }

    results = env.connector().write("lead", updates)

    assert len(results) == 10_000 and all(r.ok for r in results)
    calls = sum(env.counters().values())
    assert calls <= 100
    print(f"\n10k writes: {calls} HubSpot calls, {env.statuses()[429]} 429s")
    assert env.statuses()[429] == 0
    last = fresh_sandbox.repo.get("contacts", ids[-1])["properties"]
    assert last["fieldwise_ai_score"] == str(9_999 % 101)
    assert last["fieldwise_ai_score_changed_at"] == "2025-05-01T08:30:00.000Z"


def test_one_invalid_record_in_a_batch_is_reported_alone(fresh_sandbox, tmp_path):
    ids = insert_contacts(fresh_sandbox, 10, "2025-01-01T00:00:00.000Z")
    env = _installed(fresh_sandbox, tmp_path)
    updates = {crm_id: {"fieldwise_ai_grade": "Warm", "fieldwise_ai_score": 61.5} for crm_id in ids}
    updates[ids[4]] = {"fieldwise_ai_grade": "Z"}
    updates["999999999"] = {"fieldwise_ai_grade": "Hot"}

    results = {r.crm_id: r for r in env.connector().write("lead", updates)}

    bad = results[ids[4]]
    assert not bad.ok and bad.error_kind == "skippable" and "INVALID_OPTION" in (bad.error or "")
    missing = results["999999999"]
    assert not missing.ok and missing.error_kind == "skippable"
    assert all(results[i].ok for i in ids if i != ids[4])
    assert fresh_sandbox.repo.get("contacts", ids[0])["properties"]["fieldwise_ai_grade"] == "Warm"
    assert fresh_sandbox.repo.get("contacts", ids[0])["properties"]["fieldwise_ai_score"] == "61.5"
    # Written with the app's token: HubSpot records the change as the integration's.
    entry = fresh_sandbox.repo.get("contacts", ids[0])["history"]["fieldwise_ai_grade"][-1]
    assert (entry["sourceType"], entry["sourceId"]) == ("INTEGRATION", str(fresh_sandbox.app_id))


def test_write_refuses_properties_fieldwise_does_not_own(fresh_sandbox, tmp_path):
    env = make_env(fresh_sandbox, tmp_path)
    with pytest.raises(ValueError, match="lifecyclestage"):
        env.connector().write("lead", {"1": {"lifecyclestage": "customer"}})


@pytest.mark.redis
def test_three_writers_share_a_redis_budget_and_stay_under_the_ten_second_limit(
    tmp_path, redis_url
):
    sb = HubSpotSandbox(tmp_path / "hubspot").start()
    try:
        ids = insert_contacts(sb, 2_400, "2025-01-01T00:00:00.000Z")
        make_env(sb, tmp_path / "installer").connector().install()
        # From here on the portal allows 20 calls per ten seconds; 24 batches need two windows.
        sb.limiter.ten_second_limit = 20
        env = make_env(sb, tmp_path, redis_url=redis_url, settings={"hubspot_ten_second_limit": 20})
        env.admin("reset-rate-limits")
        env.reset_log()
        chunks = [ids[0:800], ids[800:1600], ids[1600:2400]]
        outcomes: list[Any] = []

        def writer(chunk: list[str]) -> None:
            connector = env.connector()
            try:
                outcomes.extend(
                    connector.write("lead", {i: {"fieldwise_ai_grade": "Cold"} for i in chunk})
                )
            except Exception as exc:  # surfaced by the assertion below
                outcomes.append(exc)

        threads = [threading.Thread(target=writer, args=(chunk,)) for chunk in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert len(outcomes) == 2_400 and all(getattr(r, "ok", False) for r in outcomes)
        # Audited from the sandbox's request log: 24 distinct batches write each record once. A
        # batch sent again after a read timeout on a loaded machine is the same idempotent body.
        batches = [
            tuple(sorted(item["id"] for item in entry["body"]["inputs"]))
            for entry in env.sb.state.log.snapshot()["requests"]
            if entry["endpoint"] == "POST crm/v3/objects/contacts/batch/update"
        ]
        distinct = set(batches)
        assert len(distinct) == 24
        assert sorted(i for batch in distinct for i in batch) == sorted(ids)
        assert len(batches) - len(distinct) <= 3, f"{len(batches)} calls for 24 batches"
        print(f"\nthree writers, limit 20/10 s: {env.statuses()[429]} 429s")
        assert env.statuses()[429] == 0
        assert all(
            sb.repo.get("contacts", i)["properties"]["fieldwise_ai_grade"] == "Cold" for i in ids
        )
    finally:
        sb.stop()


def test_paginator_refuses_a_token_that_does_not_move():
    pager: Paginator[str] = Paginator("after-200", "contacts list")
    pager.advance("after-400")
    with pytest.raises(PaginationLoopError, match="after-400"):
        pager.advance("after-400")
    pager.advance(None)
    assert pager.finished
