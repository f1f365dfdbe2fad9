"""The webhook hot path: exact event loading, one Redis round trip, and honest tenant caching."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.connection

from core.config import Config, Secret
from core.tenants import Tenant, TenantRegistry, Tokens, tenant_id_for
from handlers.app import create_app
from handlers.errors import ApiError
from handlers.webhooks import (
    HubSpotEventSchema,
    _typed_hubspot_events,
    load_hubspot_events,
    relay_signature,
)

SECRET = "hs-client-secret-for-ingest-tests"
APP_ID = "4242"
PORTAL = 62515
TENANT_ID = tenant_id_for("hubspot", str(PORTAL))
URL = "http://localhost/webhooks/hubspot"
REPO = Path(__file__).resolve().parents[2]


def event(**changes):
    base = {
        "eventId": 100, "subscriptionId": 7, "portalId": PORTAL, "appId": int(APP_ID),
        "occurredAt": 1_763_800_000_000, "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": 501, "propertyName": "lifecyclestage",
        "propertyValue": "lead", "changeSource": "CRM_UI", "sourceId": "userId:9",
    }  # fmt: skip
    return {**base, **changes}


# --------------------------------------------------------------------------------------------------
# Loading events: the direct path gives exactly what the schema gives


def legacy_event():
    legacy = event(eventId=5)
    legacy["eventType"] = legacy.pop("subscriptionType")
    return legacy


@pytest.mark.parametrize(
    "batch",
    [
        [event()],
        [event(eventId=i, objectId=i) for i in range(10)],
        [legacy_event()],
        [event(subscriptionType="object.merge", objectTypeId="0-1", primaryObjectId=20,
               mergedObjectIds=[20, 21, 22])],
        [event(subscriptionType="contact.associationChange", fromObjectId=1, toObjectId=None)],
        [event(objectId=None, appId=None, changeSource=None, sourceId={"nested": True})],
        [{"eventId": 1, "subscriptionId": 2, "portalId": 3, "occurredAt": 4}],
        [event(subscriptionType=None, eventType="contact.creation")],
        [],
    ],
)  # fmt: skip
def test_typed_batches_load_exactly_as_the_schema_loads_them(batch):
    assert _typed_hubspot_events(batch) is not None  # the direct path, not the schema
    assert load_hubspot_events(batch) == HubSpotEventSchema(many=True).load(batch)


@pytest.mark.parametrize(
    "batch",
    [
        [event(portalId="62515")],  # a number as a string: the schema converts it
        [event(objectId=12.0)],
    ],
)
def test_other_batches_go_through_the_schema_itself(batch):
    assert _typed_hubspot_events(batch) is None
    assert load_hubspot_events(batch) == HubSpotEventSchema(many=True).load(batch)


@pytest.mark.parametrize(
    "batch",
    [
        [event(eventId=True)],
        [event(portalId=None)],
        [{k: v for k, v in event().items() if k != "occurredAt"}],
        [event(mergedObjectIds=None)],
        [event(mergedObjectIds=["x"])],
        [event(subscriptionType=7)],
        ["not an object"],
    ],
)
def test_invalid_batches_are_refused_with_the_schemas_own_messages(batch):
    with pytest.raises(ApiError) as refused:
        load_hubspot_events(batch)
    with pytest.raises(Exception) as schema:
        HubSpotEventSchema(many=True).load(batch)
    assert refused.value.status == 400
    assert refused.value.code == "malformed_event"
    assert refused.value.details["fields"] == schema.value.messages


# --------------------------------------------------------------------------------------------------
# The handler on Redis


def build_app(tmp_path, redis_url=None):
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        redis_url=redis_url,
        hubspot_client_id="hs-client",
        hubspot_client_secret=Secret(SECRET),
        hubspot_app_id=APP_ID,
    )
    app = create_app(config)
    services = app.extensions["fieldwise.services"]
    services.registry.save(
        Tenant(TENANT_ID, "hubspot", str(PORTAL), None, status="active",
               integration_user_id=APP_ID),
        Tokens("a", "r"),
    )  # fmt: skip
    return app, services


def post(client, events):
    body = json.dumps(events).encode()
    stamp = str(int(time.time() * 1000))
    digest = hmac.new(SECRET.encode(), b"POST" + URL.encode() + body + stamp.encode(), "sha256")
    return client.post(
        URL, data=body, content_type="application/json",
        headers={"X-HubSpot-Signature-v3": base64.b64encode(digest.digest()).decode(),
                 "X-HubSpot-Request-Timestamp": stamp},
    )  # fmt: skip


@pytest.fixture
def on_redis(tmp_path, redis_url):
    app, services = build_app(tmp_path, redis_url)
    yield app, services
    services.queue.connection.close()


def queued_fetches(services):
    (high,) = [q for q in services.queue.queues() if q.name == "high"]
    return [job.args for job in high.jobs if job.func_name == "sync.jobs.fetch_changes"]


@pytest.mark.redis
def test_on_redis_a_burst_queues_one_fetch_and_a_redelivery_adds_nothing(on_redis):
    app, services = on_redis
    client = app.test_client()
    first = post(client, [event(eventId=1, objectId=501), event(eventId=2, objectId=502)])
    assert first.get_json() == {"accepted": 2, "dropped": {}}
    assert queued_fetches(services) == [(TENANT_ID, "contacts")]
    echo = event(eventId=3, changeSource="INTEGRATION", sourceId=APP_ID)
    later = post(client, [event(eventId=2, objectId=502), event(eventId=4, objectId=503), echo])
    assert later.get_json() == {
        "accepted": 2, "dropped": {"hubspot.duplicate": 1, "hubspot.echo": 1}
    }  # fmt: skip
    assert queued_fetches(services) == [(TENANT_ID, "contacts")]  # joined the scheduled fetch
    stranger = post(client, [event(eventId=5, portalId=999)])
    assert stranger.get_json() == {"accepted": 0, "dropped": {"hubspot.unknown_portal": 1}}
    assert services.events.claim_pending(f"{TENANT_ID}:contacts") == ["501", "502", "503"]
    assert services.events.counters() == {
        "hubspot.duplicate": 1, "hubspot.echo": 1, "hubspot.unknown_portal": 1
    }  # fmt: skip


@pytest.mark.redis
def test_on_redis_deletions_queue_their_job_and_are_marked_after_it(on_redis):
    app, services = on_redis
    client = app.test_client()
    deletion = event(eventId=9, subscriptionType="contact.deletion", objectId=11)
    assert post(client, [deletion]).get_json() == {"accepted": 1, "dropped": {}}
    (high,) = [q for q in services.queue.queues() if q.name == "high"]
    assert [j.args for j in high.jobs] == [(TENANT_ID, "contacts", ["11"])]
    again = post(client, [deletion])
    assert again.get_json() == {"accepted": 0, "dropped": {"hubspot.duplicate": 1}}


@pytest.mark.redis
def test_a_steady_delivery_is_one_redis_round_trip_and_no_registry_read(on_redis, monkeypatch):
    app, _ = on_redis
    client = app.test_client()
    assert post(client, [event(eventId=1)]).status_code == 200  # schedules the fetch, caches
    assert post(client, [event(eventId=2)]).status_code == 200  # this thread's connection
    reads, sent = [], []
    find = TenantRegistry.find
    send = redis.connection.AbstractConnection.send_packed_command

    def counting_find(self, crm, external_id):
        reads.append((crm, external_id))
        return find(self, crm, external_id)

    def counting_send(self, command, check_health=True):
        sent.append(command)
        return send(self, command, check_health)

    monkeypatch.setattr(TenantRegistry, "find", counting_find)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    response = post(client, [event(eventId=10 + i, objectId=600 + i) for i in range(10)])
    assert response.get_json() == {"accepted": 10, "dropped": {}}
    assert reads == [] and len(sent) == 1


def change_status_in_another_process(tmp_path, redis_url, status):
    """What an admin console or a worker does: save through a registry that announces in Redis."""
    script = (
        "import sys\n"
        "from core.crypto import TokenCipher, generate_key\n"
        "from core.store import Store\n"
        "from core.tenants import TenantRegistry\n"
        "registry = TenantRegistry(Store(sys.argv[1]), TokenCipher(generate_key()), sys.argv[2])\n"
        "registry.set_status(sys.argv[3], sys.argv[4], 'changed by a test')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "db"), redis_url, TENANT_ID, status],
        cwd=REPO, check=True, timeout=120,
    )  # fmt: skip


@pytest.mark.redis
def test_an_uninstall_in_another_process_is_seen_by_the_next_delivery(on_redis, tmp_path):
    app, services = on_redis
    services.registry.cache.ttl_s = 3600  # only the announcement can make the cache reload
    client = app.test_client()
    assert post(client, [event(eventId=1)]).get_json()["accepted"] == 1
    change_status_in_another_process(tmp_path, services.config.redis_url, "uninstalled")
    dropped = post(client, [event(eventId=2)])
    assert dropped.get_json() == {"accepted": 0, "dropped": {"hubspot.unknown_portal": 1}}
    change_status_in_another_process(tmp_path, services.config.redis_url, "active")
    assert post(client, [event(eventId=3)]).get_json() == {"accepted": 1, "dropped": {}}


def test_a_relay_secret_changed_behind_the_cache_is_used_for_the_next_delivery(tmp_path):
    app, services = build_app(tmp_path)
    org = "00D5g000004ABCDEA2"
    tenant_id = tenant_id_for("salesforce", org)
    services.registry.save(
        Tenant(tenant_id, "salesforce", org, "https://acme.my.salesforce.com", status="active"),
        Tokens("a", "r"),
    )
    services.queue.pause()
    old = services.registry.relay_secret(tenant_id, create=True)
    client = app.test_client()

    def relay(secret, sequence):
        body = json.dumps([{"payload": {"ChangeEventHeader": {
            "entityName": "Lead", "changeType": "UPDATE", "recordIds": ["00Q1"],
            "transactionKey": "t", "sequenceNumber": sequence}}}]).encode()  # fmt: skip
        stamp = str(int(time.time()))
        return client.post(
            "/webhooks/salesforce/events", data=body, content_type="application/json",
            headers={"X-Fieldwise-Org-Id": org, "X-Fieldwise-Timestamp": stamp,
                     "X-Fieldwise-Signature": "sha256=" + relay_signature(secret, stamp, body)},
        )  # fmt: skip

    assert relay(old, 1).status_code == 200  # caches the tenant, old secret included
    # Rotate the secret the way another process would, with no announcement reaching this one.
    row = services.store.get_tenant(tenant_id)
    settings = json.loads(row["settings_json"])
    new = "a-rotated-relay-secret-of-enough-length-0001"
    settings["relay_secret_enc"] = services.cipher.encrypt(new)
    services.store.put_tenant({**row, "settings_json": json.dumps(settings)})
    assert relay(new, 2).status_code == 200  # refused with the cached secret, so looked up again
    refused = relay(old, 3)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "bad_signature"
    services.queue.stop()


def test_the_v3_signature_still_decodes_exactly_the_documented_escapes():
    from handlers.webhooks import hubspot_signature_v3

    def reference(uri):
        for escaped, plain in (("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"),
                               ("%21", "!"), ("%24", "$"), ("%27", "'"), ("%28", "("),
                               ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";")):  # fmt: skip
            uri = uri.replace(escaped, plain).replace(escaped.lower(), plain)
        message = b"POST" + uri.encode() + b"[]" + b"1"
        return base64.b64encode(hmac.new(b"s", message, hashlib.sha256).digest()).decode()

    for uri in (
        "https://h.example/webhooks/hubspot",
        "https://h.example/webhooks/hubspot?next=%3a%2f%2F%40%21%24%27%28%29%2A%2c%3B&x=%20%25",
        "https://h.example/webhooks/hubspot?a=%253A",
    ):
        assert hubspot_signature_v3("s", "POST", uri, b"[]", "1") == reference(uri)
