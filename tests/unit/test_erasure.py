from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.store import ERASURE_SCHEMA, subject_hash
from sync.erasure import forget

NOW = datetime(2026, 3, 1, tzinfo=UTC)
T = "hubspot-501"


def base(crm_id, **fields):
    return {"tenant_id": T, "crm": "hubspot", "crm_id": crm_id, "updated_at": NOW, **fields}


def seed(store):
    store.upsert(
        T,
        "lead",
        [
            base("L1", email="Dana.Reyes@Acme.io", first_name="Dana"),
            base("L2", email="sam@other.io", first_name="Sam"),
        ],
    )
    store.upsert(T, "note", [
        base("N1", body="Dana wants a pilot in March.", lead_id="L1"),
        base("N2", body="Forwarded the deck to dana.reyes@acme.io and her CFO.", lead_id="L2"),
        base("N3", body="Sam asked about SSO and audit logs.", lead_id="L2"),
    ])  # fmt: skip
    store.upsert(
        T,
        "activity",
        [
            base("A1", type="call", occurred_at=NOW, lead_id="L1"),
            base("A2", type="call", occurred_at=NOW, lead_id="L2"),
        ],
    )


def test_forgetting_by_email_removes_the_person_their_records_and_notes_quoting_them(services):
    store = services.store
    seed(store)
    (report,) = forget(services, "dana.reyes@acme.io", tenant_ids=[T])
    assert report.removed == {"lead": 1, "note": 2, "activity": 1}
    assert [r["crm_id"] for r in store.query(T, "lead")] == ["L2"]
    assert [r["crm_id"] for r in store.query(T, "note")] == ["N3"]
    assert [r["crm_id"] for r in store.query(T, "activity")] == ["A2"]
    assert store.search_notes_text(T, "pilot") == []
    assert all(hit["crm_id"] == "N3" for hit in store.search_notes_vector(T, "Dana pilot March"))


def test_erased_rows_do_not_survive_in_old_table_versions(services):
    store = services.store
    seed(store)
    forget(services, "L1", tenant_ids=[T])
    table = store._table("lead")
    versions = table.list_versions()
    assert len(versions) == 1
    assert "Dana" not in str(table.to_arrow().to_pylist())


def test_an_erased_person_is_not_synced_back_in_but_others_are(services):
    store = services.store
    seed(store)
    forget(services, "dana.reyes@acme.io", tenant_ids=[T])
    later = NOW + timedelta(days=1)
    result = store.upsert(
        T,
        "lead",
        [
            base("L1", email="dana.reyes@acme.io", updated_at=later),
            base("L3", email="new@acme.io", updated_at=later),
        ],
    )
    assert result.inserted == 1
    store.upsert(
        T, "note", [base("N9", body="Follow-up with Dana", lead_id="L1", updated_at=later)]
    )
    assert {r["crm_id"] for r in store.query(T, "lead")} == {"L2", "L3"}
    assert store.get(T, "note", "N9") is None


def test_the_erasure_log_names_the_subject_only_by_hash(services):
    store = services.store
    seed(store)
    forget(services, "Dana.Reyes@acme.io", tenant_ids=[T])
    log = store._system_table("erasures", ERASURE_SCHEMA).to_arrow().to_pylist()
    assert subject_hash("dana.reyes@acme.io") in {row["subject_hash"] for row in log}
    assert "dana" not in str(log).lower()


def test_forgetting_touches_only_the_named_tenant_and_refuses_an_empty_subject(services):
    store = services.store
    seed(store)
    store.upsert(
        "hubspot-777",
        "lead",
        [{**base("L1", email="dana.reyes@acme.io"), "tenant_id": "hubspot-777"}],
    )
    forget(services, "dana.reyes@acme.io", tenant_ids=[T])
    assert store.count("hubspot-777", "lead") == 1
    with pytest.raises(ValueError, match="email address or CRM id"):
        forget(services, "  ", tenant_ids=[T])
