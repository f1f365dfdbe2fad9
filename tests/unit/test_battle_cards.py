"""Battle cards: built for deals with competitors, cited, tenant-safe, refreshed only on change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.salesforce.mappers import to_opportunity
from copilot.battle_cards import (
    MAX_VALUE_CHARS,
    TASK,
    _plan,
    _Shared,
    build_battle_card,
    card_refs,
    deal_competitor,
    offline_card,
    refresh_battle_cards,
    render_html,
)
from copilot.llm import OFFLINE_LABEL, check_output
from copilot.results import load_results
from copilot.retrieval import resolve_ref
from copilot.settings import save_settings
from core.config import Config
from core.services import configure
from core.tenants import Tenant
from manifests.loader import load_manifest
from sandbox.canonical import load_history_into_store
from sandbox.history import generate

NORTH, SOUTH = "north", "south"


def _note(tenant_id: str, crm_id: str, opportunity_id: str, body: str, day: int = 30) -> dict:
    moment = datetime(2026, 10, day, tzinfo=UTC)
    return {
        "tenant_id": tenant_id,
        "crm": "salesforce",
        "crm_id": crm_id,
        "created_at": moment,
        "updated_at": moment,
        "title": "Deal update",
        "body": body,
        "opportunity_id": opportunity_id,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    services = configure(Config.for_demo(lancedb_uri=str(tmp_path_factory.mktemp("cards") / "db")))
    services.queue.pause()
    history = generate(seed=7, n_leads=600)
    # The embedder keeps vectors by text, so the second tenant's notes are not embedded again.
    loader = services.store
    for tenant_id, org in ((NORTH, "00DNORTH"), (SOUTH, "00DSOUTH")):
        services.registry.save(Tenant(tenant_id, "salesforce", org, None, status="active"))
        load_history_into_store(loader, history, tenant_id)
        save_settings(services.registry, tenant_id, {"competitors": history.competitors})
    # South alone has a loss debrief on every closed deal against each competitor: North's cards
    # must never cite them, although the deal ids are the same in both tenants.
    closed = [o for o in history.opportunities if o.is_closed and o.competitors]
    loader.upsert(
        SOUTH,
        "note",
        [
            _note(
                SOUTH, f"south-only-{o.key}", o.key, f"{o.competitors[0]} won on a bundled price."
            )
            for o in closed
        ],
    )
    open_with = [o.key for o in history.opportunities if not o.is_closed and o.competitors]
    assert open_with, "the generated history should have open deals with competitors"
    changed = refresh_battle_cards(services, NORTH, [o.key for o in history.opportunities])
    yield services, history, open_with, changed
    stop = getattr(services.queue, "stop", None)
    if stop is not None:
        stop()


def _card(services, tenant_id, deal_id):
    return load_results(services.store, tenant_id, "opportunity", [deal_id])[deal_id]["battle_card"]


def test_cards_are_built_for_open_deals_with_competitors(world):
    services, history, open_with, changed = world
    assert set(open_with) <= set(changed)
    closed = {o.key for o in history.opportunities if o.is_closed}
    assert not set(changed) & closed
    assert all(deal_competitor(services, NORTH, d) is not None for d in changed)
    sufficient = [d for d in open_with if _card(services, NORTH, d).detail["status"] == "ok"]
    assert sufficient, "at least one competitor should have enough closed deals"
    card = _card(services, NORTH, sufficient[0])
    sections = card.detail["sections"]
    assert sections["why_we_win"] and sections["why_we_lose"] and sections["objections"]
    assert card.offline and card.detail["freshness"]["label"] == OFFLINE_LABEL
    assert card.detail["freshness"]["newest_evidence"] <= "2026-11-01"
    assert card.value.startswith("<p><b>Battle card: ") and OFFLINE_LABEL in card.value


def test_every_citation_resolves_to_a_record_of_the_same_tenant(world):
    services, _, open_with, _ = world
    for deal_id in open_with:
        card = _card(services, NORTH, deal_id)
        refs = card_refs(card.detail)
        assert refs or card.detail["status"] == "insufficient_evidence"
        for ref in refs:
            assert not ref.startswith("note:south-only"), ref
            record = resolve_ref(services.store, NORTH, ref)
            assert record is not None, ref
            assert record.get("tenant_id") == NORTH


def test_card_value_is_escaped_html_within_the_field_length(world):
    services, _, open_with, _ = world
    field = next(
        f for f in load_manifest("salesforce").object("Opportunity").fields
        if f.result == "battle_card"
    )  # fmt: skip
    for deal_id in open_with:
        value = _card(services, NORTH, deal_id).value
        assert len(value) <= min(MAX_VALUE_CHARS, field.length)
        assert "<script" not in value.lower()
    detail = {
        "competitor": "<Evil & Co>",
        "record": {"won": 1, "lost": 2},
        "sections": {
            "summary": {"text": "<script>alert(1)</script>", "cites": ["note:1"], "dates": []},
            "why_we_win": [{"text": "x" * 400, "cites": ["note:1"], "dates": ["2026-01-01"]}] * 60,
            "objections": [
                {"objection": "<b>price</b>", "response": "a & b", "cites": ["note:1"], "dates": []}
            ],
        },
        "freshness": {"generated_at": "2026-11-01T10:00:00+00:00", "label": OFFLINE_LABEL},
    }
    value = render_html(detail)
    assert (
        "<script>" not in value and "&lt;script&gt;" in value and "&lt;Evil &amp; Co&gt;" in value
    )
    assert "&lt;b&gt;price&lt;/b&gt;" in value
    assert len(value) <= MAX_VALUE_CHARS


def test_a_competitor_with_too_little_evidence_gets_not_enough_evidence(world):
    services, history, _, _ = world
    open_deal = next(o for o in history.opportunities if not o.is_closed and not o.competitors)
    closed_deal = next(o for o in history.opportunities if o.is_closed and not o.competitors)
    later = datetime(2026, 11, 1, 12, tzinfo=UTC)
    for deal in (open_deal, closed_deal):
        record = services.store.get(NORTH, "opportunity", deal.key)
        record.update(competitors=["Zephyr"], updated_at=later)
        services.store.upsert(NORTH, "opportunity", [record])
    assert refresh_battle_cards(services, NORTH, [open_deal.key]) == [open_deal.key]
    card = _card(services, NORTH, open_deal.key)
    assert card.detail["status"] == "insufficient_evidence"
    assert card.detail["missing"]["closed_deals_found"] <= 1
    assert "Not enough evidence" in card.value and "Zephyr" in card.value
    assert card.detail["sections"] == {}


def test_a_card_is_rebuilt_only_when_its_evidence_changes(world):
    services, _, open_with, _ = world
    deal_id = open_with[0]
    before = _card(services, NORTH, deal_id)
    assert refresh_battle_cards(services, NORTH, open_with) == []
    assert build_battle_card(services, NORTH, deal_id).generated_at == before.generated_at
    competitor, _ = deal_competitor(services, NORTH, deal_id)
    services.store.upsert(
        NORTH,
        "note",
        [_note(NORTH, "note-new-objection", deal_id, f"{competitor} offered a 40% discount.", 31)],
    )
    assert refresh_battle_cards(services, NORTH, open_with) == [deal_id]
    after = _card(services, NORTH, deal_id)
    assert after.generated_at > before.generated_at
    assert after.detail["evidence_hash"] != before.detail["evidence_hash"]


def test_a_competitor_named_only_in_notes_triggers_a_card(world):
    services, history, _, _ = world
    deal = next(
        o for o in history.opportunities[::-1] if not o.is_closed and not o.competitors
        and deal_competitor(services, NORTH, o.key) is None
    )  # fmt: skip
    assert build_battle_card(services, NORTH, deal.key) is None
    services.store.upsert(
        NORTH,
        "note",
        [_note(NORTH, "note-mentions-vtr", deal.key, "They are also looking at VTR.")],
    )
    assert deal_competitor(services, NORTH, deal.key)[0] == "Vantora"
    card = build_battle_card(services, NORTH, deal.key)
    assert card is not None and card.detail["competitor"] == "Vantora"
    assert build_battle_card(services, NORTH, "opp-missing") is None


def test_the_offline_builder_output_is_valid_for_the_task(world):
    services, _, open_with, _ = world
    card = _card(services, NORTH, open_with[0])
    refs = set(card_refs(card.detail))
    from copilot.retrieval import retrieve

    evidence = retrieve(
        services.store, NORTH, "price objection", facets={"competitor": card.detail["competitor"]}
    )
    data = offline_card(card.detail["competitor"], evidence)
    assert check_output(TASK, data, {e.ref for e in evidence}) == []
    assert refs


def test_salesforce_opportunity_competitors_come_from_the_multiselect_picklist():
    raw = {
        "attributes": {
            "type": "Opportunity",
            "url": "/services/data/v60.0/sobjects/Opportunity/006",
        },
        "Id": "006000000000001AAA",
        "Name": "Acme - Platform",
        "StageName": "Proposal",
        "IsClosed": False,
        "IsWon": False,
        "Amount": 42000.0,
        "CloseDate": "2026-12-15",
        "Competitors__c": "Vantora; Pipewell;Vantora",
        "Loss_Reason__c": None,
        "CreatedDate": "2026-09-01T10:00:00.000+0000",
        "SystemModstamp": "2026-10-01T10:00:00.000+0000",
    }
    opp = to_opportunity(raw, "north")
    assert opp["competitors"] == ["Vantora", "Pipewell"]
    assert "Competitors__c" not in opp["custom"]
    assert to_opportunity({**raw, "Competitors__c": None}, "north")["competitors"] == []
    assert "Competitors__c" in load_manifest("salesforce").input_fields("Opportunity")


def test_new_intel_rebuilds_the_card_and_the_card_cites_it(world, tmp_path):
    from copilot.intel import add_intel

    services, _, open_with, _ = world
    deal_id = next(d for d in open_with if _card(services, NORTH, d).detail["status"] == "ok")
    competitor = _card(services, NORTH, deal_id).detail["competitor"]
    brief = tmp_path / "brief.md"
    brief.write_text(
        f"# {competitor} pricing\n{competitor} lists at $80 per seat and discounts 25% "
        "for three-year terms.\n"
    )
    added = add_intel(services, NORTH, competitor, [brief])
    assert deal_id in added.refresh_opportunity_ids
    assert deal_id in refresh_battle_cards(services, NORTH, added.refresh_opportunity_ids)
    card = _card(services, NORTH, deal_id)
    intel_refs = [r for r in card_refs(card.detail) if r.startswith("intel:")]
    assert intel_refs and "$80 per seat" in card.value
    assert resolve_ref(services.store, NORTH, intel_refs[0])["competitor"] == competitor


def test_a_refresh_plans_each_card_as_it_would_be_planned_alone(world):
    # One refresh shares the competitor-wide searches among its deals; every plan must still
    # equal the plan of that deal built on its own.
    services, _, open_with, _ = world
    shared = _Shared()
    together = [_plan(services, NORTH, deal_id, shared) for deal_id in open_with]
    alone = [_plan(services, NORTH, deal_id) for deal_id in open_with]
    assert together == alone
    assert len(shared.against) < len(open_with)
    assert all(plan is not None and plan.evidence for plan in together)
