from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.config import Config
from core.services import configure
from core.tenants import Tenant, Tokens
from sync.writeback import WRITEBACK_CHUNK, as_json, describe_plan, plan_writes, queue_writeback

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SF = "salesforce-00D5g000004ABCDEA2"
HS = "hubspot-62515"


@pytest.fixture
def services(tmp_path):
    built = configure(Config.for_demo(lancedb_uri=str(tmp_path / "db")))
    built.registry.save(
        Tenant(SF, "salesforce", SF.split("-")[1], "https://x", status="active"), Tokens("a")
    )
    built.registry.save(Tenant(HS, "hubspot", "62515", None, status="active"), Tokens("a"))
    yield built
    built.queue.stop()


def results(n, score=80, grade="Hot"):
    return {f"00Q{i:04d}": {"score": score, "grade": grade, "reasons": "Opened 9 emails",
                            "unknown_result": 1} for i in range(n)}  # fmt: skip


def test_results_map_to_the_manifest_fields_of_each_crm(services):
    sf = plan_writes(services, SF, "lead", results(2))
    assert {(w.object_name, w.field) for w in sf.writes} == {
        ("Lead", "Fieldwise_AI_Score__c"), ("Lead", "Fieldwise_AI_Grade__c"),
        ("Lead", "Fieldwise_AI_Reasons__c"),
    }  # fmt: skip
    hs = plan_writes(services, HS, "lead", results(1))
    assert {(w.object_name, w.field) for w in hs.writes} == {
        ("contacts", "fieldwise_ai_score"), ("contacts", "fieldwise_ai_grade"),
        ("contacts", "fieldwise_ai_reasons"),
    }  # fmt: skip
    assert sf.by_record("Lead")["00Q0000"] == {
        "Fieldwise_AI_Score__c": 80, "Fieldwise_AI_Grade__c": "Hot",
        "Fieldwise_AI_Reasons__c": "Opened 9 emails",
    }  # fmt: skip


def test_values_equal_to_the_last_write_cost_nothing(services):
    first = plan_writes(services, SF, "lead", results(10))
    services.store.record_writes(
        SF, "Lead", [(w.crm_id, w.field, w.new_json) for w in first.writes]
    )
    again = plan_writes(services, SF, "lead", results(10))
    assert again.writes == []
    assert again.unchanged == 30
    changed = results(10)
    changed["00Q0003"]["score"] = 55
    partial = plan_writes(services, SF, "lead", changed)
    assert [(w.crm_id, w.field, w.old_json, w.new_json) for w in partial.writes] == [
        ("00Q0003", "Fieldwise_AI_Score__c", "80", "55")
    ]


@pytest.mark.parametrize(
    ("policy", "edited_days_ago", "kept"),
    [
        ("keep_rep_edits", 1, True),
        ("keep_rep_edits", 30, False),
        ("only_if_empty", 30, True),
        ("always", 1, False),
    ],
)
def test_a_value_a_person_edited_after_our_write_is_treated_as_the_policy_says(
    services, policy, edited_days_ago, kept
):
    services.store.record_writes(
        SF, "Lead", [("00Q0001", "Fieldwise_AI_Grade__c", as_json("Warm"))]
    )
    edited_at = datetime.now(UTC) - timedelta(days=edited_days_ago)
    services.store.upsert(SF, "lead", [{
        "tenant_id": SF, "crm": "salesforce", "crm_id": "00Q0001", "updated_at": edited_at,
        "custom": {"Fieldwise_AI_Grade__c": "Cold"},
    }])  # fmt: skip
    plan = plan_writes(services, SF, "lead", {"00Q0001": {"grade": "Hot"}}, policy=policy)
    if kept:
        assert plan.writes == []
        assert plan.kept_human_edits == [("00Q0001", "Fieldwise_AI_Grade__c")]
    else:
        assert [w.new_json for w in plan.writes] == ['"Hot"']


def test_a_crm_value_that_still_matches_our_write_is_not_a_human_edit(services):
    services.store.record_writes(SF, "Lead", [("00Q0001", "Fieldwise_AI_Score__c", as_json(80))])
    services.store.upsert(SF, "lead", [{
        "tenant_id": SF, "crm": "salesforce", "crm_id": "00Q0001", "updated_at": NOW,
        "custom": {"Fieldwise_AI_Score__c": 80.0},
    }])  # fmt: skip
    plan = plan_writes(services, SF, "lead", {"00Q0001": {"score": 91}})
    assert [w.new_json for w in plan.writes] == ["91"]


def test_dry_run_listing_shows_old_and_new_per_field_in_a_stable_order(services):
    plan = plan_writes(
        services, HS, "opportunity", {"9": {"score": 12, "forecast_note": "At risk"}}
    )
    assert describe_plan(plan) == [
        {"object": "deals", "crm_id": "9", "field": "fieldwise_ai_forecast_note", "old": None,
         "new": '"At risk"'},
        {"object": "deals", "crm_id": "9", "field": "fieldwise_ai_score", "old": None, "new": "12"},
    ]  # fmt: skip


def test_audit_entries_and_the_write_ledger_go_with_an_erased_record(services):
    services.store.record_writes(SF, "Lead", [("00Q0001", "Fieldwise_AI_Score__c", "80")])
    services.store.append_audit(SF, [{"object_name": "Lead", "crm_id": "00Q0001",
                                      "field": "Fieldwise_AI_Score__c", "new_json": "80",
                                      "outcome": "written"}])  # fmt: skip
    assert services.store.audit(SF, crm_id="00Q0001")[0]["outcome"] == "written"
    assert services.store.erase_record_history(SF, ["00Q0001"]) == 2
    assert services.store.audit(SF) == []
    assert services.store.last_written(SF, "Lead", ["00Q0001"]) == {}


def test_writeback_is_queued_in_chunks_so_no_job_reads_a_whole_tenant(services, monkeypatch):
    queued = []

    def enqueue(func, tenant_id, kind, crm_ids, queue):
        queued.append((func, tenant_id, kind, len(crm_ids), queue))
        return f"job-{len(queued)}"

    monkeypatch.setattr(services.queue, "enqueue", enqueue)
    ids = [f"{i}" for i in range(2 * WRITEBACK_CHUNK + 1)]
    assert queue_writeback(services, HS, "lead", ids) == ["job-1", "job-2", "job-3"]
    assert [size for _, _, _, size, _ in queued] == [WRITEBACK_CHUNK, WRITEBACK_CHUNK, 1]
    assert {(func, tenant, kind, queue) for func, tenant, kind, _, queue in queued} == {
        ("sync.writeback.write_results", HS, "lead", "high")
    }
    assert queue_writeback(services, HS, "lead", []) == []
