"""Contract: CRM v3 objects (basic, batch, merge) and associations answer in HubSpot's shapes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_create_contact_answers_201_with_hubspot_record_shape(api):
    response = api.post(
        "/crm/v3/objects/contacts",
        {
            "properties": {
                "email": "shape@example.com",
                "firstname": "Sha",
                "lifecyclestage": "lead",
            }
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert body["id"].isdigit() and body["archived"] is False
    assert ISO_MS.match(body["createdAt"]) and ISO_MS.match(body["updatedAt"])
    props = body["properties"]
    assert props["email"] == "shape@example.com" and props["lifecyclestage"] == "lead"
    assert props["hs_object_id"] == body["id"]
    assert ISO_MS.match(props["createdate"]) and ISO_MS.match(props["lastmodifieddate"])


def test_get_by_id_returns_default_properties_when_none_requested(api):
    created = api.create_contact(email="defaults@example.com", firstname="Def", jobtitle="CTO")
    body = api.get(f"/crm/v3/objects/contacts/{created['id']}").json()
    assert set(body["properties"]) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert body["properties"]["lastname"] is None


def test_get_by_id_with_requested_properties_adds_always_returned_ones(api):
    created = api.create_contact(email="req@example.com", jobtitle="CTO")
    body = api.get(
        f"/crm/v3/objects/contacts/{created['id']}", params={"properties": "jobtitle,phone,unknown"}
    ).json()
    assert body["properties"] == {
        "jobtitle": "CTO",
        "phone": None,
        "createdate": body["properties"]["createdate"],
        "hs_object_id": created["id"],
        "lastmodifieddate": body["properties"]["lastmodifieddate"],
    }


def test_get_by_unique_id_property_email(api):
    created = api.create_contact(email="ByEmail@Example.com")
    response = api.get(
        "/crm/v3/objects/contacts/byemail@example.com", params={"idProperty": "email"}
    )
    assert response.status_code == 200
    assert response.json()["id"] == created["id"]


def test_get_unknown_id_answers_404_object_not_found(api):
    response = api.get("/crm/v3/objects/contacts/987654321")
    assert response.status_code == 404
    body = response.json()
    assert body["status"] == "error" and body["category"] == "OBJECT_NOT_FOUND"
    assert body["correlationId"]


def test_unknown_object_type_answers_400(api):
    response = api.get("/crm/v3/objects/spaceships")
    assert response.status_code == 400
    assert response.json()["message"] == "Unable to infer object type from: spaceships"


def test_update_records_property_history_with_integration_source(api, hubspot_sandbox):
    created = api.create_contact(email="hist@example.com", lifecyclestage="lead")
    response = api.patch(
        f"/crm/v3/objects/contacts/{created['id']}",
        {"properties": {"lifecyclestage": "marketingqualifiedlead"}},
    )
    assert response.status_code == 200
    assert response.json()["properties"]["lifecyclestage"] == "marketingqualifiedlead"
    body = api.get(
        f"/crm/v3/objects/contacts/{created['id']}",
        params={"propertiesWithHistory": "lifecyclestage"},
    ).json()
    history = body["propertiesWithHistory"]["lifecyclestage"]
    assert [h["value"] for h in history] == ["marketingqualifiedlead", "lead"]
    assert all(h["sourceType"] == "INTEGRATION" for h in history)
    assert all(h["sourceId"] == str(hubspot_sandbox.app_id) for h in history)
    assert all(ISO_MS.match(h["timestamp"]) for h in history)


def test_writing_unknown_property_answers_validation_error_with_detail(api, hubspot_sandbox):
    created = api.create_contact(email="unknown-prop@example.com")
    response = api.patch(
        f"/crm/v3/objects/contacts/{created['id']}", {"properties": {"ai_scoree": "12"}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    detail = __import__("json").loads(body["message"].split(": ", 1)[1])
    assert detail == [
        {
            "isValid": False,
            "message": 'Property "ai_scoree" does not exist',
            "error": "PROPERTY_DOESNT_EXIST",
            "name": "ai_scoree",
            "localizedErrorMessage": 'Property "ai_scoree" does not exist',
            "portalId": hubspot_sandbox.portal_id,
        }
    ]


def test_writing_value_outside_enumeration_options_is_rejected(api):
    response = api.post("/crm/v3/objects/contacts", {"properties": {"lifecyclestage": "hot"}})
    assert response.status_code == 400
    assert '"error":"INVALID_OPTION"' in response.json()["message"]


def test_writing_read_only_property_is_rejected(api):
    response = api.post("/crm/v3/objects/contacts", {"properties": {"hs_object_id": "5"}})
    assert response.status_code == 400
    assert "READ_ONLY_VALUE" in response.json()["message"]


def test_invalid_json_body_answers_400_not_500(api, hubspot_sandbox):
    response = api.session.post(
        hubspot_sandbox.base_url + "/crm/v3/objects/contacts",
        data="{not json",
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_duplicate_email_on_create_answers_409_conflict(api):
    first = api.create_contact(email="dupe@example.com")
    response = api.post("/crm/v3/objects/contacts", {"properties": {"email": "DUPE@example.com"}})
    assert response.status_code == 409
    assert response.json()["message"] == f"Contact already exists. Existing ID: {first['id']}"


def test_archive_answers_204_and_record_is_then_listed_as_archived(api):
    created = api.create_contact(email="gone@example.com")
    assert api.delete(f"/crm/v3/objects/contacts/{created['id']}").status_code == 204
    assert api.get(f"/crm/v3/objects/contacts/{created['id']}").status_code == 404
    archived = api.get(f"/crm/v3/objects/contacts/{created['id']}", params={"archived": "true"})
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert ISO_MS.match(archived.json()["archivedAt"])


def test_list_pages_with_after_cursor_and_next_link(api):
    for i in range(7):
        api.post("/crm/v3/objects/companies", {"properties": {"name": f"Paging Co {i}"}})
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        body = api.get("/crm/v3/objects/companies", params=params).json()
        seen += [r["id"] for r in body["results"]]
        pages += 1
        if "paging" not in body:
            break
        after = body["paging"]["next"]["after"]
        assert body["paging"]["next"]["link"].endswith(f"after={after}")
    assert len(seen) == len(set(seen)) >= 7 and pages >= 3


def test_list_limit_above_100_is_capped(api):
    body = api.get("/crm/v3/objects/contacts", params={"limit": 500}).json()
    assert len(body["results"]) <= 100


def test_batch_read_with_missing_id_answers_207_with_errors_and_num_errors(api):
    created = api.create_contact(email="batchread@example.com")
    response = api.post(
        "/crm/v3/objects/contacts/batch/read",
        {
            "properties": ["email"],
            "propertiesWithHistory": [],
            "inputs": [{"id": created["id"]}, {"id": "4040404"}],
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE" and body["numErrors"] == 1
    assert [r["id"] for r in body["results"]] == [created["id"]]
    error = body["errors"][0]
    assert error["status"] == "error" and error["category"] == "OBJECT_NOT_FOUND"
    assert error["context"] == {"ids": ["4040404"]}
    assert ISO_MS.match(body["startedAt"]) and ISO_MS.match(body["completedAt"])


def test_batch_with_more_than_100_inputs_answers_400_validation_error(api):
    inputs = [{"properties": {"firstname": f"n{i}"}} for i in range(101)]
    response = api.post("/crm/v3/objects/contacts/batch/create", {"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR" and "100" in body["message"]


def test_batch_read_with_history_caps_inputs_at_50(api):
    inputs = [{"id": str(i)} for i in range(51)]
    response = api.post(
        "/crm/v3/objects/contacts/batch/read",
        {"inputs": inputs, "properties": [], "propertiesWithHistory": ["email"]},
    )
    assert response.status_code == 400
    assert "property histories is 50" in response.json()["message"]


def test_batch_create_answers_201_and_update_reports_partial_failures_as_207(api):
    created = api.post(
        "/crm/v3/objects/deals/batch/create",
        {
            "inputs": [
                {"properties": {"dealname": "B1", "dealstage": "qualifiedtobuy"}},
                {"properties": {"dealname": "B2", "amount": "10"}},
            ]
        },
    )
    assert created.status_code == 201
    ids = [r["id"] for r in created.json()["results"]]
    response = api.post(
        "/crm/v3/objects/deals/batch/update",
        {
            "inputs": [
                {"id": ids[0], "properties": {"dealstage": "closedwon"}},
                {"id": "999999999", "properties": {"amount": "5"}},
            ]
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert body["numErrors"] == 1 and body["errors"][0]["context"] == {"ids": ["999999999"]}
    deal = api.get(
        f"/crm/v3/objects/deals/{ids[0]}", params={"properties": "hs_is_closed_won"}
    ).json()
    assert deal["properties"]["hs_is_closed_won"] == "true"


def test_batch_update_with_invalid_value_rejects_whole_batch(api):
    first = api.create_contact(email="whole@example.com", firstname="Keep")
    response = api.post(
        "/crm/v3/objects/contacts/batch/update",
        {
            "inputs": [
                {"id": first["id"], "properties": {"firstname": "Changed"}},
                {"id": first["id"], "properties": {"hs_lead_status": "NOPE"}},
            ]
        },
    )
    assert response.status_code == 400
    kept = api.get(f"/crm/v3/objects/contacts/{first['id']}").json()
    assert kept["properties"]["firstname"] == "Keep"


def test_batch_upsert_by_email_updates_existing_and_creates_new(api):
    existing = api.create_contact(email="upsert-old@example.com", firstname="Old")
    response = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        {
            "inputs": [
                {
                    "id": "upsert-old@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Updated"},
                },
                {
                    "id": "upsert-new@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "New"},
                },
            ]
        },
    )
    assert response.status_code == 200
    results = {r["properties"]["email"]: r for r in response.json()["results"]}
    assert results["upsert-old@example.com"]["id"] == existing["id"]
    assert results["upsert-old@example.com"]["new"] is False
    assert results["upsert-new@example.com"]["new"] is True
    assert results["upsert-old@example.com"]["properties"]["firstname"] == "Updated"


def test_batch_upsert_with_non_unique_id_property_is_rejected(api):
    response = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        {"inputs": [{"id": "x", "idProperty": "firstname", "properties": {}}]},
    )
    assert response.status_code == 400


def test_batch_archive_answers_204(api):
    created = api.create_contact(email="barchive@example.com")
    response = api.post(
        "/crm/v3/objects/contacts/batch/archive", {"inputs": [{"id": created["id"]}]}
    )
    assert response.status_code == 204
    assert api.get(f"/crm/v3/objects/contacts/{created['id']}").status_code == 404


def test_create_with_associations_and_read_them_back_v3_and_v4(api, hubspot_sandbox):
    company = api.post("/crm/v3/objects/companies", {"properties": {"name": "Assoc Inc"}}).json()
    contact = api.post(
        "/crm/v3/objects/contacts",
        {
            "properties": {"email": "assoc@example.com"},
            "associations": [
                {
                    "to": {"id": company["id"]},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
                }
            ],
        },
    ).json()
    body = api.get(
        f"/crm/v3/objects/contacts/{contact['id']}", params={"associations": "companies"}
    ).json()
    assert body["associations"] == {
        "companies": {"results": [{"id": company["id"], "type": "contact_to_company_unlabeled"}]}
    }
    v4 = api.get(f"/crm/v4/objects/companies/{company['id']}/associations/contacts").json()
    assert v4["results"] == [
        {
            "toObjectId": int(contact["id"]),
            "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 280, "label": None}],
        }
    ]


def test_v4_put_association_with_label_returns_labels_between_pair(api):
    deal = api.post("/crm/v3/objects/deals", {"properties": {"dealname": "Labelled"}}).json()
    company = api.post("/crm/v3/objects/companies", {"properties": {"name": "Label Co"}}).json()
    response = api.put(
        f"/crm/v4/objects/deals/{deal['id']}/associations/companies/{company['id']}",
        [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
    )
    assert response.status_code == 201
    assert response.json() == {
        "fromObjectTypeId": "0-3",
        "fromObjectId": int(deal["id"]),
        "toObjectTypeId": "0-2",
        "toObjectId": int(company["id"]),
        "labels": ["Primary"],
    }
    assert (
        api.delete(
            f"/crm/v4/objects/deals/{deal['id']}/associations/companies/{company['id']}"
        ).status_code
        == 204
    )
    assert (
        api.get(f"/crm/v4/objects/deals/{deal['id']}/associations/companies").json()["results"]
        == []
    )


def test_v4_association_with_wrong_type_id_answers_400(api):
    deal = api.post("/crm/v3/objects/deals", {"properties": {"dealname": "Wrong"}}).json()
    company = api.post("/crm/v3/objects/companies", {"properties": {"name": "Wrong Co"}}).json()
    response = api.put(
        f"/crm/v4/objects/deals/{deal['id']}/associations/companies/{company['id']}",
        [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
    )
    assert response.status_code == 400


def test_v4_batch_read_reports_records_without_associations_as_errors(api):
    note = api.post(
        "/crm/v3/objects/notes",
        {"properties": {"hs_note_body": "hi", "hs_timestamp": "1700000000000"}},
    ).json()
    contact = api.create_contact(email="noted@example.com")
    created = api.post(
        "/crm/v4/associations/notes/contacts/batch/create",
        {
            "inputs": [
                {
                    "from": {"id": note["id"]},
                    "to": {"id": contact["id"]},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
                }
            ]
        },
    )
    assert created.status_code == 201
    response = api.post(
        "/crm/v4/associations/contacts/notes/batch/read",
        {"inputs": [{"id": contact["id"]}, {"id": "123456789"}]},
    )
    assert response.status_code == 207
    body = response.json()
    assert body["results"][0]["to"][0]["toObjectId"] == int(note["id"])
    assert body["results"][0]["to"][0]["associationTypes"][0]["typeId"] == 201
    assert body["errors"][0]["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"


def test_v3_association_batch_create_and_read_use_type_names(api):
    deal = api.post("/crm/v3/objects/deals", {"properties": {"dealname": "V3"}}).json()
    contact = api.create_contact(email="v3assoc@example.com")
    response = api.post(
        "/crm/v3/associations/deals/contacts/batch/create",
        {
            "inputs": [
                {"from": {"id": deal["id"]}, "to": {"id": contact["id"]}, "type": "deal_to_contact"}
            ]
        },
    )
    assert response.status_code == 201
    read = api.post(
        "/crm/v3/associations/contacts/deals/batch/read", {"inputs": [{"id": contact["id"]}]}
    )
    assert read.json()["results"] == [
        {"from": {"id": contact["id"]}, "to": [{"id": deal["id"], "type": "contact_to_deal"}]}
    ]


def test_merge_contacts_keeps_primary_and_archives_merged(api):
    primary = api.create_contact(email="primary@example.com")
    other = api.create_contact(email="other@example.com", jobtitle="VP")
    response = api.post(
        "/crm/v3/objects/contacts/merge",
        {"primaryObjectId": primary["id"], "objectIdToMerge": other["id"]},
    )
    assert response.status_code == 200
    assert response.json()["id"] == primary["id"]
    merged = api.get(
        f"/crm/v3/objects/contacts/{primary['id']}", params={"properties": "email,jobtitle"}
    ).json()
    assert merged["properties"]["email"] == "primary@example.com"
    assert merged["properties"]["jobtitle"] == "VP"
    assert api.get(f"/crm/v3/objects/contacts/{other['id']}").status_code == 404


def test_owners_list_and_get_by_user_id(api, hubspot_sandbox):
    hubspot_sandbox.add_owners(
        [
            {
                "id": "555",
                "email": "o@seller.example",
                "firstName": "O",
                "lastName": "W",
                "userId": 77,
                "userIdIncludingInactive": 77,
                "type": "PERSON",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "updatedAt": "2024-01-01T00:00:00.000Z",
                "archived": False,
                "teams": [],
            }
        ]
    )
    listed = api.get("/crm/v3/owners/", params={"email": "o@seller.example"}).json()
    assert [o["id"] for o in listed["results"]] == ["555"]
    assert api.get("/crm/v3/owners/77", params={"idProperty": "userId"}).json()["id"] == "555"
    assert api.get("/crm/v3/owners/999").status_code == 404
