"""Contract: outbound messages (SOAP notifications, Ack, retries, batching) and the CDC relay."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

from sandbox.salesforce.outbound import retry_schedule  # noqa: E402

OM = "http://soap.sforce.com/2005/09/outbound"
SF = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def configure(sf_api, receiver, name="LeadChanges"):
    response = sf_api.admin(
        "outbound-messages",
        {
            "name": name,
            "object": "Lead",
            "fields": ["Email", "Status", "AnnualRevenue"],
            "endpoint_url": receiver.url,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def unconfigure(sf_api, name="LeadChanges"):
    sf_api.admin("outbound-messages", {"delete": name})


def test_retry_schedule_grows_to_two_hours_within_a_day():
    delays = retry_schedule()
    assert delays[0] == 15 and delays[1] == 30 and max(delays) == 7200
    assert sum(delays) <= 86400 and sum(delays) + 7200 > 86400


def test_outbound_message_has_the_documented_soap_shape(sf_api, sf_sandbox, sf_receiver):
    configure(sf_api, sf_receiver)
    try:
        lead_id = sf_api.create(
            "Lead", LastName="OM", Company="C", Email="om@example.com", AnnualRevenue=1200
        )
        posted = sf_receiver.wait_for(1)[0]
    finally:
        unconfigure(sf_api)
    assert posted.headers["Content-Type"].startswith("text/xml")
    assert posted.headers["Soapaction"] == '""'
    root = ET.fromstring(posted.body)
    notifications = root.find(f".//{{{OM}}}notifications")
    assert notifications.findtext(f"{{{OM}}}OrganizationId") == sf_sandbox.org_id
    assert notifications.findtext(f"{{{OM}}}ActionId").startswith("04k")
    assert notifications.find(f"{{{OM}}}SessionId").get(f"{{{XSI}}}nil") == "true"
    assert "/services/Soap/c/" in notifications.findtext(f"{{{OM}}}EnterpriseUrl")
    assert "/services/Soap/u/" in notifications.findtext(f"{{{OM}}}PartnerUrl")
    (notification,) = notifications.findall(f"{{{OM}}}Notification")
    assert notification.findtext(f"{{{OM}}}Id").startswith("04l")
    sobject = notification.find(f"{{{OM}}}sObject")
    assert sobject.get(f"{{{XSI}}}type") == "sf:Lead"
    assert sobject.findtext(f"{{{SF}}}Id") == lead_id
    assert sobject.findtext(f"{{{SF}}}Email") == "om@example.com"
    assert sobject.findtext(f"{{{SF}}}Status") == "Open - Not Contacted"
    assert sobject.findtext(f"{{{SF}}}AnnualRevenue") == "1200.0"


def test_changes_in_one_window_are_batched_into_one_message(sf_api, sf_sandbox, sf_receiver):
    configure(sf_api, sf_receiver)
    try:
        sf_sandbox.deliverer.wait_idle()
        sf_api.admin("faults", {"webhooks_paused": True})
        records = [
            {"attributes": {"type": "Lead"}, "LastName": f"B{n}", "Company": "Batch"}
            for n in range(120)
        ]
        sf_api.post("composite/sobjects", {"records": records})
        sf_sandbox.relay.flush(force=True)
        sf_api.admin("faults", {"webhooks_paused": False})
        posts = sf_receiver.wait_for(2)
    finally:
        sf_api.admin("faults", {"webhooks_paused": False})
        unconfigure(sf_api)
    counts = sorted(len(ET.fromstring(p.body).findall(f".//{{{OM}}}Notification")) for p in posts)
    assert counts == [20, 100]


def test_delivery_is_retried_until_ack_true(sf_api, sf_sandbox, sf_receiver):
    sf_receiver.responses = [(500, b"boom"), (200, b"<Ack>false</Ack>")]
    configure(sf_api, sf_receiver)
    try:
        sf_api.create("Lead", LastName="Retry", Company="C")
        posts = sf_receiver.wait_for(3, timeout_s=15)
        assert sf_sandbox.deliverer.wait_idle(10)
    finally:
        unconfigure(sf_api)
    assert posts[0].body == posts[2].body
    outcomes = [
        a["outcome"] for a in sf_sandbox.deliverer.attempts if a["label"] == "outbound:LeadChanges"
    ][-3:]
    assert outcomes == ["rejected 500", "rejected 200", "accepted"]


def test_cdc_relay_is_signed_and_shaped_like_change_events(sf_api, sf_sandbox, sf_receiver):
    sf_api.admin("cdc-relay", {"url": sf_receiver.url, "secret": "k3y"})
    try:
        lead_id = sf_api.create("Lead", LastName="Cdc", Company="C")
        sf_api.patch(f"sobjects/Lead/{lead_id}", {"Status": "Working - Contacted"})
        sf_api.delete(f"sobjects/Lead/{lead_id}")
        posts = sf_receiver.wait_for(3)
    finally:
        sf_api.admin("cdc-relay", {"url": None})
    events = []
    for post in posts:
        signed = post.headers["X-Fieldwise-Timestamp"].encode() + b"." + post.body
        digest = hmac.new(b"k3y", signed, hashlib.sha256).hexdigest()
        assert post.headers["X-Fieldwise-Signature"] == f"sha256={digest}"
        assert post.headers["X-Fieldwise-Timestamp"].isdigit()
        assert post.headers["X-Fieldwise-Org-Id"] == sf_sandbox.org_id
        events.extend(json.loads(post.body))
    headers = {e["payload"]["ChangeEventHeader"]["changeType"]: e for e in events}
    assert set(headers) == {"CREATE", "UPDATE", "DELETE"}
    update = headers["UPDATE"]["payload"]
    header = update["ChangeEventHeader"]
    assert header["entityName"] == "Lead" and header["recordIds"] == [lead_id]
    assert header["changedFields"] == ["LastModifiedDate", "Status"]
    assert header["commitUser"] == sf_sandbox.user_id
    assert header["changeOrigin"] == "com/salesforce/api/rest/62.0"
    assert {"transactionKey", "sequenceNumber", "commitTimestamp", "commitNumber"} <= set(header)
    assert update["Status"] == "Working - Contacted"
    created = headers["CREATE"]["payload"]
    assert created["Name"] == {"FirstName": None, "LastName": "Cdc"}
    assert "IsDeleted" not in created and "SystemModstamp" not in created


def test_workflow_outbound_message_metadata_configures_a_message(sf_api, sf_sandbox, sf_receiver):
    md = "http://soap.sforce.com/2006/04/metadata"
    envelope = (
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap-env:Header><ns0:SessionHeader xmlns:ns0="{md}"><ns0:sessionId>'
        f"{sf_sandbox.access_token}</ns0:sessionId></ns0:SessionHeader></soap-env:Header>"
        f'<soap-env:Body><ns0:createMetadata xmlns:ns0="{md}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<ns0:metadata xsi:type="ns0:WorkflowOutboundMessage">'
        "<ns0:fullName>Contact.Fieldwise_Contacts</ns0:fullName><ns0:apiVersion>62.0</ns0:apiVersion>"
        f"<ns0:endpointUrl>{sf_receiver.url}</ns0:endpointUrl><ns0:fields>Email</ns0:fields>"
        "<ns0:includeSessionId>false</ns0:includeSessionId>"
        "<ns0:integrationUser>integration@fieldwise-sandbox.example</ns0:integrationUser>"
        "<ns0:name>Fieldwise Contacts</ns0:name><ns0:protected>false</ns0:protected>"
        "</ns0:metadata></ns0:createMetadata></soap-env:Body></soap-env:Envelope>"
    )
    response = sf_api.http.post(
        sf_api.url("/services/Soap/m/62.0"),
        data=envelope.encode(),
        headers={"Content-Type": "text/xml", "SOAPAction": '""'},
    )
    assert b"<success>true</success>" in response.content
    try:
        sf_api.create("Contact", LastName="Wf", Email="wf@example.com")
        body = sf_receiver.wait_for(1)[0].body
    finally:
        unconfigure(sf_api, "Fieldwise_Contacts")
    assert b'xsi:type="sf:Contact"' in body and b"<sf:Email>wf@example.com</sf:Email>" in body
