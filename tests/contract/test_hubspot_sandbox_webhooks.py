"""Contract: Webhooks API v3 (settings, subscriptions) and signed, batched, retried deliveries."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests
from hubspot.utils.signature import Signature

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]


@pytest.fixture(scope="module")
def sb(make_sandbox):
    return make_sandbox()


@pytest.fixture
def hook(sb, api_for, webhook_receiver):
    """Settings pointed at the receiver, no subscriptions, a clean receiver."""
    api = api_for(sb)
    dev = {"hapikey": sb.developer_api_key}
    base = f"{sb.base_url}/webhooks/v3/{sb.app_id}"
    for sub in requests.get(f"{base}/subscriptions", params=dev).json()["results"]:
        requests.delete(f"{base}/subscriptions/{sub['id']}", params=dev)
    requests.put(
        f"{base}/settings",
        params=dev,
        json={
            "targetUrl": webhook_receiver.url,
            "throttling": {"maxConcurrentRequests": 10, "period": "SECONDLY"},
        },
    )
    sb.webhooks.flush()
    sb.deliverer.wait_idle(5)
    webhook_receiver.reset()

    def subscribe(event_type, **extra):
        response = requests.post(
            f"{base}/subscriptions",
            params=dev,
            json={"eventType": event_type, "active": True, **extra},
        )
        assert response.status_code == 201, response.text
        return response.json()

    return api, subscribe, base, dev


def test_webhooks_api_requires_developer_hapikey(sb):
    response = requests.get(
        f"{sb.base_url}/webhooks/v3/{sb.app_id}/subscriptions", params={"hapikey": "wrong"}
    )
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"


def test_settings_put_and_get_round_trip(sb, hook, webhook_receiver):
    _, _, base, dev = hook
    body = requests.get(f"{base}/settings", params=dev).json()
    assert body["targetUrl"] == webhook_receiver.url
    assert body["throttling"] == {"maxConcurrentRequests": 10, "period": "SECONDLY"}
    assert body["createdAt"].endswith("Z")
    bad = requests.put(
        f"{base}/settings",
        params=dev,
        json={"targetUrl": "ftp://x", "throttling": {"maxConcurrentRequests": 10}},
    )
    assert bad.status_code == 400


def test_subscription_crud_and_batch_update(sb, hook):
    _, subscribe, base, dev = hook
    sub = subscribe("contact.propertyChange", propertyName="lifecyclestage")
    assert sub["eventType"] == "contact.propertyChange" and sub["propertyName"] == "lifecyclestage"
    assert sub["active"] is True and sub["id"]
    listed = requests.get(f"{base}/subscriptions", params=dev).json()["results"]
    assert [s["id"] for s in listed] == [sub["id"]]
    patched = requests.patch(
        f"{base}/subscriptions/{sub['id']}", params=dev, json={"active": False}
    ).json()
    assert patched["active"] is False
    batch = requests.post(
        f"{base}/subscriptions/batch/update",
        params=dev,
        json={"inputs": [{"id": int(sub["id"]), "active": True}]},
    )
    assert batch.status_code == 200 and batch.json()["results"][0]["active"] is True
    assert requests.delete(f"{base}/subscriptions/{sub['id']}", params=dev).status_code == 204
    assert requests.get(f"{base}/subscriptions/{sub['id']}", params=dev).status_code == 404


def test_invalid_subscriptions_answer_400(hook):
    _, _, base, dev = hook
    assert (
        requests.post(
            f"{base}/subscriptions", params=dev, json={"eventType": "contact.teleport"}
        ).status_code
        == 400
    )
    assert (
        requests.post(
            f"{base}/subscriptions", params=dev, json={"eventType": "contact.propertyChange"}
        ).status_code
        == 400
    )
    assert (
        requests.post(
            f"{base}/subscriptions", params=dev, json={"eventType": "object.creation"}
        ).status_code
        == 400
    )


def test_creation_by_app_token_delivers_integration_event_with_app_source(
    sb, hook, webhook_receiver
):
    api, subscribe, _, _ = hook
    sub = subscribe("contact.creation")
    contact = api.create_contact(email="hooked@example.com")
    posts = webhook_receiver.wait_for(1)
    (event,) = posts[0].events
    assert event["subscriptionType"] == "contact.creation"
    assert event["objectId"] == int(contact["id"])
    assert event["subscriptionId"] == int(sub["id"])
    assert event["portalId"] == sb.portal_id and event["appId"] == sb.app_id
    assert event["changeSource"] == "INTEGRATION" and event["sourceId"] == str(sb.app_id)
    assert event["changeFlag"] == "CREATED" and event["attemptNumber"] == 0
    assert isinstance(event["eventId"], int) and event["occurredAt"] > 1_600_000_000_000


def test_delivered_v3_and_v1_signatures_verify_with_official_client(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.creation")
    api.create_contact(email="signed@example.com")
    post = webhook_receiver.wait_for(1)[0]
    assert Signature.is_valid(
        signature=post.headers["X-Hubspot-Signature-V3"],
        client_secret=sb.client_secret,
        request_body=post.body,
        http_uri=post.url,
        http_method="POST",
        signature_version="v3",
        timestamp=post.headers["X-Hubspot-Request-Timestamp"],
    )
    assert post.headers["X-Hubspot-Signature-Version"] == "v1"
    assert Signature.is_valid(
        signature=post.headers["X-Hubspot-Signature"],
        client_secret=sb.client_secret,
        request_body=post.body,
        signature_version="v1",
    )
    assert not Signature.is_valid(
        signature=post.headers["X-Hubspot-Signature"],
        client_secret="another-secret",
        request_body=post.body,
        signature_version="v1",
    )


def test_v2_signature_verifies_when_settings_ask_for_v2(sb, hook, webhook_receiver):
    api, subscribe, base, dev = hook
    requests.put(
        f"{base}/settings",
        params=dev,
        json={
            "targetUrl": webhook_receiver.url,
            "throttling": {"maxConcurrentRequests": 10},
            "signatureVersion": "v2",
        },
    )
    subscribe("company.creation")
    api.post("/crm/v3/objects/companies", {"properties": {"name": "V2 Co"}})
    post = webhook_receiver.wait_for(1)[0]
    assert post.headers["X-Hubspot-Signature-Version"] == "v2"
    assert Signature.is_valid(
        signature=post.headers["X-Hubspot-Signature"],
        client_secret=sb.client_secret,
        request_body=post.body,
        http_uri=post.url,
        http_method="POST",
        signature_version="v2",
    )
    requests.put(
        f"{base}/settings",
        params=dev,
        json={
            "targetUrl": webhook_receiver.url,
            "throttling": {"maxConcurrentRequests": 10},
            "signatureVersion": "v1",
        },
    )


def test_property_change_events_only_for_subscribed_property(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.propertyChange", propertyName="lifecyclestage")
    contact = api.create_contact(email="pc@example.com")
    api.patch(f"/crm/v3/objects/contacts/{contact['id']}", {"properties": {"jobtitle": "CEO"}})
    api.patch(
        f"/crm/v3/objects/contacts/{contact['id']}", {"properties": {"lifecyclestage": "lead"}}
    )
    webhook_receiver.wait_for(1)
    time.sleep(0.2)
    events = webhook_receiver.all_events()
    assert [(e["propertyName"], e["propertyValue"]) for e in events] == [("lifecyclestage", "lead")]
    assert events[0]["subscriptionType"] == "contact.propertyChange"


def test_ui_edit_hook_emits_crm_ui_change_source(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("object.propertyChange", objectTypeId="0-3", propertyName="dealstage")
    deal = api.post("/crm/v3/objects/deals", {"properties": {"dealname": "UI deal"}}).json()
    edited = api.admin(
        "ui-edit",
        {"objectType": "deals", "id": deal["id"], "properties": {"dealstage": "closedwon"}},
    )
    assert edited.status_code == 200
    (event,) = webhook_receiver.wait_for(1)[0].events
    assert event["subscriptionType"] == "object.propertyChange" and event["objectTypeId"] == "0-3"
    assert event["changeSource"] == "CRM_UI" and event["sourceId"].startswith("userId:")
    history = api.get(
        f"/crm/v3/objects/deals/{deal['id']}", params={"propertiesWithHistory": "dealstage"}
    ).json()
    assert history["propertiesWithHistory"]["dealstage"][0]["sourceType"] == "CRM_UI"


def test_events_are_coalesced_into_batches_of_at_most_100(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.creation")
    # A window far longer than the two creates take, so a loaded machine cannot close it between
    # them: the batch size, not the clock, must split the 150 events.
    window_s, sb.webhooks.coalesce_s = sb.webhooks.coalesce_s, 60.0
    try:
        for chunk in range(2):
            inputs = [{"properties": {"email": f"bulk{chunk}-{i}@example.com"}} for i in range(75)]
            response = api.post("/crm/v3/objects/contacts/batch/create", {"inputs": inputs})
            assert response.status_code == 201
        sb.webhooks.flush()
    finally:
        sb.webhooks.coalesce_s = window_s
    deadline = time.time() + 10
    while len(webhook_receiver.all_events()) < 150 and time.time() < deadline:
        time.sleep(0.05)
    sizes = [len(r.events) for r in webhook_receiver.received]
    assert sum(sizes) == 150 and max(sizes) == 100 and len(sizes) <= 3


def test_failed_delivery_is_retried_on_5xx_but_not_on_4xx(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.deletion")
    webhook_receiver.statuses.extend([503])
    contact = api.create_contact(email="retry@example.com")
    api.delete(f"/crm/v3/objects/contacts/{contact['id']}")
    posts = webhook_receiver.wait_for(2, timeout_s=10)
    first, retry = posts[0].events[0], posts[1].events[0]
    assert first["changeFlag"] == "DELETED"
    # A retry is the same event, numbered as the next attempt and signed afresh.
    assert (first["attemptNumber"], retry["attemptNumber"]) == (0, 1)
    assert {**first, "attemptNumber": 1} == retry
    assert Signature.is_valid(
        signature=posts[1].headers["X-Hubspot-Signature-V3"],
        client_secret=sb.client_secret,
        request_body=posts[1].body,
        http_uri=posts[1].url,
        http_method="POST",
        signature_version="v3",
        timestamp=posts[1].headers["X-Hubspot-Request-Timestamp"],
    )
    webhook_receiver.reset()
    webhook_receiver.statuses.extend([400])
    other = api.create_contact(email="noretry@example.com")
    api.delete(f"/crm/v3/objects/contacts/{other['id']}")
    webhook_receiver.wait_for(1)
    time.sleep(1.5)
    assert len(webhook_receiver.received) == 1


def test_association_change_event_names_both_sides(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.associationChange")
    contact = api.create_contact(email="assoc-hook@example.com")
    company = api.post("/crm/v3/objects/companies", {"properties": {"name": "Hook Co"}}).json()
    api.put(
        f"/crm/v4/objects/contacts/{contact['id']}/associations/default/companies/{company['id']}",
        None,
    )
    (event,) = webhook_receiver.wait_for(1)[0].events
    assert event["subscriptionType"] == "contact.associationChange"
    assert event["associationType"] == "CONTACT_TO_COMPANY"
    assert event["fromObjectId"] == int(contact["id"]) and event["toObjectId"] == int(company["id"])
    assert event["associationRemoved"] is False


def test_merge_event_carries_primary_and_merged_ids(sb, hook, webhook_receiver):
    api, subscribe, _, _ = hook
    subscribe("contact.merge")
    primary = api.create_contact(email="m1@example.com")
    other = api.create_contact(email="m2@example.com")
    api.post(
        "/crm/v3/objects/contacts/merge",
        {"primaryObjectId": primary["id"], "objectIdToMerge": other["id"]},
    )
    (event,) = webhook_receiver.wait_for(1)[0].events
    assert event["primaryObjectId"] == int(primary["id"])
    assert event["mergedObjectIds"] == [int(other["id"])]
    assert event["changeFlag"] == "MERGED"
