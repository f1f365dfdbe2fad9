from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scoring_service_fixtures import TENANT, HashEmbedder, scoring_services

from core.store import Store
from sandbox.canonical import load_history_into_store
from sandbox.history import generate
from scoring.jobs import targets
from scoring.ledger import ScoreLedger
from scoring.predict import latest_results, score_records
from scoring.registry import ModelRegistry
from scoring.training import Params, train

NOW = datetime.now(UTC)


class ClicksModel:
    """A stand-in model: the probability rises with email clicks; contributions say so."""

    kind = "lead"
    rule_based = False
    report: dict = {}
    feature_names = ["email_clicks", "page_visits"]

    def __init__(self, version="lead-test-1", slope=0.5):
        self.version = version
        self.slope = slope

    def _logit(self, features):
        return -2.0 + self.slope * features.frame["email_clicks"].fillna(0).to_numpy()

    def predict_proba(self, features):
        return 1.0 / (1.0 + np.exp(-self._logit(features)))

    def contributions(self, features):
        clicks = features.frame["email_clicks"].fillna(0)
        return pd.DataFrame(
            {"email_clicks": self.slope * (clicks - 2.0), "page_visits": 0.0},
            index=features.frame.index,
        )


class BrokenModel(ClicksModel):
    def predict_proba(self, features):
        raise RuntimeError("model artifact is corrupt")


def _leads(services, clicks):
    base = {"tenant_id": TENANT, "crm": "salesforce", "updated_at": NOW}
    services.store.upsert(
        TENANT,
        "lead",
        [
            {**base, "crm_id": f"00Q{i}", "created_at": NOW - timedelta(days=2), "email_clicks": c,
             "email_opens": c + 3, "status": "Open - Not Contacted", "owner_id": "005A"}
            for i, c in enumerate(clicks)
        ],
    )  # fmt: skip


@pytest.fixture
def services(demo_config, tmp_path):
    built, queue = scoring_services(demo_config, str(tmp_path / "store"))
    yield built
    queue.stop()


def test_scores_become_grades_reasons_next_steps_and_ledger_entries(services):
    _leads(services, [0, 4, 9])
    results = {r.crm_id: r for r in score_records(services, TENANT, "lead", model=ClicksModel())}
    assert {k: (r.score, r.grade) for k, r in results.items()} == {
        "00Q0": (12, "Cold"), "00Q1": (50, "Warm"), "00Q2": (92, "Hot"),
    }  # fmt: skip
    hot = results["00Q2"]
    assert hot.model_version == "lead-test-1" and not hot.stale and hot.material
    assert hot.reasons == "+ Clicked 9 emails" and hot.next_step == "Call today: clicked 9 emails"
    assert results["00Q0"].next_step.startswith("Nurture")
    assert hot.values()["grade"] == "Hot" and "suggested_owner" not in hot.values()
    ledger = ScoreLedger(services.store)
    assert len(ledger.history(TENANT, "lead")) == 3
    # Scoring again with the same inputs is not a material change: nothing new in the ledger.
    again = score_records(services, TENANT, "lead", model=ClicksModel())
    assert not any(r.material or r.crossed for r in again)
    assert len(ledger.history(TENANT, "lead")) == 3


def test_a_scorer_failure_keeps_last_good_values_marked_stale_and_requeues(services):
    _leads(services, [4, 9])
    score_records(services, TENANT, "lead", ["00Q0", "00Q1"], model=ClicksModel())
    _leads(services, [4, 9, 1])  # 00Q2 arrives after the last good run: it has nothing to keep
    queue = services.queue
    failed = score_records(services, TENANT, "lead", ["00Q0", "00Q1", "00Q2"], model=BrokenModel())
    by_id = {r.crm_id: r for r in failed}
    assert set(by_id) == {"00Q0", "00Q1"}, "a record never scored gets no result, not a blank one"
    assert (by_id["00Q1"].score, by_id["00Q1"].grade) == (92, "Hot")
    assert by_id["00Q1"].stale and by_id["00Q1"].model_version == "lead-test-1 (stale)"
    assert by_id["00Q1"].reasons == "+ Clicked 9 emails"
    jobs = [j for j in queue.jobs() if j["func"] == "scoring.jobs.score_changed"]
    assert len(jobs) == 1 and jobs[0]["status"] == "scheduled"
    assert jobs[0]["args"] == (TENANT, "lead", ["00Q0", "00Q1", "00Q2"])
    # Failing again neither floods the ledger nor queues a second retry of the same records.
    score_records(services, TENANT, "lead", ["00Q0", "00Q1", "00Q2"], model=BrokenModel())
    assert len([j for j in queue.jobs() if j["func"] == "scoring.jobs.score_changed"]) == 1
    entries = ScoreLedger(services.store).history(TENANT, "lead", ["00Q1"])
    assert [e.stale for e in entries] == [False, True]
    shown = latest_results(services.store, TENANT, "lead", ["00Q1"])["00Q1"]
    assert shown.stale and shown.score == 92 and shown.model_version.endswith("(stale)")
    assert shown.score_changed_at == entries[0].scored_at
    # The scorer recovers: the value is fresh again.
    recovered = score_records(services, TENANT, "lead", ["00Q1"], model=ClicksModel())
    assert not recovered[0].stale and recovered[0].model_version == "lead-test-1"
    assert not latest_results(services.store, TENANT, "lead", ["00Q1"])["00Q1"].stale


def test_without_any_model_nothing_is_blanked_and_the_records_are_queued(services):
    _leads(services, [3])
    assert score_records(services, TENANT, "lead", ["00Q0"]) == []
    assert [j["func"] for j in services.queue.jobs()] == ["scoring.jobs.score_changed"]


def test_a_dry_run_writes_nothing_and_queues_nothing(services):
    _leads(services, [5])
    results = score_records(services, TENANT, "lead", model=ClicksModel(), dry_run=True)
    assert results[0].grade == "Warm"
    assert ScoreLedger(services.store).history(TENANT, "lead") == []
    score_records(services, TENANT, "lead", model=BrokenModel(), dry_run=True)
    assert services.queue.jobs() == []


def test_notes_and_activities_rescore_the_records_they_belong_to(services):
    base = {"tenant_id": TENANT, "crm": "salesforce", "updated_at": NOW, "created_at": NOW}
    services.store.upsert(
        TENANT,
        "note",
        [{**base, "crm_id": "N1", "body": "call went well", "lead_id": "00Q7"},
         {**base, "crm_id": "N2", "body": "pricing", "opportunity_id": "006A"}],
    )  # fmt: skip
    assert targets(services, TENANT, "note", ["N1", "N2"]) == {
        "lead": ["00Q7"], "opportunity": ["006A"],
    }  # fmt: skip
    assert targets(services, TENANT, "lead", ["00Q1", "00Q1"]) == {"lead": ["00Q1"]}
    assert targets(services, TENANT, "account", ["001A"]) == {}


def test_a_trained_model_scores_open_leads_with_evidence_and_a_stable_second_pass(services):
    history = generate(seed=7, n_leads=3000)
    load_history_into_store(services.store, history, TENANT)
    report = train(
        services.store, TENANT, "lead", as_of=history.now,
        params=Params(iterations=150, early_stopping_rounds=30),
    )  # fmt: skip
    assert report["promoted"], report.get("promotion")
    results = score_records(services, TENANT, "lead")
    assert len(results) == sum(
        1 for x in history.leads if not x.converted and not x.status.startswith("Closed")
    )
    version = ModelRegistry(services.store).current(TENANT, "lead").version
    assert {r.model_version for r in results} == {version}
    assert all(0 <= r.score <= 100 and r.grade in ("Hot", "Warm", "Cold") for r in results)
    assert all(r.reasons and r.next_step and r.segment for r in results)
    cited = [d for r in results for d in r.reasons_detail if d["evidence"]]
    assert cited and all("ref " in d["text"] for d in cited)
    # Citations carry the kinds and dates the store holds (read once, with the features).
    stored = {
        row["crm_id"]: (row["type"], row["occurred_at"])
        for row in services.store.query(
            TENANT, "activity", columns=["crm_id", "type", "occurred_at"]
        )
    }
    stored.update(
        (row["crm_id"], ("note", row["created_at"]))
        for row in services.store.query(TENANT, "note", columns=["crm_id", "created_at"])
    )
    for item in (e for d in cited for e in d["evidence"]):
        kind, at = stored[item["id"]]
        assert (item["kind"], item["at"]) == (kind, at.isoformat())
    second = score_records(services, TENANT, "lead")
    assert not any(r.crossed for r in second)


def test_the_score_command_dry_run_prints_each_field_it_would_write_and_writes_nothing(
    tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from core.cli import main
    from core.config import Config
    from core.services import configure
    from core.tenants import Tenant

    env = {
        "FIELDWISE_LANCEDB_URI": str(tmp_path / "db"),
        "FIELDWISE_SECRET_KEY": "s" * 40,
        "FIELDWISE_ENCRYPTION_KEY": Config.for_demo().encryption_key.reveal(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services = configure(Config.from_env())
    services.registry.save(Tenant(TENANT, "salesforce", "00DTEST", None, status="active"))
    history = generate(seed=7, n_leads=1500)
    fast = Store(env["FIELDWISE_LANCEDB_URI"], embedder=HashEmbedder())
    load_history_into_store(fast, history, TENANT)
    train(fast, TENANT, "lead", as_of=history.now, params=Params(iterations=60))
    result = CliRunner().invoke(
        main, ["score", "--tenant", TENANT, "--kind", "lead", "--all", "--dry-run"], env=env
    )
    assert result.exit_code == 0, result.output
    assert " Fieldwise_AI_Score__c: None -> " in result.output
    assert " Fieldwise_AI_Reasons__c: None -> " in result.output
    assert re.search(r" Fieldwise_AI_Model_Version__c: None -> \"lead-", result.output)
    assert "field(s) would be written, 0 unchanged, 0 kept as a person edited them" in result.output
    assert ScoreLedger(services.store).history(TENANT, "lead") == []
    assert services.store.last_written(TENANT, "Lead", ["00Q0"]) == {}


# --------------------------------------------------------------------------------------------------
# Contributions from per-leaf SHAP tables


@functools.cache
def _classifier(grow_policy: str = "SymmetricTree"):
    """A small CatBoost model over counts, a missing-heavy recency and categoricals that interact,
    so that it has one-hot splits and CTRs over combinations (with float and exact-value parts)."""
    from catboost import CatBoostClassifier

    rng = np.random.default_rng(5)
    n = 2000
    industries = ["Software", "Retail", "Health", "Finance", "Energy", "Media"]
    regions = ["EMEA", "NA", "APAC", "LATAM"]
    frame = pd.DataFrame(
        {
            "email_clicks": rng.poisson(2.0, n).astype(float),
            "days_since_engaged": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(30, n)),
            "industry": rng.choice(industries, n),
            "region": rng.choice(regions, n),
            "consent": rng.choice(["yes", "no"], n),
            "tier": rng.choice(["a", "b", "c", "d", "e"], n),
        },
        index=pd.Index([f"00Q{i}" for i in range(n)], name="crm_id"),
    )
    pair = (
        frame["industry"].map(industries.index) * 7 + frame["region"].map(regions.index)
    ) % 5 == 0
    logit = (
        0.6 * frame["email_clicks"]
        - 0.02 * frame["days_since_engaged"].fillna(90.0)
        + 2.0 * pair
        + ((frame["consent"] == "yes") & (frame["tier"] < "c"))
        - 1.0
    )
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    cats = ["industry", "region", "consent", "tier"]
    classifier = CatBoostClassifier(
        iterations=200, depth=4, learning_rate=0.1, random_seed=0, thread_count=1, verbose=0,
        cat_features=cats, grow_policy=grow_policy, allow_writing_files=False,
    )  # fmt: skip
    classifier.fit(frame, labels)
    return classifier, frame, cats


def _catboost_model(grow_policy: str = "SymmetricTree"):
    """A fresh scoring model around the cached classifier, and the features it was fitted on."""
    from scoring.calibration import Platt
    from scoring.features import FeatureFrame
    from scoring.registry import CatBoostModel

    classifier, frame, cats = _classifier(grow_policy)
    model = CatBoostModel(
        classifier, "lead", list(frame.columns), cats, Platt(0.9, -0.2), version="lead-t1"
    )
    features = FeatureFrame(
        kind="lead",
        frame=frame,
        cat_features=cats,
        labels=None,
        as_of=pd.Series(NOW, index=frame.index),
        evidence={},
        segments=pd.DataFrame(index=frame.index),
    )
    return model, features


def _catboost_shap(model, features):
    shap = model.model.get_feature_importance(data=model.pool(features), type="ShapValues")
    return np.asarray(shap)


def test_contributions_from_leaf_tables_equal_catboosts_shap_values_and_predictions_are_unchanged():
    from scoring.leaf_shap import _export_json

    model, features = _catboost_model()
    # The model has the split kinds whose credit is subtle: one-hot splits, and CTRs over
    # combinations of categoricals, with binarised floats and exact values in them.
    exported = _export_json(model.model)
    kinds = {s["split_type"] for t in exported["oblivious_trees"] for s in t["splits"] or []}
    parts = {
        e["combination_element"]
        for c in exported["features_info"]["ctrs"]
        if len(c["elements"]) > 1
        for e in c["elements"]
    }
    assert {"OneHotFeature", "OnlineCtr"} <= kinds
    assert {"cat_feature_value", "float_feature", "cat_feature_exact_value"} <= parts
    probabilities, contributions = model.predict_with_contributions(features)
    assert model.prepare_explanations(), "a symmetric-tree model is explained from its tables"
    # Probabilities are bit for bit those of predict_proba: the same leaf values, added in order.
    assert np.array_equal(probabilities, model.predict_proba(features))
    exact = _catboost_shap(model, features)
    assert list(contributions.columns) == model.feature_names
    assert contributions.index.equals(features.frame.index)
    np.testing.assert_allclose(contributions.to_numpy(), exact[:, :-1] * 0.9, rtol=0, atol=1e-9)
    # Contributions still add up to the calibrated log-odds (with the scaled expected value).
    logit = np.log(probabilities / (1 - probabilities))
    total = contributions.sum(axis=1).to_numpy() + 0.9 * exact[:, -1] - 0.2
    np.testing.assert_allclose(total, logit, rtol=0, atol=1e-8)
    # The categorical interaction is credited half to each of its two features, as CatBoost does.
    assert contributions[["industry", "region"]].abs().to_numpy().max() > 0.05
    assert model.contributions(features).equals(contributions)


def test_a_model_the_tables_cannot_reproduce_is_explained_by_catboost_itself():
    model, features = _catboost_model(grow_policy="Depthwise")
    probabilities, contributions = model.predict_with_contributions(features)
    assert not model.prepare_explanations()
    assert np.array_equal(probabilities, model.predict_proba(features))
    exact = _catboost_shap(model, features)
    np.testing.assert_allclose(contributions.to_numpy(), exact[:, :-1] * 0.9, rtol=0, atol=1e-12)


def test_tables_that_disagree_with_catboost_are_dropped_for_catboosts_own_values(
    monkeypatch, caplog
):
    from scoring.leaf_shap import LeafShap

    model, features = _catboost_model()
    honest = LeafShap.evaluate

    def skewed(self, leaf_indexes):
        raw, shap = honest(self, leaf_indexes)
        return raw, shap + 0.01

    monkeypatch.setattr(LeafShap, "evaluate", skewed)
    _, contributions = model.predict_with_contributions(features)
    assert "disagree with CatBoost" in caplog.text
    assert not model.prepare_explanations()
    exact = _catboost_shap(model, features)
    np.testing.assert_allclose(contributions.to_numpy(), exact[:, :-1] * 0.9, rtol=0, atol=1e-12)


def test_batches_cut_from_one_feature_read_score_as_records_read_batch_by_batch(services):
    _leads(services, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    ids = [f"00Q{i}" for i in (10, 3, 7, 0, 5, 1, 9, 2, 8, 4, 6)] + ["00Q-gone"]

    def scored(batch_size):
        return [
            (r.crm_id, r.score, r.grade, r.reasons, r.next_step, r.segment)
            for r in score_records(services, TENANT, "lead", ids, dry_run=True,
                                   model=ClicksModel(), batch_size=batch_size)
        ]  # fmt: skip

    one_read = scored(batch_size=4)
    assert sorted(one_read) == sorted(scored(batch_size=len(ids)))
    assert sorted(crm_id for crm_id, *_ in one_read) == sorted(ids[:-1])
    assert len({score for _, score, *_ in one_read}) == 11
