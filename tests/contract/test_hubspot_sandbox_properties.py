"""Contract: the Properties API (/crm/v3/properties/{objectType}) and property groups."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]

OPTIONS = [
    {"label": "A", "value": "A", "displayOrder": 0},
    {"label": "B", "value": "B", "displayOrder": 1},
]


def prop_body(name, ptype, field_type, **extra):
    return {
        "name": name,
        "label": name.title(),
        "type": ptype,
        "fieldType": field_type,
        "groupName": "contactinformation",
        **extra,
    }


@pytest.mark.parametrize(
    ("ptype", "field_type", "extra"),
    [
        ("string", "text", {}),
        ("string", "textarea", {}),
        ("string", "html", {}),
        ("number", "number", {}),
        ("enumeration", "select", {"options": OPTIONS}),
        ("enumeration", "radio", {"options": OPTIONS}),
        ("enumeration", "checkbox", {"options": OPTIONS}),
        ("enumeration", "booleancheckbox", {}),
        ("bool", "booleancheckbox", {}),
        ("datetime", "date", {}),
    ],
)
def test_allowed_type_and_field_type_pairs_create_a_property(api, ptype, field_type, extra):
    name = f"fw_{ptype}_{field_type}"
    response = api.post("/crm/v3/properties/contacts", prop_body(name, ptype, field_type, **extra))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == name and body["type"] == ptype and body["fieldType"] == field_type
    assert body["hubspotDefined"] is False and body["archived"] is False
    assert body["groupName"] == "contactinformation"


@pytest.mark.parametrize(
    ("ptype", "field_type"),
    [
        ("number", "select"),
        ("string", "number"),
        ("bool", "text"),
        ("datetime", "text"),
        ("enumeration", "text"),
        ("float", "number"),
    ],
)
def test_invalid_type_and_field_type_pairs_answer_400(api, ptype, field_type):
    response = api.post(
        "/crm/v3/properties/contacts",
        prop_body(f"bad_{ptype}_{field_type}", ptype, field_type, options=OPTIONS),
    )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_enumeration_select_without_options_answers_400(api):
    assert (
        api.post(
            "/crm/v3/properties/contacts", prop_body("no_opts", "enumeration", "select")
        ).status_code
        == 400
    )


def test_duplicate_property_name_answers_409(api):
    body = prop_body("fw_dupe", "string", "text")
    assert api.post("/crm/v3/properties/contacts", body).status_code == 201
    assert api.post("/crm/v3/properties/contacts", body).status_code == 409


def test_created_property_becomes_writable_and_validated(api):
    api.post(
        "/crm/v3/properties/contacts",
        prop_body("fw_grade", "enumeration", "select", options=OPTIONS),
    )
    ok = api.post("/crm/v3/objects/contacts", {"properties": {"fw_grade": "A"}})
    assert ok.status_code == 201
    bad = api.post("/crm/v3/objects/contacts", {"properties": {"fw_grade": "Z"}})
    assert bad.status_code == 400 and "INVALID_OPTION" in bad.json()["message"]


def test_number_property_rejects_non_numbers(api):
    api.post("/crm/v3/properties/contacts", prop_body("fw_number_check", "number", "number"))
    response = api.post("/crm/v3/objects/contacts", {"properties": {"fw_number_check": "high"}})
    assert response.status_code == 400 and "INVALID_DECIMAL" in response.json()["message"]


def test_list_and_get_include_hubspot_defined_properties(api):
    names = {p["name"] for p in api.get("/crm/v3/properties/deals").json()["results"]}
    assert {"dealstage", "pipeline", "amount", "closedate", "hs_is_closed_won"} <= names
    stage = api.get("/crm/v3/properties/deals/dealstage").json()
    assert stage["hubspotDefined"] is True and "closedwon" in [o["value"] for o in stage["options"]]
    assert api.get("/crm/v3/properties/deals/nope").status_code == 404


def test_update_changes_label_and_options(api):
    api.post(
        "/crm/v3/properties/contacts", prop_body("fw_upd", "enumeration", "select", options=OPTIONS)
    )
    response = api.patch(
        "/crm/v3/properties/contacts/fw_upd",
        {"label": "Renamed", "options": [*OPTIONS, {"label": "C", "value": "C"}]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "Renamed" and [o["value"] for o in body["options"]] == ["A", "B", "C"]


def test_archive_custom_property_then_writes_are_rejected(api):
    api.post("/crm/v3/properties/contacts", prop_body("fw_temp", "string", "text"))
    assert api.delete("/crm/v3/properties/contacts/fw_temp").status_code == 204
    assert api.get("/crm/v3/properties/contacts/fw_temp").status_code == 404
    archived = api.get("/crm/v3/properties/contacts", params={"archived": "true"}).json()["results"]
    assert "fw_temp" in {p["name"] for p in archived}
    assert api.post("/crm/v3/objects/contacts", {"properties": {"fw_temp": "x"}}).status_code == 400


def test_hubspot_defined_property_cannot_be_archived(api):
    assert api.delete("/crm/v3/properties/contacts/email").status_code == 400


def test_groups_create_list_and_unknown_group_for_property(api):
    response = api.post(
        "/crm/v3/properties/deals/groups",
        {"name": "fieldwise", "label": "Fieldwise AI", "displayOrder": 5},
    )
    assert response.status_code == 201
    assert response.json() == {
        "name": "fieldwise",
        "label": "Fieldwise AI",
        "displayOrder": 5,
        "archived": False,
    }
    names = {g["name"] for g in api.get("/crm/v3/properties/deals/groups").json()["results"]}
    assert {"fieldwise", "dealinformation"} <= names
    assert (
        api.post(
            "/crm/v3/properties/deals/groups", {"name": "fieldwise", "label": "Again"}
        ).status_code
        == 409
    )
    orphan = {**prop_body("fw_orphan", "string", "text"), "groupName": "no_such_group"}
    assert api.post("/crm/v3/properties/deals", orphan).status_code == 400


def test_batch_create_reports_existing_properties_as_errors(api):
    api.post(
        "/crm/v3/properties/companies",
        {**prop_body("fw_exists", "string", "text"), "groupName": "companyinformation"},
    )
    response = api.post(
        "/crm/v3/properties/companies/batch/create",
        {
            "inputs": [
                {**prop_body("fw_exists", "string", "text"), "groupName": "companyinformation"},
                {**prop_body("fw_fresh", "string", "text"), "groupName": "companyinformation"},
            ]
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert [p["name"] for p in body["results"]] == ["fw_fresh"] and body["numErrors"] == 1


def test_unique_property_can_be_used_as_id_property(api):
    api.post(
        "/crm/v3/properties/contacts",
        prop_body("fw_external_id", "string", "text", hasUniqueValue=True),
    )
    response = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        {
            "inputs": [
                {"id": "ext-1", "idProperty": "fw_external_id", "properties": {"firstname": "X"}}
            ]
        },
    )
    assert response.status_code == 200 and response.json()["results"][0]["new"] is True
