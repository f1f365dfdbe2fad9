from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from core.embeddings import get_embedder
from core.schemas import RecordValidationError
from core.store import Store, TenantRequiredError

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "lancedb"))


def lead(tenant, i, updated_at=NOW, **fields):
    return {
        "tenant_id": tenant,
        "crm": "salesforce",
        "crm_id": f"00Q{i:07d}",
        "updated_at": updated_at,
        "email": f"p{i}@example.com",
        **fields,
    }


def note(tenant, crm_id, body, updated_at=NOW, **fields):
    return {
        "tenant_id": tenant,
        "crm": "hubspot",
        "crm_id": crm_id,
        "updated_at": updated_at,
        "body": body,
        **fields,
    }


def test_upserting_10k_records_twice_changes_nothing_the_second_time(store):
    records = [lead("t1", i, custom={"rank": i}) for i in range(10_000)]
    first = store.upsert("t1", "lead", records)
    assert (first.inserted, first.updated) == (10_000, 0)
    before = store.to_arrow("t1", "lead").sort_by("crm_id")
    second = store.upsert("t1", "lead", records)
    assert (second.inserted, second.updated, second.skipped_stale) == (0, 0, 10_000)
    after = store.to_arrow("t1", "lead").sort_by("crm_id")
    assert store.count("t1", "lead") == 10_000
    assert after.equals(before)


def test_an_older_updated_at_never_overwrites_a_newer_one(store):
    store.upsert("t1", "lead", [lead("t1", 1, updated_at=NOW, company="Newer Inc")])
    late = store.upsert(
        "t1", "lead", [lead("t1", 1, updated_at=NOW - timedelta(hours=1), company="Older Inc")]
    )
    assert (late.updated, late.skipped_stale) == (0, 1)
    assert store.get("t1", "lead", "00Q0000001")["company"] == "Newer Inc"
    newer = store.upsert(
        "t1", "lead", [lead("t1", 1, updated_at=NOW + timedelta(seconds=1), company="Newest Inc")]
    )
    assert newer.updated == 1
    assert store.get("t1", "lead", "00Q0000001")["company"] == "Newest Inc"


def test_within_one_batch_the_newest_version_of_an_id_wins(store):
    batch = [
        lead("t1", 7, updated_at=NOW + timedelta(minutes=m), company=f"v{m}") for m in (2, 5, 1)
    ]
    store.upsert("t1", "lead", batch)
    assert store.count("t1", "lead") == 1
    assert store.get("t1", "lead", "00Q0000007")["company"] == "v5"


def test_tenant_a_never_sees_tenant_b_rows(store):
    store.upsert("tenant-a", "lead", [lead("tenant-a", i) for i in range(5)])
    store.upsert("tenant-b", "lead", [lead("tenant-b", i, company="B only") for i in range(3)])
    assert store.count("tenant-a", "lead") == 5
    assert store.count("tenant-b", "lead") == 3
    rows_a = store.query("tenant-a", "lead")
    assert {r["tenant_id"] for r in rows_a} == {"tenant-a"}
    assert all(r["company"] != "B only" for r in rows_a)
    # Same CRM id in both tenants: each tenant gets its own row.
    assert store.get("tenant-a", "lead", "00Q0000001")["tenant_id"] == "tenant-a"
    assert store.get("tenant-b", "lead", "00Q0000001")["tenant_id"] == "tenant-b"


@pytest.mark.parametrize("tenant", [None, "", "x' OR '1'='1", 42])
def test_reads_and_writes_without_a_valid_tenant_are_programming_errors(store, tenant):
    store.upsert("t1", "lead", [lead("t1", 1)])
    with pytest.raises(TenantRequiredError):
        store.query(tenant, "lead")
    with pytest.raises(TenantRequiredError):
        store.get(tenant, "lead", "00Q0000001")
    with pytest.raises(TenantRequiredError):
        store.search_notes_text(tenant, "anything")
    with pytest.raises(TenantRequiredError):
        store.upsert(tenant, "lead", [lead("t1", 2)])


def test_a_write_carrying_another_tenants_record_is_refused_and_writes_nothing(store):
    with pytest.raises(ValueError, match="belongs to tenant 'b'"):
        store.upsert("a", "lead", [lead("a", 1), lead("b", 2)])
    assert store.count("a", "lead") == 0
    assert store.count("b", "lead") == 0


def test_one_invalid_record_fails_the_batch_and_writes_nothing(store):
    with pytest.raises(RecordValidationError, match="00Q0000002: email"):
        store.upsert("t1", "lead", [lead("t1", 1), lead("t1", 2, email="broken")])
    assert store.count("t1", "lead") == 0


def test_delete_by_id_removes_only_that_tenants_rows(store):
    store.upsert("a", "lead", [lead("a", i) for i in range(3)])
    store.upsert("b", "lead", [lead("b", i) for i in range(3)])
    assert store.delete("a", "lead", ["00Q0000001", "00Q0000099"]) == 1
    assert store.get("a", "lead", "00Q0000001") is None
    assert store.get("b", "lead", "00Q0000001") is not None
    assert store.count("a", "lead") == 2


FILLER = [
    "Left a voicemail about the quarterly business review.",
    "Sent the onboarding checklist and the training calendar.",
    "Discussed headcount plans for the support team next year.",
    "Shared the case study from the logistics customer.",
    "Rescheduled the demo to Thursday afternoon.",
]


def test_full_text_and_vector_queries_each_find_a_planted_note(store):
    notes = [note("t1", f"n{i}", text) for i, text in enumerate(FILLER)]
    notes.append(
        note(
            "t1",
            "planted",
            "Procurement says Vantora quoted 30% less; they want a "
            "discount before the security review.",
        )
    )
    store.upsert("t1", "note", notes)
    store.upsert("t2", "note", [note("t2", "other-tenant", "Vantora came up here as well.")])

    by_text = store.search_notes_text("t1", "Vantora", limit=3)
    assert [hit["crm_id"] for hit in by_text] == ["planted"]

    by_meaning = store.search_notes_vector("t1", "the competitor is cheaper than us", limit=3)
    assert by_meaning[0]["crm_id"] == "planted"
    assert all(hit["tenant_id"] == "t1" for hit in by_meaning)


def test_only_new_or_changed_notes_are_embedded(store):
    first = store.upsert("t1", "note", [note("t1", "a", "first body"), note("t1", "b", "other")])
    assert first.embedded == 2
    again = store.upsert(
        "t1",
        "note",
        [note("t1", "a", "first body"), note("t1", "b", "changed", updated_at=NOW + timedelta(1))],
    )
    assert (again.embedded, again.updated, again.skipped_stale) == (1, 1, 1)
    stored = store.to_arrow("t1", "note", filters={"crm_id": "b"}, columns=["vector"])
    vector = np.asarray(stored.column("vector")[0].as_py(), dtype=np.float32)
    assert np.allclose(vector, get_embedder().embed_one("changed"), atol=1e-5)


def test_filters_on_unknown_columns_are_rejected(store):
    store.upsert("t1", "lead", [lead("t1", 1)])
    with pytest.raises(ValueError, match="cannot filter on 'nope'"):
        store.query("t1", "lead", filters={"nope": 1})


_FEATURE_SCHEMA = pa.schema(
    [("tenant_id", pa.string()), ("crm_id", pa.string()), ("kind", pa.string()),
     ("value", pa.string())]
)  # fmt: skip


def test_feature_tables_put_replace_read_and_delete_within_one_tenant(tmp_path):
    store = Store(str(tmp_path / "db"))
    rows = [{"tenant_id": "t1", "crm_id": "a", "kind": "card", "value": "one"},
            {"tenant_id": "t1", "crm_id": "b", "kind": "card", "value": "two"}]  # fmt: skip
    assert store.put_rows("t1", "cards", _FEATURE_SCHEMA, rows, keys=["crm_id", "kind"]) == 2
    store.put_rows(
        "t1", "cards", _FEATURE_SCHEMA, [{**rows[0], "value": "three"}], ["crm_id", "kind"]
    )
    store.append_rows("t2", "cards", _FEATURE_SCHEMA, [{**rows[0], "tenant_id": "t2"}])
    got = sorted(store.read_rows("t1", "cards", _FEATURE_SCHEMA), key=lambda r: r["crm_id"])
    assert [(r["crm_id"], r["value"]) for r in got] == [("a", "three"), ("b", "two")]
    assert store.read_rows("t1", "cards", _FEATURE_SCHEMA, {"crm_id": ["b"]})[0]["value"] == "two"
    assert store.delete_rows("t1", "cards", _FEATURE_SCHEMA, {"crm_id": "a"}) == 1
    assert len(store.read_rows("t2", "cards", _FEATURE_SCHEMA)) == 1
    with pytest.raises(ValueError, match="belong to tenant"):
        store.put_rows("t1", "cards", _FEATURE_SCHEMA, [{**rows[0], "tenant_id": "t2"}], ["crm_id"])
    with pytest.raises(ValueError, match="not a column"):
        store.read_rows("t1", "cards", _FEATURE_SCHEMA, {"nope": 1})
    assert store.erase_record_history("t1", ["b"]) == 1


def test_memo_rebuilds_after_a_write_and_answers_stale_only_when_allowed(store):
    store.upsert("acme", "lead", [lead("acme", 1)])
    builds = []

    def count_leads():
        builds.append(1)
        return store.count("acme", "lead")

    assert store.memo("acme", ("n",), ["leads"], count_leads) == 1
    assert store.memo("acme", ("n",), ["leads"], count_leads) == 1 and len(builds) == 1
    store.upsert("acme", "lead", [lead("acme", 2)])
    with store.stale_ok() as served:
        assert store.memo("acme", ("n",), ["leads"], count_leads) == 1, "kept value answered"
        # Built after a stale answer, so perhaps from it: kept as out of date too.
        assert store.memo("acme", ("other",), [], lambda: "derived") == "derived"
    assert served == [("acme", "n")] and len(builds) == 1
    assert store.memo("acme", ("n",), ["leads"], count_leads) == 2 and len(builds) == 2
    assert store.memo("acme", ("other",), [], lambda: "rebuilt") == "rebuilt"


def activity(tenant, i, opportunity_id, account_id):
    return {
        "tenant_id": tenant,
        "crm": "salesforce",
        "crm_id": f"00T{i:07d}",
        "updated_at": NOW,
        "type": "call",
        "occurred_at": NOW,
        "opportunity_id": opportunity_id,
        "account_id": account_id,
    }


def test_activities_are_looked_up_through_indexes_that_also_find_rows_added_later(store):
    store.upsert(
        "t1", "activity", [activity("t1", i, f"006{i % 7}", f"001{i % 3}") for i in range(70)]
    )
    table = store._table("activity")
    indexed = {column for index in table.list_indices() for column in index.columns}
    assert {"opportunity_id", "account_id"} <= indexed
    # Rows written after the index was built are found too, and tenants stay apart.
    store.upsert("t1", "activity", [activity("t1", i, "0060", None) for i in range(70, 80)])
    store.upsert("t2", "activity", [activity("t2", i, "0060", "0010") for i in range(5)])
    found = store.query("t1", "activity", filters={"opportunity_id": ["0060"]}, limit=None)
    assert len(found) == 10 + 10 and {r["tenant_id"] for r in found} == {"t1"}
    by_account = store.query("t1", "activity", filters={"account_id": ["0010"]}, limit=None)
    assert len(by_account) == 24


class _InterleavingEmbedder:
    """The real model, with a hook that lets other writes land while a batch is being embedded."""

    def __init__(self):
        self.model = get_embedder()
        self.during_next_embed = None

    def embed(self, texts):
        hook, self.during_next_embed = self.during_next_embed, None
        if hook is not None:
            hook()
        return self.model.embed(texts)

    def embed_one(self, text):
        return self.model.embed_one(text)


def test_vectors_of_an_older_embedding_model_are_made_again_and_newer_rows_are_kept(tmp_path):
    import lancedb

    from core.embeddings import MODEL_ID
    from core.store import TABLES

    embedder = _InterleavingEmbedder()
    store = Store(str(tmp_path / "lancedb"), embedder=embedder)  # type: ignore[arg-type]
    bodies = {f"N{i}": f"Pilot call {i}: security review passed, budget approved" for i in range(6)}
    store.upsert("t1", "note", [note("t1", i, b) for i, b in bodies.items()], unembedded={"N5"})
    store.upsert("t2", "note", [note("t2", "M1", "Another tenant's pilot call")])
    # As an upgrade finds them: vectors (here a made-up one) stamped with an older model's name.
    table = lancedb.connect(str(tmp_path / "lancedb")).open_table(TABLES["note"])
    older = [1.0] + [0.0] * 383
    table.update(where="embedding_model IS NOT NULL", values={"vector": older,
                                                              "embedding_model": "older-model"})  # fmt: skip

    def meanwhile():
        # While the refresh embeds: N1 changes (and is embedded with the current model as it is
        # stored); N2's person withdraws consent.
        store.upsert("t1", "note", [note("t1", "N1", "Changed: legal review",
                                         updated_at=NOW + timedelta(hours=1))])  # fmt: skip
        store.clear_note_vectors("t1", "crm_id", ["N2"])

    embedder.during_next_embed = meanwhile
    assert store.refresh_note_vectors("t1", limit=100) == (3, 0)
    rows = {r["crm_id"]: r for r in store.to_arrow("t1", "note").to_pylist()}
    for crm_id in ("N0", "N3", "N4"):
        assert rows[crm_id]["embedding_model"] == MODEL_ID
        expected = embedder.model.embed([bodies[crm_id]])[0]
        assert np.allclose(rows[crm_id]["vector"], expected, atol=1e-6)
    assert rows["N1"]["body"] == "Changed: legal review"
    assert np.allclose(rows["N1"]["vector"], embedder.model.embed(["Changed: legal review"])[0])
    assert rows["N2"]["vector"] is None and rows["N2"]["embedding_model"] is None
    assert rows["N5"]["vector"] is None and rows["N5"]["embedding_model"] is None
    other = store.to_arrow("t2", "note").to_pylist()[0]
    assert other["embedding_model"] == "older-model"  # another tenant's sweep does its own
    assert store.refresh_note_vectors("t1", limit=100) == (0, 0)
    assert store.refresh_note_vectors("t2", limit=100) == (1, 0)


def test_a_vector_refresh_goes_a_batch_at_a_time(tmp_path):
    import lancedb

    from core.store import TABLES

    store = Store(str(tmp_path / "lancedb"))
    store.upsert("t1", "note", [note("t1", f"N{i}", f"Discovery call {i}") for i in range(5)])
    table = lancedb.connect(str(tmp_path / "lancedb")).open_table(TABLES["note"])
    table.update(where="TRUE", values={"embedding_model": "older-model"})
    assert store.count_older_note_vectors("t1") == 5
    assert store.count_older_note_vectors("t2") == 0
    assert store.refresh_note_vectors("t1", limit=2) == (2, 3)
    assert store.refresh_note_vectors("t1", limit=2) == (2, 1)
    assert store.refresh_note_vectors("t1", limit=2) == (1, 0)
    assert store.refresh_note_vectors("t1", limit=0) == (0, 0)


def test_long_id_lists_are_filtered_after_the_scan_with_the_same_rows_as_a_where_clause(
    store, monkeypatch
):
    import core.store

    store.upsert("t1", "lead", [lead("t1", i, company=f"Co {i}") for i in range(30)])
    store.upsert("t2", "lead", [lead("t2", i) for i in range(30)])
    store.record_writes("t1", "Lead", [(f"00Q{i:07d}", "Score__c", str(i)) for i in range(30)])
    ids = [f"00Q{i:07d}" for i in range(0, 30, 3)] + ["00Q9999999"]

    def reads():
        return (
            sorted(r["crm_id"] for r in store.get_many("t1", "lead", ids)),
            store.to_arrow("t1", "lead", filters={"crm_id": ids}, columns=["company"])
            .sort_by("company")
            .to_pylist(),
            store.to_arrow("t1", "lead", filters={"crm_id": ids}, limit=4).num_rows,
            store.last_written("t1", "Lead", ids),
        )

    in_where = reads()
    monkeypatch.setattr(core.store, "IN_LIST_LIMIT", 3)
    after_scan = reads()
    assert after_scan == in_where
    assert in_where[0] == ids[:-1]
    assert in_where[1] == sorted(
        ({"company": f"Co {i}"} for i in range(0, 30, 3)), key=lambda r: r["company"]
    )
    assert in_where[2] == 4
    assert sorted(in_where[3]) == ids[:-1]
    with pytest.raises(ValueError, match="no column 'nope'"):
        store.to_arrow("t1", "lead", filters={"crm_id": ids}, columns=["nope"])


def test_a_table_written_in_many_small_pages_is_compacted_and_its_indexes_cover_every_row(store):
    from core.store import COMPACT_AT_FRAGMENTS

    for page in range(COMPACT_AT_FRAGMENTS + 5):
        rows = [activity("t1", page * 10 + i, f"006{i % 7}", "0010") for i in range(10)]
        store.upsert("t1", "activity", rows)
    table = store._table("activity")
    # The write that reached the threshold compacted (to one or two fragments); the five writes
    # after it each added one.
    assert table.stats()["fragment_stats"]["num_fragments"] <= 2 + 5
    assert store.count("t1", "activity") == (COMPACT_AT_FRAGMENTS + 5) * 10
    unindexed = {
        index.name: table.index_stats(index.name).num_unindexed_rows
        for index in table.list_indices()
    }
    assert unindexed and max(unindexed.values()) <= 5 * 10, unindexed
    found = store.query("t1", "activity", filters={"opportunity_id": ["0060"]}, limit=None)
    assert len(found) == sum(1 for i in range(10) if i % 7 == 0) * (COMPACT_AT_FRAGMENTS + 5)


def test_a_compaction_that_loses_a_race_fails_no_write(store, monkeypatch, caplog):
    from core.store import COMPACT_AT_FRAGMENTS

    caplog.set_level(logging.INFO, logger="core.store")
    store.upsert("t1", "lead", [lead("t1", 0)])
    table = store._table("lead")

    def conflict(*args, **kwargs):
        raise RuntimeError("lance error: Retryable commit conflict for version 9")

    monkeypatch.setattr(type(table), "optimize", conflict)
    for i in range(1, COMPACT_AT_FRAGMENTS + 3):
        store.upsert("t1", "lead", [lead("t1", i)])
    assert store.count("t1", "lead") == COMPACT_AT_FRAGMENTS + 3
    assert "compaction of leads left for a later write" in caplog.text
    monkeypatch.undo()
    store.upsert("t1", "lead", [lead("t1", 999)])
    assert store._table("lead").stats()["fragment_stats"]["num_fragments"] <= 2
