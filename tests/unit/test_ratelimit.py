from __future__ import annotations

import threading

import pytest
import redis

from core.ratelimit import (
    Budget,
    BudgetExhausted,
    LocalWindowCounter,
    RedisWindowCounter,
    Window,
)


class FakeClock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


def test_local_window_grants_up_to_the_limit_then_says_how_long_to_wait():
    clock = FakeClock()
    counter = LocalWindowCounter(clock)
    window = Window(limit=3, seconds=10)
    assert [counter.take("t", window, 1) for _ in range(3)] == [0, 0, 0]
    clock.now += 4
    assert counter.take("t", window, 1) == pytest.approx(6.0)
    clock.now += 6.01
    assert counter.take("t", window, 1) == 0


def test_a_request_larger_than_the_whole_window_never_fits():
    counter = LocalWindowCounter(FakeClock())
    assert counter.take("t", Window(limit=2, seconds=5), 3) == 5


@pytest.fixture
def shared_counters(redis_url):
    connections = [redis.Redis.from_url(redis_url) for _ in range(3)]
    yield [RedisWindowCounter(c) for c in connections]
    for c in connections:
        c.close()


@pytest.mark.redis
def test_counters_on_one_redis_share_the_window_as_separate_workers_would(shared_counters):
    window = Window(limit=10, seconds=30)
    granted = []
    lock = threading.Lock()

    def worker(counter):
        for _ in range(10):
            if counter.take("tenant-1:hubspot:10s", window, 1) == 0:
                with lock:
                    granted.append(1)

    threads = [threading.Thread(target=worker, args=(c,)) for c in shared_counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 10
    assert shared_counters[0].take("tenant-1:hubspot:10s", window, 1) > 0
    assert shared_counters[0].take("tenant-2:hubspot:10s", window, 1) == 0


@pytest.mark.redis
def test_redis_window_reports_the_wait_until_the_oldest_unit_expires(shared_counters):
    counter = shared_counters[0]
    window = Window(limit=2, seconds=0.5)
    assert counter.take("k", window, 2) == 0
    wait = counter.take("k", window, 1)
    assert 0 < wait <= 0.5


def test_budget_waits_for_room_when_the_wait_is_acceptable():
    clock = FakeClock()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    budget = Budget(LocalWindowCounter(clock), "t1", {"10s": Window(2, 10)}, sleep=sleep)
    budget.acquire()
    budget.acquire()
    budget.acquire(max_wait_s=60)
    assert sum(slept) >= 10 - 1e-9


def test_budget_raises_with_the_retry_time_when_room_is_too_far_off():
    budget = Budget(LocalWindowCounter(FakeClock()), "t1", {"daily": Window(1, 86_400)})
    budget.acquire()
    with pytest.raises(BudgetExhausted) as caught:
        budget.acquire(max_wait_s=5)
    assert caught.value.name == "t1:daily"
    assert caught.value.retry_after_s == pytest.approx(86_400)


def test_local_window_reports_units_used_in_a_span_without_taking_any():
    clock = FakeClock()
    counter = LocalWindowCounter(clock)
    window = Window(limit=10, seconds=100)
    counter.take("t", window, 2)
    clock.now += 30
    counter.take("t", window, 3)
    assert counter.used("t", 20) == 3
    assert counter.used("t", 60) == 5
    assert counter.used("t", 60) == 5
    assert counter.used("other", 60) == 0


@pytest.mark.redis
def test_redis_window_reports_units_any_process_used_without_taking_any(shared_counters):
    first, second, _ = shared_counters
    window = Window(limit=10, seconds=60)
    first.take("used-key", window, 2)
    second.take("used-key", window, 1)
    assert second.used("used-key", 60) == 3
    assert first.used("used-key", 60) == 3
    assert first.used("missing-key", 60) == 0
