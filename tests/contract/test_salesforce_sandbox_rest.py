"""Contract: sObject REST resources answer in Salesforce's documented shapes and error codes."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

from sandbox.salesforce.ids import case_safe_suffix, to18  # noqa: E402

SF_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


def test_case_safe_suffix_matches_the_documented_example():
    assert to18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert case_safe_suffix("00Q000000000000") == "EAA"  # the Q is upper case
    assert to18("001A0000006Vm9rXXX") is None


def test_versions_list_without_auth(sf_api):
    response = sf_api.http.get(sf_api.url("/services/data/"))
    assert response.status_code == 200
    versions = response.json()
    assert {"label", "url", "version"} <= set(versions[-1])
    assert any(v["version"] == "59.0" for v in versions)


def test_unknown_token_answers_401_invalid_session_id(sf_api):
    response = sf_api.get("sobjects/", token="00Dbogus!nope")
    assert response.status_code == 401
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_describe_global_lists_standard_objects_with_key_prefixes(sf_api):
    body = sf_api.get("sobjects/").json()
    prefixes = {o["name"]: o["keyPrefix"] for o in body["sobjects"]}
    assert body["maxBatchSize"] == 200
    assert prefixes["Lead"] == "00Q" and prefixes["Contact"] == "003"
    assert prefixes["Account"] == "001" and prefixes["Opportunity"] == "006"
    assert prefixes["Task"] == "00T" and prefixes["Event"] == "00U"
    assert prefixes["Note"] == "002" and prefixes["User"] == "005"


def test_describe_lead_reports_field_capabilities(sf_api):
    fields = {f["name"]: f for f in sf_api.get("sobjects/Lead/describe/").json()["fields"]}
    assert fields["Id"]["type"] == "id" and fields["Id"]["createable"] is False
    assert fields["LastName"]["nillable"] is False and fields["LastName"]["createable"] is True
    assert fields["Name"]["updateable"] is False
    assert fields["OwnerId"]["referenceTo"] == ["User"]
    assert fields["OwnerId"]["relationshipName"] == "Owner"
    statuses = [p["value"] for p in fields["Status"]["picklistValues"]]
    assert "Open - Not Contacted" in statuses


def test_create_answers_201_with_id_success_errors(sf_api):
    response = sf_api.post("sobjects/Lead/", {"LastName": "Shape", "Company": "Acme"})
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    assert body["id"].startswith("00Q") and len(body["id"]) == 18 and to18(body["id"]) == body["id"]


def test_get_by_id_returns_attributes_system_fields_and_field_filter(sf_api, sf_sandbox):
    lead_id = sf_api.create("Lead", FirstName="Ann", LastName="Lee", Company="Acme")
    full = sf_api.get(f"sobjects/Lead/{lead_id}").json()
    assert full["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/v62.0/sobjects/Lead/{lead_id}",
    }
    assert full["Name"] == "Ann Lee" and full["Status"] == "Open - Not Contacted"
    assert full["IsDeleted"] is False and full["OwnerId"] == sf_sandbox.user_id
    for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        assert SF_DATETIME.match(full[name])
    assert full["CreatedById"] == full["LastModifiedById"] == sf_sandbox.user_id
    picked = sf_api.get(f"sobjects/Lead/{lead_id[:15]}", params={"fields": "Company,Email"}).json()
    assert set(picked) == {"attributes", "Company", "Email"}


def test_get_with_unknown_field_param_is_invalid_field(sf_api):
    lead_id = sf_api.create("Lead", LastName="F", Company="C")
    response = sf_api.get(f"sobjects/Lead/{lead_id}", params={"fields": "Nope__c"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_FIELD"


def test_create_with_unknown_field_is_invalid_field(sf_api):
    response = sf_api.post("sobjects/Lead/", {"LastName": "X", "Company": "C", "Bogus__c": 1})
    assert response.status_code == 400
    assert response.json() == [
        {
            "message": "No such column 'Bogus__c' on sobject of type Lead",
            "errorCode": "INVALID_FIELD",
            "fields": ["Bogus__c"],
        }
    ]


def test_create_with_read_only_field_is_invalid_field_for_insert_update(sf_api):
    response = sf_api.post("sobjects/Lead/", {"LastName": "X", "Company": "C", "IsConverted": True})
    assert response.status_code == 400
    error = response.json()[0]
    assert error["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert error["fields"] == ["IsConverted"]


def test_create_without_required_fields_is_required_field_missing(sf_api):
    response = sf_api.post("sobjects/Lead/", {"FirstName": "X"})
    assert response.status_code == 400
    assert response.json()[0] == {
        "message": "Required fields are missing: [LastName, Company]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["LastName", "Company"],
    }


def test_wrong_value_type_is_json_parser_error(sf_api):
    response = sf_api.post(
        "sobjects/Lead/", {"LastName": "X", "Company": "C", "NumberOfEmployees": "many"}
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_unknown_sobject_is_not_found(sf_api):
    response = sf_api.get("sobjects/Widget__c/describe")
    assert response.status_code == 404
    assert response.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]


def test_patch_answers_204_and_moves_last_modified(sf_api):
    lead_id = sf_api.create("Lead", LastName="P", Company="C")
    before = sf_api.get(f"sobjects/Lead/{lead_id}").json()
    time.sleep(0.01)
    response = sf_api.patch(f"sobjects/Lead/{lead_id}", {"Status": "Working - Contacted"})
    assert response.status_code == 204 and response.content == b""
    after = sf_api.get(f"sobjects/Lead/{lead_id}").json()
    assert after["Status"] == "Working - Contacted"
    assert after["LastModifiedDate"] >= before["LastModifiedDate"]


def test_delete_answers_204_then_get_is_entity_is_deleted(sf_api):
    lead_id = sf_api.create("Lead", LastName="D", Company="C")
    assert sf_api.delete(f"sobjects/Lead/{lead_id}").status_code == 204
    response = sf_api.get(f"sobjects/Lead/{lead_id}")
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    again = sf_api.patch(f"sobjects/Lead/{lead_id}", {"LastName": "Z"})
    assert again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_id_of_another_object_is_malformed_id(sf_api):
    account_id = sf_api.create("Account", Name="Acme")
    response = sf_api.get(f"sobjects/Lead/{account_id}")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "MALFORMED_ID"


def test_reference_to_wrong_object_is_rejected(sf_api):
    lead_id = sf_api.create("Lead", LastName="R", Company="C")
    response = sf_api.post("sobjects/Contact/", {"LastName": "X", "AccountId": lead_id})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


def test_upsert_by_external_id_creates_201_then_updates_200(sf_api):
    created = sf_api.post(
        "/services/data/v62.0/tooling/sobjects/CustomField/",
        {
            "FullName": "Lead.Fieldwise_Key__c",
            "Metadata": {"label": "Key", "type": "Text", "length": 40, "externalId": True},
        },
    )
    assert created.status_code == 201, created.text
    first = sf_api.patch("sobjects/Lead/Fieldwise_Key__c/K-1", {"LastName": "U", "Company": "C"})
    assert first.status_code == 201
    assert first.json()["created"] is True and first.json()["success"] is True
    second = sf_api.patch("sobjects/Lead/Fieldwise_Key__c/K-1", {"Company": "C2"})
    assert second.status_code == 200
    assert second.json() == {
        "id": first.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    got = sf_api.get("sobjects/Lead/Fieldwise_Key__c/K-1").json()
    assert got["Company"] == "C2"
    not_external = sf_api.patch("sobjects/Lead/Company/Acme", {"LastName": "X"})
    assert not_external.status_code == 404 and not_external.json()[0]["errorCode"] == "NOT_FOUND"


def test_opportunity_changes_write_field_history(sf_api, sf_sandbox):
    opp_id = sf_api.create(
        "Opportunity", Name="Deal", StageName="Prospecting", CloseDate="2026-12-31", Amount=1000
    )
    sf_api.patch(f"sobjects/Opportunity/{opp_id}", {"StageName": "Qualification", "Amount": 2500})
    sf_api.patch(f"sobjects/Opportunity/{opp_id}", {"NextStep": "call"})
    rows = sf_api.get(
        "query",
        params={
            "q": "SELECT Field, OldValue, NewValue, CreatedById FROM"
            f" OpportunityFieldHistory WHERE OpportunityId ="
            f" '{opp_id}' ORDER BY Field"
        },
    ).json()["records"]
    assert [(r["Field"], r["OldValue"], r["NewValue"]) for r in rows] == [
        ("Amount", 1000.0, 2500.0),
        ("created", None, None),
        ("StageName", "Prospecting", "Qualification"),
    ]
    assert {r["CreatedById"] for r in rows} == {sf_sandbox.user_id}


def test_every_response_carries_sforce_limit_info(sf_api):
    response = sf_api.get("limits/")
    assert re.fullmatch(r"api-usage=\d+/100000", response.headers["Sforce-Limit-Info"])
    body = response.json()
    assert body["DailyApiRequests"]["Max"] == 100000
    assert 0 < body["DailyApiRequests"]["Remaining"] < 100000


def test_daily_quota_exhausted_answers_403_request_limit_exceeded(sf_api):
    sf_api.admin("api-limit", {"used": 100000})
    try:
        response = sf_api.get("limits/")
        assert response.status_code == 403
        assert response.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
    finally:
        sf_api.admin("api-limit", {"reset": True})
    assert sf_api.get("limits/").status_code == 200


def test_get_deleted_and_updated_have_documented_shapes(sf_api):
    start = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    lead_id = sf_api.create("Lead", LastName="Rep", Company="C")
    sf_api.delete(f"sobjects/Lead/{lead_id}")
    end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    deleted = sf_api.get("sobjects/Lead/deleted/", params={"start": start, "end": end}).json()
    assert set(deleted) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert lead_id in [d["id"] for d in deleted["deletedRecords"]]
    assert SF_DATETIME.match(deleted["deletedRecords"][0]["deletedDate"])
    other = sf_api.create("Lead", LastName="Upd", Company="C")
    updated = sf_api.get("sobjects/Lead/updated/", params={"start": start, "end": end}).json()
    assert set(updated) == {"ids", "latestDateCovered"}
    assert other in updated["ids"] and lead_id not in updated["ids"]
    backwards = sf_api.get("sobjects/Lead/updated/", params={"start": end, "end": start})
    assert backwards.status_code == 400
    assert backwards.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_call_options_client_reaches_change_origin_and_user(sf_api, sf_receiver, sf_sandbox):
    sf_api.admin("cdc-relay", {"url": sf_receiver.url, "secret": "s3cret", "objects": ["Lead"]})
    try:
        sf_api.post(
            "sobjects/Lead/",
            {"LastName": "Echo", "Company": "C"},
            headers={"Sforce-Call-Options": "client=Fieldwise"},
        )
        event = sf_receiver.wait_for(1)[0]
    finally:
        sf_api.admin("cdc-relay", {"url": None})
    import json

    header = json.loads(event.body)[0]["payload"]["ChangeEventHeader"]
    assert header["changeOrigin"] == "com/salesforce/api/rest/62.0;client=Fieldwise"
    assert header["commitUser"] == sf_sandbox.user_id


def test_429_storm_answers_salesforce_error_with_retry_after(sf_api, sf_clean_faults):
    sf_api.admin("faults", {"storm_429_seconds": 30})
    response = sf_api.get("limits/")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_injected_503_uses_salesforce_error_shape(sf_api, sf_clean_faults):
    sf_api.admin("faults", {"error_rate": 1.0, "error_status": 503})
    response = sf_api.get("limits/")
    assert response.status_code == 503
    assert response.json()[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"


def test_request_counter_names_endpoints_stably(sf_api):
    sf_api.admin("reset-log")
    lead_id = sf_api.create("Lead", LastName="Count", Company="C")
    sf_api.patch(f"sobjects/Lead/{lead_id}", {"Company": "D"})
    sf_api.get("query", params={"q": "SELECT Id FROM Lead LIMIT 1"})
    sf_api.post("composite/sobjects", {"records": []})
    counters = sf_api.http.get(sf_api.url("/__admin/counters")).json()
    for name in (
        "POST sobjects/Lead",
        "PATCH sobjects/Lead",
        "GET query",
        "POST composite/sobjects",
    ):
        assert counters.get(name) == 1, (name, counters)
