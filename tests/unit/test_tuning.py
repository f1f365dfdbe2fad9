"""The dry run's grade numbers agree with replaying each record's ledger entries one by one."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scoring_service_fixtures import HashEmbedder

from core.config import Config
from core.crypto import TokenCipher
from core.store import Store
from core.tenants import Tenant, TenantRegistry
from sandbox.canonical import load_history_into_store
from sandbox.history import generate
from scoring.grades import grade_for, hysteresis_grade
from scoring.settings import ScoringSettings, load_settings
from scoring.training import train
from scoring.tuning import dry_run, replay_grades, warm_dry_run

TENANT = "salesforce-00DTUNE"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _entries(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    last: dict[str, int] = {}
    for i in range(n):
        crm_id = f"00Q{int(rng.integers(0, 120)):06d}"
        score = int(rng.integers(0, 100))
        rows.append({
            "tenant_id": TENANT, "kind": "lead", "crm_id": crm_id,
            # Whole hours, so several entries share a moment and ties are exercised too.
            "scored_at": NOW - timedelta(hours=int(rng.integers(0, 60 * 24))),
            "old_score": last.get(crm_id), "new_score": score, "old_grade": None,
            "new_grade": "Hot", "crossing": None, "model_version": "v1", "reasons": "",
            "stale": bool(i % 17 == 0),
        })  # fmt: skip
        last[crm_id] = score
    return rows


def _direct(rows: list[dict], settings: ScoringSettings, since: datetime) -> dict:
    """The definition: per record, its scores in time order through ``hysteresis_grade``."""
    kept = sorted(
        (r for r in rows if not r["stale"] and r["scored_at"] >= since),
        key=lambda r: r["scored_at"],
    )
    history: dict[str, list[int]] = {}
    for row in kept:
        scores = history.get(row["crm_id"])
        if scores is None:
            scores = history[row["crm_id"]] = []
            if row["old_score"] is not None:
                scores.append(row["old_score"])
        scores.append(row["new_score"])
    counts = {label: 0 for label, _ in settings.grades}
    points = {label: 0 for label, _ in settings.grades}
    crossings = 0
    for scores in history.values():
        grade = grade_for(scores[0], settings.grades)
        for score in scores[1:]:
            new = hysteresis_grade(score, grade, settings.grades, settings.hysteresis_margin)
            crossings += new != grade
            grade = new
        counts[grade] += 1
        points[grade] += scores[-1]
    return {
        "records": len(history),
        "entries": len(kept),
        "crossings": crossings,
        "grades": [
            {"grade": label, "min_score": low, "count": counts[label],
             "expected_conversions": round(points[label] / 100, 1)}
            for label, low in settings.grades
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("tuning") / "db"), embedder=HashEmbedder())
    rows = _entries(900, seed=3)
    store.append_score_entries(TENANT, rows)
    return store, rows


SETTINGS = [
    ScoringSettings(),
    ScoringSettings(grades=(("Hot", 60.0), ("Warm", 30.0), ("Cold", 0.0)), hysteresis_margin=0),
    ScoringSettings(
        grades=(("A", 80.0), ("B", 55.0), ("C", 35.0), ("D", 0.0)), hysteresis_margin=12.5
    ),
]


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_replayed_grades_match_a_record_by_record_replay(ledger, days):
    store, rows = ledger
    summaries = replay_grades(store, TENANT, SETTINGS, days=days, now=NOW)
    for settings, summary in zip(SETTINGS, summaries, strict=True):
        assert summary == _direct(rows, settings, NOW - timedelta(days=days))
    assert summaries[0]["entries"] > 0


def test_a_ledger_write_is_seen_by_the_next_dry_run(ledger, tmp_path):
    store, rows = ledger
    before = replay_grades(store, TENANT, SETTINGS[:1], days=30, now=NOW)[0]
    other_writer = Store(store.uri, embedder=HashEmbedder())
    extra = _entries(40, seed=11)
    other_writer.append_score_entries(TENANT, extra)
    after = replay_grades(store, TENANT, SETTINGS[:1], days=30, now=NOW)[0]
    assert after == _direct(rows + extra, SETTINGS[0], NOW - timedelta(days=30))
    assert after["entries"] > before["entries"]
    rows.extend(extra)


def test_dry_run_sets_current_and_proposed_grades_side_by_side(ledger):
    store, rows = ledger
    result = dry_run(
        store, TENANT, ScoringSettings(), {"grades": [["Hot", 60], ["Warm", 30], ["Cold", 0]]},
        days=30, now=NOW, routing=False,
    )  # fmt: skip
    since = NOW - timedelta(days=30)
    assert result["grades"]["before"] == _direct(rows, ScoringSettings(), since)
    proposed = ScoringSettings(grades=(("Hot", 60.0), ("Warm", 30.0), ("Cold", 0.0)))
    assert result["grades"]["after"] == _direct(rows, proposed, since)
    assert result["routing"] is None


def test_preview_after_a_change_answers_from_kept_figures_and_refreshes_behind(
    tmp_path, monkeypatch
):
    tenant = "salesforce-00DWARM"
    store = Store(str(tmp_path / "db"), embedder=HashEmbedder())
    load_history_into_store(store, generate(seed=7, n_leads=600), tenant)
    registry = TenantRegistry(store, TokenCipher.from_config(Config.for_demo()))
    registry.save(Tenant(tenant, "salesforce", "00DWARM", None, status="active"))
    current = load_settings(registry, tenant)
    proposal = {"capacity_default": 5, "fairness_band": 0.1}
    first = dry_run(store, tenant, current, proposal, days=60)
    assert "before" in first["routing"] and not first["refreshing"]
    # A sync brings a new lead: the next preview must not wait while the replay is rebuilt.
    newest = max(store.query(tenant, "lead"), key=lambda r: r["created_at"])
    later = newest["created_at"] + timedelta(hours=1)
    store.upsert(tenant, "lead", [{**newest, "crm_id": "00QNEWLEAD", "created_at": later}])
    requester = threading.current_thread()

    def reads_only_behind(original):
        def read(*args, **kwargs):
            if threading.current_thread() is requester:
                raise AssertionError("the preview read rows instead of answering from kept figures")
            return original(*args, **kwargs)

        return read

    for name in ("query", "to_arrow", "read_arrow"):
        monkeypatch.setattr(store, name, reads_only_behind(getattr(store, name)))
    stale = dry_run(store, tenant, current, proposal, days=60)
    monkeypatch.undo()
    assert stale["refreshing"]
    assert stale["routing"] == first["routing"]
    deadline = time.monotonic() + 60
    while (fresh := dry_run(store, tenant, current, proposal, days=60))["refreshing"]:
        assert time.monotonic() < deadline, "the kept figures were never refreshed"
        time.sleep(0.1)
    cold = dry_run(Store(store.uri, embedder=HashEmbedder()), tenant, current, proposal, days=60)
    assert fresh == cold
    assert fresh["routing"]["before"]["leads"] > 0


def test_warming_builds_what_the_first_preview_reads_and_skips_tenants_without_a_model(
    tmp_path, monkeypatch
):
    tenant = "salesforce-00DWARMUP"
    store = Store(str(tmp_path / "db"), embedder=HashEmbedder())
    history = generate(seed=5, n_leads=600)
    load_history_into_store(store, history, tenant)
    current = ScoringSettings()
    assert not warm_dry_run(store, tenant, current)  # no model yet: nothing to replay
    train(store, tenant, "lead", as_of=history.now)
    assert warm_dry_run(store, tenant, current)

    def no_reads(*args, **kwargs):
        raise AssertionError("the first preview read rows the warming had built its inputs from")

    for name in ("query", "to_arrow", "read_arrow"):
        monkeypatch.setattr(store, name, no_reads)
    warmed = dry_run(store, tenant, current, {"capacity_default": 7}, days=30)
    monkeypatch.undo()
    assert not warmed["refreshing"]
    cold = dry_run(Store(store.uri, embedder=HashEmbedder()), tenant, current,
                   {"capacity_default": 7}, days=30)  # fmt: skip
    assert warmed == cold
