from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sync.jobs import store_records

T = "salesforce-00DCONSENT"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def record(crm_id, **fields):
    return {"tenant_id": T, "crm": "salesforce", "crm_id": crm_id, "updated_at": NOW, **fields}


def vector_of(services, note_id):
    row = services.store.to_arrow(T, "note", filters={"crm_id": note_id}, columns=["vector"])
    return row.column("vector")[0].as_py()


def test_notes_of_people_who_forbid_processing_are_stored_without_embeddings(services):
    store_records(services, T, "salesforce", "lead", [
        record("L1", email="opted.out@acme.io", custom={"HasOptedOutProcessing": True}),
        record("L2", email="fine@acme.io"),
    ])  # fmt: skip
    store_records(services, T, "salesforce", "note", [
        record("N1", body="Pricing call: wants a discount before renewal", lead_id="L1"),
        record("N2", body="Pricing call: budget approved for the pilot", lead_id="L2"),
    ])  # fmt: skip
    assert vector_of(services, "N1") is None
    assert vector_of(services, "N2") is not None
    assert {h["crm_id"] for h in services.store.search_notes_vector(T, "pricing call")} == {"N2"}
    assert {h["crm_id"] for h in services.store.search_notes_text(T, "pricing")} == {"N1", "N2"}


def test_a_person_who_withdraws_consent_loses_the_embeddings_of_their_notes(services):
    store_records(services, T, "salesforce", "lead", [record("L2", email="later@acme.io")])
    store_records(
        services, T, "salesforce", "note", [record("N2", body="Demo went well", lead_id="L2")]
    )
    assert vector_of(services, "N2") is not None
    withdrawn = record("L2", email="later@acme.io", updated_at=NOW + timedelta(days=1),
                       custom={"HasOptedOutProfiling": "true"})  # fmt: skip
    store_records(services, T, "salesforce", "lead", [withdrawn])
    assert vector_of(services, "N2") is None
    assert services.store.search_notes_vector(T, "demo went well") == []
