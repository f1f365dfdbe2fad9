"""HubSpot wire JSON to canonical records, and values to HubSpot property strings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connectors.hubspot import mappers
from core.schemas import RecordValidationError
from manifests.loader import load_manifest

TENANT = "hubspot-4242"


def contact(**props: str | None) -> mappers.RawObject:
    base: dict[str, str | None] = {
        "createdate": "2025-01-02T03:04:05.678Z",
        "lastmodifieddate": "2025-02-01T00:00:00.000Z",
        "email": "ada@example.com",
    }
    return {"id": "101", "properties": {**base, **props}}


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "lead_date", "lead", "is_contact"),
    [
        ("subscriber", None, True, False),
        ("lead", None, True, False),
        ("marketingqualifiedlead", None, True, False),
        ("salesqualifiedlead", None, True, False),
        (None, None, True, False),
        ("opportunity", "2025-01-01T00:00:00Z", True, True),
        ("customer", "2025-01-01T00:00:00Z", True, True),
        ("customer", None, False, True),
        ("evangelist", "2025-01-01T00:00:00Z", False, True),
        ("other", None, False, True),
    ],
)
def test_lifecycle_stage_decides_lead_and_contact(stage, lead_date, lead, is_contact):
    props = {"lifecyclestage": stage, mappers.BECAME_LEAD_DATE: lead_date}
    assert mappers.is_lead(props) is lead
    assert mappers.is_contact(props) is is_contact


# -- leads ------------------------------------------------------------------------------------


def test_open_lead_maps_every_field():
    raw = contact(
        firstname="Ada",
        lastname="Lovelace",
        phone="+44 1",
        jobtitle="CTO",
        company="Analytical Engines",
        industry="Manufacturing",
        numemployees="25-50",
        annualrevenue="1250000.50",
        country="United Kingdom",
        state="London",
        region="EMEA",
        hs_analytics_source="ORGANIC_SEARCH",
        hs_lead_status="NEW",
        lifecyclestage="marketingqualifiedlead",
        hubspot_owner_id="70000001",
        hs_email_open="4",
        hs_email_click="2",
        hs_analytics_num_page_views="9",
        num_conversion_events="1",
        hs_analytics_last_visit_timestamp="2025-01-20T00:00:00.000Z",
        hs_email_last_open_date="1737590400000",
        budget_confirmed="true",
        seats="12",
    )
    lead = mappers.to_lead(raw, TENANT, {"budget_confirmed": "bool", "seats": "number"})
    assert lead["crm"] == "hubspot" and lead["crm_id"] == "101" and lead["tenant_id"] == TENANT
    assert (lead["first_name"], lead["last_name"], lead["title"]) == ("Ada", "Lovelace", "CTO")
    assert lead["employees"] == 25 and lead["annual_revenue"] == 1_250_000.5
    assert lead["region"] == "EMEA"  # the portal's own region property beats "state"
    assert (lead["source"], lead["status"], lead["owner_id"]) == (
        "ORGANIC_SEARCH",
        "NEW",
        "70000001",
    )
    assert (lead["email_opens"], lead["email_clicks"], lead["page_visits"], lead["form_fills"]) == (
        4,
        2,
        9,
        1,
    )
    assert lead["last_engaged_at"] == datetime(2025, 1, 23, tzinfo=UTC)
    assert lead["created_at"] == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert lead["updated_at"] == datetime(2025, 2, 1, tzinfo=UTC)
    assert not lead["is_converted"] and lead["converted_at"] is None
    assert lead["custom"] == {"budget_confirmed": True, "seats": 12}


def test_converted_lead_takes_the_earliest_stage_date():
    raw = contact(
        lifecyclestage="customer",
        hs_lifecyclestage_lead_date="2025-01-02T00:00:00Z",
        hs_lifecyclestage_opportunity_date="2025-01-10T00:00:00Z",
        hs_lifecyclestage_customer_date="2025-01-30T00:00:00Z",
    )
    raw["associations"] = {"deals": ["905", "77"]}
    lead = mappers.to_lead(raw, TENANT)
    assert lead["is_converted"] and lead["converted_at"] == datetime(2025, 1, 10, tzinfo=UTC)
    assert lead["converted_contact_id"] == "101" and lead["converted_opportunity_id"] == "77"


def test_converted_lead_without_stage_dates_uses_lifecycle_history():
    raw = contact(lifecyclestage="opportunity", hs_lifecyclestage_lead_date="2025-01-02T00:00:00Z")
    assert mappers.needs_conversion_history(raw)
    raw["propertiesWithHistory"] = {
        "lifecyclestage": [
            {"value": "opportunity", "timestamp": "2025-01-15T00:00:00.000Z"},
            {"value": "salesqualifiedlead", "timestamp": "2025-01-05T00:00:00.000Z"},
            {"value": "lead", "timestamp": "2025-01-02T00:00:00.000Z"},
        ]
    }
    assert not mappers.needs_conversion_history(raw)
    assert mappers.to_lead(raw, TENANT)["converted_at"] == datetime(2025, 1, 15, tzinfo=UTC)


def test_invalid_email_and_odd_numbers_do_not_reject_the_record():
    raw = contact(
        email="not-an-email", numemployees="1,000+", annualrevenue="-5", hs_email_open="x"
    )
    lead = mappers.to_lead(raw, TENANT)
    assert lead["email"] is None and lead["employees"] == 1000
    assert lead["annual_revenue"] is None and lead["email_opens"] == 0


def test_record_without_any_timestamp_is_rejected_by_the_schema():
    with pytest.raises(RecordValidationError, match="updated_at"):
        mappers.to_lead({"id": "1", "properties": {}}, TENANT)


def test_every_manifest_input_of_contacts_lands_in_the_lead():
    manifest = load_manifest("hubspot")
    samples = {
        "numemployees": "12",
        "annualrevenue": "10",
        "hs_email_open": "3",
        "hs_email_click": "3",
        "hs_analytics_num_page_views": "3",
        "num_conversion_events": "3",
        "lifecyclestage": "customer",
        "hs_analytics_last_visit_timestamp": "2025-01-05T00:00:00Z",
        "createdate": "2025-01-01T00:00:00Z",
        "lastmodifieddate": "2025-01-09T00:00:00Z",
        "email": "x@example.com",
    }
    empty = mappers.to_lead(contact(lastmodifieddate="2025-01-09T00:00:00Z"), TENANT)
    for prop, attribute in manifest.input_map("contacts").items():
        if attribute in (None, "custom"):
            continue
        value = samples.get(prop, "Sample")
        mapped = mappers.to_lead(contact(**{prop: value}), TENANT)
        assert mapped[attribute] != empty[attribute] or prop == "lastmodifieddate", prop


# -- other objects ----------------------------------------------------------------------------


def test_contact_account_comes_from_the_primary_company():
    raw = contact(lifecyclestage="customer", associatedcompanyid="555", hubspot_owner_id="7")
    record = mappers.to_contact(raw, TENANT)
    assert (record["account_id"], record["owner_id"], record["lifecycle_stage"]) == (
        "555",
        "7",
        "customer",
    )


def test_company_without_a_name_is_named_after_its_domain():
    raw = {
        "id": "9",
        "properties": {
            "domain": "acme.example",
            "hs_lastmodifieddate": "2025-01-01T00:00:00Z",
            "numberofemployees": "300",
            "state": "Bavaria",
        },
    }
    account = mappers.to_account(raw, TENANT)
    assert account["name"] == "acme.example" and account["employees"] == 300
    assert account["region"] == "Bavaria"


def test_won_deal_is_closed_and_carries_competitors_and_manifest_custom_fields():
    raw = {
        "id": "3",
        "properties": {
            "dealname": "Acme - Core",
            "dealstage": "closedwon",
            "amount": "50000",
            "closedate": "2025-05-01T00:00:00.000Z",
            "hs_lastmodifieddate": "2025-05-02T00:00:00.000Z",
            "hs_analytics_source": "REFERRALS",
            "competitors": "Initech;Globex",
            "pipeline": "default",
            "hs_deal_stage_probability": "1.0",
        },
        "associations": {"companies": ["44"]},
    }
    opp = mappers.to_opportunity(
        raw, TENANT, {"pipeline": "enumeration", "hs_deal_stage_probability": "number"}
    )
    assert opp["is_won"] and opp["is_closed"] and opp["stage"] == "closedwon"
    assert opp["close_date"] == date(2025, 5, 1) and opp["amount"] == 50_000.0
    assert opp["competitors"] == ["Initech", "Globex"] and opp["account_id"] == "44"
    assert opp["custom"] == {"pipeline": "default", "hs_deal_stage_probability": 1}


@pytest.mark.parametrize(
    ("object_type", "props", "expected"),
    [
        (
            "calls",
            {
                "hs_call_title": "Discovery",
                "hs_call_body": "<p>Budget &amp; timing</p>",
                "hs_call_duration": "1800000",
                "hs_call_direction": "INBOUND",
                "hs_call_status": "COMPLETED",
                "hs_timestamp": "2025-03-01T10:00:00Z",
            },
            {
                "type": "call",
                "subject": "Discovery",
                "body": "Budget & timing",
                "duration_minutes": 30,
                "direction": "inbound",
                "status": "COMPLETED",
            },
        ),
        (
            "emails",
            {
                "hs_email_subject": "Proposal",
                "hs_email_text": "See attached",
                "hs_email_direction": "EMAIL",
                "hs_timestamp": "2025-03-01T10:00:00Z",
            },
            {"type": "email", "subject": "Proposal", "direction": "outbound"},
        ),
        (
            "meetings",
            {
                "hs_meeting_title": "Demo",
                "hs_meeting_start_time": "2025-03-01T10:00:00Z",
                "hs_meeting_end_time": "2025-03-01T10:45:00Z",
                "hs_meeting_outcome": "COMPLETED",
            },
            {
                "type": "meeting",
                "duration_minutes": 45,
                "status": "COMPLETED",
                "occurred_at": datetime(2025, 3, 1, 10, tzinfo=UTC),
            },
        ),
        (
            "tasks",
            {
                "hs_task_subject": "Follow up",
                "hs_task_status": "NOT_STARTED",
                "hs_timestamp": "2025-03-01T10:00:00Z",
            },
            {"type": "task", "subject": "Follow up", "direction": None},
        ),
    ],
)
def test_engagements_map_to_activities(object_type, props, expected):
    raw = {
        "id": "8",
        "properties": {**props, "hs_lastmodifieddate": "2025-03-02T00:00:00Z"},
        "associations": {"contacts": ["101"], "deals": ["3"]},
    }
    activity = mappers.to_activity(raw, TENANT, object_type)
    for key, value in expected.items():
        assert activity[key] == value, key
    assert activity["contact_id"] == activity["lead_id"] == "101"
    assert activity["opportunity_id"] == "3"


def test_note_html_becomes_text_with_its_first_line_as_title():
    raw = {
        "id": "12",
        "properties": {
            "hs_note_body": "<p>Competition</p><p>They also evaluate Initech.</p>",
            "hs_lastmodifieddate": "2025-03-02T00:00:00Z",
            "hubspot_owner_id": "7",
        },
        "associations": {"deals": ["3"]},
    }
    note = mappers.to_note(raw, TENANT)
    assert note["title"] == "Competition"
    assert note["body"] == "Competition\nThey also evaluate Initech."
    assert (note["author_id"], note["opportunity_id"]) == ("7", "3")


def test_owner_maps_to_user_with_primary_team_as_territory():
    raw = {
        "id": "70000001",
        "email": "ada@seller.example",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "userId": 9000001,
        "archived": True,
        "createdAt": "2023-01-01T00:00:00Z",
        "updatedAt": "2024-01-01T00:00:00Z",
        "teams": [{"name": "NA", "primary": False}, {"name": "EMEA", "primary": True}],
    }
    user = mappers.to_user(raw, TENANT)
    assert user["territory"] == "EMEA" and user["is_active"] is False
    assert user["custom"] == {"user_id": "9000001"}


# -- values for HubSpot -----------------------------------------------------------------------


def test_values_are_formatted_per_hubspot_property_type():
    moment = datetime(2025, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    formatted = mappers.to_hubspot_properties(
        {
            "score": 87,
            "ratio": 0.1 + 0.2,
            "big": 1e-7,
            "money": Decimal("12.50"),
            "flag": True,
            "grade": "Hot",
            "changed": moment,
            "changed_day": moment,
            "day": date(2025, 5, 1),
            "day_as_datetime": date(2025, 5, 1),
            "many": ["Initech", "Globex"],
            "cleared": None,
        },
        {"changed_day": "date", "day_as_datetime": "datetime", "changed": "datetime"},
    )
    assert formatted == {
        "score": "87",
        "ratio": "0.30000000000000004",
        "big": "0.0000001",
        "money": "12.5",
        "flag": "true",
        "grade": "Hot",
        "changed": str(int(datetime(2025, 5, 1, 6, 30, tzinfo=UTC).timestamp() * 1000)),
        "changed_day": "2025-05-01",
        "day": "2025-05-01",
        "day_as_datetime": str(int(datetime(2025, 5, 1, tzinfo=UTC).timestamp() * 1000)),
        "many": "Initech;Globex",
        "cleared": "",
    }


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (datetime(2025, 1, 1), ValueError),
        (object(), TypeError),
    ],
)
def test_values_hubspot_cannot_store_are_refused(value, error):
    with pytest.raises(error):
        mappers.to_hubspot_properties({"fieldwise_ai_score": value})
