from __future__ import annotations

import json
import time

import pytest
from hubspot.utils.signature import Signature
from webhook_fixtures import HUBSPOT_APP_ID, HUBSPOT_SECRET, PORTAL_ID, build_webhook_app

from handlers.webhooks import hubspot_signature_legacy, hubspot_signature_v3

URL = "http://localhost/webhooks/hubspot"


@pytest.fixture
def hooks(tmp_path):
    built = build_webhook_app(tmp_path)
    yield built
    built.services.queue.stop()


# Vectors from the official client's own signature tests (hubspot-api-python,
# tests/spec/utils/test_signature.py): same inputs, same expected digests.
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOC_BODY = b"{'example_field':'example_value'}"
DOC_URL = "https://www.example.com/webhook_uri"


def test_v3_signature_matches_the_official_clients_test_vector():
    assert (
        hubspot_signature_v3(DOC_SECRET, "POST", DOC_URL, DOC_BODY, "15000000")
        == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
    )


@pytest.mark.parametrize(
    ("version", "method", "body", "expected"),
    [
        (
            "v1",
            "POST",
            DOC_BODY,
            "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750",
        ),
        (
            "v2",
            "POST",
            DOC_BODY,
            "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383",
        ),
        ("v2", "GET", b"", "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"),
    ],
)
def test_legacy_signatures_match_the_official_clients_test_vectors(version, method, body, expected):
    assert hubspot_signature_legacy(DOC_SECRET, version, method, DOC_URL, body) == expected


def test_v3_decodes_exactly_the_documented_escapes_before_signing():
    encoded = "https://h.example/webhooks/hubspot?next=%3A%2F%40%21%24%27%28%29%2A%2C%3B&space=%20"
    decoded = "https://h.example/webhooks/hubspot?next=:/@!$'()*,;&space=%20"
    ours = hubspot_signature_v3("s", "POST", encoded, b"[]", "1")
    assert ours == Signature.get_signature("s", "[]", "v3", decoded, "POST", "1")


def event(**changes):
    base = {
        "eventId": 100, "subscriptionId": 7, "portalId": PORTAL_ID, "appId": int(HUBSPOT_APP_ID),
        "occurredAt": 1_763_800_000_000, "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": 501, "propertyName": "lifecyclestage",
        "propertyValue": "marketingqualifiedlead", "changeSource": "CRM_UI",
        "sourceId": "userId:9", "changeFlag": "NEW",
    }  # fmt: skip
    return {**base, **changes}


def signed_post(
    client, events, *, secret=HUBSPOT_SECRET, timestamp=None, url=URL, body=None, headers=None
):
    raw = body if body is not None else json.dumps(events).encode()
    stamp = str(int(time.time() * 1000)) if timestamp is None else str(timestamp)
    signature = Signature.get_signature(secret, raw.decode(), "v3", url, "POST", stamp)
    return client.post(
        url, data=raw, content_type="application/json",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp,
                 **(headers or {})},
    )  # fmt: skip


def test_a_signed_batch_is_accepted_and_queues_one_fetch(hooks):
    response = signed_post(hooks.client, [event(), event(eventId=101, objectId=502)])
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 2
    (job,) = hooks.queued("sync.jobs.fetch_changes")
    assert job["args"] == (f"hubspot-{PORTAL_ID}", "contacts")
    assert hooks.services.events.claim_pending(f"hubspot-{PORTAL_ID}:contacts") == ["501", "502"]


def test_a_burst_of_changes_to_one_record_becomes_one_fetch(hooks):
    for n in range(5):
        batch = [
            event(eventId=1000 + n * 10 + i, occurredAt=1_763_800_000_000 + i) for i in range(10)
        ]
        assert signed_post(hooks.client, batch).status_code == 200
    assert len(hooks.queued("sync.jobs.fetch_changes")) == 1
    assert hooks.services.events.claim_pending(f"hubspot-{PORTAL_ID}:contacts") == ["501"]


def test_a_redelivered_batch_is_acknowledged_and_adds_no_work(hooks):
    batch = [event(), event(eventId=101, objectId=502, subscriptionType="contact.deletion")]
    signed_post(hooks.client, batch)
    before = hooks.services.queue.jobs()
    again = signed_post(hooks.client, [{**e, "attemptNumber": 1} for e in batch])
    assert again.status_code == 200
    assert again.get_json() == {"accepted": 0, "dropped": {"hubspot.duplicate": 2}}
    assert hooks.services.queue.jobs() == before


def test_echoes_of_our_own_writes_are_dropped_but_other_integrations_are_not(hooks):
    ours = event(eventId=1, changeSource="INTEGRATION", sourceId=HUBSPOT_APP_ID)
    theirs = event(eventId=2, objectId=777, changeSource="INTEGRATION", sourceId="99999")
    response = signed_post(hooks.client, [ours, theirs])
    assert response.get_json() == {"accepted": 2, "dropped": {"hubspot.echo": 1}}
    assert hooks.services.events.claim_pending(f"hubspot-{PORTAL_ID}:contacts") == ["777"]
    assert hooks.services.events.counters()["hubspot.echo"] == 1


def test_an_unknown_portal_is_acknowledged_dropped_and_counted(hooks):
    response = signed_post(hooks.client, [event(portalId=999)])
    assert response.status_code == 200
    assert response.get_json()["dropped"] == {"hubspot.unknown_portal": 1}
    assert hooks.queued() == []
    assert hooks.services.events.counters()["hubspot.unknown_portal"] == 1


def test_deletions_and_merges_queue_their_own_jobs(hooks):
    batch = [
        event(eventId=1, subscriptionType="contact.deletion", objectId=11),
        event(eventId=2, subscriptionType="object.merge", objectTypeId="0-1", objectId=20,
              primaryObjectId=20, mergedObjectIds=[20, 21, 22]),
        event(eventId=3, subscriptionType="object.creation", objectTypeId="0-3", objectId=30),
    ]  # fmt: skip
    assert signed_post(hooks.client, batch).status_code == 200
    (delete,) = hooks.queued("sync.jobs.delete_records")
    assert delete["args"] == (f"hubspot-{PORTAL_ID}", "contacts", ["11"])
    (merge,) = hooks.queued("sync.jobs.merge_records")
    assert merge["args"] == (f"hubspot-{PORTAL_ID}", "contacts", "20", ["21", "22"])
    (fetch,) = hooks.queued("sync.jobs.fetch_changes")
    assert fetch["args"] == (f"hubspot-{PORTAL_ID}", "deals")


def test_the_docs_example_batch_using_event_type_is_understood(hooks):
    legacy = event(eventId=5)
    legacy["eventType"] = legacy.pop("subscriptionType")
    response = signed_post(hooks.client, [legacy])
    assert response.get_json()["accepted"] == 1


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda kw: kw.update(body=b'[{"eventId": 1}]'), 401, "bad_signature"),
        (lambda kw: kw.update(secret="the-wrong-secret"), 401, "bad_signature"),
        (lambda kw: kw.update(timestamp=int(time.time() * 1000) - 301_000), 401, "stale_signature"),
        (
            lambda kw: kw.update(url="http://localhost/webhooks/hubspot?extra=1"),
            401,
            "bad_signature",
        ),
    ],
)
def test_bad_signatures_are_refused_and_queue_nothing(hooks, mutate, status, code):
    raw = json.dumps([event()]).encode()
    signature_kwargs = {"body": None, "secret": HUBSPOT_SECRET, "timestamp": None, "url": URL}
    mutate(signature_kwargs)
    stamp = signature_kwargs["timestamp"] or int(time.time() * 1000)
    signature = Signature.get_signature(
        signature_kwargs["secret"], raw.decode(), "v3", signature_kwargs["url"], "POST", str(stamp)
    )
    sent = signature_kwargs["body"] if signature_kwargs["body"] is not None else raw
    response = hooks.client.post(
        URL, data=sent, content_type="application/json",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": str(stamp)},
    )  # fmt: skip
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert hooks.queued() == []


def test_a_request_without_a_signature_is_refused(hooks):
    response = hooks.client.post(URL, json=[event()])
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_signature"


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        (b"{not json", "malformed_json", "not JSON"),
        (b'{"eventId": 1}', "malformed_body", "JSON array"),
        (json.dumps([{"subscriptionId": 1}]).encode(), "malformed_event", "eventId"),
        (json.dumps([{**event(), "portalId": "x"}]).encode(), "malformed_event", "portalId"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason_and_queue_nothing(hooks, body, code, mentions):
    response = signed_post(hooks.client, None, body=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert mentions in json.dumps(error)
    assert hooks.queued() == []


def test_an_oversize_body_gets_413_and_queues_nothing(hooks):
    huge = [event(eventId=i, propertyValue="x" * 1000) for i in range(100)]
    response = signed_post(hooks.client, huge)
    assert response.status_code == 413
    assert response.get_json()["error"]["status"] == 413
    assert hooks.queued() == []


def test_legacy_v2_signatures_are_accepted_only_when_configured(tmp_path):
    raw = json.dumps([event()]).encode()
    signature = Signature.get_signature(HUBSPOT_SECRET, raw.decode(), "v2", URL, "POST")
    headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v2"}
    strict = build_webhook_app(tmp_path / "strict")
    refused = strict.client.post(URL, data=raw, content_type="application/json", headers=headers)
    assert refused.status_code == 401
    assert "FIELDWISE_HUBSPOT_LEGACY_SIGNATURES" in refused.get_json()["error"]["message"]
    lenient = build_webhook_app(tmp_path / "lenient", hubspot_legacy_signatures=True)
    accepted = lenient.client.post(URL, data=raw, content_type="application/json", headers=headers)
    assert accepted.status_code == 200


def test_behind_a_proxy_the_signature_covers_the_url_hubspot_called(tmp_path):
    hooks = build_webhook_app(tmp_path, proxy_hops=1)
    public = "https://fieldwise.example.com/webhooks/hubspot?portal=1"
    raw = json.dumps([event(eventId=9)]).encode()
    stamp = str(int(time.time() * 1000))
    signature = Signature.get_signature(HUBSPOT_SECRET, raw.decode(), "v3", public, "POST", stamp)
    proxied = hooks.client.post(
        "/webhooks/hubspot?portal=1", data=raw, content_type="application/json",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp,
                 "X-Forwarded-Proto": "https", "X-Forwarded-Host": "fieldwise.example.com"},
    )  # fmt: skip
    assert proxied.status_code == 200
    # Without trusting the proxy, the app sees http://localhost and the same signature fails.
    direct = build_webhook_app(tmp_path / "direct")
    refused = direct.client.post(
        "/webhooks/hubspot?portal=1", data=raw, content_type="application/json",
        headers={"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp,
                 "X-Forwarded-Proto": "https", "X-Forwarded-Host": "fieldwise.example.com"},
    )  # fmt: skip
    assert refused.status_code == 401


def test_when_redis_is_unreachable_the_answer_is_503_so_hubspot_retries(tmp_path):
    hooks = build_webhook_app(tmp_path, redis_url="redis://127.0.0.1:1/0")
    response = signed_post(hooks.client, [event()])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.get_json()["error"]["code"] == "queue_unavailable"
