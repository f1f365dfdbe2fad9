"""The copilot in the real pipeline: a rep works a deal in the Salesforce sandbox, the AI fields follow.

One small deployment serves the module: the sandbox org seeded with a short generated history,
Fieldwise on a loopback port with its embedded queue, installed through OAuth (the demo's own
install step, which also pastes the widget secret into the org), backfilled, trained and scored.
Deal changes come back through the org's outbound messages; Salesforce has none for notes (they
arrive with the reconcile sweep), so the note's id is handed to the same fetch job a webhook
would have queued.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce import Salesforce
from werkzeug.serving import make_server

from copilot.battle_cards import deal_competitor
from copilot.field_history import load_history
from copilot.segments import MEMBERS_SCHEMA, MEMBERS_TABLE, list_segments
from copilot.settings import save_settings
from core.config import Config
from core.services import Services
from handlers.app import create_app
from handlers.context import EXTENSION
from sandbox.demo import install_with_consent, read_back, salesforce_as_rep, wait_for_work
from sandbox.history import COMPETITORS
from sandbox.runner import Sandboxes, crm_settings, start_sandboxes
from sandbox.salesforce.ui import _callout

SEED_LEADS = 200
DEADLINE_S = 30.0


@dataclass
class Pipeline:
    sandboxes: Sandboxes
    services: Services
    tenant_id: str
    rep: Salesforce


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    folder: Path = tmp_path_factory.mktemp("copilot-pipeline")
    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    sandboxes = start_sandboxes(folder / "sandbox", seed_leads=SEED_LEADS, widget_base_url=app_url)
    config = Config.for_demo(lancedb_uri=str(folder / "lancedb"), public_url=app_url,
                             log_level="WARNING", **crm_settings(sandboxes.salesforce))  # fmt: skip
    app = create_app(config)
    services: Services = app.extensions[EXTENSION]
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tenant_id = install_with_consent(
            app_url, "salesforce", sandboxes.salesforce.session(), sandboxes
        )
        wait_for_work(services)
        yield Pipeline(sandboxes, services, tenant_id, salesforce_as_rep(sandboxes))
    finally:
        server.shutdown()
        services.queue.stop()  # type: ignore[attr-defined]
        sandboxes.stop()


def _new_deal(pipeline: Pipeline, name: str) -> dict[str, Any]:
    """A rep opens a deal on an account that belongs to a segment; returns it once synced."""
    store, tenant_id = pipeline.services.store, pipeline.tenant_id
    segmented = sorted(
        m["crm_id"] for m in store.read_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA)
    )
    created = pipeline.rep.Opportunity.create({
        "Name": name, "AccountId": segmented[0], "StageName": "Qualification",
        "CloseDate": (date.today() + timedelta(days=30)).isoformat(), "Amount": 48000,
    })  # fmt: skip
    return _settled(pipeline, lambda: store.get(tenant_id, "opportunity", created["id"]),
                    f"the new deal {name} in the store")  # fmt: skip


def _settled(pipeline: Pipeline, check: Any, what: str) -> Any:
    """Wait for the queue to go idle and ``check`` to hold; outbound messages arrive on their own."""
    deadline = threading.Event()
    timer = threading.Timer(DEADLINE_S, deadline.set)
    timer.start()
    try:
        while True:
            wait_for_work(pipeline.services)
            found = check()
            if found:
                return found
            if deadline.wait(0.2):
                raise AssertionError(f"timed out after {DEADLINE_S:.0f} s waiting for {what}")
    finally:
        timer.cancel()


def test_a_note_naming_a_competitor_alias_gets_the_deal_a_battle_card_in_its_crm_field(pipeline):
    services, tenant_id = pipeline.services, pipeline.tenant_id
    store = services.store
    closed = store.query(tenant_id, "opportunity", filters={"is_closed": True})
    met = {name: sum(name in (d["competitors"] or []) for d in closed) for name in COMPETITORS}
    competitor = max(met, key=lambda name: (met[name], name))
    alias = next(a for a in COMPETITORS[competitor] if a != competitor and not a.isupper())
    # What an admin does in the console: name the competitor's aliases reps write in notes.
    aliases = {competitor: list(COMPETITORS[competitor])}
    save_settings(services.registry, tenant_id, {"competitors": aliases, "min_evidence": 1})
    deal_id = _new_deal(pipeline, "Globex expansion")["crm_id"]
    assert deal_competitor(services, tenant_id, deal_id) is None
    assert read_back(pipeline.sandboxes, "salesforce", [deal_id], deals=True)[0][
        "AI Battle Card"] is None  # fmt: skip

    note = pipeline.rep.Note.create({"ParentId": deal_id, "Title": "Call with the buyer",
                                     "Body": f"They are also looking at {alias}; the demo with "
                                             "them is next week and price came up twice."})  # fmt: skip
    # The fetch job a change event would queue (Salesforce sends no outbound message for notes).
    assert services.events.add_pending(f"{tenant_id}:Note", [note["id"]])
    services.queue.enqueue("sync.jobs.fetch_changes", tenant_id, "Note", queue="high")

    row = _settled(
        pipeline,
        lambda: next(
            (r for r in read_back(pipeline.sandboxes, "salesforce", [deal_id], deals=True)
             if r["AI Battle Card"]), None),
        "the battle card in the deal's field",
    )  # fmt: skip
    assert row["AI Battle Card"].startswith(f"<p><b>Battle card: {competitor}</b>")
    assert "generated offline" in row["AI Battle Card"]
    assert f"Competitor in play: {competitor}" in row["AI Risk Flags"]
    assert "(generated offline)" in row["AI Forecast Note"]


def test_a_close_date_pushed_twice_through_the_api_raises_the_flag_with_its_count(pipeline):
    services, tenant_id = pipeline.services, pipeline.tenant_id
    deal = _new_deal(pipeline, "Initech renewal")
    deal_id = deal["crm_id"]
    changes = load_history(services.store, tenant_id, [deal_id]).get(deal_id, [])
    assert not [c for c in changes if c.field == "close_date"]
    first = (deal["close_date"] + timedelta(days=21)).isoformat()
    second = (date.fromisoformat(first) + timedelta(days=14)).isoformat()
    pipeline.rep.Opportunity.update(deal_id, {"CloseDate": first})
    pipeline.rep.Opportunity.update(deal_id, {"CloseDate": second})

    row = _settled(
        pipeline,
        lambda: next(
            (r for r in read_back(pipeline.sandboxes, "salesforce", [deal_id], deals=True)
             if "Close date pushed 2 times" in (r["AI Risk Flags"] or "")), None),
        "the close-date flag in the deal's AI Risk Flags field",
    )  # fmt: skip
    assert "35 days in total" in row["AI Risk Flags"]
    assert first in row["AI Risk Flags"] and second in row["AI Risk Flags"]

    # The record page's widget reads the same flags from the signed card endpoint.
    org = pipeline.sandboxes.salesforce
    with org.app.test_request_context():  # the viewer is the org's user, as on a record page
        answer = _callout(org, "GET", f"/cards/salesforce/{deal_id}", b"")
    assert answer.status_code == 200, answer.text
    card = answer.json()
    pushed = [f for f in card["risk_flags"]["flags"] if f["flag"] == "close_date_pushed"]
    assert len(pushed) == 1 and pushed[0]["numbers"]["pushes"] == 2
    assert card["generated_offline"]["forecast_note"] is True


def test_a_deal_closing_in_the_crm_rebuilds_its_segment_context_and_segments_recur_daily(pipeline):
    services, tenant_id = pipeline.services, pipeline.tenant_id
    store = services.store
    members = {m["crm_id"]: m["segment_id"]
               for m in store.read_rows(tenant_id, MEMBERS_TABLE, MEMBERS_SCHEMA)}  # fmt: skip
    deal = _new_deal(pipeline, "Umbrella pilot")
    segment_id = members[deal["account_id"]]
    version_before = next(s for s in list_segments(store, tenant_id)
                          if s["segment_id"] == segment_id)["version"]  # fmt: skip

    pipeline.rep.Opportunity.update(deal["crm_id"], {"StageName": "Closed Won"})

    learned = _settled(
        pipeline,
        lambda: [j for j in services.queue.jobs()  # type: ignore[attr-defined]
                 if j["func"] == "copilot.jobs.learn_from_closed_deals"
                 and deal["crm_id"] in j["args"][1]],
        "the learning-loop job for the closed deal",
    )  # fmt: skip
    assert [j["status"] for j in learned] == ["finished"]
    segment = next(s for s in list_segments(store, tenant_id) if s["segment_id"] == segment_id)
    assert segment["version"] == version_before + 1
    # Segments are formed after the backfill and then re-clustered once a day.
    daily = [j for j in services.queue.jobs()  # type: ignore[attr-defined]
             if j["func"] == "copilot.jobs.refresh_segments" and j["status"] == "scheduled"]  # fmt: skip
    assert [j["args"] for j in daily] == [(tenant_id,)]
