"""Shared fixtures and builders for the Salesforce sandbox tests.

Test modules load this with ``pytest_plugins = ["salesforce_fixtures"]`` after putting ``tests/`` on
``sys.path``: one sandbox per module on a free port in a temporary data dir, a raw HTTPS client, a
simple-salesforce client, a webhook receiver, and a small generated-looking history.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
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
from sandbox.salesforce import SalesforceSandbox

API = "/services/data/v62.0"


class _Quiet(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@dataclass
class Posted:
    """One POST the receiver got."""

    body: bytes
    headers: dict[str, str]
    t: float = field(default_factory=time.time)


class Receiver:
    """A small HTTP server standing in for Fieldwise's webhook endpoints.

    ``responses`` is a queue of ``(status, body)`` answers; when empty it answers ``default``.
    """

    ACK = (
        b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope'
        b' xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
        b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
        b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
    )

    def __init__(self) -> None:
        self.received: list[Posted] = []
        self.responses: list[tuple[int, bytes]] = []
        self.default: tuple[int, bytes] = (200, self.ACK)
        self.lock = threading.Lock()
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self, request_handler=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        req = Request(environ)
        with self.lock:
            self.received.append(Posted(req.get_data(), dict(req.headers)))
            status, body = self.responses.pop(0) if self.responses else self.default
        return Response(body, status=status, content_type="text/xml")(environ, start_response)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Posted]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} posts, got {len(self.received)}")

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.responses.clear()
            self.default = (200, self.ACK)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Api:
    """Raw HTTPS calls to the sandbox with the integration user's token."""

    def __init__(self, sb: SalesforceSandbox) -> None:
        self.sb = sb
        self.http = sb.session()

    def url(self, path: str) -> str:
        return self.sb.instance_url + (path if path.startswith("/") else f"{API}/{path}")

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.sb.access_token}", **extra}

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return self.http.get(self.url(path), headers=headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return self.http.post(self.url(path), json=body, headers=headers, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return self.http.patch(self.url(path), json=body, headers=headers, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return self.http.delete(self.url(path), headers=headers, **kwargs)

    def admin(self, name: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.http.post(self.url(f"/__admin/{name}"), json=body or {})

    def create(self, sobject: str, **values: Any) -> str:
        response = self.post(f"sobjects/{sobject}/", values)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def client_for(sb: SalesforceSandbox, token: str | None = None) -> Salesforce:
    return Salesforce(
        instance_url=sb.instance_url, session_id=token or sb.access_token, session=sb.session()
    )


@pytest.fixture(scope="module")
def sf_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalesforceSandbox]:
    sb = SalesforceSandbox(
        tmp_path_factory.mktemp("salesforce"), widget_base_url="https://fieldwise.example"
    )
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def sf_api(sf_sandbox: SalesforceSandbox) -> Api:
    return Api(sf_sandbox)


@pytest.fixture(scope="module")
def sf(sf_sandbox: SalesforceSandbox) -> Salesforce:
    return client_for(sf_sandbox)


@pytest.fixture
def sf_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def sf_clean_faults(sf_api: Api) -> Iterator[None]:
    yield
    sf_api.admin(
        "faults",
        {
            "error_rate": 0.0,
            "storm_429_until": 0.0,
            "latency_ms": 0.0,
            "drop_rate": 0.0,
            "duplicate_rate": 0.0,
            "reorder": False,
            "webhooks_paused": False,
        },
    )


def small_history(leads: int = 6, now: datetime | None = None) -> History:
    """A hand-built History with every entity kind, for loader tests."""
    now = now or datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    reps = [
        Rep("rep-0001", "Ada", "Lovelace", "ada@example.com", "EMEA", ["Analytics"], 40),
        Rep("rep-0002", "Grace", "Hopper", "grace@example.com", "NA", ["Platform"], 30),
    ]
    accounts = [
        Account(
            "acct-0001",
            "Initech",
            "initech.example",
            "Technology",
            250,
            4.5e7,
            "NA",
            "US",
            "rep-0002",
            now - timedelta(days=300),
        ),
    ]
    contacts = [
        Contact(
            "contact-0001",
            "Peter",
            "Gibbons",
            "peter@initech.example",
            "+1 555 0100",
            "Engineer",
            "acct-0001",
            "rep-0002",
            now - timedelta(days=90),
            "lead-000001",
        ),
    ]
    history = [
        StageChange(
            "StageName", "Prospecting", "Qualification", now - timedelta(days=60), "rep-0002"
        ),
        StageChange("Amount", 40000.0, 52000.0, now - timedelta(days=40), "rep-0002"),
        StageChange("StageName", "Qualification", "Proposal", now - timedelta(days=20), "rep-0002"),
    ]
    opportunities = [
        Opportunity(
            "opp-0001",
            "Initech - Analytics",
            "acct-0001",
            "rep-0002",
            "contact-0001",
            52000.0,
            "Proposal",
            date(2026, 12, 31),
            now - timedelta(days=80),
            None,
            False,
            False,
            ["Globex"],
            "Analytics",
            "Web",
            history,
            0.4,
        ),
    ]
    lead_rows = []
    for n in range(1, leads + 1):
        converted = n == 1
        created = now - timedelta(days=100 - n)
        lead_rows.append(
            Lead(
                f"lead-{n:06d}",
                f"First{n}",
                f"Last{n}",
                f"lead{n}@example.com",
                "+1 555 0199",
                "Director",
                "Initech" if converted else f"Company {n}",
                "acct-0001" if converted else None,
                "Technology",
                100 + n,
                1e6 * n,
                "NA",
                "US",
                "Web",
                "Analytics",
                "rep-0001",
                created,
                [
                    EngagementEvent("email_open", created + timedelta(days=1)),
                    EngagementEvent("email_open", created + timedelta(days=2)),
                    EngagementEvent("page_visit", created + timedelta(days=3)),
                    EngagementEvent("form_fill", created + timedelta(days=4)),
                ],
                "Closed - Converted" if converted else "Open - Not Contacted",
                converted,
                created + timedelta(days=10) if converted else None,
                "contact-0001" if converted else None,
                "opp-0001" if converted else None,
                0.3,
                {"Budget_Confirmed__c": n % 2 == 0, "Seats__c": n * 10},
            )
        )
    activities = [
        Activity(
            "act-0001",
            "call",
            "Discovery call",
            "Talked budget",
            now - timedelta(days=70),
            "rep-0002",
            contact_key="contact-0001",
            opportunity_key="opp-0001",
            duration_minutes=30,
            direction="outbound",
        ),
        Activity(
            "act-0002",
            "meeting",
            "Demo",
            "Showed dashboards",
            now - timedelta(days=50),
            "rep-0002",
            contact_key="contact-0001",
            opportunity_key="opp-0001",
            duration_minutes=45,
        ),
        Activity(
            "act-0003",
            "email",
            "Follow-up",
            "Sent pricing",
            now - timedelta(days=30),
            "rep-0001",
            lead_key="lead-000002",
        ),
    ]
    notes = [
        Note(
            "note-0001",
            "Competitor mention",
            "They also looked at Globex <b>bold</b>",
            now - timedelta(days=25),
            "rep-0002",
            opportunity_key="opp-0001",
        ),
    ]
    return History(
        7,
        now,
        reps,
        accounts,
        lead_rows,
        contacts,
        opportunities,
        activities,
        notes,
        {"Globex": ["globex", "GLX"], "Hooli": ["hooli"]},
    )
