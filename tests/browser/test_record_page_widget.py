"""A rep's view: the sandbox CRM record page of a contested deal, with the Fieldwise widget inside.

Headless chromium opens the Salesforce and the HubSpot record page of a deal where a competitor is
in play. The page embeds the widget in an iframe; the widget asks Fieldwise for the card through a
signed call (Salesforce: the External Credential's HMAC with the secret handed over at install;
HubSpot: the app's v3 signature) and shows score, grade, reasons, the battle card, the forecast
note and the risk flags. A thumbs-up click travels the same signed way and is stored as feedback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import shot
from werkzeug.serving import make_server

from copilot.battle_cards import render_html
from copilot.results import CopilotResult, save_results
from core.config import Config
from core.services import Services
from core.tenants import Tenant
from handlers.app import create_app
from handlers.context import EXTENSION
from sandbox.runner import Sandboxes, crm_settings, start_sandboxes
from scoring.feedback import read_feedback
from scoring.ledger import LedgerEntry, ScoreLedger

COMPETITOR = "Vantora"
WIN_REASON = "A pilot on their own pipeline data proved the forecast accuracy"
NOTE_SENTENCE = "Competing with Vantora; the buyer liked the pilot plan."


@dataclass
class Deals:
    sandboxes: Sandboxes
    services: Services
    tenants: dict[str, str]
    pages: dict[str, str]
    deal_ids: dict[str, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _analysed(services: Services, tenant_id: str, crm: str, deal_id: str) -> None:
    """The deal as the pipeline leaves it: synced, scored, and with its copilot results."""
    now = datetime.now(UTC)
    services.store.upsert(tenant_id, "opportunity", [{
        "tenant_id": tenant_id, "crm": crm, "crm_id": deal_id, "name": "Globex expansion",
        "stage": "Proposal", "is_closed": False, "competitors": [COMPETITOR],
        "close_date": date.today() + timedelta(days=30), "updated_at": now}])  # fmt: skip
    ScoreLedger(services.store).record([LedgerEntry(
        tenant_id=tenant_id, kind="opportunity", crm_id=deal_id, scored_at=now, old_score=None,
        new_score=72, old_grade=None, new_grade="Hot", model_version="opportunity-v3",
        reasons="+ Budget confirmed in discovery", reasons_detail=[
            {"text": "+ Budget confirmed in discovery", "evidence": []}],
        next_step="Send the pilot plan")])  # fmt: skip
    ref = f"opportunity:{deal_id}"
    card = {
        "status": "ok", "competitor": COMPETITOR, "record": {"won": 4, "lost": 2},
        "sections": {
            "summary": {"text": f"{COMPETITOR}: met on 6 closed deals, 4 won.",
                        "cites": ["opportunity:w1"], "dates": []},
            "why_we_win": [{"text": WIN_REASON, "cites": ["note:n1"], "dates": ["2026-10-01"]}],
            "why_we_lose": [], "objections": [], "landmines": [], "pricing": [],
        },
        "freshness": {"generated_at": now.isoformat(), "newest_evidence": "2026-10-01",
                      "evidence_items": 2, "label": "generated offline"},
        "offline": True,
    }  # fmt: skip
    flags = {"flags": [{"flag": "competitor", "text": f"Competitor in play: {COMPETITOR}",
                        "cites": [ref], "dates": [], "numbers": {"competitors": 1},
                        "acknowledged": False, "review": None}], "open": 1}  # fmt: skip
    note = {"sentences": [{"text": "Globex expansion: Proposal, closing in 30 days.",
                           "cites": [ref]}, {"text": NOTE_SENTENCE, "cites": [ref]}],
            "next_step": {"text": "Send the pilot plan", "cites": [ref]}, "offline": True}  # fmt: skip
    save_results(services.store, tenant_id, [
        CopilotResult("opportunity", deal_id, "battle_card", render_html(card), card, True, None,
                      now),
        CopilotResult("opportunity", deal_id, "forecast_note", NOTE_SENTENCE, note, True, None,
                      now),
        CopilotResult("opportunity", deal_id, "risk_flags", flags["flags"][0]["text"], flags,
                      False, None, now),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def deals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deals]:
    folder: Path = tmp_path_factory.mktemp("record-page-widget")
    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    sandboxes = start_sandboxes(folder / "sandbox", widget_base_url=app_url)
    salesforce, hubspot = sandboxes.salesforce, sandboxes.hubspot
    app = create_app(Config.for_demo(lancedb_uri=str(folder / "lancedb"), public_url=app_url,
                                     **crm_settings(salesforce, hubspot)))  # fmt: skip
    services: Services = app.extensions[EXTENSION]
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hubspot_deal = requests.post(
        f"{hubspot.base_url}/crm/v3/objects/deals", timeout=10,
        headers={"Authorization": f"Bearer {hubspot.access_token}"},
        json={"properties": {"dealname": "Globex expansion", "dealstage": "presentationscheduled"}},
    ).json()["id"]  # fmt: skip
    salesforce_deal = salesforce.session().post(
        f"{salesforce.instance_url}/services/data/v62.0/sobjects/Opportunity", timeout=10,
        headers={"Authorization": f"Bearer {salesforce.access_token}"},
        json={"Name": "Globex expansion", "StageName": "Proposal",
              "CloseDate": (date.today() + timedelta(days=30)).isoformat()},
    ).json()["id"]  # fmt: skip
    tenants = {"hubspot": f"hubspot-{hubspot.portal_id}",
               "salesforce": f"salesforce-{salesforce.org_id}"}  # fmt: skip
    services.registry.save(Tenant(tenants["hubspot"], "hubspot", str(hubspot.portal_id), None,
                                  status="active"))  # fmt: skip
    services.registry.save(Tenant(tenants["salesforce"], "salesforce", salesforce.org_id,
                                  salesforce.instance_url, status="active"))  # fmt: skip
    _analysed(services, tenants["hubspot"], "hubspot", hubspot_deal)
    _analysed(services, tenants["salesforce"], "salesforce", salesforce_deal)
    # The admin pastes the secret the install handed over into the org's External Credential.
    secret = services.registry.widget_secret(tenants["salesforce"], create=True)
    salesforce.session().post(f"{salesforce.instance_url}/__admin/fieldwise-credential",
                              json={"secret": secret}, timeout=10).raise_for_status()  # fmt: skip
    yield Deals(
        sandboxes, services, tenants,
        {"hubspot": f"{hubspot.base_url}/ui/deals/{hubspot_deal}",
         "salesforce": f"{salesforce.instance_url}/ui/Opportunity/{salesforce_deal}"},
        {"hubspot": hubspot_deal, "salesforce": salesforce_deal},
    )  # fmt: skip
    server.shutdown()
    services.queue.stop()  # type: ignore[attr-defined]
    sandboxes.stop()


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_record_page_widget_shows_the_ai_fields_and_stores_a_thumbs_up(page, deals, crm):
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(deals.pages[crm])
    widget = page.frame_locator("iframe[title=Fieldwise]")
    widget.get_by_test_id("fw-card").wait_for()
    assert widget.get_by_test_id("fw-score").inner_text() == "72"
    assert widget.get_by_test_id("fw-grade").inner_text() == "Hot"
    assert "Budget confirmed in discovery" in widget.get_by_test_id("fw-reasons").inner_text()
    battle_card = widget.get_by_test_id("fw-battle-card").inner_text()
    assert WIN_REASON in battle_card and "generated offline" in battle_card
    assert "note:n1" in battle_card  # the citation is shown beside the bullet
    forecast = widget.get_by_test_id("fw-forecast-note").inner_text()
    assert NOTE_SENTENCE in forecast and "generated offline" in forecast
    flags = widget.get_by_test_id("fw-risk-flags").inner_text()
    assert f"Competitor in play: {COMPETITOR}" in flags
    shot(page, f"record-page-{crm}-deal")

    store, tenant_id = deals.services.store, deals.tenants[crm]
    before = len(read_feedback(store, tenant_id))
    widget.get_by_test_id("fw-thumbs-up").click()
    widget.locator("button.chosen[data-testid=fw-thumbs-up]").wait_for()
    rows = read_feedback(store, tenant_id)
    assert len(rows) == before + 1
    assert (rows[-1]["crm_id"], rows[-1]["entity"], rows[-1]["result"], rows[-1]["vote"]) == (
        deals.deal_ids[crm], "opportunity", "score", "up")  # fmt: skip
    assert problems == []
    shot(page, f"record-page-{crm}-thumbs-up")
