"""End to end: the unmodified simple-salesforce library drives the sandbox over real HTTPS."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]


def test_sobject_crud_through_simple_salesforce(sf):
    created = sf.Lead.create({"FirstName": "Eve", "LastName": "Ender", "Company": "E2E Inc"})
    assert created["success"] is True
    lead_id = created["id"]
    assert sf.Lead.get(lead_id)["Name"] == "Eve Ender"
    assert sf.Lead.update(lead_id, {"Status": "Working - Contacted"}) == 204
    assert sf.Lead.get(lead_id)["Status"] == "Working - Contacted"
    assert sf.Lead.delete(lead_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.get(lead_id)
    with pytest.raises(SalesforceMalformedRequest):
        sf.Lead.create({"LastName": "X", "Company": "Y", "NotAField__c": 1})
    leads = sf.Lead
    leads.describe()
    assert leads.api_usage["api-usage"].total == 100000
    sf.query("SELECT Id FROM Lead LIMIT 1")
    assert 0 < sf.api_usage["api-usage"].used < 100000


def test_query_and_query_all_follow_next_records_url(sf):
    response = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": f"Page{n:03d}"} for n in range(200)
            ],
        },
    )
    assert all(r["success"] for r in response)
    for _ in range(10):
        sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "records": [
                    {"attributes": {"type": "Contact"}, "LastName": "Filler"} for _ in range(200)
                ]
            },
        )
    total = sf.query("SELECT COUNT() FROM Contact")["totalSize"]
    assert total >= 2200
    first = sf.query("SELECT Id, LastName FROM Contact")
    assert first["done"] is False and len(first["records"]) == 2000
    everything = sf.query_all("SELECT Id, LastName FROM Contact")
    assert everything["totalSize"] == total and len(everything["records"]) == total
    doomed = response[0]["id"]
    sf.Contact.delete(doomed)
    with_deleted = sf.query_all(
        f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{doomed}'", include_deleted=True
    )
    assert with_deleted["records"][0]["IsDeleted"] is True


def test_composite_sobjects_update_and_describe(sf):
    ids = [
        r["id"]
        for r in sf.restful(
            "composite/sobjects",
            method="POST",
            json={
                "records": [
                    {"attributes": {"type": "Account"}, "Name": f"Acct {n}"} for n in range(3)
                ]
            },
        )
    ]
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Id": i, "Industry": "Retail"} for i in ids
            ],
        },
    )
    assert [r["success"] for r in results] == [True, True, True]
    assert sf.Account.get(ids[0])["Industry"] == "Retail"
    described = sf.describe()
    assert any(o["name"] == "Opportunity" for o in described["sobjects"])
    assert sf.Account.metadata()["objectDescribe"]["keyPrefix"] == "001"


def test_mdapi_custom_fields_become_writable(sf, sf_sandbox, monkeypatch):
    # zeep, which sf.mdapi uses, makes its own requests session; point it at the sandbox's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sf_sandbox.ca_cert))
    mdapi = sf.mdapi
    mdapi.CustomField.create(
        [
            mdapi.CustomField(
                fullName="Lead.AI_Score__c",
                label="AI Score",
                type=mdapi.FieldType("Number"),
                precision=5,
                scale=2,
            ),
            mdapi.CustomField(
                fullName="Lead.AI_Grade__c",
                label="AI Grade",
                type=mdapi.FieldType("Picklist"),
                valueSet=mdapi.ValueSet(
                    restricted=True,
                    valueSetDefinition=(
                        mdapi.ValueSetValuesDefinition(
                            sorted=False,
                            value=[
                                mdapi.CustomValue(fullName=g, label=g, default=False)
                                for g in "ABCD"
                            ],
                        )
                    ),
                ),
            ),
            mdapi.CustomField(
                fullName="Lead.AI_Explanation__c",
                label="AI Explanation",
                type=mdapi.FieldType("LongTextArea"),
                length=32768,
                visibleLines=5,
            ),
        ]
    )
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert fields["AI_Score__c"]["type"] == "double"
    assert [p["value"] for p in fields["AI_Grade__c"]["picklistValues"]] == list("ABCD")
    assert fields["AI_Explanation__c"]["length"] == 32768
    read = mdapi.CustomField.read(["Lead.AI_Score__c"])
    assert read.fullName == "Lead.AI_Score__c" and read.type == "Number" and read.precision == 5
    with pytest.raises(Exception, match="DUPLICATE_DEVELOPER_NAME"):
        mdapi.CustomField.create(
            [
                mdapi.CustomField(
                    fullName="Lead.AI_Score__c",
                    label="AI Score",
                    type=mdapi.FieldType("Number"),
                    precision=5,
                    scale=2,
                )
            ]
        )
    lead_id = sf.Lead.create({"LastName": "Scored", "Company": "C"})["id"]
    sf.Lead.update(
        lead_id,
        {"AI_Score__c": 91.25, "AI_Grade__c": "A"},
        headers={"Sforce-Call-Options": "client=Fieldwise"},
    )
    row = sf.query(
        f"SELECT AI_Score__c, AI_Grade__c, LastModifiedById FROM Lead WHERE Id = '{lead_id}'"
    )["records"][0]
    assert (row["AI_Score__c"], row["AI_Grade__c"]) == (91.25, "A")
    assert row["LastModifiedById"] == sf_sandbox.user_id
    mdapi.CustomField.delete(["Lead.AI_Explanation__c"])
    with pytest.raises(SalesforceMalformedRequest):
        sf.Lead.update(lead_id, {"AI_Explanation__c": "gone"})


def test_deleted_updated_and_limits_through_the_library(sf):
    start = datetime.now(UTC) - timedelta(minutes=2)
    lead_id = sf.Lead.create({"LastName": "Repl", "Company": "C"})["id"]
    sf.Lead.delete(lead_id)
    end = datetime.now(UTC) + timedelta(minutes=1)
    assert lead_id in [d["id"] for d in sf.Lead.deleted(start, end)["deletedRecords"]]
    assert "ids" in sf.Lead.updated(start, end)
    assert sf.limits()["DailyApiRequests"]["Max"] == 100000


def test_expired_and_over_quota_sessions_raise_library_errors(sf_sandbox, sf_api):
    from salesforce_fixtures import client_for

    client = client_for(sf_sandbox)
    sf_api.admin("expire-tokens")
    with pytest.raises(SalesforceExpiredSession):
        client.query("SELECT Id FROM Lead LIMIT 1")
    fresh: Salesforce = client_for(sf_sandbox)
    sf_api.admin("api-limit", {"used": 100000})
    try:
        with pytest.raises(SalesforceRefusedRequest):
            fresh.query("SELECT Id FROM Lead LIMIT 1")
    finally:
        sf_api.admin("api-limit", {"reset": True})
