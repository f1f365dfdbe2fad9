from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scoring_fixtures import FAST, TENANT, loaded_store

from core.cli import main
from scoring.features import FeatureFrame, build_features
from scoring.registry import CatBoostModel, ModelRegistry
from scoring.rules import RuleBasedModel
from scoring.training import select_features, train, train_from_csv

REPORT_KEYS = {"auc", "pr_auc", "brier", "ece", "lift_top20", "n_train", "n_holdout",
               "model_version", "promoted", "calibration_table", "conversion_per_grade",
               "top_features", "sufficiency", "fairness", "drift_baseline", "rule_based"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("training"))
    store, history = loaded_store(root, 2500)
    report = train(store, TENANT, "lead", task_type="CPU", as_of=history.now, params=FAST)
    return store, history, report, root


def test_given_enough_history_when_training_then_report_has_the_promised_keys(trained) -> None:
    store, _, report, _ = trained
    assert set(report) >= REPORT_KEYS
    assert report["rule_based"] is False and report["promoted"] is True
    assert report["sufficiency"]["ok"] is True
    assert 0.6 < report["auc"] <= 1.0
    assert {"by_region", "by_segment", "by_source", "excluded_sensitive_fields"} <= set(
        report["fairness"]
    )
    assert [g["grade"] for g in report["conversion_per_grade"]] == ["Hot", "Warm", "Cold"]
    model = ModelRegistry(store).current(TENANT, "lead")
    assert isinstance(model, CatBoostModel)
    assert model.cat_features and set(model.cat_features) <= set(model.feature_names)


def test_given_a_report_when_checking_the_split_then_holdout_is_later_than_train(trained) -> None:
    store, history, report, _ = trained
    frame = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    holdout = json.loads(store.get_models(TENANT, "lead")[-1]["holdout_ids_json"])
    rest = frame.frame.index.difference(holdout)
    assert len(holdout) == report["n_holdout"]
    assert frame.as_of.loc[holdout].min() > frame.as_of.loc[rest].max()


def test_given_a_trained_model_when_scoring_then_contributions_add_up(trained) -> None:
    store, history, _, _ = trained
    model = ModelRegistry(store).current(TENANT, "lead")
    frame = build_features(store, TENANT, "lead", as_of=history.now).subset(
        [x.key for x in history.leads[-20:]]
    )
    probs = model.predict_proba(frame)
    contrib = model.contributions(frame)
    assert probs.shape == (20,) and ((probs > 0) & (probs < 1)).all()
    assert list(contrib.index) == list(frame.frame.index)
    logits = np.log(probs / (1 - probs))
    spread = logits - contrib.sum(axis=1).to_numpy()
    assert np.ptp(spread) < 1e-6  # the rest is one constant: scaled expected value + intercept


def test_given_300_leads_when_training_then_rule_based_fallback_names_the_failure(
    tmp_path: Path,
) -> None:
    store, history = loaded_store(tmp_path, 300)
    report = train(store, TENANT, "lead", task_type="CPU", as_of=history.now, params=FAST)
    assert report["rule_based"] is True
    failed = {r["name"] for r in report["sufficiency"]["requirements"] if not r["ok"]}
    assert "labelled_leads" in failed and "conversions" in failed
    assert "labelled_leads" in report["sufficiency"]["message"]
    assert "rule-based" in report["sufficiency"]["message"]
    model = ModelRegistry(store).current(TENANT, "lead")
    assert isinstance(model, RuleBasedModel) and model.rule_based
    frame = build_features(store, TENANT, "lead", as_of=history.now)
    assert model.predict_proba(frame).shape == (len(frame.frame),)
    assert report["rules"]


def test_given_a_field_only_filled_for_one_outcome_when_selecting_then_it_is_dropped() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    ids = [f"r{i}" for i in range(400)]
    frame = pd.DataFrame(
        {"signal": rng.normal(size=400) + y, "custom:Loss_Reason__c": np.where(y, "missing", "Price"),
         "constant": 1.0},
        index=ids,
    )  # fmt: skip
    features = FeatureFrame(
        kind="opportunity", frame=frame, cat_features=["custom:Loss_Reason__c"],
        labels=pd.Series(y.astype(float), index=ids), as_of=pd.Series(pd.Timestamp.now(tz="UTC"), index=ids),
        evidence={}, segments=pd.DataFrame(index=ids),
    )  # fmt: skip
    keep, info = select_features(features, ids)
    assert keep == ["signal"]
    assert [d["feature"] for d in info["dropped_as_leaky"]] == ["custom:Loss_Reason__c"]
    assert info["dropped_constant"] == ["constant"]


def test_given_a_csv_export_when_training_then_the_report_has_the_same_keys(trained) -> None:
    store, _, report, root = trained
    leads = store.to_arrow(TENANT, "lead").to_pandas()
    decided = leads[leads["status"].str.startswith("Closed")].copy()
    custom = decided["custom"].map(json.loads)
    for key in ("Budget_Confirmed__c", "Tech_Stack__c"):
        decided[key] = custom.map(lambda c, k=key: c.get(k))
    decided["converted"] = decided["is_converted"].map({True: "yes", False: "no"})
    columns = ["crm_id", "created_at", "industry", "employees", "source", "title", "email_opens",
               "email_clicks", "page_visits", "form_fills", "Budget_Confirmed__c", "Tech_Stack__c",
               "converted"]  # fmt: skip
    path = root / "history.csv"
    decided[columns].to_csv(path, index=False)
    from_csv = train_from_csv(path, "converted", task_type="CPU", params=FAST)
    assert set(report) - {"tenant_id", "promotion"} <= set(from_csv)
    assert from_csv["rule_based"] is False and from_csv["auc"] > 0.6
    assert from_csv["model_version"] is None
    assert "converted" not in from_csv["features"]["used"]


def test_given_json_flag_when_training_from_the_cli_then_one_json_object_per_report(
    trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, _, root = trained
    key = CliRunner().invoke(main, ["keygen"]).output.strip()
    env = {"FIELDWISE_LANCEDB_URI": str(root / "lancedb"), "FIELDWISE_SECRET_KEY": "s" * 40,
           "FIELDWISE_ENCRYPTION_KEY": key, "FIELDWISE_CATBOOST_TASK_TYPE": "CPU"}  # fmt: skip
    result = CliRunner().invoke(
        main, ["model", "versions", "--tenant", TENANT, "--kind", "lead", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    versions = json.loads(result.output)["versions"]
    assert versions and versions[0]["version"] == "lead-v1" and versions[0]["current"]
    result = CliRunner().invoke(
        main, ["model", "report", "--tenant", TENANT, "--kind", "lead", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= REPORT_KEYS
    csv = root / "history.csv"
    if csv.exists():
        result = CliRunner().invoke(
            main, ["train", "--from-csv", str(csv), "--label", "converted", "--json"], env=env
        )
        assert result.exit_code == 0, result.output
        line = result.output.strip().splitlines()[-1]
        assert {"auc", "pr_auc", "brier", "ece", "lift_top20", "n_train", "n_holdout",
                "model_version"} <= set(json.loads(line))  # fmt: skip
