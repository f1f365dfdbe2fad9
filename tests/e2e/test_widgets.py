"""End to end: the sandbox record pages render the Fieldwise widget from signed card calls."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from copilot.results import CopilotResult, save_results
from core.config import Config
from core.services import Services
from core.tenants import Tenant
from handlers.app import create_app
from handlers.context import EXTENSION
from sandbox.runner import Sandboxes, crm_settings, start_sandboxes
from scoring.feedback import read_feedback
from scoring.ledger import LedgerEntry, ScoreLedger

TEST_IDS = ("fw-card", "fw-score", "fw-grade", "fw-reasons", "fw-next-step", "fw-battle-card",
            "fw-forecast-note", "fw-risk-flags", "fw-thumbs-up", "fw-thumbs-down")  # fmt: skip


@dataclass
class World:
    sandboxes: Sandboxes
    services: Services
    app_url: str
    hubspot_tenant: str
    salesforce_tenant: str
    contact_id: str
    lead_id: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _score(services: Services, tenant_id: str, crm: str, crm_id: str) -> None:
    services.store.upsert(tenant_id, "lead", [{"tenant_id": tenant_id, "crm": crm,
                          "crm_id": crm_id, "last_name": "Rivera", "company": "Globex",
                          "updated_at": datetime.now(UTC)}])  # fmt: skip
    ScoreLedger(services.store).record([LedgerEntry(
        tenant_id=tenant_id, kind="lead", crm_id=crm_id, scored_at=datetime.now(UTC),
        old_score=None, new_score=91, old_grade=None, new_grade="Hot", model_version="lead-v7",
        reasons="+ Visited pricing 6 times", reasons_detail=[{"text": "+ Visited pricing 6 times",
        "evidence": []}], next_step="Book a demo")])  # fmt: skip
    now = datetime.now(UTC)
    save_results(services.store, tenant_id, [
        CopilotResult("lead", crm_id, "battle_card", "vs Initech", {"sections": [{
            "title": "Where we win", "bullets": [{"text": "Setup in a day", "cites": ["note:1"]}]}]},
            True, None, now),
        CopilotResult("lead", crm_id, "forecast_note", "On track", {"summary": "On track"},
                      True, None, now),
        CopilotResult("lead", crm_id, "risk_flags", "none", {"flags": [
            {"label": "No activity in 14 days", "evidence": [{"ref": "activity:9"}]}]},
            True, None, now),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp("widgets-e2e")
    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    sandboxes = start_sandboxes(folder / "sandbox", widget_base_url=app_url)
    salesforce, hubspot = sandboxes.salesforce, sandboxes.hubspot
    config = Config.for_demo(lancedb_uri=str(folder / "lancedb"), public_url=app_url,
                             **crm_settings(salesforce, hubspot))  # fmt: skip
    app = create_app(config)
    services: Services = app.extensions[EXTENSION]
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    contact = requests.post(
        f"{hubspot.base_url}/crm/v3/objects/contacts", timeout=10,
        headers={"Authorization": f"Bearer {hubspot.access_token}"},
        json={"properties": {"firstname": "Ana", "lastname": "Rivera"}},
    ).json()["id"]  # fmt: skip
    lead = salesforce.session().post(
        f"{salesforce.instance_url}/services/data/v62.0/sobjects/Lead", timeout=10,
        headers={"Authorization": f"Bearer {salesforce.access_token}"},
        json={"LastName": "Rivera", "Company": "Globex"},
    ).json()["id"]  # fmt: skip
    hubspot_tenant, salesforce_tenant = (
        f"hubspot-{hubspot.portal_id}",
        f"salesforce-{salesforce.org_id}",
    )
    services.registry.save(Tenant(hubspot_tenant, "hubspot", str(hubspot.portal_id), None,
                                  status="active"))  # fmt: skip
    services.registry.save(Tenant(salesforce_tenant, "salesforce", salesforce.org_id,
                                  salesforce.instance_url, status="active"))  # fmt: skip
    _score(services, hubspot_tenant, "hubspot", contact)
    _score(services, salesforce_tenant, "salesforce", lead)
    # What the admin does at install: paste the widget secret into the External Credential.
    secret = services.registry.widget_secret(salesforce_tenant, create=True)
    configured = salesforce.session().post(
        f"{salesforce.instance_url}/__admin/fieldwise-credential",
        json={"secret": secret},
        timeout=10,
    )
    assert configured.status_code == 200, configured.text
    yield World(sandboxes, services, app_url, hubspot_tenant, salesforce_tenant, contact, lead)
    server.shutdown()
    stop = getattr(services.queue, "stop", None)
    if stop is not None:
        stop()
    sandboxes.stop()


def _page(world: World, crm: str, path: str, **kwargs: Any) -> requests.Response:
    if crm == "hubspot":
        return requests.request(kwargs.pop("method", "GET"), world.sandboxes.hubspot.base_url + path,
                                timeout=15, **kwargs)  # fmt: skip
    session = world.sandboxes.salesforce.session()
    return session.request(kwargs.pop("method", "GET"),
                           world.sandboxes.salesforce.instance_url + path, timeout=15, **kwargs)  # fmt: skip


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_record_page_embeds_the_widget_which_shows_the_ai_fields(world: World, crm: str) -> None:
    record = f"/ui/contacts/{world.contact_id}" if crm == "hubspot" else f"/ui/Lead/{world.lead_id}"
    page = _page(world, crm, record)
    assert page.status_code == 200 and f"src='{record}/fieldwise'" in page.text
    widget = _page(world, crm, f"{record}/fieldwise")
    assert widget.status_code == 200
    for test_id in TEST_IDS:
        assert f"data-testid='{test_id}'" in widget.text, test_id
    assert ">91<" in widget.text and ">Hot<" in widget.text and "Book a demo" in widget.text
    assert "Setup in a day" in widget.text and "No activity in 14 days" in widget.text


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_thumbs_up_in_the_widget_reaches_fieldwise_signed(world: World, crm: str) -> None:
    record = f"/ui/contacts/{world.contact_id}" if crm == "hubspot" else f"/ui/Lead/{world.lead_id}"
    tenant = world.hubspot_tenant if crm == "hubspot" else world.salesforce_tenant
    before = len(read_feedback(world.services.store, tenant))
    answer = _page(world, crm, f"{record}/fieldwise/feedback", method="POST",
                   data={"result": "score", "vote": "up"})  # fmt: skip
    assert answer.status_code == 200 and "class='chosen' data-testid='fw-thumbs-up'" in answer.text
    rows = read_feedback(world.services.store, tenant)
    assert len(rows) == before + 1 and rows[-1]["vote"] == "up" and rows[-1]["user_id"]


def test_direct_unsigned_card_requests_are_refused(world: World) -> None:
    direct = requests.get(f"{world.app_url}/cards/salesforce/{world.lead_id}", timeout=10)
    assert direct.status_code == 401
    hub = requests.get(f"{world.app_url}/cards/hubspot",
                       params={"objectTypeId": "0-1", "objectId": world.contact_id}, timeout=10)  # fmt: skip
    assert hub.status_code == 401
