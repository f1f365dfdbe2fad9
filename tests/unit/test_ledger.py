from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.store import Store
from scoring.ledger import LedgerEntry, ScoreLedger, Suggestion

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


def entry(crm_id, at, old, new, old_grade, new_grade, tenant="t1", stale=False):
    return LedgerEntry(
        tenant_id=tenant,
        kind="lead",
        crm_id=crm_id,
        scored_at=at,
        old_score=old,
        new_score=new,
        old_grade=old_grade,
        new_grade=new_grade,
        model_version="lead-2026.11.01-1",
        reasons="+ Clicked 5 emails",
        reasons_detail=[{"feature": "email_clicks", "evidence_ids": []}],
        next_step="Call today",
        segment="51-200",
        stale=stale,
    )


def test_the_ledger_keeps_every_change_and_answers_last_and_last_good(tmp_path):
    ledger = ScoreLedger(Store(str(tmp_path / "db")))
    ledger.record(
        [
            entry("L1", T0, None, 55, None, "Warm"),
            entry("L2", T0, None, 20, None, "Cold"),
            entry("L1", T0 + timedelta(hours=1), 55, 72, "Warm", "Hot"),
            entry("L1", T0 + timedelta(hours=2), 72, 72, "Hot", "Hot", stale=True),
            entry("X9", T0, None, 90, None, "Hot", tenant="t2"),
        ]
    )
    history = ledger.history("t1", "lead", ["L1"])
    assert [(e.old_score, e.new_score) for e in history] == [(None, 55), (55, 72), (72, 72)]
    assert history[1].crossing == "Warm->Hot" and history[0].crossing is None
    assert history[1].reasons_detail == [{"feature": "email_clicks", "evidence_ids": []}]
    last = ledger.last("t1", "lead")
    assert set(last) == {"L1", "L2"}, "another tenant's rows never show"
    assert last["L1"].stale and last["L1"].new_score == 72
    good = ledger.last_good("t1", "lead", ["L1", "L2"])
    assert not good["L1"].stale and good["L1"].scored_at == T0 + timedelta(hours=1)
    assert [e.crm_id for e in ledger.crossings("t1", "lead", into="Hot")] == ["L1"]
    assert ledger.crossings("t1", "lead", into="Cold") == []
    assert ledger.history("t1", "opportunity") == []


def test_reads_filter_by_time_and_by_many_ids(tmp_path):
    ledger = ScoreLedger(Store(str(tmp_path / "db")))
    ids = [f"L{i}" for i in range(1200)]
    ledger.record([entry(i, T0, None, 50, None, "Warm") for i in ids])
    ledger.record([entry("L5", T0 + timedelta(days=1), 50, 80, "Warm", "Hot")])
    assert len(ledger.last("t1", "lead", ids)) == 1200
    recent = ledger.history("t1", "lead", since=T0 + timedelta(hours=1))
    assert [e.crm_id for e in recent] == ["L5"]


def test_suggestions_are_kept_with_the_owner_at_the_time(tmp_path):
    ledger = ScoreLedger(Store(str(tmp_path / "db")))
    ledger.record_suggestions(
        [
            Suggestion("t1", "L1", T0, "rep-1", None, False, "covers EMEA", "Ana Ruiz", 0.2),
            Suggestion("t1", "L1", T0 + timedelta(hours=1), "rep-2", "rep-1", False, "kept", None,
                       manual_owner=True),
        ]
    )  # fmt: skip
    last = ledger.last_suggestions("t1", ["L1"])["L1"]
    assert last.manual_owner and last.suggested_owner == "rep-2"
    first = ledger.suggestions("t1")[0]
    assert first.display == "rep-1 - Ana Ruiz" and first.expected_conversion == 0.2
