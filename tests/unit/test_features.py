from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from scoring_fixtures import TENANT, loaded_store

from core.store import Store
from sandbox.history_model import History
from scoring.features import MISSING, build_features, consent_blocked


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, History]:
    return loaded_store(Path(tmp_path_factory.mktemp("features")), 1500)


def _note(crm_id: str, lead_id: str, at: object, body: str) -> dict[str, object]:
    return {"tenant_id": TENANT, "crm": "salesforce", "crm_id": crm_id, "created_at": at,
            "updated_at": at, "body": body, "lead_id": lead_id}  # fmt: skip


SIGNAL = "Budget approved by the CFO; strong champion, go-live deadline agreed, pilot success."


def test_given_notes_after_prediction_time_when_building_then_they_are_ignored(loaded) -> None:
    store, history = loaded
    before = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    lead_id = before.frame.index[10]
    as_of = before.as_of[lead_id]
    store.upsert(TENANT, "note", [_note("note-late", lead_id, as_of + timedelta(hours=1), SIGNAL)])
    after = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    pd.testing.assert_series_equal(before.frame.loc[lead_id], after.frame.loc[lead_id])

    store.upsert(TENANT, "note", [_note("note-early", lead_id, as_of - timedelta(hours=1), SIGNAL)])
    earlier = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    assert (
        earlier.frame.loc[lead_id, "buying_signals"] > before.frame.loc[lead_id, "buying_signals"]
    )
    assert "note-early" in earlier.evidence[lead_id]["buying_signals"]
    assert "note-late" not in str(earlier.evidence[lead_id])


def test_given_converted_leads_when_building_then_conversion_activity_is_cut(loaded) -> None:
    store, history = loaded
    frame = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    converted = [x for x in history.leads if x.converted and x.key in frame.frame.index]
    assert converted
    for lead in converted[:50]:
        assert frame.as_of[lead.key] <= pd.Timestamp(lead.converted_at)


def test_given_outcome_fields_when_building_then_none_is_a_feature(loaded) -> None:
    store, history = loaded
    leads = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    opps = build_features(store, TENANT, "opportunity", as_of=history.now, for_training=True)
    forbidden = {"status", "is_converted", "converted_at", "converted_contact_id",
                 "converted_opportunity_id", "account_id", "account_key", "stage", "is_won",
                 "is_closed", "close_date", "updated_at", "crm_id"}  # fmt: skip
    assert not forbidden & set(leads.frame.columns)
    assert not forbidden & set(opps.frame.columns)
    assert set(leads.labels.unique()) == {0.0, 1.0}


def test_given_categorical_fields_when_building_then_they_are_strings_without_nan(loaded) -> None:
    store, history = loaded
    frame = build_features(store, TENANT, "lead", as_of=history.now)
    assert {"industry", "source", "region", "custom:Tech_Stack__c"} <= set(frame.cat_features)
    for name in frame.cat_features:
        assert frame.frame[name].map(type).eq(str).all(), name
    assert (frame.frame["industry"] != MISSING).any()
    assert list(frame.segments.columns) == ["region", "segment", "source"]


def test_given_excluded_fields_when_building_then_they_and_derived_features_are_gone(
    loaded,
) -> None:
    store, history = loaded
    frame = build_features(
        store, TENANT, "lead", as_of=history.now, excluded_fields=("region", "Tech_Stack__c")
    )
    assert "region" not in frame.frame
    assert "owner_territory_match" not in frame.frame
    assert "custom:Tech_Stack__c" not in frame.frame
    assert "region" in frame.segments  # fairness still reports by region


def test_given_consent_opt_out_when_building_then_record_is_excluded(loaded) -> None:
    store, history = loaded
    lead = store.get(TENANT, "lead", history.leads[3].key)
    assert lead is not None and not consent_blocked(lead)
    lead["custom"] = {**lead["custom"], "HasOptedOutProcessing": True}
    lead["updated_at"] = lead["updated_at"] + timedelta(seconds=1)
    store.upsert(TENANT, "lead", [lead])
    assert consent_blocked(store.get(TENANT, "lead", lead["crm_id"]) or {})
    frame = build_features(store, TENANT, "lead", as_of=history.now)
    assert lead["crm_id"] not in frame.frame.index
    assert frame.info["consent_blocked"] == 1
    assert consent_blocked({"crm": "hubspot", "custom": {"no_profiling": "true"}})
    assert not consent_blocked({"crm": "hubspot", "custom": {"no_profiling": "false"}})
