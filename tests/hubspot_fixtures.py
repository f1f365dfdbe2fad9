"""Shared fixtures and builders for the HubSpot sandbox tests.

Test modules import this with ``pytest_plugins``-free explicit imports (see the top of each
``test_hubspot_sandbox_*`` module): one sandbox per module on a free port in a temporary data dir.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hubspot import HubSpot
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.history_model import (
    Account,
    Activity,
    Contact,
    EngagementEvent,
    History,
    Lead,
    Note,
    Opportunity,
    Rep,
    StageChange,
)
from sandbox.hubspot import HubSpotSandbox


class _Quiet(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@dataclass
class Received:
    """One webhook POST the receiver got."""

    url: str
    headers: dict[str, str]
    body: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A tiny HTTP server standing in for Fieldwise's webhook endpoint."""

    statuses: list[int] = field(default_factory=list)
    """Statuses to answer, in order; 200 once they run out."""
    received: list[Received] = field(default_factory=list)
    server: BaseWSGIServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        req = Request(environ)
        with self.lock:
            self.received.append(Received(req.url, dict(req.headers), req.get_data(as_text=True)))
            status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok", status=status)(environ, start_response)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/webhooks/hubspot?tenant=t1"

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} webhook posts, got {len(self.received)}")

    def all_events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for r in self.received for e in r.events]

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.statuses.clear()


def start_sandbox(data_dir: Path, **kwargs: Any) -> HubSpotSandbox:
    return HubSpotSandbox(data_dir, **kwargs).start()


def client_for(sb: HubSpotSandbox, token: str | None = None) -> HubSpot:
    return HubSpot(access_token=token or sb.access_token, host=sb.base_url)


class Api:
    """Raw HTTP against the sandbox, for pinning exact wire shapes."""

    def __init__(self, sb: HubSpotSandbox) -> None:
        self.sb = sb
        self.session = requests.Session()

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.sb.access_token}"}

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return self.session.get(self.sb.base_url + path, headers=self.headers(token), **kwargs)

    def post(
        self, path: str, body: Any = None, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        return self.session.post(
            self.sb.base_url + path, json=body, headers=self.headers(token), **kwargs
        )

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.patch(
            self.sb.base_url + path, json=body, headers=self.headers(), **kwargs
        )

    def put(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.put(
            self.sb.base_url + path, json=body, headers=self.headers(), **kwargs
        )

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.sb.base_url + path, headers=self.headers(), **kwargs)

    def admin(self, name: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.session.post(f"{self.sb.base_url}/__admin/{name}", json=body or {})

    def create_contact(self, **props: str) -> dict[str, Any]:
        response = self.post("/crm/v3/objects/contacts", {"properties": props})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="module")
def hubspot_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSpotSandbox]:
    sb = start_sandbox(tmp_path_factory.mktemp("hubspot"), widget_base_url="http://fieldwise.test")
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def api(hubspot_sandbox: HubSpotSandbox) -> Api:
    return Api(hubspot_sandbox)


@pytest.fixture(scope="module")
def hs(hubspot_sandbox: HubSpotSandbox) -> HubSpot:
    return client_for(hubspot_sandbox)


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.server = make_server("127.0.0.1", 0, receiver, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()


def small_history(leads: int = 6) -> History:
    """A hand-built history: two reps, two accounts, leads (one converted), a deal with history."""
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    reps = [
        Rep("rep-0001", "Ada", "Lovelace", "ada@seller.example", "EMEA", ["Core"], 40),
        Rep("rep-0002", "Alan", "Turing", "alan@seller.example", "NA", ["Edge"], 30),
    ]
    accounts = [
        Account(
            "acct-0001",
            "Acme GmbH",
            "acme.example",
            "Manufacturing",
            500,
            2.5e7,
            "EMEA",
            "Germany",
            "rep-0001",
            now - timedelta(days=400),
        ),
        Account(
            "acct-0002",
            "Globex",
            "globex.example",
            "Software",
            80,
            4.0e6,
            "NA",
            "USA",
            "rep-0002",
            now - timedelta(days=300),
        ),
    ]
    lead_list = []
    for i in range(leads):
        created = now - timedelta(days=100 - i)
        converted = i == 0
        lead_list.append(
            Lead(
                key=f"lead-{i:06d}",
                first_name=f"Lee{i}",
                last_name="Smith",
                email=f"lee{i}@prospect.example",
                phone="+1 555 0100",
                title="CTO",
                company="Acme GmbH" if i == 0 else f"Prospect {i}",
                account_key="acct-0001" if i == 0 else None,
                industry="Manufacturing",
                employees=100 + i,
                annual_revenue=1.0e6 * (i + 1),
                region="EMEA",
                country="Germany",
                source="Web" if i % 2 else "Webinar",
                product_interest="Core",
                owner_key="rep-0001",
                created_at=created,
                engagement=[
                    EngagementEvent("email_open", created + timedelta(days=1)),
                    EngagementEvent("email_open", created + timedelta(days=2)),
                    EngagementEvent("page_visit", created + timedelta(days=3)),
                    EngagementEvent("form_fill", created + timedelta(days=4)),
                ]
                if i % 3 == 0
                else [],
                status="Closed - Converted" if converted else "Open - Not Contacted",
                converted=converted,
                converted_at=created + timedelta(days=10) if converted else None,
                converted_contact_key="contact-000001" if converted else None,
                converted_opportunity_key="opp-000001" if converted else None,
                true_probability=0.5,
                custom={"Budget_Confirmed__c": i % 2 == 0, "Seats__c": 10 + i},
            )
        )
    contacts = [
        Contact(
            "contact-000001",
            "Lee0",
            "Smith",
            "lee0@prospect.example",
            "+1 555 0100",
            "CTO",
            "acct-0001",
            "rep-0001",
            now - timedelta(days=90),
            "lead-000000",
        ),
        Contact(
            "contact-000002",
            "Grace",
            "Hopper",
            "grace@globex.example",
            "+1 555 0199",
            "VP",
            "acct-0002",
            "rep-0002",
            now - timedelta(days=200),
            None,
        ),
    ]
    opened = now - timedelta(days=90)
    opportunities = [
        Opportunity(
            key="opp-000001",
            name="Acme - Core",
            account_key="acct-0001",
            owner_key="rep-0001",
            contact_key="contact-000001",
            amount=50_000.0,
            stage="Closed Won",
            close_date=date(2025, 5, 1),
            created_at=opened,
            closed_at=datetime(2025, 5, 1, 9, 0, tzinfo=UTC),
            is_closed=True,
            is_won=True,
            competitors=["Initech"],
            product="Core",
            lead_source="Webinar",
            history=[
                StageChange(
                    "StageName", "Prospecting", "Proposal", opened + timedelta(days=20), "rep-0001"
                ),
                StageChange("Amount", 40_000.0, 50_000.0, opened + timedelta(days=25), "rep-0001"),
                StageChange(
                    "StageName",
                    "Proposal",
                    "Closed Won",
                    datetime(2025, 5, 1, 9, 0, tzinfo=UTC),
                    "rep-0001",
                ),
            ],
            true_probability=0.7,
        ),
        Opportunity(
            key="opp-000002",
            name="Globex - Edge",
            account_key="acct-0002",
            owner_key="rep-0002",
            contact_key="contact-000002",
            amount=12_000.0,
            stage="Negotiation",
            close_date=date(2025, 7, 15),
            created_at=now - timedelta(days=30),
            closed_at=None,
            is_closed=False,
            is_won=False,
            competitors=[],
            product="Edge",
            lead_source="Referral",
            history=[],
            true_probability=0.4,
        ),
    ]
    activities = [
        Activity(
            "act-000001",
            "call",
            "Discovery call",
            "Talked budget",
            now - timedelta(days=80),
            "rep-0001",
            lead_key="lead-000000",
            duration_minutes=30,
            direction="outbound",
        ),
        Activity(
            "act-000002",
            "email",
            "Proposal",
            "See attached",
            now - timedelta(days=60),
            "rep-0001",
            opportunity_key="opp-000001",
            contact_key="contact-000001",
            direction="outbound",
        ),
        Activity(
            "act-000003",
            "meeting",
            "Demo",
            "Demo of Core",
            now - timedelta(days=50),
            "rep-0002",
            account_key="acct-0002",
            duration_minutes=45,
        ),
        Activity(
            "act-000004",
            "task",
            "Follow up",
            "Send pricing",
            now - timedelta(days=5),
            "rep-0002",
            opportunity_key="opp-000002",
            completed=False,
        ),
    ]
    notes = [
        Note(
            "note-000001",
            "Competition",
            "They also evaluate Initech.",
            now - timedelta(days=40),
            "rep-0001",
            opportunity_key="opp-000001",
            account_key="acct-0001",
        ),
    ]
    return History(
        seed=7,
        now=now,
        reps=reps,
        accounts=accounts,
        leads=lead_list,
        contacts=contacts,
        opportunities=opportunities,
        activities=activities,
        notes=notes,
        competitors={"Initech": ["initech", "INTC"]},
    )


@pytest.fixture(scope="module")
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A factory for extra sandboxes with their own settings, stopped when the module ends."""
    started: list[HubSpotSandbox] = []

    def make(data_dir: Path | None = None, **kwargs: Any) -> HubSpotSandbox:
        sb = start_sandbox(data_dir or tmp_path_factory.mktemp("hubspot-extra"), **kwargs)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        if sb._server is not None:
            sb.stop()


@pytest.fixture(scope="module")
def api_for() -> Any:
    """Builds an :class:`Api` for any sandbox."""
    return Api


@pytest.fixture(scope="module")
def history_factory() -> Any:
    """Builds a small hand-made :class:`History` (``history_factory(leads=N)``)."""
    return small_history
