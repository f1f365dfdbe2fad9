"""Contract: load_history translation, persistence across restarts, and the record page."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]


@pytest.fixture(scope="module")
def loaded(make_sandbox, api_for, tmp_path_factory, history_factory):
    data_dir = tmp_path_factory.mktemp("hs-history")
    sb = make_sandbox(data_dir, widget_base_url="http://fieldwise.test")
    history = history_factory()
    ids = sb.load_history(history)
    return sb, api_for(sb), history, ids, data_dir


def test_mapping_covers_every_generator_key(loaded):
    _, _, history, ids, _ = loaded
    keys = (
        [r.key for r in history.reps]
        + [a.key for a in history.accounts]
        + [lead.key for lead in history.leads]
        + [c.key for c in history.contacts]
        + [o.key for o in history.opportunities]
        + [a.key for a in history.activities]
        + [n.key for n in history.notes]
    )
    assert set(keys) <= set(ids)
    assert ids["contact-000001"] == ids["lead-000000"]


def test_reps_become_owners(loaded):
    _, api, _, ids, _ = loaded
    owner = api.get(f"/crm/v3/owners/{ids['rep-0001']}").json()
    assert owner["email"] == "ada@seller.example" and owner["teams"][0]["name"] == "EMEA"


def test_leads_become_contacts_with_lifecycle_and_rolled_up_engagement(loaded):
    _, api, history, ids, _ = loaded
    props = (
        "lifecyclestage,hs_lead_status,hs_email_open,num_conversion_events,"
        "hs_analytics_num_page_views,budget_confirmed,seats,hubspot_owner_id,createdate"
    )
    lead3 = api.get(
        f"/crm/v3/objects/contacts/{ids['lead-000003']}", params={"properties": props}
    ).json()
    p = lead3["properties"]
    assert p["lifecyclestage"] == "marketingqualifiedlead" and p["hs_lead_status"] == "NEW"
    assert (p["hs_email_open"], p["num_conversion_events"], p["hs_analytics_num_page_views"]) == (
        "2",
        "1",
        "1",
    )
    assert p["budget_confirmed"] == "false" and p["seats"] == "13"
    assert p["hubspot_owner_id"] == ids["rep-0001"]
    assert p["createdate"].startswith(history.leads[3].created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    plain = api.get(
        f"/crm/v3/objects/contacts/{ids['lead-000001']}", params={"properties": "lifecyclestage"}
    ).json()
    assert plain["properties"]["lifecyclestage"] == "lead"


def test_converted_lead_is_customer_with_lifecycle_history(loaded):
    _, api, _, ids, _ = loaded
    body = api.get(
        f"/crm/v3/objects/contacts/{ids['lead-000000']}",
        params={
            "properties": "lifecyclestage",
            "propertiesWithHistory": "lifecyclestage",
            "associations": "companies,deals",
        },
    ).json()
    assert body["properties"]["lifecyclestage"] == "customer"
    values = [h["value"] for h in body["propertiesWithHistory"]["lifecyclestage"]]
    assert values[0] == "customer" and values[-1] == "lead" and "opportunity" in values
    assert body["associations"]["companies"]["results"][0]["id"] == ids["acct-0001"]
    assert body["associations"]["deals"]["results"][0]["id"] == ids["opp-000001"]


def test_deal_has_stage_amount_history_and_competitors(loaded):
    _, api, _, ids, _ = loaded
    body = api.get(
        f"/crm/v3/objects/deals/{ids['opp-000001']}",
        params={
            "properties": "dealstage,amount,hs_is_closed_won,competitors,pipeline",
            "propertiesWithHistory": "dealstage,amount",
        },
    ).json()
    p = body["properties"]
    assert (p["dealstage"], p["amount"], p["hs_is_closed_won"], p["pipeline"]) == (
        "closedwon",
        "50000",
        "true",
        "default",
    )
    assert p["competitors"] == "Initech"
    stages = [h["value"] for h in body["propertiesWithHistory"]["dealstage"]]
    assert stages == ["closedwon", "decisionmakerboughtin", "appointmentscheduled"]
    stamps = [h["timestamp"] for h in body["propertiesWithHistory"]["dealstage"]]
    assert stamps[0].startswith("2025-05-01T09:00:00")
    assert [h["value"] for h in body["propertiesWithHistory"]["amount"]] == ["50000", "40000"]


def test_engagements_are_associated_to_their_records(loaded):
    _, api, _, ids, _ = loaded
    call = api.get(
        f"/crm/v3/objects/calls/{ids['act-000001']}",
        params={
            "properties": "hs_call_title,hs_call_direction,hs_timestamp",
            "associations": "contacts",
        },
    ).json()
    assert call["properties"]["hs_call_direction"] == "OUTBOUND"
    assert call["associations"]["contacts"]["results"][0]["id"] == ids["lead-000000"]
    note = api.get(
        f"/crm/v3/objects/notes/{ids['note-000001']}",
        params={"properties": "hs_note_body", "associations": "deals,companies"},
    ).json()
    assert "Initech" in note["properties"]["hs_note_body"]
    assert note["associations"]["deals"]["results"][0]["id"] == ids["opp-000001"]
    task = api.get(
        f"/crm/v3/objects/tasks/{ids['act-000004']}", params={"properties": "hs_task_status"}
    ).json()
    assert task["properties"]["hs_task_status"] == "NOT_STARTED"


def test_custom_properties_used_by_the_loader_are_registered(loaded):
    _, api, _, _, _ = loaded
    names = {p["name"] for p in api.get("/crm/v3/properties/contacts").json()["results"]}
    assert {"budget_confirmed", "seats", "lead_source", "last_engagement_date"} <= names
    competitors = api.get("/crm/v3/properties/deals/competitors").json()
    assert competitors["type"] == "enumeration" and competitors["fieldType"] == "checkbox"


def test_loaded_records_are_searchable(loaded):
    _, api, _, _, _ = loaded
    response = api.post(
        "/crm/v3/objects/contacts/search",
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "lifecyclestage",
                            "operator": "IN",
                            "values": ["lead", "marketingqualifiedlead", "salesqualifiedlead"],
                        }
                    ]
                }
            ]
        },
    )
    assert response.json()["total"] == 5


def test_record_page_shows_properties_and_embeds_widget_escaped(loaded):
    sb, api, _, ids, _ = loaded
    api.patch(
        f"/crm/v3/objects/companies/{ids['acct-0002']}",
        {"properties": {"name": "<script>x</script>"}},
    )
    page = requests.get(f"{sb.base_url}/ui/companies/{ids['acct-0002']}")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script>x</script>" not in page.text and "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert "region" in page.text
    assert f"src='/ui/companies/{ids['acct-0002']}/fieldwise'" in page.text
    listing = requests.get(f"{sb.base_url}/ui/contacts")
    assert f"/ui/contacts/{ids['lead-000000']}" in listing.text
    assert requests.get(f"{sb.base_url}/ui/contacts/999999999").status_code == 404


def test_restart_with_same_data_dir_keeps_records_tokens_and_subscriptions(
    make_sandbox, api_for, tmp_path, history_factory
):
    first = make_sandbox(tmp_path)
    ids = first.load_history(history_factory(leads=3))
    token, portal = first.access_token, first.portal_id
    requests.post(
        f"{first.base_url}/webhooks/v3/{first.app_id}/subscriptions",
        params={"hapikey": first.developer_api_key},
        json={"eventType": "deal.creation"},
    )
    api_for(first).post(
        "/crm/v3/properties/deals",
        {
            "name": "ai_risk",
            "label": "Risk",
            "type": "string",
            "fieldType": "textarea",
            "groupName": "dealinformation",
        },
    )
    first.stop()
    second = make_sandbox(tmp_path)
    assert second.portal_id == portal and second.access_token == token
    api = api_for(second)
    assert api.get(f"/crm/v3/objects/deals/{ids['opp-000002']}").status_code == 200
    assert api.get("/crm/v3/properties/deals/ai_risk").status_code == 200
    subs = requests.get(
        f"{second.base_url}/webhooks/v3/{second.app_id}/subscriptions",
        params={"hapikey": second.developer_api_key},
    ).json()["results"]
    assert [s["eventType"] for s in subs] == ["deal.creation"]
    assert second.load_history(history_factory(leads=3)) == ids


def test_five_thousand_leads_load_completely(make_sandbox, history_factory):
    sb = make_sandbox()
    history = history_factory(leads=5000)
    ids = sb.load_history(history)
    assert sb.repo.count("contacts") == 5001 and len(ids) >= 5000
