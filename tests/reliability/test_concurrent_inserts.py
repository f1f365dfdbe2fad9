"""Processes that insert the same new records at the same moment leave each record once.

A webhook fetch and a backfill page, or two workers fetching one burst, can both find a record
absent and insert it. LanceDB lets both commits land unless the table declares its key
(``core.store.keyed_schema``); these tests race real processes on real tables.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from core.store import ERASURE_SCHEMA, KEY_COLUMNS, WRITE_LEDGER_SCHEMA, Store, arrow_schema

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ROUNDS = 8
PER_ROUND = 25


def _lead(round_index: int, i: int, writer: str) -> dict[str, Any]:
    return {
        "tenant_id": "t1",
        "crm": "hubspot",
        "crm_id": f"{round_index}-{i}",
        "updated_at": NOW,
        "company": f"written by {writer}",
    }


def _race_upserts(uri: str, writer: str, barrier: Any, results: Any) -> None:
    store = Store(uri)
    for round_index in range(ROUNDS):
        batch = [_lead(round_index, i, writer) for i in range(PER_ROUND)]
        barrier.wait(timeout=60)
        store.upsert("t1", "lead", batch)
    results.put(writer)


def _race_ledger(uri: str, writer: str, barrier: Any, results: Any) -> None:
    store = Store(uri)
    for round_index in range(ROUNDS):
        barrier.wait(timeout=60)
        store.record_writes(
            "t1",
            "Lead",
            [(f"{round_index}-{i}", "Fieldwise_Score__c", str(i)) for i in range(PER_ROUND)],
        )
    results.put(writer)


def _run_two(target: Any, uri: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(uri, name, barrier, results)) for name in ("a", "b")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    assert [p.exitcode for p in processes] == [0, 0], "a racing writer failed"
    assert sorted(results.get(timeout=5) for _ in processes) == ["a", "b"]


def test_two_processes_inserting_the_same_new_leads_leave_each_lead_once(tmp_path):
    uri = str(tmp_path / "lancedb")
    _run_two(_race_upserts, uri)

    rows = Store(uri).to_arrow("t1", "lead", columns=["crm_id"]).column("crm_id").to_pylist()
    assert len(rows) == ROUNDS * PER_ROUND
    assert len(set(rows)) == len(rows), f"{len(rows) - len(set(rows))} leads stored twice"


def test_two_processes_recording_the_same_new_writes_leave_one_ledger_row_each(tmp_path):
    uri = str(tmp_path / "lancedb")
    _run_two(_race_ledger, uri)

    store = Store(uri)
    ledger = store._system_table("write_ledger", WRITE_LEDGER_SCHEMA).to_arrow()
    keys = list(zip(*(ledger.column(c).to_pylist() for c in ("crm_id", "field")), strict=True))
    assert len(keys) == ROUNDS * PER_ROUND
    assert len(set(keys)) == len(keys), f"{len(keys) - len(set(keys))} ledger rows doubled"


def _unkeyed(schema: pa.Schema) -> pa.Schema:
    """The layout stores had before keys were declared: nullable columns, no key metadata."""
    return pa.schema([pa.field(f.name, f.type) for f in schema])


def test_a_store_from_before_keys_were_declared_is_keyed_on_first_use_and_keeps_its_rows(tmp_path):
    import lancedb

    uri = str(tmp_path / "lancedb")
    old = lancedb.connect(uri)
    lead_layout = _unkeyed(arrow_schema("lead"))
    stored = pa.Table.from_pylist(
        [
            {name: row.get(name) for name in lead_layout.names} | {"custom": "{}"}
            for row in (_lead(0, i, "old") for i in range(3))
        ],
        lead_layout,
    )
    old.create_table("leads", stored)
    old.create_table("erasures", schema=_unkeyed(ERASURE_SCHEMA))
    assert not old.open_table("leads").schema.field("crm_id").metadata

    store = Store(uri)
    result = store.upsert("t1", "lead", [_lead(0, 0, "new") | {"updated_at": NOW.replace(day=2)}])
    assert (result.inserted, result.updated) == (0, 1)
    store.record_erasure("t1", "someone@example.com", {"lead": 0})

    for name, key in (("leads", KEY_COLUMNS), ("erasures", ("tenant_id", "subject_hash"))):
        schema = lancedb.connect(uri).open_table(name).schema
        declared = [
            f.name
            for f in schema
            if (f.metadata or {}).get(b"lance-schema:unenforced-primary-key") == b"true"
        ]
        assert declared == list(key), name
        assert not any(schema.field(column).nullable for column in key)
    companies = {row["crm_id"]: row["company"] for row in store.to_arrow("t1", "lead").to_pylist()}
    assert companies == {"0-0": "written by new", "0-1": "written by old", "0-2": "written by old"}


def test_records_an_older_store_holds_twice_are_kept_once_the_later_copy(tmp_path):
    import lancedb

    uri = str(tmp_path / "lancedb")
    lead_layout = _unkeyed(arrow_schema("lead"))

    def rows(*leads: dict[str, Any]) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {name: lead.get(name) for name in lead_layout.names} | {"custom": "{}"}
                for lead in leads
            ],
            lead_layout,
        )

    old = lancedb.connect(uri)
    table = old.create_table("leads", rows(_lead(0, 0, "a"), _lead(0, 1, "a"), _lead(0, 2, "a")))
    table.add(rows(_lead(0, 0, "b"), _lead(0, 1, "b")))  # the race: both writers inserted 0-0, 0-1
    table.add(rows(_lead(0, 0, "c")))
    assert table.count_rows() == 6

    store = Store(uri)
    companies = sorted(
        (row["crm_id"], row["company"]) for row in store.to_arrow("t1", "lead").to_pylist()
    )
    assert companies == [("0-0", "written by c"), ("0-1", "written by b"), ("0-2", "written by a")]
    result = store.upsert("t1", "lead", [_lead(0, 1, "new") | {"updated_at": NOW.replace(day=2)}])
    assert (result.inserted, result.updated, result.skipped_stale) == (0, 1, 0)
    assert lancedb.connect(uri).open_table("leads").count_rows() == 3
