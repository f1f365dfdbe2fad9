from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from core.schemas import SCHEMAS, RecordValidationError, dump_record, load_record

BASE = {
    "tenant_id": "sf-00D000000000001",
    "crm": "salesforce",
    "updated_at": "2026-03-01T10:00:00Z",
}

VALID = {
    "lead": {"crm_id": "00Q1", "email": "ana@acme.io", "company": "Acme", "employees": 120},
    "contact": {"crm_id": "0031", "first_name": "Ana", "account_id": "0011"},
    "account": {"crm_id": "0011", "name": "Acme", "annual_revenue": 5e6},
    "opportunity": {
        "crm_id": "0061",
        "name": "Acme renewal",
        "stage": "Proposal",
        "amount": 42000,
        "close_date": "2026-06-30",
        "competitors": ["Vantora"],
    },
    "activity": {
        "crm_id": "00T1",
        "type": "call",
        "occurred_at": "2026-03-01T09:00:00Z",
        "duration_minutes": 30,
        "direction": "outbound",
    },
    "note": {"crm_id": "0021", "body": "Budget approved by the CFO."},
    "user": {"crm_id": "0051", "first_name": "Sam", "email": "sam@seller.io", "territory": "EMEA"},
}


@pytest.mark.parametrize("entity", sorted(SCHEMAS))
def test_every_entity_loads_a_valid_record_with_keys_and_custom_fields(entity):
    record = load_record(entity, {**BASE, **VALID[entity], "custom": {"Tier__c": "Gold"}})
    assert record["tenant_id"] == BASE["tenant_id"]
    assert record["crm"] == "salesforce"
    assert record["updated_at"] == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert record["custom"] == {"Tier__c": "Gold"}


def test_opportunity_dates_and_lists_round_trip_through_dump():
    record = load_record("opportunity", {**BASE, **VALID["opportunity"]})
    assert record["close_date"] == date(2026, 6, 30)
    dumped = dump_record("opportunity", record)
    assert dumped["close_date"] == "2026-06-30"
    assert dumped["competitors"] == ["Vantora"]


def test_validation_error_names_entity_record_and_each_failing_field():
    bad = {**BASE, "crm_id": "00Q9", "email": "not-an-email", "employees": -3}
    with pytest.raises(RecordValidationError) as caught:
        load_record("lead", bad)
    message = str(caught.value)
    assert message.startswith("lead sf-00D000000000001/salesforce:00Q9: ")
    assert "email: Not a valid email address" in message
    assert "employees: " in message
    assert set(caught.value.messages) == {"email", "employees"}


@pytest.mark.parametrize(
    ("entity", "changes", "field"),
    [
        ("lead", {"crm": "pipedrive"}, "crm"),
        ("lead", {"updated_at": "2026-03-01T10:00:00"}, "updated_at"),
        ("lead", {"tenant_id": "bad tenant; drop"}, "tenant_id"),
        ("activity", {"type": "sms"}, "type"),
        ("account", {"name": ""}, "name"),
        ("opportunity", {"is_won": True, "is_closed": False}, "is_won"),
        ("note", {"body": None}, "body"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_named(entity, changes, field):
    with pytest.raises(RecordValidationError) as caught:
        load_record(entity, {**BASE, **VALID[entity], **changes})
    assert field in caught.value.messages


def test_unknown_entity_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown entity 'invoice'"):
        load_record("invoice", {})
