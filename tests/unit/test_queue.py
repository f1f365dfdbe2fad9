from __future__ import annotations

import time

import pytest
from rq import SimpleWorker

from core.queue import EmbeddedQueue, QueueUnavailable, RedisQueue, RetryPolicy

IMMEDIATE_RETRY = RetryPolicy(max=2, intervals=(0,))


class EmbeddedBackend:
    def __init__(self):
        self.queue = EmbeddedQueue()

    def run_all(self):
        assert self.queue.drain(timeout_s=20)

    def close(self):
        self.queue.stop()


class RedisBackend:
    def __init__(self, url):
        self.queue = RedisQueue(url)

    def run_all(self):
        worker = SimpleWorker(self.queue.queues(), connection=self.queue.connection)
        worker.work(burst=True, with_scheduler=True)

    def close(self):
        self.queue.connection.close()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request):
    if request.param == "embedded":
        chosen = EmbeddedBackend()
    else:
        chosen = RedisBackend(request.getfixturevalue("redis_url"))
    yield chosen
    chosen.close()


def test_a_job_enqueued_by_dotted_path_runs_with_its_arguments(backend, tmp_path):
    out = tmp_path / "out.txt"
    job_id = backend.queue.enqueue("queue_jobs.append_line", str(out), "hello")
    backend.run_all()
    assert out.read_text() == "hello\n"
    assert backend.queue.status(job_id) == "finished"


def test_a_deterministic_job_id_makes_enqueueing_idempotent(backend, tmp_path):
    out = tmp_path / "out.txt"
    first = backend.queue.enqueue("queue_jobs.append_line", str(out), "once", job_id="evt-1")
    again = backend.queue.enqueue("queue_jobs.append_line", str(out), "twice", job_id="evt-1")
    assert first == "evt-1"
    assert again is None
    backend.run_all()
    assert backend.queue.enqueue("queue_jobs.append_line", str(out), "late", job_id="evt-1") is None
    backend.run_all()
    assert out.read_text() == "once\n"


def test_a_failing_job_is_retried_and_then_succeeds(backend, tmp_path):
    counter = tmp_path / "attempts"
    job_id = backend.queue.enqueue(
        "queue_jobs.fail_until_attempt", str(counter), 3, job_id="flaky", retry=IMMEDIATE_RETRY
    )
    backend.run_all()
    assert counter.read_text() == "3"
    assert backend.queue.status(job_id) == "finished"


def test_a_job_failing_past_its_retries_ends_failed_with_its_error_kept(backend, tmp_path):
    counter = tmp_path / "attempts"
    job_id = backend.queue.enqueue(
        "queue_jobs.fail_until_attempt", str(counter), 99, job_id="doomed", retry=IMMEDIATE_RETRY
    )
    backend.run_all()
    assert counter.read_text() == "3"  # the first attempt plus two retries
    assert backend.queue.status(job_id) == "failed"
    assert "attempt 3 fails on purpose" in backend.queue.error(job_id)


def test_a_job_without_retry_fails_after_one_attempt(backend, tmp_path):
    counter = tmp_path / "attempts"
    job_id = backend.queue.enqueue(
        "queue_jobs.fail_until_attempt", str(counter), 2, job_id="no-retry", retry=None
    )
    backend.run_all()
    assert counter.read_text() == "1"
    assert backend.queue.status(job_id) == "failed"


@pytest.mark.parametrize("path", ["nodots", "queue_jobs.missing", "queue_jobs.not_a_function"])
def test_a_bad_job_path_is_refused_at_enqueue_time(backend, path):
    with pytest.raises((ValueError, AttributeError)):
        backend.queue.enqueue(path)


def test_an_unknown_queue_name_is_refused(backend, tmp_path):
    with pytest.raises(ValueError, match="unknown queue 'urgent'"):
        backend.queue.enqueue("queue_jobs.append_line", str(tmp_path / "x"), "x", queue="urgent")


def test_higher_priority_queues_run_first(backend, tmp_path):
    out = tmp_path / "order.txt"
    if isinstance(backend, EmbeddedBackend):
        backend.queue.pause()  # hold the worker so all three are queued before any runs
    backend.queue.enqueue("queue_jobs.append_line", str(out), "low", queue="low")
    backend.queue.enqueue("queue_jobs.append_line", str(out), "default")
    backend.queue.enqueue("queue_jobs.append_line", str(out), "high", queue="high")
    if isinstance(backend, EmbeddedBackend):
        backend.queue.resume()
    backend.run_all()
    assert out.read_text().split() == ["high", "default", "low"]


def test_embedded_retries_wait_their_interval(tmp_path):
    queue = EmbeddedQueue()
    counter = tmp_path / "attempts"
    started = time.monotonic()
    queue.enqueue(
        "queue_jobs.fail_until_attempt", str(counter), 2, retry=RetryPolicy(max=1, intervals=(0.3,))
    )
    assert queue.drain(timeout_s=10)
    assert time.monotonic() - started >= 0.3
    assert counter.read_text() == "2"
    queue.stop()


def test_given_unreachable_redis_when_enqueueing_then_queue_unavailable_is_raised(tmp_path):
    queue = RedisQueue("redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable, match="Redis is unreachable"):
        queue.enqueue("queue_jobs.append_line", str(tmp_path / "x"), "x", job_id="e1")
    with pytest.raises(QueueUnavailable):
        queue.health()


def test_a_delayed_job_waits_its_delay_then_runs(backend, tmp_path):
    out = tmp_path / "out.txt"
    job_id = backend.queue.enqueue_in(0.5, "queue_jobs.append_line", str(out), "later", job_id="d1")
    assert backend.queue.status(job_id) == "scheduled"
    assert (
        backend.queue.enqueue_in(0.5, "queue_jobs.append_line", str(out), "x", job_id="d1") is None
    )
    deadline = time.monotonic() + 15
    while not out.exists() and time.monotonic() < deadline:
        if isinstance(backend, RedisBackend):
            SimpleWorker(backend.queue.queues(), connection=backend.queue.connection).work(
                burst=True, with_scheduler=True
            )
        time.sleep(0.2)
    assert out.read_text() == "later\n"


@pytest.mark.redis
def test_a_dead_workers_scheduler_lock_is_released_and_a_live_ones_is_kept(redis_url):
    from datetime import UTC, datetime, timedelta

    from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
    from rq.utils import utcformat

    queue = RedisQueue(redis_url)
    connection = queue.connection
    beats = {
        "dead": datetime.now(UTC) - timedelta(seconds=40),
        "alive": datetime.now(UTC) - timedelta(seconds=1),
    }
    holders = {"high": "dead", "default": "alive", "low": "starting"}  # "starting": no hash yet
    for name, beat in beats.items():
        connection.hset(SCHEDULER_KEY_TEMPLATE % name, "last_heartbeat", utcformat(beat))
    for queue_name, holder in holders.items():
        connection.set(RQScheduler.get_locking_key(queue_name), holder, ex=60)
    worker = queue.worker()
    try:
        worker._release_dead_scheduler_locks()
        held = {q: connection.get(RQScheduler.get_locking_key(q)) for q in holders}
        assert held == {"high": None, "default": b"alive", "low": b"starting"}
    finally:
        connection.close()
