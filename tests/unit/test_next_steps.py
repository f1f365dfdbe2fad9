"""Next steps, follow-up drafts and the deal refresh job, offline, over a real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scoring_service_fixtures import TENANT, scoring_services

from copilot import jobs
from copilot.forecast import deal_flags, deals_evidence, load_open_deals
from copilot.llm import OFFLINE_LABEL, Evidence
from copilot.next_steps import (
    FOLLOWUP_TASK,
    FollowupError,
    deal_next_step,
    draft_followup,
    lead_next_step,
    offline_followup,
    record_evidence,
    records_evidence,
    word_count,
)
from copilot.results import load_results
from copilot.settings import save_settings
from core.config import Config
from core.services import Services

NOW = datetime.now(UTC).replace(microsecond=0)


def _base(crm_id: str, days: float) -> dict[str, Any]:
    at = NOW - timedelta(days=days)
    return {
        "tenant_id": TENANT,
        "crm": "salesforce",
        "crm_id": crm_id,
        "created_at": at,
        "updated_at": at,
        "custom": {},
    }


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, Any]]:
    root: Path = tmp_path_factory.mktemp("next_steps")
    services, queue = scoring_services(
        Config.for_demo(lancedb_uri=str(root / "db")), str(root / "db")
    )
    store = services.store
    store.upsert(
        TENANT,
        "contact",
        [
            {**_base("c-1", 90), "first_name": "Ada", "last_name": "Byrne"},
            {
                **_base("c-2", 90),
                "first_name": "Noor",
                "last_name": "Kaya",
                "custom": {"HasOptedOutProcessing": True},
            },
        ],
    )
    store.upsert(
        TENANT,
        "lead",
        [
            {**_base("lead-1", 10), "first_name": "Lee", "last_name": "Hart", "company": "Hart Co"},
            {
                **_base("lead-2", 10),
                "first_name": "Kim",
                "last_name": "Opt",
                "company": "Opt Co",
                "custom": {"HasOptedOutProcessing": True},
            },
        ],
    )
    store.upsert(
        TENANT,
        "opportunity",
        [
            {
                **_base("opp-risky", 40),
                "name": "Hart Co expansion",
                "stage": "Proposal",
                "amount": 20_000.0,
                "close_date": (NOW - timedelta(days=2)).date(),
                "owner_id": "u-1",
                "competitors": ["Rivalry"],
            },
            {
                **_base("opp-fine", 10),
                "name": "Calm deal",
                "stage": "Negotiation",
                "amount": 8_000.0,
                "close_date": (NOW + timedelta(days=20)).date(),
                "owner_id": "u-1",
            },
        ],
    )
    store.upsert(
        TENANT,
        "activity",
        [
            {
                **_base("a-1", 30),
                "type": "call",
                "subject": "Pricing call",
                "occurred_at": NOW - timedelta(days=30),
                "opportunity_id": "opp-risky",
                "contact_id": "c-1",
            },
            {
                **_base("a-2", 1),
                "type": "meeting",
                "subject": "Demo",
                "occurred_at": NOW - timedelta(days=1),
                "opportunity_id": "opp-fine",
                "contact_id": "c-1",
            },
            {
                **_base("a-3", 1),
                "type": "call",
                "subject": "Legal review",
                "occurred_at": NOW - timedelta(days=1),
                "opportunity_id": "opp-fine",
                "contact_id": "c-2",
            },
            {
                **_base("a-4", 2),
                "type": "email",
                "subject": "Asked for a quote",
                "direction": "inbound",
                "occurred_at": NOW - timedelta(days=2),
                "lead_id": "lead-1",
            },
        ],
    )
    store.upsert(
        TENANT,
        "note",
        [
            {
                **_base("n-1", 29),
                "body": "Secret plans of the opted-out person.",
                "opportunity_id": "opp-risky",
                "contact_id": "c-2",
            },
        ],
    )
    yield services, queue
    queue.stop()


@pytest.fixture
def as_current(tenant: Any, monkeypatch: pytest.MonkeyPatch) -> Services:
    services, _ = tenant
    monkeypatch.setattr(jobs, "current", lambda: services)
    return services


def test_deal_refresh_writes_flags_note_and_next_step_offline(as_current: Services) -> None:
    services = as_current
    summary = jobs.refresh_deals(TENANT, ["opp-risky", "opp-fine", "opp-unknown"])
    assert summary is not None
    assert (summary["deals"], summary["generated"], summary["failed"]) == (2, 2, [])
    found = load_results(services.store, TENANT, "opportunity", ["opp-risky", "opp-fine"])
    risky = found["opp-risky"]
    lines = risky["risk_flags"].value.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["No", "Close", "Competitor"]
    note = risky["forecast_note"]
    assert note.offline and note.value.endswith(f"({OFFLINE_LABEL})")
    assert 3 <= len(note.detail["sentences"]) <= 5
    assert risky["next_step"].value == deal_next_step({}, [_flag("close_date_past")])
    cited = {ref for s in note.detail["sentences"] for ref in s["cites"]}
    assert (
        "note:n-1" not in cited
    )  # consent: the opted-out contact's note never reaches the copilot
    assert "next_step" not in found["opp-fine"]  # no open risk: scoring's next step stands
    assert found["opp-fine"]["risk_flags"].value == "No open risk flags"
    assert summary["writeback_jobs"]

    again = jobs.refresh_deals(TENANT, ["opp-risky", "opp-fine"])
    assert again is not None
    assert (again["generated"], again["unchanged"], again["writeback_jobs"]) == (0, 2, [])


def test_evidence_read_for_many_records_equals_evidence_read_one_by_one(tenant: Any) -> None:
    services, _ = tenant
    store = services.store
    leads = [
        {**_base(f"lead-ev-{i}", 5), "first_name": "Ev", "last_name": str(i), "company": "Ev Co"}
        for i in range(3)
    ]
    store.upsert(TENANT, "lead", leads)
    # lead-ev-0 has more dated items than the evidence keeps; lead-ev-2 has none at all.
    store.upsert(
        TENANT,
        "note",
        [
            {**_base(f"n-ev-{i}", 20 - i), "body": f"Note {i}", "lead_id": "lead-ev-0"}
            for i in range(5)
        ]
        + [{**_base("n-ev-9", 3), "body": "Other lead", "lead_id": "lead-ev-1"}],
    )
    store.upsert(
        TENANT,
        "activity",
        [
            {
                **_base(f"a-ev-{i}", 10 - i),
                "type": "email",
                "subject": f"Mail {i}",
                "direction": "inbound",
                "occurred_at": NOW - timedelta(days=10 - i),
                "lead_id": "lead-ev-0",
            }
            for i in range(4)
        ],
    )
    together = records_evidence(store, TENANT, "lead", leads)
    assert together == {
        lead["crm_id"]: record_evidence(store, TENANT, "lead", lead) for lead in leads
    }
    assert len(together["lead-ev-0"]) == 6 and together["lead-ev-2"] == []
    assert [e.ref for e in together["lead-ev-1"]] == ["note:n-ev-9"]

    ids = ["opp-risky", "opp-fine"]
    deals = load_open_deals(store, TENANT, ids)
    flags = deal_flags(services, TENANT, ids, loaded=deals)
    alone = {
        crm_id: deals_evidence(services, TENANT, load_open_deals(store, TENANT, [crm_id]), flags)[
            crm_id
        ]
        for crm_id in ids
    }
    assert deals_evidence(services, TENANT, deals, flags) == alone
    assert "note:n-1" not in {e.ref for e in alone["opp-risky"]}  # its person opted out


def test_lead_next_step_needs_recent_evidence() -> None:
    inbound = Evidence(
        "activity:a-4",
        "activity",
        (NOW - timedelta(days=2)).date().isoformat(),
        "email: Asked for a quote.",
        {"type": "email", "direction": "inbound"},
    )
    old = Evidence("note:n-9", "note", (NOW - timedelta(days=90)).date().isoformat(), "Old", {})
    step = lead_next_step({"crm_id": "lead-1"}, [old, inbound], now=NOW)
    assert step is not None and step["cites"] == ["activity:a-4"]
    assert "inbound email" in step["text"] and len(step["text"]) <= 255
    assert lead_next_step({"crm_id": "lead-1"}, [old], now=NOW) is None


def test_followup_draft_is_stored_short_and_never_for_opted_out_people(
    as_current: Services,
) -> None:
    services = as_current
    result = draft_followup(services, TENANT, "lead", "lead-1")
    assert result.result == "followup_draft" and result.offline
    assert result.value is not None and result.value.startswith(
        "[Draft, not sent; generated offline]"
    )
    assert result.detail["words"] < 150 and result.detail["sent"] is False
    stored = load_results(services.store, TENANT, "lead", ["lead-1"], ["followup_draft"])
    assert stored["lead-1"]["followup_draft"].value == result.value
    for entity, crm_id, message in [
        ("lead", "lead-2", "opted out"),
        ("lead", "lead-404", "unknown lead"),
        ("account", "acc-1", "unknown entity"),
    ]:
        with pytest.raises(FollowupError, match=message):
            draft_followup(services, TENANT, entity, crm_id)
    assert load_results(services.store, TENANT, "lead", ["lead-2"]) == {}


def test_followup_in_the_tenant_language(as_current: Services) -> None:
    services = as_current
    save_settings(services.registry, TENANT, {"followup_language": "de"})
    try:
        result = draft_followup(services, TENANT, "opportunity", "opp-risky")
    finally:
        save_settings(services.registry, TENANT, {"followup_language": "en"})
    assert result.detail["language"] == "de"
    assert result.detail["subject"].startswith("Naechste Schritte")


def test_followup_validation_rejects_long_drafts() -> None:
    long = {"subject": "Hi", "paragraphs": [{"text": "word " * 150, "cites": []}]}
    assert FOLLOWUP_TASK.validator.validate(long)
    ok = offline_followup(
        {"first_name": "Ada", "company": "Hart Co"},
        [{"text": "Close date passed", "cites": ["opportunity:o"]}],
        [],
        "Agree a new close date",
        "en",
    )
    assert FOLLOWUP_TASK.validator.validate(ok) == {}
    assert word_count(ok) < 150


def _flag(name: str) -> Any:
    from copilot.forecast import RiskFlag

    return RiskFlag(name, name, (), (), {}, "x")
