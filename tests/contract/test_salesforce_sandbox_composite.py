"""Contract: sObject Collections and composite requests, limits, references and allOrNone."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using"
    " AllOrNone header",
    "fields": [],
}


def lead(**values):
    return {"attributes": {"type": "Lead"}, **values}


def count(sf_api, company):
    body = sf_api.get(
        "query", params={"q": f"SELECT COUNT() FROM Lead WHERE Company = '{company}'"}
    )
    return body.json()["totalSize"]


def test_collections_create_returns_per_item_results_in_order(sf_api):
    response = sf_api.post(
        "composite/sobjects",
        {
            "allOrNone": False,
            "records": [
                lead(LastName="A", Company="Coll"),
                lead(Company="Coll"),
                lead(LastName="C", Company="Coll"),
            ],
        },
    )
    assert response.status_code == 200
    results = response.json()
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1] == {
        "id": None,
        "success": False,
        "errors": [
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [LastName]",
                "fields": ["LastName"],
            }
        ],
    }
    assert count(sf_api, "Coll") == 2


def test_collections_all_or_none_rolls_back_everything(sf_api):
    response = sf_api.post(
        "composite/sobjects",
        {
            "allOrNone": True,
            "records": [
                lead(LastName="A", Company="Atomic"),
                lead(LastName="B", Company="Atomic", Nope__c=1),
            ],
        },
    )
    results = response.json()
    assert results[0] == {"id": None, "success": False, "errors": [ROLLED_BACK]}
    assert results[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert count(sf_api, "Atomic") == 0


def test_collections_update_and_delete(sf_api):
    ids = [
        r["id"]
        for r in sf_api.post(
            "composite/sobjects",
            {"records": [lead(LastName="U1", Company="Upd"), lead(LastName="U2", Company="Upd")]},
        ).json()
    ]
    patched = sf_api.patch(
        "composite/sobjects",
        {
            "records": [
                {"attributes": {"type": "Lead"}, "id": ids[0], "Status": "Working - Contacted"},
                {"attributes": {"type": "Lead"}, "Status": "Working - Contacted"},
            ]
        },
    ).json()
    assert patched[0] == {"id": ids[0], "success": True, "errors": []}
    assert patched[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    deleted = sf_api.delete("composite/sobjects", params={"ids": ",".join(ids)}).json()
    assert deleted == [{"id": i, "success": True, "errors": []} for i in ids]
    assert count(sf_api, "Upd") == 0


def test_collections_over_200_records_is_rejected(sf_api):
    response = sf_api.post(
        "composite/sobjects",
        {"records": [lead(LastName=str(n), Company="Big") for n in range(201)]},
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert count(sf_api, "Big") == 0


def test_collections_retrieve_by_ids(sf_api):
    lead_id = sf_api.create("Lead", LastName="Get", Company="Ret")
    body = sf_api.get("composite/sobjects/Lead", params={"ids": lead_id, "fields": "Id,Company"})
    assert body.json() == [
        {
            "attributes": {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{lead_id}"},
            "Id": lead_id,
            "Company": "Ret",
        }
    ]


def test_composite_resolves_references_and_answers_composite_response(sf_api):
    body = {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Account",
                "referenceId": "refAcc",
                "body": {"Name": "Composite Co"},
            },
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Contact",
                "referenceId": "refCon",
                "body": {"LastName": "Ref", "AccountId": "@{refAcc.id}"},
            },
            {
                "method": "GET",
                "url": "/services/data/v62.0/sobjects/Account/@{refAcc.id}?fields=Name",
                "referenceId": "refGet",
            },
        ],
    }
    response = sf_api.post("composite", body)
    assert response.status_code == 200
    results = response.json()["compositeResponse"]
    assert [r["referenceId"] for r in results] == ["refAcc", "refCon", "refGet"]
    assert [r["httpStatusCode"] for r in results] == [201, 201, 200]
    account_id = results[0]["body"]["id"]
    assert results[0]["httpHeaders"]["Location"].endswith(f"/sobjects/Account/{account_id}")
    contact = sf_api.get(f"sobjects/Contact/{results[1]['body']['id']}").json()
    assert contact["AccountId"] == account_id
    assert results[2]["body"]["Name"] == "Composite Co"


def test_composite_all_or_none_failure_rolls_back_and_halts(sf_api):
    response = sf_api.post(
        "composite",
        {
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v62.0/sobjects/Lead",
                    "referenceId": "ok",
                    "body": {"LastName": "A", "Company": "Halt"},
                },
                {
                    "method": "POST",
                    "url": "/services/data/v62.0/sobjects/Lead",
                    "referenceId": "bad",
                    "body": {"Company": "Halt"},
                },
                {
                    "method": "POST",
                    "url": "/services/data/v62.0/sobjects/Lead",
                    "referenceId": "after",
                    "body": {"LastName": "C", "Company": "Halt"},
                },
            ],
        },
    )
    results = response.json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in results] == [400, 400, 400]
    assert results[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert results[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert results[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert count(sf_api, "Halt") == 0


def test_composite_without_all_or_none_keeps_successes(sf_api):
    response = sf_api.post(
        "composite",
        {
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v62.0/sobjects/Lead",
                    "referenceId": "bad",
                    "body": {"Company": "Partial"},
                },
                {
                    "method": "POST",
                    "url": "/services/data/v62.0/sobjects/Lead",
                    "referenceId": "good",
                    "body": {"LastName": "B", "Company": "Partial"},
                },
                {
                    "method": "GET",
                    "url": "/services/data/v62.0/sobjects/Lead/@{bad.id}",
                    "referenceId": "dependent",
                },
            ]
        },
    )
    codes = [r["httpStatusCode"] for r in response.json()["compositeResponse"]]
    assert codes == [400, 201, 400]
    assert response.json()["compositeResponse"][2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert count(sf_api, "Partial") == 1


def test_composite_over_25_subrequests_is_rejected(sf_api):
    subs = [
        {"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": f"r{n}"}
        for n in range(26)
    ]
    response = sf_api.post("composite", {"compositeRequest": subs})
    assert response.status_code == 400
    assert "25" in response.json()[0]["message"]


def test_composite_counts_as_one_api_call(sf_api, sf_sandbox):
    before = sf_sandbox.api_used
    sf_api.post(
        "composite",
        {
            "compositeRequest": [
                {"method": "GET", "url": "/services/data/v62.0/limits", "referenceId": f"r{n}"}
                for n in range(5)
            ]
        },
    )
    assert sf_sandbox.api_used == before + 1
