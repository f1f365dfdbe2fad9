"""Contract: SOQL parsing, evaluation, paging and errors match what the query resource answers."""

from __future__ import annotations

import re
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

from sandbox.salesforce.errors import SalesforceError  # noqa: E402
from sandbox.salesforce.soql import BoolOp, Comparison, DateLiteral, date_range, parse  # noqa: E402


def test_tokenizer_and_parser_build_the_condition_tree():
    query = parse(
        "SELECT Id, Owner.Name FROM Lead WHERE (Status = 'It\\'s' OR Rating != null)"
        " AND NOT Company LIKE 'Ac%' ORDER BY CreatedDate DESC NULLS LAST LIMIT 5 OFFSET 2"
    )
    assert [f.path for f in query.fields] == [["Id"], ["Owner", "Name"]]
    assert isinstance(query.where, BoolOp) and query.where.op == "AND"
    inner = query.where.items[0]
    assert inner.op == "OR" and inner.items[0].value == "It's"
    assert query.where.items[1].op == "NOT"
    assert query.order[0].descending and query.order[0].nulls_last
    assert (query.limit, query.offset) == (5, 2)


def test_parser_reads_literals():
    query = parse(
        "SELECT Id FROM Lead WHERE CreatedDate > 2026-01-02T03:04:05Z AND"
        " ConvertedDate = 2026-01-02 AND NumberOfEmployees IN (1, 2.5) AND"
        " CreatedDate = LAST_N_DAYS:7 AND IsConverted = TRUE"
    )
    values = [c.value for c in query.where.items]
    assert values[0] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert values[1] == date(2026, 1, 2)
    assert values[2] == [1, 2.5]
    assert values[3] == DateLiteral("LAST_N_DAYS", 7)
    assert values[4] is True
    assert isinstance(query.where.items[0], Comparison)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT FROM Lead",
        "SELECT Id Lead",
        "SELECT Id FROM Lead WHERE",
        "SELECT Id FROM Lead WHERE A = 1 AND B = 2 OR C = 3",
        "SELECT Id FROM Lead WHERE Name = 'open",
        "SELECT Id FROM Lead LIMIT -1",
        "SELECT Id FROM Lead WHERE Name = @x",
    ],
)
def test_malformed_queries_raise_malformed_query(text):
    with pytest.raises(SalesforceError) as info:
        parse(text)
    assert info.value.code == "MALFORMED_QUERY" and info.value.status == 400


def test_error_message_points_at_row_and_column():
    with pytest.raises(SalesforceError) as info:
        parse("SELECT Id FROM Lead WHERE A = 1 AND B = 2 OR C = 3")
    assert info.value.message.endswith("ERROR at Row:1:Column:43\nunexpected token: 'OR'")


def test_relative_date_ranges():
    today = date(2026, 11, 22)  # a Sunday
    assert date_range(DateLiteral("TODAY"), today) == (today, date(2026, 11, 23))
    assert date_range(DateLiteral("LAST_N_DAYS", 3), today) == (
        date(2026, 11, 19),
        date(2026, 11, 23),
    )
    assert date_range(DateLiteral("THIS_MONTH"), today) == (date(2026, 11, 1), date(2026, 12, 1))
    assert date_range(DateLiteral("THIS_WEEK"), today) == (today, date(2026, 11, 29))


@pytest.fixture(scope="module")
def seeded(sf_api):
    account = sf_api.create("Account", Name="Soql Corp")
    contacts = []
    for n in range(5):
        contacts.append(
            sf_api.create(
                "Contact",
                LastName=f"Soql{n}",
                FirstName=f"F{n}",
                AccountId=account if n < 3 else None,
                Email=f"soql{n}@example.com" if n != 4 else None,
                Title="O'Brien" if n == 2 else "Eng",
            )
        )
    return account, contacts


def q(sf_api, text, endpoint="query"):
    return sf_api.get(endpoint, params={"q": text})


def test_where_with_and_or_not_like_in(sf_api, seeded):
    body = q(
        sf_api,
        "SELECT LastName FROM Contact WHERE (LastName LIKE 'soql%' AND NOT"
        " LastName IN ('Soql0', 'Soql1')) AND (Email != null OR Title = 'Eng')"
        " ORDER BY LastName",
    ).json()
    assert [r["LastName"] for r in body["records"]] == ["Soql2", "Soql3", "Soql4"]
    escaped = q(sf_api, "SELECT LastName FROM Contact WHERE Title = 'O\\'Brien'").json()
    assert [r["LastName"] for r in escaped["records"]] == ["Soql2"]


def test_parent_relationship_fields_are_nested(sf_api, seeded):
    account, _ = seeded
    body = q(
        sf_api,
        "SELECT LastName, Account.Name, Owner.Name FROM Contact WHERE LastName LIKE"
        " 'Soql%' ORDER BY LastName",
    ).json()
    first, last = body["records"][0], body["records"][-1]
    assert first["Account"]["Name"] == "Soql Corp"
    assert first["Account"]["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{account}",
    }
    assert first["Owner"]["Name"] == "Fieldwise Integration"
    assert last["Account"] is None


def test_order_by_nulls_first_and_last(sf_api, seeded):
    asc = q(
        sf_api,
        "SELECT LastName FROM Contact WHERE LastName LIKE 'Soql%' ORDER BY Email"
        " NULLS FIRST, LastName",
    ).json()["records"]
    assert asc[0]["LastName"] == "Soql4"
    desc = q(
        sf_api,
        "SELECT LastName FROM Contact WHERE LastName LIKE 'Soql%' ORDER BY Email DESC NULLS LAST",
    ).json()["records"]
    assert [r["LastName"] for r in desc] == ["Soql3", "Soql2", "Soql1", "Soql0", "Soql4"]


def test_count_limit_offset_and_date_literals(sf_api, seeded):
    count = q(sf_api, "SELECT COUNT() FROM Contact WHERE LastName LIKE 'Soql%'").json()
    assert count == {"totalSize": 5, "done": True, "records": []}
    page = q(
        sf_api,
        "SELECT LastName FROM Contact WHERE LastName LIKE 'Soql%' ORDER BY LastName"
        " LIMIT 2 OFFSET 1",
    ).json()
    assert [r["LastName"] for r in page["records"]] == ["Soql1", "Soql2"]
    today = q(
        sf_api, "SELECT COUNT() FROM Contact WHERE LastName LIKE 'Soql%' AND CreatedDate = TODAY"
    ).json()
    assert today["totalSize"] == 5
    yesterday = q(sf_api, "SELECT COUNT() FROM Contact WHERE CreatedDate < YESTERDAY").json()
    assert yesterday["totalSize"] == 0


def test_unknown_column_is_invalid_field_with_documented_message(sf_api):
    response = q(sf_api, "SELECT Id, Nope FROM Lead")
    assert response.status_code == 400
    error = response.json()[0]
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Nope' on entity 'Lead'" in error["message"]
    assert "ERROR at Row:1:Column:12" in error["message"]


def test_unknown_object_is_invalid_type(sf_api):
    response = q(sf_api, "SELECT Id FROM Gadget__c")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_TYPE"


def test_wrong_literal_type_is_invalid_field(sf_api):
    response = q(sf_api, "SELECT Id FROM Lead WHERE CreatedDate > 2026-01-01")
    assert response.status_code == 400
    assert "must be of type dateTime" in response.json()[0]["message"]


def test_bad_soql_answers_malformed_query(sf_api):
    response = q(sf_api, "SELECT Id FROM Lead WHERE")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_query_pages_with_next_records_url_at_2000(sf_api, sf_sandbox):
    obj = sf_sandbox.schema.object("Task")
    rows = []
    ids = sf_sandbox.engine.ids.make(obj.key_prefix, 4100)
    for record_id in ids:
        record = sf_sandbox.engine.blank_record(obj)
        record.update({"Id": record_id, "Subject": "bulk", "IsDeleted": False})
        rows.append((record_id, record))
    sf_sandbox.state.store.put_many("Task", rows)
    first = q(sf_api, "SELECT Id FROM Task WHERE Subject = 'bulk'").json()
    assert first["totalSize"] == 4100 and first["done"] is False and len(first["records"]) == 2000
    assert re.fullmatch(
        r"/services/data/v62\.0/query/01g[0-9A-Za-z]+-2000", first["nextRecordsUrl"]
    )
    second = sf_api.get(first["nextRecordsUrl"]).json()
    assert len(second["records"]) == 2000 and second["nextRecordsUrl"].endswith("-4000")
    third = sf_api.get(second["nextRecordsUrl"]).json()
    assert third["done"] is True and "nextRecordsUrl" not in third and len(third["records"]) == 100
    seen = {r["Id"] for page in (first, second, third) for r in page["records"]}
    assert seen == set(ids)
    bad = sf_api.get("/services/data/v62.0/query/01gNOPE-2000")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_batch_size_header_shrinks_pages(sf_api):
    body = sf_api.get(
        "query",
        params={"q": "SELECT Id FROM Task WHERE Subject = 'bulk'"},
        headers={"Sforce-Query-Options": "batchSize=500"},
    ).json()
    assert len(body["records"]) == 500 and body["nextRecordsUrl"].endswith("-500")


def test_query_all_includes_deleted_records(sf_api):
    lead_id = sf_api.create("Lead", LastName="Gone", Company="QA")
    sf_api.delete(f"sobjects/Lead/{lead_id}")
    text = f"SELECT Id, IsDeleted FROM Lead WHERE Id = '{lead_id}'"
    assert q(sf_api, text).json()["totalSize"] == 0
    everything = q(sf_api, text, "queryAll").json()
    assert everything["records"][0]["IsDeleted"] is True
