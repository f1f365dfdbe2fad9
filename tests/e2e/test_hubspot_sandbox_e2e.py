"""End to end: the unmodified hubspot-api-client drives the sandbox over real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hubspot.crm.associations.v4 import AssociationSpec
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest as V4BatchRead
from hubspot.crm.companies import SimplePublicObjectInputForCreate as CompanyCreate
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException
from hubspot.crm.deals import SimplePublicObjectInputForCreate as DealCreate
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate, PropertyUpdate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]


def test_basic_api_create_get_update_archive(hs):
    created = hs.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={"email": "e2e@example.com", "firstname": "E2E"}
        )
    )
    assert created.id and created.properties["email"] == "e2e@example.com"
    fetched = hs.crm.contacts.basic_api.get_by_id(
        created.id,
        properties=["firstname", "lifecyclestage"],
        properties_with_history=["firstname"],
    )
    assert fetched.properties["firstname"] == "E2E"
    assert fetched.properties_with_history["firstname"][0].source_type == "INTEGRATION"
    updated = hs.crm.contacts.basic_api.update(
        created.id, SimplePublicObjectInput(properties={"lifecyclestage": "salesqualifiedlead"})
    )
    assert updated.properties["lifecyclestage"] == "salesqualifiedlead"
    hs.crm.contacts.basic_api.archive(created.id)
    with pytest.raises(ApiException) as err:
        hs.crm.contacts.basic_api.get_by_id(created.id)
    assert err.value.status == 404


def test_get_page_follows_after_cursor_to_the_end(hs):
    batch = BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[{"properties": {"email": f"page{i}@example.com"}} for i in range(12)]
    )
    hs.crm.contacts.batch_api.create(batch)
    seen, after = [], None
    while True:
        page = hs.crm.contacts.basic_api.get_page(limit=5, after=after, properties=["email"])
        seen += [r.properties["email"] for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert {f"page{i}@example.com" for i in range(12)} <= set(seen)
    assert len(seen) == len(set(seen))
    everything = hs.crm.contacts.get_all(properties=["email"])
    assert {f"page{i}@example.com" for i in range(12)} <= {
        r.properties["email"] for r in everything
    }


def test_batch_read_update_and_upsert(hs):
    created = hs.crm.contacts.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": "b1@example.com"}},
                {"properties": {"email": "b2@example.com"}},
            ]
        )
    )
    ids = [r.id for r in created.results]
    updated = hs.crm.contacts.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": i, "properties": {"hs_lead_status": "IN_PROGRESS"}} for i in ids]
        )
    )
    assert {r.properties["hs_lead_status"] for r in updated.results} == {"IN_PROGRESS"}
    read = hs.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": i} for i in ids],
            properties=["hs_lead_status"],
            properties_with_history=[],
        )
    )
    assert sorted(r.id for r in read.results) == sorted(ids)
    upserted = hs.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "b1@example.com", "idProperty": "email", "properties": {"firstname": "One"}},
                {
                    "id": "b3@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Three"},
                },
            ]
        )
    )
    assert sorted((r.properties["email"], r.new) for r in upserted.results) == [
        ("b1@example.com", False),
        ("b3@example.com", True),
    ]


def test_batch_read_with_missing_id_returns_errors_model(hs):
    created = hs.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"email": "partial@example.com"})
    )
    read = hs.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": created.id}, {"id": "77777777"}],
            properties=[],
            properties_with_history=[],
        )
    )
    assert read.num_errors == 1 and read.errors[0].context == {"ids": ["77777777"]}


def test_search_with_filters_sorts_and_paging(hs):
    hs.crm.contacts.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": f"s{i}@search.example", "lifecyclestage": "lead"}}
                for i in range(7)
            ]
        )
    )
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(
                filters=[
                    Filter(
                        property_name="email", operator="CONTAINS_TOKEN", value="*@search.example"
                    ),
                    Filter(property_name="lifecyclestage", operator="EQ", value="lead"),
                ]
            )
        ],
        sorts=["email"],
        properties=["email"],
        limit=3,
    )
    collected, after = [], None
    while True:
        request.after = after
        page = hs.crm.contacts.search_api.do_search(public_object_search_request=request)
        assert page.total == 7
        collected += [r.properties["email"] for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert collected == sorted(f"s{i}@search.example" for i in range(7))


def test_properties_core_and_groups_api(hs):
    group = hs.crm.properties.groups_api.create(
        "deals", PropertyGroupCreate(name="fieldwise_ai", label="Fieldwise AI")
    )
    assert group.name == "fieldwise_ai"
    created = hs.crm.properties.core_api.create(
        "deals",
        PropertyCreate(
            name="ai_forecast_note",
            label="AI Forecast Note",
            type="string",
            field_type="textarea",
            group_name="fieldwise_ai",
        ),
    )
    assert created.name == "ai_forecast_note" and created.hubspot_defined is False
    fetched = hs.crm.properties.core_api.get_by_name("deals", "ai_forecast_note")
    assert fetched.field_type == "textarea"
    updated = hs.crm.properties.core_api.update(
        "deals", "ai_forecast_note", PropertyUpdate(label="Forecast note")
    )
    assert updated.label == "Forecast note"
    names = {p.name for p in hs.crm.properties.core_api.get_all("deals").results}
    assert "ai_forecast_note" in names
    groups = {g.name for g in hs.crm.properties.groups_api.get_all("deals").results}
    assert "fieldwise_ai" in groups
    deal = hs.crm.deals.basic_api.create(
        DealCreate(properties={"dealname": "Noted", "ai_forecast_note": "At risk"})
    )
    assert deal.properties["ai_forecast_note"] == "At risk"
    hs.crm.properties.core_api.archive("deals", "ai_forecast_note")
    assert "ai_forecast_note" not in {
        p.name for p in hs.crm.properties.core_api.get_all("deals").results
    }


def test_associations_v4_create_list_and_batch_read(hs):
    company = hs.crm.companies.basic_api.create(CompanyCreate(properties={"name": "Assoc E2E"}))
    contact = hs.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"email": "ae2e@example.com"})
    )
    labels = hs.crm.associations.v4.basic_api.create(
        "contacts",
        contact.id,
        "companies",
        company.id,
        [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=1)],
    )
    assert labels.labels == ["Primary"]
    page = hs.crm.associations.v4.basic_api.get_page("companies", company.id, "contacts")
    assert [r.to_object_id for r in page.results] == [contact.id]
    assert {t.type_id for t in page.results[0].association_types} == {2}
    batch = hs.crm.associations.v4.batch_api.get_page(
        "contacts", "companies", V4BatchRead(inputs=[{"id": contact.id}])
    )
    assert batch.results[0].to[0].to_object_id == company.id
    fetched = hs.crm.contacts.basic_api.get_by_id(contact.id, associations=["companies"])
    assert fetched.associations["companies"].results[0].id == company.id


def test_owners_api_lists_loaded_reps(hs, hubspot_sandbox, history_factory):
    ids = hubspot_sandbox.load_history(history_factory(leads=2))
    owners = hs.crm.owners.owners_api.get_page(limit=10)
    assert ids["rep-0001"] in {o.id for o in owners.results}
    owner = hs.crm.owners.owners_api.get_by_id(ids["rep-0002"])
    assert owner.email == "alan@seller.example"


def test_validation_error_surfaces_as_api_exception_with_hubspot_body(hs):
    with pytest.raises(ApiException) as err:
        hs.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"not_a_prop": "x"})
        )
    assert err.value.status == 400
    assert '"category":"VALIDATION_ERROR"' in err.value.body
