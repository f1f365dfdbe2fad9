"""Contract: load_history writes Salesforce-shaped records, history rows and custom fields."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]


@pytest.fixture(scope="module")
def loaded(sf_sandbox):
    from salesforce_fixtures import small_history

    history = small_history()
    return history, sf_sandbox.load_history(history)


def q(sf_api, text):
    response = sf_api.get("query", params={"q": text})
    assert response.status_code == 200, response.text
    return response.json()["records"]


def test_every_generator_key_gets_an_id_with_the_right_prefix(loaded):
    history, ids = loaded
    prefixes = {
        "rep-": "005",
        "acct-": "001",
        "lead-": "00Q",
        "contact-": "003",
        "opp-": "006",
        "note-": "002",
    }
    for key, record_id in ids.items():
        for start, prefix in prefixes.items():
            if key.startswith(start):
                assert record_id.startswith(prefix), key
    assert ids["act-0001"].startswith("00T") and ids["act-0002"].startswith("00U")
    assert len(ids) == (
        len(history.reps)
        + len(history.accounts)
        + len(history.leads)
        + len(history.contacts)
        + len(history.opportunities)
        + len(history.activities)
        + len(history.notes)
    )


def test_leads_carry_engagement_rollups_custom_fields_and_conversion(sf_api, loaded):
    history, ids = loaded
    lead = sf_api.get(f"sobjects/Lead/{ids['lead-000001']}").json()
    assert (lead["Email_Opens__c"], lead["Page_Visits__c"], lead["Form_Fills__c"]) == (
        2.0,
        1.0,
        1.0,
    )
    assert lead["Last_Engagement_Date__c"].startswith(
        history.leads[0].engagement[-1].at.strftime("%Y-%m-%dT%H:%M")
    )
    assert lead["IsConverted"] is True and lead["ConvertedContactId"] == ids["contact-0001"]
    assert lead["ConvertedOpportunityId"] == ids["opp-0001"]
    assert lead["ConvertedAccountId"] == ids["acct-0001"]
    assert lead["ConvertedDate"] == history.leads[0].converted_at.date().isoformat()
    assert lead["CreatedDate"].startswith(history.leads[0].created_at.strftime("%Y-%m-%dT%H:%M"))
    assert lead["OwnerId"] == ids["rep-0001"]
    assert lead["Seats__c"] == 10.0 and lead["Budget_Confirmed__c"] is False
    fields = {f["name"]: f for f in sf_api.get("sobjects/Lead/describe").json()["fields"]}
    assert fields["Budget_Confirmed__c"]["type"] == "boolean"
    assert fields["Email_Opens__c"]["type"] == "double"
    assert fields["Last_Engagement_Date__c"]["type"] == "datetime"


def test_opportunity_field_history_comes_from_stage_changes(sf_api, loaded):
    _, ids = loaded
    rows = q(
        sf_api,
        "SELECT Field, OldValue, NewValue, CreatedDate, CreatedById FROM"
        f" OpportunityFieldHistory WHERE OpportunityId = '{ids['opp-0001']}'"
        " ORDER BY CreatedDate",
    )
    assert [(r["Field"], r["OldValue"], r["NewValue"]) for r in rows] == [
        ("created", None, None),
        ("StageName", "Prospecting", "Qualification"),
        ("Amount", 40000.0, 52000.0),
        ("StageName", "Qualification", "Proposal"),
    ]
    assert {r["CreatedById"] for r in rows} == {ids["rep-0002"]}
    opp = q(
        sf_api,
        "SELECT Name, Account.Name, Owner.Name, Competitors__c, IsClosed FROM"
        f" Opportunity WHERE Id = '{ids['opp-0001']}'",
    )[0]
    assert opp["Account"]["Name"] == "Initech" and opp["Owner"]["Name"] == "Grace Hopper"
    assert opp["Competitors__c"] == "Globex" and opp["IsClosed"] is False
    competitors = {
        f["name"]: f for f in sf_api.get("sobjects/Opportunity/describe").json()["fields"]
    }["Competitors__c"]
    assert competitors["type"] == "multipicklist"
    assert [p["value"] for p in competitors["picklistValues"]] == ["Globex", "Hooli"]


def test_activities_and_notes_link_to_their_records(sf_api, loaded):
    _, ids = loaded
    call = sf_api.get(f"sobjects/Task/{ids['act-0001']}").json()
    assert (call["TaskSubtype"], call["CallType"], call["CallDurationInSeconds"]) == (
        "Call",
        "Outbound",
        1800,
    )
    assert call["WhoId"] == ids["contact-0001"] and call["WhatId"] == ids["opp-0001"]
    assert call["IsClosed"] is True
    email = sf_api.get(f"sobjects/Task/{ids['act-0003']}").json()
    assert email["WhoId"] == ids["lead-000002"] and email["WhatId"] is None
    meeting = sf_api.get(f"sobjects/Event/{ids['act-0002']}").json()
    assert meeting["DurationInMinutes"] == 45
    notes = q(
        sf_api, f"SELECT Title, Body, Parent.Name FROM Note WHERE ParentId = '{ids['opp-0001']}'"
    )
    assert notes[0]["Parent"]["Name"] == "Initech - Analytics"
    who = q(sf_api, f"SELECT Who.Name FROM Task WHERE Id = '{ids['act-0001']}'")[0]
    assert who["Who"]["attributes"]["type"] == "Contact" and who["Who"]["Name"] == "Peter Gibbons"


def test_reps_become_users_that_can_be_queried(sf_api, loaded):
    rows = q(
        sf_api, "SELECT Username, Name, Department FROM User WHERE Username = 'ada@example.com'"
    )
    assert rows[0]["Name"] == "Ada Lovelace" and rows[0]["Department"] == "EMEA"


def test_five_thousand_leads_load_completely(tmp_path):
    from salesforce_fixtures import small_history

    from sandbox.salesforce import SalesforceSandbox

    sb = SalesforceSandbox(tmp_path)
    history = small_history(leads=5000)
    try:
        ids = sb.load_history(history)
    finally:
        sb.stop()
    assert sb.state.store.count("Lead") == 5000 and len(ids) > 5000
