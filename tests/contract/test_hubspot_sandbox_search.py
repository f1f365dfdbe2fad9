"""Contract: POST /crm/v3/objects/{type}/search filters, sorts, query, paging and caps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]


@pytest.fixture(scope="module")
def search_api(make_sandbox, api_for):
    client = api_for(make_sandbox(search_per_second=10_000))
    rows = [
        ("ann@alpha.example", "Ann", "lead", "10", "2024-01-05T00:00:00Z"),
        ("bob@beta.example", "Bob", "marketingqualifiedlead", "20", "2024-02-05T00:00:00Z"),
        ("cy@alpha.example", "Cy", "customer", "30", "2024-03-05T00:00:00Z"),
        ("dee@gamma.example", "Dee", "lead", "", "2024-04-05T00:00:00Z"),
        ("eve@beta.example", "Eve Marie", "opportunity", "50", "2024-05-05T00:00:00Z"),
    ]
    assert (
        client.post(
            "/crm/v3/properties/contacts",
            {
                "name": "ai_score",
                "label": "AI Score",
                "type": "number",
                "fieldType": "number",
                "groupName": "contactinformation",
            },
        ).status_code
        == 201
    )
    for email, first, stage, score, seen in rows:
        props = {
            "email": email,
            "firstname": first,
            "lifecyclestage": stage,
            "hs_analytics_last_visit_timestamp": seen,
        }
        if score:
            props["ai_score"] = score
        client.create_contact(**props)
    return client


def emails(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["properties"]["email"] for r in response.json()["results"]]


def search(api, body):
    return api.post(
        "/crm/v3/objects/contacts/search", {"properties": ["email"], "limit": 50, **body}
    )


def flt(prop, op, **kw):
    return {"filterGroups": [{"filters": [{"propertyName": prop, "operator": op, **kw}]}]}


@pytest.mark.parametrize(
    ("filter_body", "expected"),
    [
        (flt("lifecyclestage", "EQ", value="lead"), {"ann@alpha.example", "dee@gamma.example"}),
        (flt("firstname", "EQ", value="ANN"), {"ann@alpha.example"}),
        (
            flt("lifecyclestage", "NEQ", value="lead"),
            {"bob@beta.example", "cy@alpha.example", "eve@beta.example"},
        ),
        (flt("ai_score", "GT", value="20"), {"cy@alpha.example", "eve@beta.example"}),
        (
            flt("ai_score", "GTE", value="20"),
            {"bob@beta.example", "cy@alpha.example", "eve@beta.example"},
        ),
        (flt("ai_score", "LT", value="20"), {"ann@alpha.example"}),
        (flt("ai_score", "LTE", value="20"), {"ann@alpha.example", "bob@beta.example"}),
        (
            flt("ai_score", "BETWEEN", value="15", highValue="35"),
            {"bob@beta.example", "cy@alpha.example"},
        ),
        (
            flt("lifecyclestage", "IN", values=["customer", "opportunity"]),
            {"cy@alpha.example", "eve@beta.example"},
        ),
        (
            flt("lifecyclestage", "NOT_IN", values=["lead", "customer"]),
            {"bob@beta.example", "eve@beta.example"},
        ),
        (
            flt("ai_score", "HAS_PROPERTY"),
            {"ann@alpha.example", "bob@beta.example", "cy@alpha.example", "eve@beta.example"},
        ),
        (flt("ai_score", "NOT_HAS_PROPERTY"), {"dee@gamma.example"}),
        (flt("firstname", "CONTAINS_TOKEN", value="marie"), {"eve@beta.example"}),
        (
            flt("email", "CONTAINS_TOKEN", value="*@alpha.example"),
            {"ann@alpha.example", "cy@alpha.example"},
        ),
        (
            flt("firstname", "NOT_CONTAINS_TOKEN", value="marie"),
            {"ann@alpha.example", "bob@beta.example", "cy@alpha.example", "dee@gamma.example"},
        ),
        (
            flt("hs_analytics_last_visit_timestamp", "GTE", value="1709251200000"),
            {"cy@alpha.example", "dee@gamma.example", "eve@beta.example"},
        ),
    ],
)
def test_filter_operator_selects_expected_records(search_api, filter_body, expected):
    assert set(emails(search(search_api, filter_body))) == expected


def test_filter_groups_are_ored_and_filters_in_a_group_anded(search_api):
    body = {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                    {"propertyName": "ai_score", "operator": "HAS_PROPERTY"},
                ]
            },
            {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Eve Marie"}]},
        ]
    }
    assert set(emails(search(search_api, body))) == {"ann@alpha.example", "eve@beta.example"}


def test_sort_descending_by_number_puts_missing_values_last(search_api):
    body = {"sorts": [{"propertyName": "ai_score", "direction": "DESCENDING"}]}
    assert emails(search(search_api, body)) == [
        "eve@beta.example",
        "cy@alpha.example",
        "bob@beta.example",
        "ann@alpha.example",
        "dee@gamma.example",
    ]


def test_sort_given_as_plain_string_sorts_ascending(search_api):
    assert emails(search(search_api, {"sorts": ["firstname"]}))[:2] == [
        "ann@alpha.example",
        "bob@beta.example",
    ]


def test_query_matches_default_searchable_properties_by_prefix(search_api):
    assert set(emails(search(search_api, {"query": "bet"}))) == {
        "bob@beta.example",
        "eve@beta.example",
    }


def test_paging_with_after_returns_total_and_next_cursor(search_api):
    first = search_api.post(
        "/crm/v3/objects/contacts/search", {"limit": 2, "sorts": ["email"]}
    ).json()
    assert first["total"] == 5 and first["paging"] == {"next": {"after": "2"}}
    last = search_api.post(
        "/crm/v3/objects/contacts/search", {"limit": 2, "sorts": ["email"], "after": "4"}
    ).json()
    assert len(last["results"]) == 1 and "paging" not in last


def test_results_carry_requested_and_always_returned_properties(search_api):
    result = search(search_api, flt("firstname", "EQ", value="Cy")).json()["results"][0]
    assert set(result["properties"]) == {"email", "createdate", "hs_object_id", "lastmodifieddate"}


def test_limit_above_200_answers_400(search_api):
    response = search_api.post("/crm/v3/objects/contacts/search", {"limit": 201})
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"


def test_paging_past_10000_results_answers_400(search_api):
    response = search_api.post("/crm/v3/objects/contacts/search", {"limit": 100, "after": "10000"})
    assert response.status_code == 400
    assert "10000" in response.json()["message"]


def test_unknown_operator_and_too_many_groups_answer_400(search_api):
    assert search(search_api, flt("email", "LIKE", value="x")).status_code == 400
    groups = {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 6
    }
    assert search(search_api, groups).status_code == 400


def test_filter_on_unknown_property_answers_400(search_api):
    assert search(search_api, flt("not_a_property", "EQ", value="1")).status_code == 400


def test_more_than_one_sort_answers_400(search_api):
    assert search(search_api, {"sorts": ["email", "firstname"]}).status_code == 400
