from __future__ import annotations

import json
from pathlib import Path

import pytest
from scoring_fixtures import FAST, TENANT, loaded_store

from scoring.features import build_features
from scoring.registry import CatBoostModel, ModelRegistry
from scoring.rules import fit_rules
from scoring.training import fit, train


@pytest.fixture(scope="module")
def registry_setup(tmp_path_factory: pytest.TempPathFactory):
    store, history = loaded_store(Path(tmp_path_factory.mktemp("registry")), 2000)
    report = train(store, TENANT, "lead", task_type="CPU", as_of=history.now, params=FAST)
    return store, history, report


def test_given_a_worse_model_when_registering_then_it_is_kept_but_not_promoted(
    registry_setup,
) -> None:
    store, history, first = registry_setup
    registry = ModelRegistry(store)
    frame = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    holdout = json.loads(store.get_models(TENANT, "lead")[0]["holdout_ids_json"])
    # A rule table learned from only the oldest 100 outcomes is much weaker than CatBoost.
    oldest = frame.as_of.sort_values().index[:100]
    weak = fit_rules(frame.subset(oldest))
    outcome = registry.register(TENANT, "lead", weak, holdout)
    assert outcome["promoted"] is False
    assert outcome["comparison"]["against"] == first["model_version"]
    assert outcome["comparison"]["auc_new"] < outcome["comparison"]["auc_current"]
    assert registry.current(TENANT, "lead").version == first["model_version"]
    listed = registry.versions(TENANT, "lead")
    assert [v["version"] for v in listed][-1] == outcome["version"]
    assert listed[-1]["promoted"] is False and listed[-1]["rule_based"] is True


def test_given_a_better_model_when_registering_then_it_is_promoted_and_rollback_restores(
    registry_setup,
) -> None:
    store, history, first = registry_setup
    registry = ModelRegistry(store)
    holdout = json.loads(store.get_models(TENANT, "lead")[0]["holdout_ids_json"])
    current = registry.current(TENANT, "lead")
    assert isinstance(current, CatBoostModel)
    # A model without the strongest fields, and one with them, on the same holdout.
    frame = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    crippled = build_features(
        store, TENANT, "lead", as_of=history.now, for_training=True,
        excluded_fields=("source", "title", "custom:Budget_Confirmed__c", "email_clicks",
                         "page_visits", "form_fills", "industry"),
    )  # fmt: skip
    weak_model, _, _ = fit(crippled, task_type="CPU", params=FAST)
    store.set_current_model(TENANT, "lead", first["model_version"])
    strong_model, _, _ = fit(frame, task_type="CPU", params=FAST)
    # The weak one while a strong one is current: kept, not promoted.
    assert registry.register(TENANT, "lead", weak_model, holdout)["promoted"] is False
    # The strong one while the weak one is current: promoted.
    weak_version = weak_model.version
    store.set_current_model(TENANT, "lead", weak_version)
    outcome = registry.register(TENANT, "lead", strong_model, holdout)
    assert outcome["promoted"] is True
    assert registry.current(TENANT, "lead").version == strong_model.version
    assert registry.rollback(TENANT, "lead") == weak_version
    assert registry.current(TENANT, "lead").version == weak_version
    assert registry.rollback(TENANT, "lead") == first["model_version"]
    with pytest.raises(LookupError):
        registry.rollback(TENANT, "lead")


def test_given_another_tenant_when_asking_then_it_sees_no_models(registry_setup) -> None:
    store, _, _ = registry_setup
    registry = ModelRegistry(store)
    assert registry.current("other-tenant", "lead") is None
    assert registry.versions("other-tenant", "lead") == []
