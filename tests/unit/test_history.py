"""Tests of the seeded CRM history generator (``sandbox.history``)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from sandbox import history_text as text
from sandbox.history import (
    COMPETITORS,
    DEFAULT_NOW,
    STAGES,
    best_achievable_auc,
    generate,
    roc_auc,
)
from sandbox.history_model import History

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
PHONE = re.compile(r"\+\d{1,3} [\d ()-]{7,}\d")


def _digest(history: History) -> str:
    dumped = json.dumps(dataclasses.asdict(history), default=str, sort_keys=True)
    return hashlib.sha256(dumped.encode()).hexdigest()


@pytest.fixture(scope="module")
def h5k() -> History:
    return generate(seed=7, n_leads=5000)


@pytest.fixture(scope="module")
def h300() -> History:
    return generate(seed=11, n_leads=300)


def _literal_start(template: str) -> str:
    return template.split("{", 1)[0]


def _template_regex(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{[a-z_]+\}", template)
    return re.compile(".+?".join(re.escape(p) for p in pieces))


# -------------------------------------------------------------------------------------- determinism


def test_given_same_seed_and_size_when_generated_twice_then_serialised_histories_are_identical():
    assert _digest(generate(seed=3, n_leads=500)) == _digest(generate(seed=3, n_leads=500))


def test_given_different_seeds_when_generated_then_histories_differ():
    first, second = generate(seed=3, n_leads=500), generate(seed=4, n_leads=500)
    assert _digest(first) != _digest(second)
    assert [x.email for x in first.leads] != [x.email for x in second.leads]


def test_given_no_now_when_generated_then_now_is_the_fixed_default_and_timestamps_are_utc(h300):
    assert h300.now == DEFAULT_NOW
    assert h300.leads[0].created_at.tzinfo is not None
    assert h300.leads[0].created_at.utcoffset().total_seconds() == 0


def test_given_a_custom_now_when_generated_then_the_history_ends_there():
    now = datetime(2025, 3, 15, 12, tzinfo=UTC)
    history = generate(seed=5, n_leads=400, now=now)
    assert history.now == now
    latest = max(x.at for x in history.activities + history.notes)
    assert latest <= now
    assert min(x.created_at for x in history.leads).year in (2023, 2024)


def test_given_bad_arguments_when_generating_then_value_error():
    with pytest.raises(ValueError):
        generate(n_leads=0)
    with pytest.raises(ValueError):
        generate(n_leads=10, now=datetime(2026, 1, 1))


# ---------------------------------------------------------------------------------- hidden outcomes


def test_given_5k_leads_when_scoring_with_true_probability_then_auc_is_learnable_not_trivial(h5k):
    auc = best_achievable_auc(h5k, "leads")
    assert 0.80 <= auc <= 0.92


def test_given_5k_leads_then_conversion_rate_gives_einstein_sufficient_conversions(h5k):
    decided = [x for x in h5k.leads if x.status.startswith("Closed")]
    rate = sum(x.converted for x in decided) / len(decided)
    assert 0.12 <= rate <= 0.20
    assert sum(x.converted for x in h5k.leads) >= 120 * len(h5k.leads) / 1000 * 0.9
    open_leads = [x for x in h5k.leads if not x.status.startswith("Closed")]
    assert open_leads and not any(x.converted for x in open_leads)


def test_given_5k_leads_then_deal_win_rate_and_best_auc_are_in_range(h5k):
    closed = [x for x in h5k.opportunities if x.is_closed]
    win_rate = sum(x.is_won for x in closed) / len(closed)
    assert 0.25 <= win_rate <= 0.35
    assert 0.75 <= best_achievable_auc(h5k, "opportunities") <= 0.90
    assert any(not x.is_closed for x in h5k.opportunities)


def test_given_observable_signals_then_outcomes_move_the_way_the_hidden_model_says(h5k):
    decided = [x for x in h5k.leads if x.status.startswith("Closed")]

    def rate(rows):
        return sum(x.converted for x in rows) / len(rows)

    budget = [x for x in decided if x.custom["Budget_Confirmed__c"]]
    no_budget = [x for x in decided if not x.custom["Budget_Confirmed__c"]]
    assert rate(budget) > rate(no_budget) + 0.05
    referral = [x for x in decided if x.source == "Referral"]
    outbound = [x for x in decided if x.source == "Outbound"]
    assert rate(referral) > 2 * rate(outbound)
    engaged = [x for x in decided if len(x.engagement) >= 10]
    quiet = [x for x in decided if len(x.engagement) <= 2]
    assert rate(engaged) > 2 * rate(quiet)

    closed = [x for x in h5k.opportunities if x.is_closed]
    far = [x for x in closed if any(h.new_value == "Negotiation" for h in x.history)]
    early = [x for x in closed if not any(h.new_value == "Needs Analysis" for h in x.history)]
    assert sum(x.is_won for x in far) / len(far) > sum(x.is_won for x in early) / len(early)


def test_given_true_probabilities_then_they_are_probabilities_and_vary(h5k):
    probs = np.array([x.true_probability for x in h5k.leads])
    assert ((probs > 0) & (probs < 1)).all()
    assert probs.std() > 0.05
    deal_probs = np.array([x.true_probability for x in h5k.opportunities])
    assert ((deal_probs > 0) & (deal_probs < 1)).all()


def test_given_scores_with_ties_when_computing_auc_then_it_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=60).astype(float)
    labels = rng.random(60) < 0.4
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels], scores[~labels])
    ]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert roc_auc([0.3, 0.3], [False, True]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


# ------------------------------------------------------------------------------ referential checks


def _check_integrity(h: History) -> None:
    now = h.now
    reps = {r.key: r for r in h.reps}
    accounts = {a.key: a for a in h.accounts}
    contacts = {c.key: c for c in h.contacts}
    opps = {o.key: o for o in h.opportunities}
    leads = {x.key: x for x in h.leads}
    assert (
        len(reps) == len(h.reps)
        and len(leads) == len(h.leads)
        and len(opps) == len(h.opportunities)
    )
    assert len({x.email for x in h.leads}) == len(h.leads)

    for a in h.accounts:
        assert a.owner_key in reps and a.created_at <= now
    for c in h.contacts:
        assert c.account_key in accounts and c.owner_key in reps and c.created_at <= now
        if c.from_lead_key is not None:
            assert leads[c.from_lead_key].converted_contact_key == c.key
    for lead in h.leads:
        assert lead.owner_key in reps and lead.created_at <= now
        assert lead.account_key is None or lead.account_key in accounts
        assert all(lead.created_at <= e.at <= now for e in lead.engagement)
        if lead.converted:
            assert lead.status == "Closed - Converted"
            assert lead.created_at < lead.converted_at <= now
            assert lead.converted_contact_key in contacts
            assert lead.account_key == contacts[lead.converted_contact_key].account_key
            # Everything the lead model saw happened before the conversion.
            assert all(e.at < lead.converted_at for e in lead.engagement)
            if lead.converted_opportunity_key is not None:
                opp = opps[lead.converted_opportunity_key]
                assert opp.created_at >= lead.converted_at
        else:
            assert lead.converted_at is None and lead.converted_contact_key is None
            assert lead.converted_opportunity_key is None
    for o in h.opportunities:
        assert o.account_key in accounts and o.owner_key in reps
        assert o.contact_key is None or o.contact_key in contacts
        assert o.created_at <= now
        ats = [x.at for x in o.history]
        assert ats == sorted(ats) and ats[-1] <= now and ats[0] == o.created_at
        stage_rows = [x for x in o.history if x.field == "StageName"]
        assert stage_rows[0].old_value is None and stage_rows[-1].new_value == o.stage
        for prev, row in itertools.pairwise(stage_rows):
            assert row.old_value == prev.new_value
        assert all(x.by_rep_key in reps for x in o.history)
        assert set(o.competitors) <= set(h.competitors)
        if o.is_closed:
            assert o.closed_at is not None and o.created_at < o.closed_at <= now
            assert o.stage == ("Closed Won" if o.is_won else "Closed Lost")
            assert o.close_date == o.closed_at.date()
            assert (o.loss_reason is None) == o.is_won
        else:
            assert o.closed_at is None and not o.is_won and o.stage in STAGES
            assert o.close_date > now.date()
    for act in h.activities:
        assert act.owner_key in reps and act.at <= now
        assert act.lead_key is None or act.lead_key in leads
        assert act.contact_key is None or act.contact_key in contacts
        assert act.opportunity_key is None or act.opportunity_key in opps
        assert act.account_key is None or act.account_key in accounts
        assert any((act.lead_key, act.contact_key, act.opportunity_key, act.account_key))
        if act.type == "call":
            assert act.duration_minutes and act.direction in ("inbound", "outbound")
    for note in h.notes:
        assert note.author_key in reps and note.at <= now
        assert note.lead_key is None or note.lead_key in leads
        assert note.contact_key is None or note.contact_key in contacts
        assert note.opportunity_key is None or note.opportunity_key in opps
        assert note.account_key is None or note.account_key in accounts


def test_given_5k_history_then_every_reference_resolves_and_time_runs_forward(h5k):
    _check_integrity(h5k)


def test_given_a_small_history_then_it_is_still_consistent_with_the_minimum_rep_count(h300):
    _check_integrity(h300)
    assert len(h300.reps) == 4
    assert {r.territory for r in h300.reps} == {x.region for x in h300.leads} | {
        r.territory for r in h300.reps
    }
    assert any(x.converted for x in h300.leads)


def test_given_5k_leads_then_reps_scale_and_owners_mostly_match_their_territory(h5k):
    assert len(h5k.reps) == round(5000 / 150)
    reps = {r.key: r for r in h5k.reps}
    matched = sum(reps[x.owner_key].territory == x.region for x in h5k.leads) / len(h5k.leads)
    assert 0.8 <= matched <= 0.95
    assert all(r.expertise and r.capacity > 0 for r in h5k.reps)


def test_given_5k_leads_then_sources_titles_and_custom_fields_are_realistic(h5k):
    assert {x.source for x in h5k.leads} == {
        "Web", "Webinar", "Referral", "Paid Search", "Trade Show", "Partner", "Outbound",
    }  # fmt: skip
    assert len({x.title for x in h5k.leads}) >= 25
    assert any(x.title.startswith("VP") for x in h5k.leads)
    for lead in h5k.leads[:200]:
        assert isinstance(lead.custom["Budget_Confirmed__c"], bool)
        assert lead.custom["Employees_Band__c"] in (
            "1-50",
            "51-200",
            "201-1000",
            "1001-5000",
            "5000+",
        )
        assert isinstance(lead.custom["Tech_Stack__c"], str)
    kinds = Counter(e.type for x in h5k.leads for e in x.engagement)
    assert set(kinds) == {"email_open", "email_click", "page_visit", "form_fill"}
    statuses = Counter(x.status for x in h5k.leads)
    assert set(statuses) == {
        "Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted",
    }  # fmt: skip


def test_given_5k_history_then_deals_have_slips_amount_changes_competitors_and_loss_reasons(h5k):
    opps = h5k.opportunities

    def pushed(o):
        cut = o.closed_at or h5k.now
        return any(
            x.field == "CloseDate" and x.at < cut and x.new_value > x.old_value for x in o.history
        )

    slipped = [o for o in opps if pushed(o)]
    assert len(slipped) > 0.2 * len(opps)
    assert any(x.field == "Amount" for o in opps for x in o.history)
    assert 0.3 < sum(bool(o.competitors) for o in opps) / len(opps) < 0.7
    assert len({r for o in opps for r in [o.loss_reason] if r}) >= 5
    assert len({o.amount for o in opps}) > 50


def test_given_5k_history_then_winning_and_engaged_records_have_more_activity(h5k):
    per_opp = Counter(a.opportunity_key for a in h5k.activities if a.opportunity_key)
    won = [per_opp[o.key] for o in h5k.opportunities if o.is_won]
    lost = [per_opp[o.key] for o in h5k.opportunities if o.is_closed and not o.is_won]
    assert np.mean(won) > np.mean(lost)
    assert Counter(a.type for a in h5k.activities).keys() == {"call", "email", "meeting", "task"}


# ---------------------------------------------------------------------------------------- the notes


def test_given_the_opening_bank_then_each_opening_has_its_own_literal_start():
    starts = [_literal_start(t) for t in text.OPENINGS]
    assert all(len(s.split()) >= 2 for s in starts)
    for a, b in itertools.permutations(starts, 2):
        assert not b.startswith(a), (a, b)


def test_given_5k_leads_then_notes_use_at_least_30_distinct_openings(h5k):
    starts = [_literal_start(t) for t in text.OPENINGS]
    used = {s for s in starts for note in h5k.notes if note.body.startswith(s)}
    assert len(used) >= 30


def test_given_5k_leads_then_notes_are_20_to_120_words(h5k):
    words = [len(n.body.split()) for n in h5k.notes]
    assert min(words) >= 20 and max(words) <= 120
    assert len(h5k.notes) > 0.5 * len(h5k.leads)


def test_given_5k_leads_then_competitors_appear_under_several_aliases_in_varied_wording(h5k):
    assert 3 <= len(h5k.competitors) <= 5
    bodies = [n.body for n in h5k.notes]
    for name, aliases in h5k.competitors.items():
        assert name in aliases and len(aliases) >= 2
        seen = {a for a in aliases if any(re.search(rf"\b{re.escape(a)}\b", b) for b in bodies)}
        assert len(seen) >= 2, name
    templates = [*text.COMPETITOR, *text.OBJECTIONS["incumbent"]]
    alias_words = [re.escape(a) for aliases in COMPETITORS.values() for a in aliases]
    alias_sentences = [
        s
        for b in bodies
        for s in re.split(r"(?<=[.!?])\s", b)
        if re.search("|".join(alias_words), s)
    ]
    used = {t for t in templates for s in alias_sentences if _template_regex(t).fullmatch(s)}
    assert len(used) >= 15


def test_given_5k_leads_then_some_notes_carry_personal_data(h5k):
    bodies = [n.body for n in h5k.notes]
    with_email = sum(bool(EMAIL.search(b)) for b in bodies) / len(bodies)
    with_phone = sum(bool(PHONE.search(b)) for b in bodies) / len(bodies)
    assert with_email > 0.2 and with_phone > 0.05
    contacts = {c.key: c for c in h5k.contacts}
    full_names = {k: f"{c.first_name} {c.last_name}" for k, c in contacts.items()}
    named = [n for n in h5k.notes if n.contact_key and full_names[n.contact_key] in n.body]
    assert len(named) > 0.3 * sum(1 for n in h5k.notes if n.contact_key)


def test_given_deal_notes_then_signals_and_objections_reach_the_text(h5k):
    deal_bodies = [n.body for n in h5k.notes if n.opportunity_key]
    for bank in (*text.SIGNALS.values(), *text.OBJECTIONS.values()):
        regexes = [_template_regex(t) for t in bank]
        assert any(r.search(b) for r in regexes for b in deal_bodies)
