"""Unit: Salesforce records to canonical records, and Fieldwise values to Salesforce's JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectors.salesforce import mappers
from core.schemas import RecordValidationError
from manifests.loader import load_manifest

TENANT = "salesforce-00D8d0000000001AAA"
STAMP = "2026-11-22T15:04:05.000+0000"


def raw(sobject, record_id, **fields):
    return {
        "attributes": {"type": sobject, "url": f"/services/data/v62.0/sobjects/{sobject}/x"},
        "Id": record_id,
        "CreatedDate": "2026-01-02T03:04:05.000+0000",
        "SystemModstamp": STAMP,
        "LastModifiedById": "0058d0000000001AAA",
        **fields,
    }


def test_lead_maps_inputs_engagement_rollups_and_custom_fields():
    lead = mappers.to_lead(
        raw(
            "Lead",
            "00Q8d0000000001AAA",
            FirstName="Ada",
            LastName="Lovelace",
            Email="ada@example.com",
            Company="Analytical Engines",
            NumberOfEmployees=250,
            AnnualRevenue=1.5e6,
            State="CA",
            LeadSource="Web",
            Rating="Hot",
            IsConverted=True,
            ConvertedDate="2026-03-04",
            Email_Opens__c=3.0,
            Page_Visits__c=7.0,
            Form_Fills__c=None,
            Last_Engagement_Date__c="2026-02-01T10:00:00.000+0000",
            Budget_Confirmed__c=True,
            Fieldwise_AI_Score__c=88,
        ),
        TENANT,
    )
    assert (lead["tenant_id"], lead["crm"], lead["crm_id"]) == (
        TENANT,
        "salesforce",
        "00Q8d0000000001AAA",
    )
    assert lead["company"] == "Analytical Engines" and lead["employees"] == 250
    assert lead["region"] == "CA" and lead["source"] == "Web"
    assert lead["email_opens"] == 3 and lead["page_visits"] == 7 and lead["form_fills"] == 0
    assert lead["last_engaged_at"] == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert lead["converted_at"] == datetime(2026, 3, 4, tzinfo=UTC)
    assert lead["updated_at"] == datetime(2026, 11, 22, 15, 4, 5, tzinfo=UTC)
    assert lead["custom"] == {"Rating": "Hot", "Budget_Confirmed__c": True}
    assert "Fieldwise_AI_Score__c" not in lead["custom"]  # our own output is never an input


def test_opportunity_splits_competitors_and_keeps_custom_inputs():
    opp = mappers.to_opportunity(
        raw(
            "Opportunity",
            "0068d0000000001AAA",
            Name="Initech - Analytics",
            StageName="Closed Won",
            CloseDate="2026-12-31",
            IsClosed=True,
            IsWon=True,
            Amount=52000.0,
            Probability=100.0,
            Competitors__c="Globex;Hooli",
        ),
        TENANT,
    )
    assert opp["competitors"] == ["Globex", "Hooli"]
    assert opp["is_won"] and opp["stage"] == "Closed Won"
    assert opp["close_date"].isoformat() == "2026-12-31"
    assert opp["custom"] == {"Probability": 100.0}


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"TaskSubtype": "Call", "Type": "Call"}, "call"),
        ({"TaskSubtype": "Email"}, "email"),
        ({"TaskSubtype": None, "Type": "Email"}, "email"),
        ({"TaskSubtype": "Task", "Type": "Other"}, "task"),
    ],
)
def test_tasks_become_calls_emails_or_tasks(fields, kind):
    activity = mappers.to_activity(
        raw("Task", "00T8d0000000001AAA", Subject="s", ActivityDate="2026-05-06", **fields),
        TENANT,
    )
    assert activity["type"] == kind
    assert activity["occurred_at"] == datetime(2026, 5, 6, tzinfo=UTC)


def test_call_duration_direction_and_links_come_from_task_fields():
    call = mappers.to_activity(
        raw(
            "Task",
            "00T8d0000000002AAA",
            TaskSubtype="Call",
            CallType="Inbound",
            CallDurationInSeconds=1800,
            WhoId="0038d0000000001AAA",
            WhatId="0068d0000000001AAA",
            Status="Completed",
        ),
        TENANT,
    )
    assert call["duration_minutes"] == 30 and call["direction"] == "inbound"
    assert call["contact_id"] == "0038d0000000001AAA"
    assert call["opportunity_id"] == "0068d0000000001AAA"
    assert call["occurred_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no ActivityDate


def test_events_are_meetings_at_their_start():
    meeting = mappers.to_activity(
        raw(
            "Event",
            "00U8d0000000001AAA",
            Subject="Demo",
            StartDateTime="2026-04-01T09:30:00.000+0000",
            DurationInMinutes=45,
            WhoId="00Q8d0000000001AAA",
        ),
        TENANT,
    )
    assert meeting["type"] == "meeting" and meeting["duration_minutes"] == 45
    assert meeting["occurred_at"] == datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    assert meeting["lead_id"] == "00Q8d0000000001AAA"


def test_notes_link_to_their_parent_by_key_prefix():
    note = mappers.to_note(
        raw("Note", "0028d0000000001AAA", Title="t", Body=None, ParentId="0018d0000000001AAA"),
        TENANT,
    )
    assert note["account_id"] == "0018d0000000001AAA" and note["body"] == ""


def test_users_take_territory_from_division_or_the_custom_field():
    user = mappers.to_user(
        raw("User", "0058d0000000001AAA", LastName="Hopper", IsActive=True, Territory__c="EMEA"),
        TENANT,
    )
    assert user["territory"] == "EMEA" and user["is_active"] is True
    with_division = mappers.to_user(
        raw("User", "0058d0000000002AAA", LastName="L", Division="NA", Territory__c="EMEA"), TENANT
    )
    assert with_division["territory"] == "NA"


def test_an_invalid_record_raises_naming_it():
    with pytest.raises(RecordValidationError, match="00Q8d0000000001AAA"):
        mappers.to_lead(raw("Lead", "00Q8d0000000001AAA", Email="not an email"), TENANT)


def test_values_are_formatted_per_field_type():
    specs = load_manifest("salesforce").owned_fields("Opportunity")
    when = datetime(2026, 11, 22, 16, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1)))
    out = mappers.to_salesforce_values(
        {
            "Fieldwise_AI_Score__c": 87.6,
            "Fieldwise_AI_Grade__c": "Warm",
            "Fieldwise_AI_Score_Changed_At__c": when,
            "Fieldwise_AI_Battle_Card__c": "Win on price\n<not a tag",
            "Fieldwise_AI_Risk_Flags__c": ["No activity in 30 days", "Single contact"],
            "Fieldwise_AI_Next_Step__c": None,
        },
        specs,
    )
    assert out == {
        "Fieldwise_AI_Score__c": 88,
        "Fieldwise_AI_Grade__c": "Warm",
        "Fieldwise_AI_Score_Changed_At__c": "2026-11-22T15:04:05.678+0000",
        "Fieldwise_AI_Battle_Card__c": "Win on price<br>&lt;not a tag",
        "Fieldwise_AI_Risk_Flags__c": "No activity in 30 days\nSingle contact",
        "Fieldwise_AI_Next_Step__c": None,
    }
    html = mappers.to_salesforce_values({"Fieldwise_AI_Battle_Card__c": "<p>Hi</p>"}, specs)
    assert html["Fieldwise_AI_Battle_Card__c"] == "<p>Hi</p>"


def test_values_for_fields_fieldwise_does_not_own_are_refused():
    specs = load_manifest("salesforce").owned_fields("Lead")
    with pytest.raises(KeyError, match="Company"):
        mappers.to_salesforce_values({"Company": "x"}, specs)
    with pytest.raises(ValueError, match="finite"):
        mappers.to_salesforce_values({"Fieldwise_AI_Score__c": float("nan")}, specs)
