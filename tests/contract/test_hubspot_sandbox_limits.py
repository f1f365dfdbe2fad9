"""Contract: rate limits (ten-second window, daily cap, search per second), faults and counters."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]

HEADERS = [
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Secondly",
]


def test_successful_call_carries_documented_rate_limit_headers(make_sandbox, api_for):
    api = api_for(make_sandbox(ten_second_limit=50, daily_limit=1000))
    response = api.get("/crm/v3/objects/contacts")
    assert response.status_code == 200
    assert all(h in response.headers for h in HEADERS)
    assert response.headers["X-HubSpot-RateLimit-Max"] == "50"
    assert response.headers["X-HubSpot-RateLimit-Remaining"] == "49"
    assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert response.headers["X-HubSpot-RateLimit-Daily"] == "1000"
    assert response.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "999"


def test_ten_second_limit_answers_429_with_rate_limit_body(make_sandbox, api_for):
    sb = make_sandbox(ten_second_limit=3)
    api = api_for(sb)
    statuses = [api.get("/crm/v3/objects/contacts").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = api.get("/crm/v3/objects/contacts")
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["groupName"] and body["correlationId"]
    assert response.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    api.admin("reset-rate-limits")
    assert api.get("/crm/v3/objects/contacts").status_code == 200


def test_daily_limit_answers_429_with_daily_policy(make_sandbox, api_for):
    api = api_for(make_sandbox(daily_limit=2))
    assert [api.get("/crm/v3/objects/contacts").status_code for _ in range(2)] == [200, 200]
    response = api.get("/crm/v3/objects/contacts")
    assert response.status_code == 429
    body = response.json()
    assert body["policyName"] == "DAILY" and body["message"] == "You have reached your daily limit."


def test_search_has_its_own_per_second_limit(make_sandbox, api_for):
    api = api_for(make_sandbox(search_per_second=2, ten_second_limit=1000))
    statuses = [api.post("/crm/v3/objects/contacts/search", {}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert api.get("/crm/v3/objects/contacts").status_code == 200
    time.sleep(1.05)
    assert api.post("/crm/v3/objects/contacts/search", {}).status_code == 200


def test_injected_429_storm_answers_hubspot_429_body_and_headers(make_sandbox, api_for):
    api = api_for(make_sandbox())
    faults = api.session.post(f"{api.sb.base_url}/__admin/faults", json={"storm_429_seconds": 30})
    assert faults.status_code == 200
    response = api.get("/crm/v3/objects/contacts")
    assert response.status_code == 429
    assert response.json()["errorType"] == "RATE_LIMIT"
    assert response.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    api.session.post(f"{api.sb.base_url}/__admin/faults", json={"storm_429_until": 0.0})
    assert api.get("/crm/v3/objects/contacts").status_code == 200


def test_injected_5xx_answers_hubspot_error_body(make_sandbox, api_for):
    api = api_for(make_sandbox())
    api.session.post(
        f"{api.sb.base_url}/__admin/faults", json={"error_rate": 1.0, "error_status": 502}
    )
    response = api.get("/crm/v3/objects/contacts")
    assert response.status_code == 502
    assert response.json()["status"] == "error" and response.json()["correlationId"]
    api.session.post(f"{api.sb.base_url}/__admin/faults", json={"error_rate": 0.0})


def test_request_counters_use_stable_endpoint_names(make_sandbox, api_for):
    api = api_for(make_sandbox())
    api.post("/crm/v3/objects/contacts/batch/update", {"inputs": []})
    api.post("/crm/v3/objects/0-1/search", {})
    api.get("/crm/v3/objects/contacts/123")
    counters = api.session.get(f"{api.sb.base_url}/__admin/counters").json()
    assert counters["POST crm/v3/objects/contacts/batch/update"] == 1
    assert counters["POST crm/v3/objects/contacts/search"] == 1
    assert counters["GET crm/v3/objects/contacts/{object_id}"] == 1
