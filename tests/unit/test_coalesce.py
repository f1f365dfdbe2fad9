from __future__ import annotations

import pytest

from core.coalesce import EventLedger
from core.queue import QueueUnavailable


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def ledgers(request):
    """Two ledgers that must behave as one: two workers on one Redis, or one process in memory."""
    if request.param == "memory":
        shared = EventLedger(None)
        return shared, shared
    url = request.getfixturevalue("redis_url")
    return EventLedger(url), EventLedger(url)


def test_events_are_unseen_until_marked_and_seen_by_every_process(ledgers):
    first, second = ledgers
    assert first.unseen(["a", "b"]) == ["a", "b"]
    first.mark_seen(["a"])
    assert second.unseen(["a", "b", "c"]) == ["b", "c"]


def test_only_the_first_change_of_a_burst_schedules_a_fetch(ledgers):
    first, second = ledgers
    assert first.add_pending("t:contacts", ["1"]) is True
    assert second.add_pending("t:contacts", ["1", "2"]) is False
    assert first.add_pending("t:deals", ["9"]) is True
    assert second.claim_pending("t:contacts") == ["1", "2"]


def test_ids_arriving_during_a_fetch_schedule_another_and_are_not_lost(ledgers):
    first, second = ledgers
    first.add_pending("t:contacts", ["1"])
    claimed = second.claim_pending("t:contacts")
    assert first.add_pending("t:contacts", ["2"]) is True  # the running fetch unscheduled itself
    second.done_pending("t:contacts", claimed)
    assert first.claim_pending("t:contacts") == ["2"]


def test_a_failed_fetch_leaves_its_ids_pending_for_the_retry(ledgers):
    first, _ = ledgers
    first.add_pending("t:contacts", ["1", "2"])
    first.claim_pending("t:contacts")
    assert first.claim_pending("t:contacts") == ["1", "2"]


def test_counters_add_up_across_processes(ledgers):
    first, second = ledgers
    first.count("hubspot.echo")
    second.count("hubspot.echo", 2)
    assert first.counters()["hubspot.echo"] == 3


def test_an_unreachable_redis_raises_queue_unavailable():
    ledger = EventLedger("redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable):
        ledger.unseen(["a"])
    with pytest.raises(QueueUnavailable):
        ledger.add_pending("t:x", ["1"])


def test_an_id_changed_again_while_its_fetch_runs_stays_pending_for_the_next_fetch(ledgers):
    first, second = ledgers
    first.add_pending("t:contacts", ["1", "2"])
    running = second.claim("t:contacts")  # the fetch reads record 1 ...
    assert first.add_pending("t:contacts", ["1"]) is True  # ... which changes again meanwhile
    second.done_pending("t:contacts", running.ids, running.generation)
    assert first.claim_pending("t:contacts") == ["1"]  # the newer change is not lost
