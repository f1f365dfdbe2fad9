"""Forecast flags match a hand-checked set of deals built to exhibit each risk.

One tenant in a real store: four closed deals that set the typical stage age (10 days in
Proposal), a clean control deal, one deal per risk and one with two risks. The expected flag set of
each deal is written out by hand below; threshold changes and manager reviews change it as stated.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scoring_service_fixtures import TENANT, scoring_services

from copilot.field_history import FieldHistoryError, load_history, save_history
from copilot.forecast import (
    FlagReviewError,
    compute_flags,
    deal_flags,
    flags_value,
    review_flag,
    stage_medians,
)
from copilot.settings import DEFAULT_RISK_THRESHOLDS, load_settings, save_settings
from core.config import Config
from core.services import Services
from scoring.ledger import LedgerEntry, ScoreLedger

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = NOW.date()

EXPECTED = {
    "opp-clean": set(),
    "opp-quiet": {"no_activity"},
    "opp-stalled": {"stalled"},
    "opp-pushed": {"close_date_pushed"},
    "opp-pushed-far": {"close_date_pushed"},
    "opp-overdue": {"close_date_past"},
    "opp-single": {"single_threaded"},
    "opp-rival": {"competitor"},
    "opp-rival-note": {"competitor"},
    "opp-falling": {"score_drop"},
    "opp-resized": {"amount_changed"},
    "opp-two-risks": {"single_threaded", "close_date_past"},
}
"""Hand-checked: each deal below is healthy except for the risk its name says."""


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _base(crm_id: str, at: datetime) -> dict[str, Any]:
    return {
        "tenant_id": TENANT,
        "crm": "salesforce",
        "crm_id": crm_id,
        "created_at": at,
        "updated_at": at,
        "custom": {},
    }


class Builder:
    """Collects canonical records, field history and ledger entries for the test tenant."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {
            "contact": [],
            "opportunity": [],
            "activity": [],
            "note": [],
        }
        self.history: list[dict[str, Any]] = []
        self.ledger: list[LedgerEntry] = []
        self._seq = 0

    def contact(self, crm_id: str) -> None:
        self.records["contact"].append(
            {**_base(crm_id, days_ago(200)), "first_name": "Pat", "last_name": crm_id}
        )

    def deal(
        self,
        crm_id: str,
        *,
        stage: str = "Proposal",
        entered_days: float = 5,
        close: date | None = None,
        amount: float = 10_000.0,
        contacts: tuple[str, ...] = ("c-1", "c-2"),
        touched_days: float = 2,
        competitors: tuple[str, ...] = (),
        closed: bool = False,
    ) -> None:
        created = days_ago(entered_days + 5)
        self.records["opportunity"].append(
            {
                **_base(crm_id, created),
                "name": f"Deal {crm_id}",
                "stage": stage,
                "amount": amount,
                "close_date": close or TODAY + timedelta(days=30),
                "is_closed": closed,
                "is_won": closed,
                "owner_id": "u-1",
                "competitors": list(competitors),
            }
        )
        self.change(crm_id, "stage", None, "Prospecting", created)
        self.change(crm_id, "stage", "Prospecting", stage, days_ago(entered_days))
        for contact in contacts:
            self.activity(crm_id, contact, touched_days)

    def change(self, crm_id: str, field: str, old: Any, new: Any, at: datetime) -> None:
        self.history.append(
            {
                "crm_id": crm_id,
                "field": field,
                "old_value": old,
                "new_value": new,
                "changed_at": at,
                "changed_by": "u-1",
            }
        )

    def activity(self, deal: str, contact: str | None, age_days: float) -> str:
        self._seq += 1
        crm_id = f"act-{self._seq:03d}"
        self.records["activity"].append(
            {
                **_base(crm_id, days_ago(age_days)),
                "type": "call",
                "subject": "Check-in",
                "occurred_at": days_ago(age_days),
                "opportunity_id": deal,
                "contact_id": contact,
            }
        )
        return crm_id

    def note(self, deal: str, body: str, age_days: float) -> str:
        self._seq += 1
        crm_id = f"note-{self._seq:03d}"
        self.records["note"].append(
            {**_base(crm_id, days_ago(age_days)), "body": body, "opportunity_id": deal}
        )
        return crm_id

    def score(self, deal: str, old: int | None, new: int, age_days: float) -> None:
        self.ledger.append(
            LedgerEntry(
                TENANT,
                "opportunity",
                deal,
                days_ago(age_days),
                old,
                new,
                None if old is None else "Warm",
                "Warm",
                "v1",
                "",
            )
        )

    def write(self, services: Services) -> None:
        for entity in ("contact", "opportunity", "activity", "note"):
            services.store.upsert(TENANT, entity, self.records[entity])
        save_history(services.store, TENANT, self.history)
        ScoreLedger(services.store).record(self.ledger)


def build_tenant(b: Builder) -> dict[str, str]:
    """The hand-built deals; returns refs the assertions name."""
    refs: dict[str, str] = {}
    for contact in ("c-1", "c-2", "c-3"):
        b.contact(contact)
    # Closed deals: 10 days in Prospecting, then 8, 10, 10, 12 days in Proposal (median 10).
    for i, days in enumerate((8, 10, 10, 12)):
        crm_id = f"opp-won-{i}"
        start = days_ago(200 + i)
        b.records["opportunity"].append(
            {
                **_base(crm_id, start),
                "name": crm_id,
                "stage": "Closed Won",
                "amount": 5000.0,
                "close_date": (start + timedelta(days=10 + days)).date(),
                "is_closed": True,
                "is_won": True,
            }
        )
        b.change(crm_id, "stage", None, "Prospecting", start)
        b.change(crm_id, "stage", "Prospecting", "Proposal", start + timedelta(days=10))
        b.change(crm_id, "stage", "Proposal", "Closed Won", start + timedelta(days=10 + days))

    b.deal("opp-clean")
    b.score("opp-clean", None, 60, 20)
    b.score("opp-clean", 60, 66, 3)
    b.change("opp-clean", "amount", 10_000.0, 11_000.0, days_ago(4))  # +10 %: under 20 %

    b.deal("opp-quiet", touched_days=20)
    refs["quiet_last"] = b.activity("opp-quiet", "c-1", 19)

    b.deal("opp-stalled", entered_days=16)  # over 10 x 1.5 = 15 days in Proposal

    b.deal("opp-pushed")
    b.change("opp-pushed", "close_date", TODAY, TODAY + timedelta(days=10), days_ago(9))
    b.change(
        "opp-pushed",
        "close_date",
        TODAY + timedelta(days=10),
        TODAY + timedelta(days=20),
        days_ago(4),
    )
    b.change(
        "opp-pushed",
        "close_date",
        TODAY + timedelta(days=20),
        TODAY + timedelta(days=15),
        days_ago(3),
    )  # pulled in: not a push

    b.deal("opp-pushed-far")
    b.change(
        "opp-pushed-far",
        "close_date",
        TODAY - timedelta(days=5),
        TODAY + timedelta(days=30),
        days_ago(6),
    )  # one push of 35 days

    b.deal("opp-overdue", close=TODAY - timedelta(days=3))

    b.deal("opp-single", contacts=("c-1",))
    b.activity("opp-single", "c-1", 1)
    b.activity("opp-single", None, 1)  # no contact named: does not count as a thread

    b.deal("opp-rival", competitors=("Rivalry",))
    b.deal("opp-rival-note")
    refs["rival_note"] = b.note("opp-rival-note", "They also trial RIVALCO next week.", 1)
    b.note("opp-clean", "Rivalcopter is a product name, not a competitor.", 1)

    b.deal("opp-falling")
    b.score("opp-falling", None, 72, 40)  # before the 30-day window
    b.score("opp-falling", 72, 70, 12)
    b.score("opp-falling", 70, 58, 2)  # 72 held at the window's start: 14 points down

    b.deal("opp-resized", amount=13_000.0)
    b.change("opp-resized", "amount", 10_000.0, 13_000.0, days_ago(4))  # +30 %

    b.deal("opp-two-risks", contacts=("c-3",), close=TODAY - timedelta(days=1))
    return refs


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("forecast")
    config = Config.for_demo(lancedb_uri=str(root / "lancedb"))
    services, queue = scoring_services(config, str(root / "lancedb"))
    save_settings(services.registry, TENANT, {"competitors": {"Rivalry": ["RivalCo"]}})
    builder = Builder()
    refs = build_tenant(builder)
    builder.write(services)
    yield services, refs
    queue.stop()


def flag_sets(services: Services, ids: list[str] | None = None) -> dict[str, set[str]]:
    found = deal_flags(services, TENANT, ids or list(EXPECTED), now=NOW)
    return {crm_id: {f.name for f in flags} for crm_id, flags in found.items()}


def test_each_hand_built_deal_raises_exactly_its_risks(tenant: Any) -> None:
    services, _ = tenant
    assert flag_sets(services) == EXPECTED


def test_closed_deals_get_no_flags_and_set_the_typical_stage_age(tenant: Any) -> None:
    services, _ = tenant
    assert deal_flags(services, TENANT, ["opp-won-0", "opp-missing"], now=NOW) == {}
    medians = stage_medians(services.store, TENANT)
    assert medians["Proposal"] == (10.0, 4)
    assert medians["Prospecting"] == (10.0, 4)


def test_flags_carry_their_evidence(tenant: Any) -> None:
    services, refs = tenant
    flags = {
        crm_id: {f.name: f for f in found}
        for crm_id, found in deal_flags(services, TENANT, list(EXPECTED), now=NOW).items()
    }
    quiet = flags["opp-quiet"]["no_activity"]
    assert quiet.refs == (f"activity:{refs['quiet_last']}",)
    assert quiet.numbers["days"] == 19
    assert quiet.dates == ((NOW - timedelta(days=19)).date().isoformat(),)

    pushed = flags["opp-pushed"]["close_date_pushed"]
    assert pushed.numbers["pushes"] == 2
    assert pushed.numbers["total_days"] == 20
    far = flags["opp-pushed-far"]["close_date_pushed"]
    assert (far.numbers["pushes"], far.numbers["total_days"]) == (1, 35)

    stalled = flags["opp-stalled"]["stalled"]
    assert stalled.numbers["days"] == 16
    assert stalled.numbers["typical_days"] == 10.0

    assert flags["opp-rival-note"]["competitor"].refs == (f"note:{refs['rival_note']}",)
    assert flags["opp-rival"]["competitor"].refs == ("opportunity:opp-rival",)
    assert flags["opp-falling"]["score_drop"].numbers["drop"] == 14
    assert flags["opp-resized"]["amount_changed"].numbers["percent"] == 30.0
    assert flags["opp-overdue"]["close_date_past"].numbers["days_overdue"] == 3
    assert flags["opp-single"]["single_threaded"].numbers["contacts"] == 1

    text = flags_value(list(flags["opp-two-risks"].values()))
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Close date ") and "[opportunity:opp-two-risks]" in lines[0]
    assert lines[1].startswith("Single-threaded: 1 contact engaged")
    assert flags_value([]) == "No open risk flags"


def test_threshold_changes_change_the_flags(tenant: Any) -> None:
    services, _ = tenant
    looser = {
        "no_activity_days": 20,  # the quiet deal's 19 days no longer count
        "stalled_factor": 2.0,  # 16 days is under 10 x 2
        "close_pushes": 3,  # two pushes are fine now, 35 days in total still is not
        "single_thread_contacts": 0,  # one engaged contact is enough
        "score_drop_points": 15,
        "amount_change_pct": 35,
    }
    found = compute_flags(
        services.store, TENANT, list(EXPECTED), {**DEFAULT_RISK_THRESHOLDS, **looser}, now=NOW
    )
    assert {k: {f.name for f in v} for k, v in found.items()} == {
        **{crm_id: set() for crm_id in EXPECTED},
        "opp-pushed-far": {"close_date_pushed"},
        "opp-overdue": {"close_date_past"},
        "opp-rival": {"competitor"},
        "opp-two-risks": {"close_date_past"},
    }
    stricter = {
        **DEFAULT_RISK_THRESHOLDS,
        "single_thread_contacts": 2,
        "close_push_days": 40,
        "close_pushes": 2,
    }
    found = compute_flags(
        services.store, TENANT, ["opp-clean", "opp-pushed-far"], stricter, now=NOW
    )
    assert {k: {f.name for f in v} for k, v in found.items()} == {
        "opp-clean": {"single_threaded"},
        "opp-pushed-far": {"single_threaded"},
    }


def test_tenant_settings_thresholds_reach_the_flags(tenant: Any) -> None:
    services, _ = tenant
    save_settings(services.registry, TENANT, {"risk_thresholds": {"no_activity_days": 25}})
    try:
        assert load_settings(services.registry, TENANT).risk_thresholds["stalled_factor"] == 1.5
        assert flag_sets(services, ["opp-quiet"]) == {"opp-quiet": set()}
    finally:
        save_settings(services.registry, TENANT, {"risk_thresholds": DEFAULT_RISK_THRESHOLDS})
    assert flag_sets(services, ["opp-quiet"]) == {"opp-quiet": {"no_activity"}}


def test_acknowledged_flag_is_shown_as_acknowledged(tenant: Any) -> None:
    services, _ = tenant
    review_flag(
        services, TENANT, "opp-resized", "amount_changed", "acknowledge", "", "mgr-1", now=NOW
    )
    (flag,) = deal_flags(services, TENANT, ["opp-resized"], now=NOW)["opp-resized"]
    assert flag.acknowledged
    assert flag.review is not None and flag.review["by"] == "mgr-1"
    assert flag.line().startswith("Amount up 30% from 10,000 to 13,000")
    assert "(acknowledged)" in flag.line()


def test_overridden_flag_stays_quiet_until_its_evidence_changes(tenant: Any) -> None:
    services, _ = tenant
    review_flag(
        services,
        TENANT,
        "opp-pushed",
        "close_date_pushed",
        "override",
        "Customer board moved; signed LOI",
        "mgr-1",
        now=NOW,
    )
    assert flag_sets(services, ["opp-pushed"]) == {"opp-pushed": set()}
    raw = deal_flags(services, TENANT, ["opp-pushed"], now=NOW, apply_reviews=False)
    assert {f.name for f in raw["opp-pushed"]} == {"close_date_pushed"}

    save_history(
        services.store,
        TENANT,
        [
            {
                "crm_id": "opp-pushed",
                "field": "close_date",
                "old_value": TODAY + timedelta(days=15),
                "new_value": TODAY + timedelta(days=40),
                "changed_at": days_ago(1),
            },
        ],
    )
    assert flag_sets(services, ["opp-pushed"]) == {"opp-pushed": {"close_date_pushed"}}


def test_bad_reviews_are_refused_and_store_nothing(tenant: Any) -> None:
    services, _ = tenant
    before = services.store.read_rows(TENANT, "flag_reviews", _reviews_schema())
    cases = [
        ("opp-quiet", "no_such_flag", "override", "why", "mgr-1", "unknown flag"),
        ("opp-quiet", "no_activity", "override", "  ", "mgr-1", "needs a reason"),
        ("opp-quiet", "no_activity", "dismiss", "why", "mgr-1", "unknown action"),
        ("opp-quiet", "no_activity", "acknowledge", "", "", "reviewing user"),
        ("opp-nowhere", "no_activity", "override", "why", "mgr-1", "unknown deal"),
        ("opp-won-1", "no_activity", "override", "why", "mgr-1", "is closed"),
        ("opp-clean", "no_activity", "override", "why", "mgr-1", "not raised"),
    ]
    for deal, flag, action, reason, user, message in cases:
        with pytest.raises(FlagReviewError, match=message):
            review_flag(services, TENANT, deal, flag, action, reason, user, now=NOW)
    assert services.store.read_rows(TENANT, "flag_reviews", _reviews_schema()) == before
    assert flag_sets(services, ["opp-quiet"]) == {"opp-quiet": {"no_activity"}}


def test_field_history_rejects_bad_rows_and_keeps_one_row_per_change(tenant: Any) -> None:
    services, _ = tenant
    good = {
        "crm_id": "opp-clean",
        "field": "amount",
        "old_value": "10000",
        "new_value": 11_000,
        "changed_at": days_ago(4),
    }
    for bad, message in [
        ({**good, "field": "probability"}, "not tracked"),
        ({**good, "new_value": "lots"}, "not a number"),
        ({**good, "changed_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({**good, "crm_id": ""}, "no deal id"),
    ]:
        with pytest.raises(FieldHistoryError, match=message):
            save_history(services.store, TENANT, [good, bad])
    save_history(services.store, TENANT, [good])  # the same change again: replaced, not added
    amounts = [
        c
        for c in load_history(services.store, TENANT, ["opp-clean"])["opp-clean"]
        if c.field == "amount"
    ]
    assert [(c.old_number(), c.new_number()) for c in amounts] == [(10_000.0, 11_000.0)]


def _reviews_schema() -> Any:
    from copilot.forecast import REVIEWS_SCHEMA

    return REVIEWS_SCHEMA
