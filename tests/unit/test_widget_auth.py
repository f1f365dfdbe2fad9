"""Widget calls: HubSpot v3 and Salesforce Named Credential signatures, replays, tenants, feedback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from copilot.results import CopilotResult, save_results
from core.config import Config, Secret
from core.tenants import Tenant
from handlers.app import create_app
from handlers.context import EXTENSION
from handlers.webhooks import hubspot_signature_v3
from handlers.widget_auth import ReplayGuard, salesforce_headers
from scoring.feedback import feedback_summary, read_feedback
from scoring.ledger import LedgerEntry, ScoreLedger

APP_SECRET = "hubspot-app-client-secret-for-tests"
PORTAL_A, PORTAL_B = "1001", "2002"
ORG = "00D000000000001AAA"
LEAD_A, LEAD_B = "501", "502"
SF_LEAD = "00Q000000000001AAA"
HOST = "http://fieldwise.test"


def _lead(tenant_id: str, crm: str, crm_id: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "crm": crm, "crm_id": crm_id, "last_name": "Lee",
            "company": "Acme", "updated_at": datetime.now(UTC)}  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder: Path = tmp_path_factory.mktemp("widgets")
    config = Config.for_demo(
        lancedb_uri=str(folder / "lancedb"),
        hubspot_client_secret=Secret(APP_SECRET),
        hubspot_app_id="777",
        public_url=HOST,
    )
    flask_app = create_app(config)
    services = flask_app.extensions[EXTENSION]
    for crm, external in (("hubspot", PORTAL_A), ("hubspot", PORTAL_B), ("salesforce", ORG)):
        services.registry.save(Tenant(f"{crm}-{external}", crm, external, None, status="active"))
    store = services.store
    store.upsert("hubspot-1001", "lead", [_lead("hubspot-1001", "hubspot", LEAD_A)])
    store.upsert("hubspot-2002", "lead", [_lead("hubspot-2002", "hubspot", LEAD_B)])
    store.upsert(f"salesforce-{ORG}", "lead", [_lead(f"salesforce-{ORG}", "salesforce", SF_LEAD)])
    for tenant_id, crm_id in (("hubspot-1001", LEAD_A), (f"salesforce-{ORG}", SF_LEAD)):
        ScoreLedger(store).record(
            [
                LedgerEntry(
                    tenant_id=tenant_id, kind="lead", crm_id=crm_id,
                    scored_at=datetime.now(UTC), old_score=None, new_score=87, old_grade=None,
                    new_grade="Hot", model_version="lead-v3", reasons="+ Budget confirmed",
                    reasons_detail=[{"text": "+ Budget confirmed", "feature": "budget",
                                     "evidence": [{"id": "N1", "kind": "note", "at": None}]}],
                    next_step="Call this week",
                )
            ]
        )  # fmt: skip
    save_results(
        store,
        "hubspot-1001",
        [
            CopilotResult(
                entity="lead", crm_id=LEAD_A, result="battle_card", value="vs Rival: ...",
                detail={"competitor": "Rival", "sections": [{"title": "Why we win", "bullets": [
                    {"text": "Faster onboarding", "cites": ["note:N1"]}]}], "offline": True},
                offline=True, model=None, generated_at=datetime.now(UTC),
            )
        ],
    )  # fmt: skip
    services.registry.widget_secret(f"salesforce-{ORG}", create=True)
    yield flask_app
    stop = getattr(services.queue, "stop", None)
    if stop is not None:
        stop()


@pytest.fixture(scope="module")
def services(app: Any) -> Any:
    return app.extensions[EXTENSION]


@pytest.fixture(scope="module")
def client(app: Any) -> Any:
    return app.test_client()


def _hubspot_query(portal: str, **extra: Any) -> dict[str, Any]:
    return {**extra, "userId": "42", "userEmail": "rep@example.com", "appId": "777",
            "portalId": portal}  # fmt: skip


def hubspot_call(
    client: Any, method: str, path: str, query: dict[str, Any], body: dict[str, Any] | None = None,
    *, secret: str = APP_SECRET, timestamp: int | None = None, signature: str | None = None,
) -> Any:  # fmt: skip
    url = f"{HOST}{path}?{urlencode(query)}"
    raw = json.dumps(body).encode() if body is not None else b""
    stamp = str(timestamp if timestamp is not None else int(time.time() * 1000))
    headers = {
        "X-HubSpot-Signature-v3": signature
        or hubspot_signature_v3(secret, method, url, raw, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
        "Content-Type": "application/json",
    }
    return client.open(url, method=method, data=raw, headers=headers)


def salesforce_call(
    client: Any, method: str, path: str, body: dict[str, Any] | None = None, *,
    secret: str, org: str = ORG, timestamp: int | None = None,
) -> Any:  # fmt: skip
    raw = json.dumps(body).encode() if body is not None else b""
    headers = salesforce_headers(secret, method, path, org, "005000000000001AAA", raw,
                                 timestamp=timestamp)  # fmt: skip
    return client.open(f"{HOST}{path}", method=method, data=raw,
                       headers={**headers, "Content-Type": "application/json"})  # fmt: skip


@pytest.fixture(scope="module")
def sf_secret(services: Any) -> str:
    secret: str = services.registry.widget_secret(f"salesforce-{ORG}")
    return secret


# --- HubSpot ----------------------------------------------------------------------------------


def test_hubspot_card_returns_the_ai_fields_of_a_scored_record(client: Any) -> None:
    query = _hubspot_query(PORTAL_A, objectTypeId="0-1", objectId=LEAD_A)
    answer = hubspot_call(client, "GET", "/cards/hubspot", query)
    assert answer.status_code == 200, answer.get_json()
    card = answer.get_json()
    assert (card["score"], card["grade"], card["model_version"]) == (87, "Hot", "lead-v3")
    assert card["reasons"][0]["evidence"][0]["id"] == "N1"
    assert card["next_step"] == "Call this week" and card["stale"] is False
    assert card["battle_card"]["sections"][0]["bullets"][0]["cites"] == ["note:N1"]
    assert card["generated_offline"] == {"battle_card": True}
    assert card["feedback"] == {} and card["forecast_note"] is None


def test_hubspot_card_refuses_unsigned_wrong_stale_and_replayed_calls(client: Any) -> None:
    query = _hubspot_query(PORTAL_A, objectTypeId="0-1", objectId=LEAD_A)
    unsigned = client.get(f"{HOST}/cards/hubspot?{urlencode(query)}")
    assert unsigned.status_code == 401
    assert unsigned.get_json()["error"]["code"] == "missing_signature"
    wrong = hubspot_call(client, "GET", "/cards/hubspot", query, secret="not-the-app-secret")
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "bad_signature"
    stale = hubspot_call(client, "GET", "/cards/hubspot", query,
                         timestamp=int((time.time() - 301) * 1000))  # fmt: skip
    assert stale.status_code == 401 and stale.get_json()["error"]["code"] == "stale_signature"
    stamp = int(time.time() * 1000)
    first = hubspot_call(client, "GET", "/cards/hubspot", query, timestamp=stamp)
    again = hubspot_call(client, "GET", "/cards/hubspot", query, timestamp=stamp)
    assert first.status_code == 200
    assert again.status_code == 401 and again.get_json()["error"]["code"] == "replayed_request"


def test_hubspot_signature_covers_the_query(client: Any) -> None:
    query = _hubspot_query(PORTAL_A, objectTypeId="0-1", objectId=LEAD_A)
    url = f"{HOST}/cards/hubspot?{urlencode(query)}"
    stamp = str(int(time.time() * 1000))
    signature = hubspot_signature_v3(APP_SECRET, "GET", url, b"", stamp)
    tampered = url.replace(f"portalId={PORTAL_A}", f"portalId={PORTAL_B}")
    answer = client.get(tampered, headers={"X-HubSpot-Signature-v3": signature,
                                           "X-HubSpot-Request-Timestamp": stamp})  # fmt: skip
    assert answer.status_code == 401


def test_hubspot_portal_a_cannot_read_a_record_of_portal_b(client: Any) -> None:
    query = _hubspot_query(PORTAL_A, objectTypeId="0-1", objectId=LEAD_B)
    answer = hubspot_call(client, "GET", "/cards/hubspot", query)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "record_not_found"
    assert "score" not in answer.get_data(as_text=True)
    unknown = hubspot_call(client, "GET", "/cards/hubspot",
                           _hubspot_query("3003", objectTypeId="0-1", objectId=LEAD_A))  # fmt: skip
    assert unknown.status_code == 404


# --- Salesforce -------------------------------------------------------------------------------


def test_salesforce_card_with_named_credential_signature(client: Any, sf_secret: str) -> None:
    answer = salesforce_call(client, "GET", f"/cards/salesforce/{SF_LEAD}", secret=sf_secret)
    assert answer.status_code == 200, answer.get_json()
    card = answer.get_json()
    assert card["score"] == 87 and card["grade"] == "Hot" and card["entity"] == "lead"


def test_salesforce_card_refuses_unsigned_wrong_stale_replayed_and_foreign(
    client: Any, sf_secret: str
) -> None:
    path = f"/cards/salesforce/{SF_LEAD}"
    assert client.get(f"{HOST}{path}").status_code == 401
    wrong = salesforce_call(client, "GET", path, secret="x" * 43)
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "bad_signature"
    stale = salesforce_call(client, "GET", path, secret=sf_secret, timestamp=int(time.time()) - 400)
    assert stale.get_json()["error"]["code"] == "stale_signature"
    raw_headers = salesforce_headers(sf_secret, "GET", path, ORG, "005000000000001AAA")
    assert client.get(f"{HOST}{path}", headers=raw_headers).status_code == 200
    replay = client.get(f"{HOST}{path}", headers=raw_headers)
    assert replay.status_code == 401 and replay.get_json()["error"]["code"] == "replayed_request"
    other_org = salesforce_call(client, "GET", path, secret=sf_secret, org="00D000000000009AAA")
    assert other_org.status_code == 401
    foreign = salesforce_call(client, "GET", f"/cards/salesforce/{LEAD_A}", secret=sf_secret)
    assert foreign.status_code == 404


# --- Feedback ---------------------------------------------------------------------------------


def test_feedback_is_stored_summarised_and_shown_to_its_user(client: Any, services: Any) -> None:
    query = _hubspot_query(PORTAL_A)
    vote = {"crm": "hubspot", "object_type": "0-1", "record_id": LEAD_A, "result": "score",
            "vote": "up", "user_id": "42"}  # fmt: skip
    stored = hubspot_call(client, "POST", "/feedback", query, vote)
    assert stored.status_code == 201, stored.get_json()
    assert stored.get_json()["feedback"]["score"]["vote"] == "up"
    dismissed = {**vote, "vote": "not_a_fit", "reason": "student, no budget"}
    assert hubspot_call(client, "POST", "/feedback", query, dismissed).status_code == 201
    override = {**vote, "vote": "override", "override_score": 20, "reason": "tiny company"}
    assert hubspot_call(client, "POST", "/feedback", query, override).status_code == 201
    summary = feedback_summary(services.store, "hubspot-1001")
    assert summary["by_result"]["score"] == {"up": 1, "not_a_fit": 1, "override": 1}
    assert summary["agreement_rate"] == 1.0 and summary["not_a_fit"] == {"lead": 1}
    assert summary["overrides"]["score"] == 1 and summary["overrides"]["mean_override_score"] == 20
    card = hubspot_call(
        client,
        "GET",
        "/cards/hubspot",
        _hubspot_query(PORTAL_A, objectTypeId="0-1", objectId=LEAD_A),
    ).get_json()
    assert card["feedback"]["score"]["vote"] == "override"  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vote": "meh"}, "vote"),
        ({"result": "horoscope"}, "result"),
        ({"vote": "not_a_fit"}, "reason"),
        ({"vote": "override", "override_score": 140, "reason": "x"}, "override_score"),
        ({"vote": "up", "override_owner": "9"}, "override_owner"),
        ({"record_id": None}, "record_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_feedback_is_rejected_naming_the_field_and_stores_nothing(
    client: Any, services: Any, change: dict[str, Any], field: str
) -> None:
    before = len(read_feedback(services.store, "hubspot-2002"))
    body = {"crm": "hubspot", "object_type": "0-1", "record_id": LEAD_B, "result": "score",
            "vote": "down", **change}  # fmt: skip
    answer = hubspot_call(client, "POST", "/feedback", _hubspot_query(PORTAL_B), body)
    assert answer.status_code == 400
    assert field in answer.get_json()["error"]["details"]["fields"]
    assert len(read_feedback(services.store, "hubspot-2002")) == before


def test_feedback_refuses_bad_auth_and_cross_tenant_records(
    client: Any, services: Any, sf_secret: str
) -> None:
    body = {"record_id": LEAD_B, "object_type": "0-1", "result": "score", "vote": "down"}
    before = len(read_feedback(services.store, "hubspot-2002"))
    assert client.post(f"{HOST}/feedback", json=body).status_code == 401
    wrong = hubspot_call(client, "POST", "/feedback", _hubspot_query(PORTAL_B), body, secret="no")
    assert wrong.status_code == 401
    stale = hubspot_call(client, "POST", "/feedback", _hubspot_query(PORTAL_B), body,
                         timestamp=int((time.time() - 600) * 1000))  # fmt: skip
    assert stale.status_code == 401
    cross = hubspot_call(client, "POST", "/feedback", _hubspot_query(PORTAL_A), body)
    assert cross.status_code == 404
    raw = json.dumps({**body, "record_id": SF_LEAD, "object_type": "Lead"}).encode()
    headers = salesforce_headers(sf_secret, "POST", "/feedback", ORG, "005000000000001AAA", raw)
    ok = client.post(f"{HOST}/feedback", data=raw, headers=headers)
    replay = client.post(f"{HOST}/feedback", data=raw, headers=headers)
    assert ok.status_code == 201 and replay.status_code == 401
    assert len(read_feedback(services.store, "hubspot-2002")) == before
    assert len(read_feedback(services.store, f"salesforce-{ORG}")) == 1


# --- Replay store -------------------------------------------------------------------------------


def test_replay_guard_in_redis_accepts_a_signature_once_for_the_window(redis_url: str) -> None:
    guard, other_process = ReplayGuard(redis_url), ReplayGuard(redis_url)
    assert guard.first_use("sig-1", ttl_s=1) is True
    assert other_process.first_use("sig-1", ttl_s=1) is False
    assert guard.first_use("sig-2", ttl_s=1) is True
    time.sleep(1.1)
    assert other_process.first_use("sig-1", ttl_s=1) is True


def test_replay_guard_in_process_forgets_after_the_window() -> None:
    guard = ReplayGuard(None)
    assert guard.first_use("sig", ttl_s=1) and not guard.first_use("sig", ttl_s=1)
    time.sleep(1.05)
    assert guard.first_use("sig", ttl_s=1)
