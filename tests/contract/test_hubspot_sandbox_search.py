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


# --------------------------------------------------------------------------------------------------
# Keyset pages answered from the index


def _random_window(rng, name, values):
    """Range filters on ``name`` as a paging client (or an odd one) would send them."""
    pick = lambda: str(rng.choice(values))  # noqa: E731
    shapes = [
        [("GT", pick())], [("GTE", pick())], [("EQ", pick())], [("LT", pick())], [("LTE", pick())],
        [("GT", pick()), ("LTE", pick())], [("GTE", pick()), ("LT", pick())],
        [("BETWEEN", pick(), pick())], [("GT", pick()), ("GTE", pick())],
    ]  # fmt: skip
    out = []
    for operator, value, *high in shapes[rng.integers(len(shapes))]:
        out.append({"propertyName": name, "operator": operator, "value": value}
                   | ({"highValue": high[0]} if high else {}))  # fmt: skip
    return out


def _random_others(rng):
    choices = [
        [],
        [{"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead", "customer"]}],
        [{"propertyName": "lifecyclestage", "operator": "NOT_HAS_PROPERTY"}],
        [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "opportunity"},
         {"propertyName": "ai_score", "operator": "HAS_PROPERTY"}],
        [{"propertyName": "lifecyclestage", "operator": "NEQ", "value": "lead"}],
    ]  # fmt: skip
    return choices[rng.integers(len(choices))]


def test_keyset_pages_from_the_index_equal_a_scan_of_every_record_through_writes(make_sandbox):
    """Windows of every range shape on a number and a datetime, ties, missing and unparsable
    values, ORed groups, odd pages and the 10,000 cap; records written between requests."""
    import numpy as np

    from sandbox.hubspot.objects import ChangeSource
    from sandbox.hubspot.search import SearchIndex, SearchRequest

    sb = make_sandbox(search_per_second=10_000)
    source = ChangeSource("INTEGRATION", "1")
    sb.registry.create("contacts", {"name": "ai_score", "label": "AI Score", "type": "number",
                                    "fieldType": "number", "groupName": "contactinformation"})  # fmt: skip
    rng = np.random.default_rng(5)
    scores = ["1", "2", "2", "3", "10", "10", "10", "55.5", "-4", ""]
    stages = ["lead", "customer", "opportunity", ""]
    ids = []
    for n in range(240):
        props = {"email": f"p{n}@example.com", "ai_score": str(rng.choice(scores)),
                 "lifecyclestage": str(rng.choice(stages))}  # fmt: skip
        ids.append(sb.repo.create("contacts", {k: v for k, v in props.items() if v}, source)["id"])

    class NoScans:
        """The repository, except that reading every record (the scan) is an error."""

        def all(self, *args):
            raise AssertionError("a keyset request was scanned")

        def snapshot(self, object_type):
            return sb.repo.snapshot(object_type)

        def version(self, object_type):
            return sb.repo.version(object_type)

    index = SearchIndex(NoScans())  # type: ignore[arg-type]
    stamps = [r["properties"]["lastmodifieddate"] for r in sb.repo.all("contacts")]
    for round_ in range(4):
        for _ in range(120):
            name, values = (("ai_score", [*scores[:-1], "7", "-100"]) if rng.random() < 0.6
                            else ("lastmodifieddate", stamps))  # fmt: skip
            window = _random_window(rng, name, values)
            groups = [{"filters": [*window, *_random_others(rng)]}
                      for _ in range(rng.integers(1, 4))]  # fmt: skip
            body = {"filterGroups": groups, "sorts": [{"propertyName": name}],
                    "limit": int(rng.integers(1, 30)), "after": int(rng.choice([0, 0, 3, 17]))}  # fmt: skip
            request = SearchRequest(sb.registry, "contacts", body)
            page, total, after = index.run(request)
            scanned, scan_total, scan_after = request.run(sb.repo.all("contacts"))
            assert [r["id"] for r in page] == [r["id"] for r in scanned], body
            assert (total, after) == (scan_total, scan_after), body
        # Writes between rounds: scores change (ties move), a record goes, one is created.
        for record_id in rng.choice(ids, 20, replace=False):
            if sb.repo.get("contacts", str(record_id)) is not None:
                sb.repo.update("contacts", str(record_id), {"ai_score": str(rng.choice(scores))},
                               source)  # fmt: skip
        sb.repo.archive("contacts", ids.pop(int(rng.integers(len(ids)))), source)
        ids.append(sb.repo.create("contacts", {"email": f"r{round_}@example.com",
                                               "ai_score": "2"}, source)["id"])  # fmt: skip
        stamps = [r["properties"]["lastmodifieddate"] for r in sb.repo.all("contacts")]


def test_requests_that_are_not_keyset_windows_are_scanned_as_before(search_api):
    from sandbox.hubspot.search import SearchRequest

    by_score = flt("ai_score", "GT", value="15")
    descending = {**by_score, "sorts": [{"propertyName": "ai_score", "direction": "DESCENDING"}]}
    queried = {**by_score, "sorts": [{"propertyName": "ai_score"}], "query": "eve"}
    unsorted = by_score
    registry = search_api.sb.registry
    for body in (descending, queried, unsorted):
        assert SearchRequest(registry, "contacts", body).keyset_window() is None
    assert emails(search(search_api, descending)) == [
        "eve@beta.example", "cy@alpha.example", "bob@beta.example"
    ]  # fmt: skip
    assert emails(search(search_api, queried)) == ["eve@beta.example"]
