from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from scoring_service_fixtures import HashEmbedder

from core.store import Store
from scoring.features import evidence_sources
from scoring.reasons import (
    MIN_CONTRIBUTION,
    explain_batch,
    next_step,
    phrase_for,
    rule_based_preface,
)

NOW = datetime(2026, 10, 3, 15, tzinfo=UTC)
GRADES = ("Hot", "Warm", "Cold")


def _store(tmp_path):
    store = Store(str(tmp_path / "db"), embedder=HashEmbedder())
    base = {"tenant_id": "t1", "crm": "salesforce", "updated_at": NOW, "created_at": NOW}
    store.upsert(
        "t1",
        "note",
        [{**base, "crm_id": "002N1", "lead_id": "L1", "title": "Discovery call",
          "body": "They are also looking at Vantora; budget approved for Q1."}],
    )  # fmt: skip
    store.upsert(
        "t1",
        "activity",
        [{**base, "crm_id": "00T1", "lead_id": "L1", "type": "call", "occurred_at": NOW,
          "subject": "Pilot scoping"}],
    )  # fmt: skip
    return store


def test_reasons_are_sentences_that_cite_the_notes_and_activities_behind_them(tmp_path):
    store = _store(tmp_path)
    frame = pd.DataFrame(
        {"email_clicks": [5.0, 0.0], "signal_budget": [1.0, 0.0], "competitor_mentions": [1.0, 0.0],
         "n_calls": [1.0, 0.0], "days_since_engaged": [2.0, 75.0], "industry": ["Software", "Retail"]},
        index=pd.Index(["L1", "L2"], name="crm_id"),
    )  # fmt: skip
    shap = pd.DataFrame(
        {"email_clicks": [0.8, -0.1], "signal_budget": [0.6, 0.0], "competitor_mentions": [-0.4, 0.0],
         "n_calls": [0.3, 0.0], "days_since_engaged": [0.01, -0.9], "industry": [0.0, -0.3],
         "expected_value": [-1.5, -1.5]},
        index=frame.index,
    )  # fmt: skip
    evidence = {"L1": {"signal_budget": ["002N1"], "competitor_mentions": ["002N1"],
                       "n_calls": ["00T1"]}}  # fmt: skip
    # The notes and activities as feature building reads and describes them.
    sources = evidence_sources(
        store.to_arrow("t1", "activity").to_pandas(),
        store.to_arrow("t1", "note").to_pandas(),
    )
    explained = explain_batch(
        shap, frame, evidence, sources=sources, competitors=["Vantora", "Corvex"]
    )
    l1 = explained["L1"]
    assert [r.feature for r in l1.positive] == ["email_clicks", "signal_budget", "n_calls"]
    assert [r.feature for r in l1.negative] == ["competitor_mentions"]
    text = l1.text()
    assert "+ Clicked 5 emails" in text
    assert "+ Budget approved in notes (note on 3 Oct 2026, ref 002N1)" in text
    assert "+ 1 call logged (call on 3 Oct 2026, ref 00T1)" in text
    assert "- Competitor Vantora mentioned (note on 3 Oct 2026, ref 002N1)" in text
    detail = {d["feature"]: d for d in l1.detail}
    assert detail["signal_budget"]["evidence_ids"] == ("002N1",)
    stored = {d["feature"]: d for d in json.loads(json.dumps(l1.detail))}  # as the ledger keeps it
    assert stored["signal_budget"]["evidence_ids"] == ["002N1"]
    assert stored["email_clicks"]["evidence"] == [] and stored["email_clicks"]["evidence_ids"] == []
    assert detail["competitor_mentions"]["direction"] == "-"
    l2 = explained["L2"].text()
    assert "- No engagement in 75 days" in l2 and "- Industry: Retail" in l2
    assert "expected_value" not in l2


def test_citations_come_from_the_rows_the_features_read_with_their_fallbacks():
    """A note without a creation time is dated by its last change; an activity without a type is
    an activity; a note and an activity sharing an id cite the note; competitors are found in a
    body as in a title; an id the rows lack is cited by id alone."""
    earlier = datetime(2026, 9, 1, 9, tzinfo=UTC)
    activities = pd.DataFrame(
        {"crm_id": ["A1", "S1"], "type": [None, "call"], "occurred_at": [earlier, earlier],
         "subject": ["", "Shared id"]}
    )  # fmt: skip
    notes = pd.DataFrame(
        {"crm_id": ["N1", "S1"], "title": ["Pricing", "Kept"], "body": ["Lost on price to corvex.", ""],
         "created_at": [None, earlier], "updated_at": [NOW, NOW]}
    )  # fmt: skip
    sources = evidence_sources(activities, notes)
    frame = pd.DataFrame({"n_tasks": [1.0], "competitor_named": [1.0], "n_notes": [2.0]},
                         index=pd.Index(["L1"], name="crm_id"))  # fmt: skip
    shap = pd.DataFrame({"n_tasks": [0.5], "competitor_named": [-0.4], "n_notes": [0.3]},
                        index=frame.index)  # fmt: skip
    evidence = {"L1": {"n_tasks": ["A1"], "competitor_named": ["N1"], "n_notes": ["S1", "GONE"]}}
    explained = explain_batch(shap, frame, evidence, sources=sources, competitors=["Corvex"])["L1"]
    by_feature = {r.feature: r for r in explained.positive + explained.negative}
    task = by_feature["n_tasks"].evidence[0]
    assert (task.kind, task.at, task.title) == ("activity", earlier, None)
    named = by_feature["competitor_named"]
    assert named.text == "Competitor Corvex mentioned"
    assert named.evidence[0].at == NOW and named.evidence[0].title == "Pricing"
    notes_reason = by_feature["n_notes"]
    assert [(e.id, e.kind) for e in notes_reason.evidence] == [("S1", "note")]
    assert notes_reason.evidence_ids == ("S1", "GONE")
    assert "(note on 1 Sep 2026, ref S1; 1 more)" in notes_reason.sentence()
    assert json.loads(json.dumps(explained.detail))  # still JSON-ready


def test_evidence_ids_are_cited_even_without_a_store():
    frame = pd.DataFrame({"signal_pilot": [2.0]}, index=pd.Index(["O1"], name="crm_id"))
    shap = pd.DataFrame({"signal_pilot": [0.5]}, index=frame.index)
    explained = explain_batch(shap, frame, {"O1": {"signal_pilot": ["002A", "002B"]}})
    assert explained["O1"].text() == "+ Pilot requested (ref 002A and 1 more)"


def test_a_rule_based_score_says_so_and_names_what_was_missing():
    report = {
        "sufficiency": {
            "ok": False,
            "requirements": [
                {"name": "labelled_leads", "needed": 1000, "have": 300, "ok": False,
                 "description": "leads with a known outcome (converted or not)"},
                {"name": "conversions", "needed": 120, "have": 150, "ok": True,
                 "description": "converted leads"},
            ],
        }
    }  # fmt: skip
    preface = rule_based_preface(report)
    assert preface == (
        "Rule-based score (not enough history for a model: "
        "needs 1,000 leads with a known outcome, has 300)"
    )
    frame = pd.DataFrame({"form_fills": [2.0]}, index=pd.Index(["L1"], name="crm_id"))
    explained = explain_batch(frame * 0.4, frame, {}, preface=preface)
    assert explained["L1"].text().splitlines()[0].startswith("Rule-based score")


def test_next_steps_differ_by_grade_and_name_their_reasons():
    frame = pd.DataFrame(
        {"signal_budget": [1.0], "signal_pilot": [1.0], "days_since_engaged": [61.0]},
        index=pd.Index(["L1"], name="crm_id"),
    )
    shap = pd.DataFrame(
        {"signal_budget": [0.9], "signal_pilot": [0.7], "days_since_engaged": [-0.5]},
        index=frame.index,
    )
    explanation = explain_batch(shap, frame, {})["L1"]
    hot = next_step("Hot", GRADES, explanation)
    warm = next_step("Warm", GRADES, explanation)
    cold = next_step("Cold", GRADES, explanation)
    assert hot == "Call today: budget approved in notes and pilot requested"
    assert warm == "Follow up this week; watch: no engagement in 61 days"
    assert cold == "Nurture: no engagement in 61 days"
    assert next_step("Hot", GRADES, explanation, "opportunity").startswith("Push to close")
    assert len({hot, warm, cold}) == 3


def test_unknown_features_read_as_name_and_value():
    assert phrase_for("custom:Lead_Rating__c", "Gold", True) == "Lead rating: Gold"
    assert phrase_for("custom:Budget_Confirmed__c", 1.0, True) == "Budget confirmed"
    assert (
        phrase_for("custom:Product_Interest__c", "Data Vault", True) == "Interested in Data Vault"
    )


def _drivers_one_by_one(shap: pd.DataFrame, frame: pd.DataFrame, ups: int, downs: int) -> dict:
    """The documented rule, read row by row: finite drivers of at least MIN_CONTRIBUTION, strongest
    first, equally strong ones in column order; the value is the frame's (None off the frame)."""
    columns = [c for c in shap.columns if c in frame.columns]
    out = {}
    for crm_id, row in shap[columns].iterrows():
        ranked = sorted(
            ((name, float(v)) for name, v in row.items() if math.isfinite(float(v))),
            key=lambda item: -abs(item[1]),
        )
        chosen = [(n, v) for n, v in ranked if v >= MIN_CONTRIBUTION][:ups]
        chosen += [(n, v) for n, v in ranked if v <= -MIN_CONTRIBUTION][:downs]
        out[str(crm_id)] = [
            (n, v, frame.at[crm_id, n] if crm_id in frame.index else None) for n, v in chosen
        ]
    return out


def test_batch_reasons_follow_the_row_by_row_rule_through_ties_gaps_and_odd_values():
    rng = np.random.default_rng(11)
    n = 400
    frame = pd.DataFrame(
        {
            "email_clicks": rng.integers(0, 4, n).astype(float),
            # Halves round to even; 14 days is where "last ... ago" turns into "no ... in".
            "days_since_engaged": rng.choice(
                [1.0, 20.0, 75.0, np.nan, 0.4, 0.5, 1.5, 2.5, 14.4999, 14.5, 15.5, -0.0, np.inf], n
            ),
            "days_open": rng.choice([0.2, -0.3, 0.7, 1.49, 1.5, 3.0, np.nan], n),
            "industry": pd.array(rng.choice(["Software", "Retail", None], n), dtype="str"),
            "custom:Score__c": rng.choice([0.0, -0.0, 1.5], n),
            "custom:Rating__c": pd.Series(rng.choice(["Gold", None, np.nan, 3.5], n), dtype=object),
            "n_calls": pd.array(rng.choice([1, 2, None], n), dtype="Int64"),
            "flag": rng.choice([True, False], n),
        },
        index=pd.Index([f"L{i}" for i in range(n)], name="crm_id"),
    )
    # Few distinct contributions, so that ties are everywhere; some not finite, some too small.
    grid = np.array([0.0, 0.01, 0.02, -0.02, 0.3, -0.3, 0.5, -0.5, np.nan, np.inf, -np.inf])
    shap = pd.DataFrame(
        rng.choice(grid, (n, len(frame.columns))), columns=frame.columns, index=frame.index
    )
    shap["expected_value"] = -1.5
    shap = pd.concat([shap, shap.iloc[:3].set_axis(["X1", "X2", "X3"])])  # not in the frame
    for ups, downs in ((3, 2), (1, 1), (0, 2), (9, 9)):
        explained = explain_batch(shap, frame, {}, top_positive=ups, top_negative=downs)
        expected = _drivers_one_by_one(shap, frame, ups, downs)
        assert list(explained) == list(expected)
        for crm_id, drivers in expected.items():
            reasons = explained[crm_id].positive + explained[crm_id].negative
            assert [(r.feature, r.contribution) for r in reasons] == [(n, v) for n, v, _ in drivers]
            for reason, (name, contribution, value) in zip(reasons, drivers, strict=True):
                assert type(reason.value) is type(value) and repr(reason.value) == repr(value)
                assert reason.text == phrase_for(name, value, contribution > 0)
            assert explained[crm_id].detail == [r.as_dict() for r in reasons]
    texts = {r.text for e in explain_batch(shap, frame, {}).values() for r in e.positive}
    assert {"Score: 0", "Score: -0"} <= texts  # signed zeros are phrased apart, as they print


def test_contributions_are_rounded_exactly_as_round_does():
    from scoring.reasons import _rounded

    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.normal(0, 1, 20000),
            (rng.integers(-(10**5), 10**5, 2000) + 0.5) / 1e4,  # exact decimal ties
            [0.0, -0.0, 0.00005, -0.00015, 0.12345, 2.5e-5, 1e12, -1e300, 5e-324],
        ]
    )
    got = _rounded(values, 4).tolist()
    want = [round(float(v), 4) for v in values]
    assert got == want
    assert [math.copysign(1.0, g) for g in got] == [math.copysign(1.0, w) for w in want]
