from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis

from core.coalesce import EventLedger, IngestEvent
from core.queue import QueueUnavailable


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def ledgers(request):
    """Two ledgers that must behave as one: two workers on one Redis, or one process in memory."""
    if request.param == "memory":
        shared = EventLedger(None)
        return shared, shared
    url = request.getfixturevalue("redis_url")
    return EventLedger(url), EventLedger(url)


def unseen(ledger, keys):
    """The keys ``ledger`` has not seen, read through a deferred ingest that marks nothing."""
    probe = [IngestEvent(key, remember=False) for key in keys]
    done = ledger.ingest(probe, duplicate_reason="probe", defer=True)
    return [key for key, fresh in zip(keys, done.fresh, strict=True) if fresh]


def test_events_are_unseen_until_settled_and_seen_by_every_process(ledgers):
    first, second = ledgers
    assert unseen(first, ["a", "b"]) == ["a", "b"]
    assert unseen(first, ["a", "b"]) == ["a", "b"]  # reading marks nothing
    first.settle(["a"], {})
    assert unseen(second, ["a", "b", "c"]) == ["b", "c"]
    assert "probe" not in second.counters()


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
        ledger.settle(["a"], {})
    with pytest.raises(QueueUnavailable):
        ledger.add_pending("t:x", ["1"])


def test_an_id_changed_again_while_its_fetch_runs_stays_pending_for_the_next_fetch(ledgers):
    first, second = ledgers
    first.add_pending("t:contacts", ["1", "2"])
    running = second.claim("t:contacts")  # the fetch reads record 1 ...
    assert first.add_pending("t:contacts", ["1"]) is True  # ... which changes again meanwhile
    second.done_pending("t:contacts", running.ids, running.generation)
    assert first.claim_pending("t:contacts") == ["1"]  # the newer change is not lost


# --------------------------------------------------------------------------------------------------
# ingest: a whole delivery in one call (one Redis round trip)


def fetch(key, record_id, scope="t:contacts"):
    return IngestEvent(key, scope, (record_id,))


def test_a_delivery_is_deduped_pending_marked_and_counted_in_one_call(ledgers):
    first, second = ledgers
    first.add_pending("t:contacts", ["0"])  # a fetch is scheduled already: nothing to enqueue
    events = [
        fetch("e1", "1"),
        fetch("e2", "2"),
        IngestEvent("e3", drop_reason="hubspot.echo"),
        IngestEvent("e4", drop_reason="hubspot.unknown_portal", remember=False),
    ]
    done = first.ingest(events, duplicate_reason="hubspot.duplicate", counts={"pre": 2})
    assert done.fresh == (True, True, True, True)
    assert done.schedule == () and done.settled
    assert unseen(second, ["e1", "e2", "e3", "e4"]) == [
        "e4"
    ]  # an unknown tenant's event is not kept
    assert second.counters() == {"hubspot.echo": 1, "hubspot.unknown_portal": 1, "pre": 2}
    again = second.ingest(events, duplicate_reason="hubspot.duplicate")
    assert again.fresh == (False, False, False, True)
    assert first.counters()["hubspot.duplicate"] == 3
    assert second.claim_pending("t:contacts") == ["0", "1", "2"]


def test_a_delivery_that_must_schedule_a_fetch_is_marked_only_once_settled(ledgers):
    first, second = ledgers
    done = first.ingest([fetch("e1", "1"), fetch("e2", "2", "t:deals")], duplicate_reason="dup")
    assert set(done.schedule) == {"t:contacts", "t:deals"} and not done.settled
    assert unseen(second, ["e1", "e2"]) == ["e1", "e2"]  # not before the fetch jobs are queued
    first.settle(["e1", "e2"], {"hubspot.echo": 1})
    assert unseen(second, ["e1", "e2"]) == []
    assert second.counters() == {"hubspot.echo": 1}
    later = second.ingest([fetch("e3", "3")], duplicate_reason="dup")
    assert later.schedule == () and later.settled  # joins the pending set of the scheduled fetch
    assert first.claim_pending("t:contacts") == ["1", "3"]


def test_a_deferred_delivery_waits_for_settle_even_without_a_fetch_to_schedule(ledgers):
    first, second = ledgers
    first.add_pending("t:contacts", ["0"])
    done = first.ingest([fetch("e1", "1")], duplicate_reason="dup", defer=True)
    assert done.fresh == (True,) and not done.settled
    assert unseen(second, ["e1"]) == ["e1"]


def test_an_event_repeated_in_a_batch_reads_as_its_first_copy(ledgers):
    first, _ = ledgers
    first.settle(["old"], {})
    done = first.ingest(
        [IngestEvent("u", remember=False), IngestEvent("u", remember=False), fetch("old", "1")],
        duplicate_reason="dup",
    )
    assert done.fresh == (True, True, False)


def test_a_moved_watched_value_makes_ingest_change_nothing(ledgers):
    first, second = ledgers
    [value] = first.values(["watched"])
    assert value == ""
    done = first.ingest([fetch("e1", "1")], duplicate_reason="dup", watch={"watched": "stale"})
    assert done.stale == {"watched": ""} and done.fresh == ()
    assert unseen(second, ["e1"]) == ["e1"]
    assert second.claim_pending("t:contacts") == []
    assert first.ingest([fetch("e1", "1")], duplicate_reason="dup", watch={"watched": ""}).fresh


@pytest.mark.redis
def test_a_steady_state_delivery_is_one_round_trip_to_redis(redis_url, monkeypatch):
    import redis.connection

    ledger = EventLedger(redis_url)
    ledger.add_pending("t:contacts", ["0"])
    ledger.ingest([fetch("warm", "0")], duplicate_reason="dup")  # connects (its handshake)
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    events = [fetch(f"e{i}", str(i)) for i in range(10)] + [IngestEvent("x", drop_reason="echo")]
    done = ledger.ingest(events, duplicate_reason="dup", watch={"fieldwise:w": ""})
    assert done.settled and all(done.fresh)
    assert len(sent) == 1  # dedupe, pending ids, marks and counters together
    monkeypatch.undo()
    assert unseen(ledger, [e.key for e in events]) == []
    assert ledger.counters() == {"echo": 1}
    assert ledger.claim_pending("t:contacts") == [str(i) for i in range(10)]


def test_ingest_on_an_unreachable_redis_raises_queue_unavailable():
    ledger = EventLedger("redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable):
        ledger.ingest([fetch("e1", "1")], duplicate_reason="dup")
    with pytest.raises(QueueUnavailable):
        ledger.values(["k"])


@pytest.mark.redis
def test_ingest_carries_on_after_a_redis_restart_that_lost_the_script(redis_url, tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip

    def start():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                probe.ping()
                return proc
            except redis.RedisError:
                time.sleep(0.05)
        proc.terminate()
        pytest.fail("the private redis-server did not start")

    proc = start()
    try:
        ledger = EventLedger(f"redis://127.0.0.1:{port}/0")
        assert ledger.ingest([fetch("e1", "1")], duplicate_reason="dup").schedule == ("t:contacts",)
        proc.terminate()
        proc.wait(timeout=10)
        with pytest.raises(QueueUnavailable):
            ledger.ingest([fetch("e2", "2")], duplicate_reason="dup")
        proc = start()  # empty, and without the script
        done = ledger.ingest([fetch("e3", "3")], duplicate_reason="dup")
        assert done.fresh == (True,) and done.schedule == ("t:contacts",)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
