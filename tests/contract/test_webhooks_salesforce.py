from __future__ import annotations

import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET

import pytest
from webhook_fixtures import INTEGRATION_USER, ORG_ID, build_webhook_app

TENANT = f"salesforce-{ORG_ID}"
OUTBOUND = "/webhooks/salesforce/outbound"
EVENTS = "/webhooks/salesforce/events"


@pytest.fixture
def hooks(tmp_path):
    built = build_webhook_app(tmp_path)
    yield built
    built.services.queue.stop()


def notification(notification_id, record_id, object_name="Lead", **values):
    fields = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in {"Id": record_id, **values}.items())
    return (
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{object_name}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"{fields}</sObject></Notification>"
    )


def envelope(*notifications, org_id=ORG_ID):
    # The shape of the outbound messaging WSDL: notifications with OrganizationId, ActionId,
    # SessionId (nil unless "Send Session ID" is on), the two API URLs and up to 100 Notification.
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body>"
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org_id}</OrganizationId>"
        "<ActionId>04k5g000000ABCDAA4</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/62.0/00D5g000004ABCD</EnterpriseUrl>"
        "<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/62.0/00D5g000004ABCD</PartnerUrl>"
        + "".join(notifications)
        + "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def is_ack(response):
    root = ET.fromstring(response.data)
    ack = root.find(".//{http://soap.sforce.com/2005/09/outbound}Ack")
    return response.status_code == 200 and ack is not None and ack.text == "true"


def test_an_outbound_message_is_acknowledged_after_its_fetch_is_queued(hooks):
    body = envelope(
        notification("04l01", "00Q5g00000AAAAAAA1", LastModifiedById="0055g00000ZZZZZAA1"),
        notification("04l02", "00Q5g00000AAAAAAA2"),
        notification("04l03", "0065g00000BBBBBAA1", "Opportunity"),
    )
    response = hooks.client.post(OUTBOUND, data=body, content_type="text/xml")
    assert is_ack(response)
    fetches = sorted(job["args"] for job in hooks.queued("sync.jobs.fetch_changes"))
    assert fetches == [(TENANT, "Lead"), (TENANT, "Opportunity")]
    assert hooks.services.events.claim_pending(f"{TENANT}:Lead") == [
        "00Q5g00000AAAAAAA1",
        "00Q5g00000AAAAAAA2",
    ]


def test_redelivered_notifications_are_acknowledged_without_new_work(hooks):
    body = envelope(notification("04l01", "00Q5g00000AAAAAAA1"))
    hooks.client.post(OUTBOUND, data=body, content_type="text/xml")
    hooks.services.events.claim_pending(f"{TENANT}:Lead")
    before = hooks.services.queue.jobs()
    assert is_ack(hooks.client.post(OUTBOUND, data=body, content_type="text/xml"))
    assert hooks.services.queue.jobs() == before
    assert hooks.services.events.counters()["salesforce.duplicate"] == 1


def test_changes_made_by_the_integration_user_are_echoes_and_dropped(hooks):
    body = envelope(notification("04l09", "00Q5g00000AAAAAAA9", LastModifiedById=INTEGRATION_USER))
    assert is_ack(hooks.client.post(OUTBOUND, data=body, content_type="text/xml"))
    assert hooks.queued() == []
    assert hooks.services.events.counters() == {"salesforce.echo": 1}


def test_an_unknown_org_is_acknowledged_dropped_and_counted(hooks):
    body = envelope(notification("04l01", "00Q5g00000AAAAAAA1"), org_id="00D000000000000AAA")
    assert is_ack(hooks.client.post(OUTBOUND, data=body, content_type="text/xml"))
    assert hooks.queued() == []
    assert hooks.services.events.counters() == {"salesforce.unknown_org": 1}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<not xml", "malformed_xml"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "malformed_xml"),
        (b"<Envelope><Body/></Envelope>", "malformed_soap"),
        (envelope(notification("04l01", "00Q1")).replace(b"<Id>04l01</Id>", b""), "malformed_soap"),
        (envelope(notification("04l01", "00Q1"), org_id=""), "malformed_soap"),
    ],
)
def test_malformed_outbound_messages_get_400_with_the_reason(hooks, body, code):
    response = hooks.client.post(OUTBOUND, data=body, content_type="text/xml")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert hooks.queued() == []


def test_when_redis_is_unreachable_no_ack_is_sent_so_salesforce_retries(tmp_path):
    hooks = build_webhook_app(tmp_path, redis_url="redis://127.0.0.1:1/0")
    body = envelope(notification("04l01", "00Q5g00000AAAAAAA1"))
    response = hooks.client.post(OUTBOUND, data=body, content_type="text/xml")
    assert response.status_code == 503
    assert b"<Ack>" not in response.data


# --------------------------------------------------------------------------------------------------
# Change events relayed as JSON


def change_event(
    change_type,
    record_ids,
    entity="Lead",
    origin="com/salesforce/api/rest/62.0",
    user="0055g00000ZZZZZAA1",
    sequence=1,
    transaction="0001a2b3-4c5d",
):
    return {
        "schema": "IeRuaY6cbI_HsV8Rv1Mc5g",
        "payload": {
            "ChangeEventHeader": {
                "entityName": entity, "recordIds": record_ids, "changeType": change_type,
                "changeOrigin": origin, "transactionKey": transaction, "sequenceNumber": sequence,
                "commitTimestamp": 1_763_800_000_000, "commitNumber": 10_978_000_000_000,
                "commitUser": user, "changedFields": ["Status", "LastModifiedDate"],
            },
            "Status": "Working - Contacted",
        },
        "event": {"replayId": 6},
    }  # fmt: skip


def relay(client, events, *, secret=None, timestamp=None, org_id=ORG_ID, tamper=False):
    body = json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    key = (secret or client.relay_secret).encode()
    digest = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return client.client.post(
        EVENTS, data=body + (b" " if tamper else b""), content_type="application/json",
        headers={"X-Fieldwise-Org-Id": org_id, "X-Fieldwise-Timestamp": stamp,
                 "X-Fieldwise-Signature": f"sha256={digest}"},
    )  # fmt: skip


@pytest.fixture
def relayed(hooks):
    hooks.relay_secret = hooks.services.registry.relay_secret(TENANT, create=True)
    return hooks


def test_signed_change_events_queue_fetches_deletes_and_refetches(relayed):
    events = [
        change_event("UPDATE", ["00Q5g00000AAAAAAA1", "00Q5g00000AAAAAAA2"], sequence=1),
        change_event("DELETE", ["00Q5g00000AAAAAAA3"], sequence=2),
        change_event("GAP_OVERFLOW", [], entity="Opportunity", sequence=3),
        change_event("GAP_UPDATE", ["001*"], entity="Account", sequence=4),
    ]
    response = relay(relayed, events)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 4
    (fetch,) = relayed.queued("sync.jobs.fetch_changes")
    assert fetch["args"] == (TENANT, "Lead")
    (delete,) = relayed.queued("sync.jobs.delete_records")
    assert delete["args"] == (TENANT, "Lead", ["00Q5g00000AAAAAAA3"])
    refetched = sorted(job["args"] for job in relayed.queued("sync.jobs.refetch_object"))
    assert refetched == [(TENANT, "Account"), (TENANT, "Opportunity")]


def test_change_events_from_our_own_writes_are_dropped_by_origin_or_user(relayed):
    events = [
        change_event("UPDATE", ["00Q1"], origin="com/salesforce/api/rest/62.0;client=Fieldwise"),
        change_event("UPDATE", ["00Q2"], user=INTEGRATION_USER, sequence=2),
    ]
    response = relay(relayed, events)
    assert response.get_json()["dropped"] == {"salesforce.echo": 2}
    assert relayed.queued() == []


def test_duplicate_change_events_are_dropped(relayed):
    events = [change_event("UPDATE", ["00Q1"])]
    relay(relayed, events)
    again = relay(relayed, events)
    assert again.get_json() == {"accepted": 0, "dropped": {"salesforce.duplicate": 1}}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"secret": "not-the-tenant-secret"}, "bad_signature"),
        ({"tamper": True}, "bad_signature"),
        ({"timestamp": int(time.time()) - 301}, "stale_signature"),
        ({"org_id": "00D000000000000AAA"}, "unknown_org"),
    ],
)
def test_relayed_events_that_fail_authentication_get_401_and_queue_nothing(relayed, kwargs, code):
    response = relay(relayed, [change_event("UPDATE", ["00Q1"])], **kwargs)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == code
    assert relayed.queued() == []


def test_an_org_without_a_relay_secret_is_told_to_reinstall(hooks):
    response = relay(hooks, [change_event("UPDATE", ["00Q1"])], secret="anything")
    assert response.status_code == 401
    assert "fieldwise install" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "events",
    [[{"payload": {}}], [{"payload": {"ChangeEventHeader": {"entityName": "Lead"}}}], ["text"]],
)
def test_malformed_change_events_get_400_and_queue_nothing(relayed, events):
    response = relay(relayed, events)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_event"
    assert relayed.queued() == []
