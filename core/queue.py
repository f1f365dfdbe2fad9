"""Job queues: rq on Redis, or an embedded in-process queue with the same semantics.

Jobs are module-level functions referenced by dotted path (``"sync.jobs.fetch_changes"``) and take
ids, not objects. :func:`configure` picks the backend once per process from ``FIELDWISE_REDIS_URL``:

* set: rq queues on that Redis, worked by ``fieldwise worker`` processes (``rq worker`` semantics,
  with the scheduler, so retries with intervals fire);
* unset: :class:`EmbeddedQueue`, a worker thread inside this process, for the demo and single-machine
  installs.

Both honour the same contract: a deterministic ``job_id`` makes enqueueing idempotent (a second
enqueue of a queued, running or recently finished job is refused as a duplicate), and a
:class:`RetryPolicy` retries a failing job ``max`` more times after the given intervals, then keeps it
as failed with its error. When Redis cannot be reached, :class:`QueueUnavailable` is raised so
callers (webhook handlers) can answer 503 and let the CRM redeliver.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import redis
from rq import Queue, Retry, Worker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock
from rq.utils import as_text, utcparse

from core.config import Config

log = logging.getLogger(__name__)

QUEUE_NAMES = ("high", "default", "low")
"""Queues in priority order: webhooks and write-backs are ``high``, backfills ``low``."""
JOB_TIMEOUT_S = 600
"""Longest a single job may run before rq kills it."""
RESULT_TTL_S = 3600
"""How long a finished job (and so its id, for dedupe) is kept."""
FAILURE_TTL_S = 7 * 24 * 3600
"""How long a failed job is kept for inspection and requeueing."""
HEARTBEAT_S = 5
"""How often a worker refreshes the heartbeat of the job it is running."""
ABANDONED_AFTER_S = 15
"""A running job whose heartbeat is this old belongs to a dead worker (SIGKILL, lost machine)."""
MAINTENANCE_S = 10
"""How often a worker looks for abandoned jobs (and requeues them, retries permitting)."""
WORKER_TTL_S = 30
"""A worker's own registration expires this long after its last sign of life; an idle worker
wakes from its blocking dequeue every ``WORKER_TTL_S - 15`` seconds to run its maintenance."""
SCHEDULER_DEAD_AFTER_S = 10
"""A scheduler whose heartbeat (rq beats every second) is this old died with its worker; the lock it
held on a queue's scheduled jobs is released for a live worker's scheduler to take."""
_RQ_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
JOB_MODULES = (
    "sync.jobs",
    "sync.writeback",
    "scoring.jobs",
    "scoring.training",
    "copilot.jobs",
    "copilot.segments",
    "copilot.retrieval",
    "connectors.hubspot.client",
    "connectors.salesforce.client",
    "core.embeddings",
    "catboost",
)
"""What jobs run, and the libraries they import only when first called (CatBoost, the connectors).
A worker imports them once before rq forks a work horse per job, so each job starts with them
loaded instead of spending seconds of CPU importing them again (an install of the backfill
bench's 5,000 leads runs 28 jobs)."""


class QueueUnavailable(Exception):
    """Work cannot be accepted durably right now (Redis is unreachable)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and when a failed job is retried.

    Attributes:
        max: retries after the first attempt.
        intervals: seconds to wait before each retry; the last value repeats.
    """

    max: int = 3
    intervals: tuple[float, ...] = (10, 30, 60)

    def delay(self, retry_number: int) -> float:
        """Seconds before retry ``retry_number`` (1-based)."""
        if not self.intervals:
            return 0.0
        return float(self.intervals[min(retry_number - 1, len(self.intervals) - 1)])


DEFAULT_RETRY = RetryPolicy()


class JobQueue(Protocol):
    """What callers need from a queue, whichever backend runs it."""

    def enqueue(
        self,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Queue ``func(*args)``; returns the job id, or None when ``job_id`` is a duplicate."""
        ...

    def enqueue_in(
        self,
        delay_s: float,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Queue ``func(*args)`` to run after ``delay_s`` seconds (periodic work reschedules itself)."""
        ...

    def status(self, job_id: str) -> str | None:
        """``queued``, ``scheduled``, ``started``, ``finished``, ``failed`` or None if unknown."""
        ...

    def error(self, job_id: str) -> str | None:
        """The last error of a failed job."""
        ...

    def health(self) -> dict[str, Any]:
        """Backend status for ``/healthz``; raises QueueUnavailable when it is down."""
        ...

    def depth(self) -> dict[str, int]:
        """Jobs waiting per queue name (queued or scheduled, not yet running)."""
        ...

    def failed(self, limit: int = 50) -> list[dict[str, Any]]:
        """Failed jobs, newest first: ``id``, ``func``, ``args``, ``queue``, ``error``, ``ended_at``."""
        ...

    def requeue(self, job_id: str) -> bool:
        """Queue a failed job again from scratch; False when no failed job has that id."""
        ...


def resolve(func: str) -> Callable[..., Any]:
    """Import a job function from its dotted path.

    Raises:
        ValueError: the path does not name a module-level function.
    """
    module_name, _, attribute = func.rpartition(".")
    if not module_name:
        raise ValueError(f"job function {func!r} must be a dotted path like 'sync.jobs.fetch'")
    target = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(target):
        raise ValueError(f"{func!r} is not a function")
    return target


def preload_job_modules() -> None:
    """Import :data:`JOB_MODULES` in this process, for the work horses it forks to inherit.

    Modules are loaded, and the embedding model's rebuilt graph serialised
    (:func:`core.embeddings.integer_model`; otherwise every work horse that embeds spends 0.1 s
    on it). The model's session, LanceDB tables and CRM clients are still opened by each work
    horse, as they are not safe to share across a fork (an onnxruntime session or a connection
    made before the fork would be used by two processes). The one thread an import starts, the
    BLAS pool scipy brings, is rebuilt after a fork by OpenBLAS itself.
    """
    for name in JOB_MODULES:
        importlib.import_module(name)
    from core.embeddings import integer_model
    from manifests.loader import CRMS, load_manifest

    integer_model()
    for crm in CRMS:
        load_manifest(crm)  # parsed and validated once here, not by every connector's work horse


# --------------------------------------------------------------------------------------------------
# rq on Redis


def _rq_retry(retry: RetryPolicy | None) -> Retry | None:
    if retry is None or retry.max <= 0:
        return None
    return Retry(max=retry.max, interval=[round(s) for s in retry.intervals] or 0)


def rq_job_id(job_id: str) -> str:
    """The id rq stores a job under.

    rq accepts only letters, digits, ``_`` and ``-`` in a job id, while Fieldwise's deterministic
    ids read ``backfill:<tenant>:<entity>``. Such an id keeps a readable form with the other
    characters replaced, plus a digest of the original, so distinct ids stay distinct and the
    same id always maps to the same rq id (which is what makes enqueueing idempotent).
    """
    if _RQ_JOB_ID.fullmatch(job_id):
        return job_id
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', job_id)[:160]}-{digest}"


class RedisQueue:
    """rq queues on one Redis connection."""

    def __init__(self, url: str) -> None:
        self.connection = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._queues = {name: Queue(name, connection=self.connection) for name in QUEUE_NAMES}

    def enqueue(
        self,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Queue a job on rq (see :class:`JobQueue`)."""
        target = self._queue(queue)
        resolve(func)  # fail at the caller, not in a worker, when the path is wrong
        rq_retry = _rq_retry(retry)
        try:
            job = target.enqueue_call(
                func,
                args=args,
                job_id=None if job_id is None else rq_job_id(job_id),
                retry=rq_retry,
                timeout=JOB_TIMEOUT_S,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                unique=job_id is not None,
            )
        except DuplicateJobError:
            return None
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return str(job.id)

    def enqueue_in(
        self,
        delay_s: float,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Schedule a job on rq's scheduler (workers run with ``--with-scheduler``)."""
        target = self._queue(queue)
        resolve(func)
        rq_retry = _rq_retry(retry)
        try:
            rq_id = None if job_id is None else rq_job_id(job_id)
            if rq_id is not None and Job.exists(rq_id, connection=self.connection):
                return None
            job = target.enqueue_in(
                timedelta(seconds=delay_s),
                func,
                *args,
                job_id=rq_id,
                retry=rq_retry,
                job_timeout=JOB_TIMEOUT_S,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
            )
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return str(job.id)

    def status(self, job_id: str) -> str | None:
        """The rq status of a job."""
        try:
            job = Job.fetch(rq_job_id(job_id), connection=self.connection)
        except NoSuchJobError:
            return None
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        status = job.get_status(refresh=False)
        return None if status is None else str(getattr(status, "value", status))

    def error(self, job_id: str) -> str | None:
        """The traceback text of a failed job."""
        try:
            job = Job.fetch(rq_job_id(job_id), connection=self.connection)
        except NoSuchJobError:
            return None
        latest = job.latest_result()
        return None if latest is None else latest.exc_string

    def health(self) -> dict[str, Any]:
        """Ping Redis and report queue depths."""
        try:
            self.connection.ping()
            depths = {name: q.count for name, q in self._queues.items()}
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return {"backend": "redis", "queues": depths}

    def depth(self) -> dict[str, int]:
        """Jobs waiting per rq queue, scheduled ones included."""
        try:
            return {
                name: q.count + q.scheduled_job_registry.count for name, q in self._queues.items()
            }
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc

    def failed(self, limit: int = 50) -> list[dict[str, Any]]:
        """Failed jobs from each queue's rq failed-job registry, newest first."""
        found: list[dict[str, Any]] = []
        try:
            for name, q in self._queues.items():
                ids = q.failed_job_registry.get_job_ids(0, limit - 1)
                for job in Job.fetch_many(ids, connection=self.connection):
                    if job is None:
                        continue
                    latest = job.latest_result()
                    found.append(
                        {
                            "id": job.id,
                            "func": job.func_name,
                            "args": tuple(job.args),
                            "queue": name,
                            "error": None if latest is None else latest.exc_string,
                            "ended_at": job.ended_at,
                        }
                    )
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        found.sort(key=lambda j: j["ended_at"].timestamp() if j["ended_at"] else 0, reverse=True)
        return found[:limit]

    def requeue(self, job_id: str) -> bool:
        """Move a job from its failed-job registry back onto its queue."""
        rq_id = job_id if _RQ_JOB_ID.fullmatch(job_id) else rq_job_id(job_id)
        try:
            for q in self._queues.values():
                registry = q.failed_job_registry
                if rq_id in registry.get_job_ids():
                    registry.requeue(rq_id)
                    return True
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return False

    def queues(self) -> list[Queue]:
        """The rq queues, highest priority first (for workers)."""
        return [self._queues[name] for name in QUEUE_NAMES]

    def worker(self) -> Worker:
        """An rq worker for these queues, tuned to notice a dead worker's job within seconds.

        rq's defaults renew a running job's heartbeat every 30 s with 60 s of grace and look for
        abandoned jobs every 10 minutes, so a backfill whose worker was SIGKILLed stood still for
        that long before rq retried it. Here a job counts as abandoned once its heartbeat is
        ``ABANDONED_AFTER_S`` old, and workers look every ``MAINTENANCE_S``; the retry then resumes
        from the job's own checkpoint.
        """
        return _FieldwiseWorker(
            self.queues(),
            connection=self.connection,
            job_monitoring_interval=HEARTBEAT_S,
            maintenance_interval=MAINTENANCE_S,
            worker_ttl=WORKER_TTL_S,
        )

    def _queue(self, name: str) -> Queue:
        if name not in self._queues:
            raise ValueError(f"unknown queue {name!r}; expected one of {', '.join(QUEUE_NAMES)}")
        return self._queues[name]


class _FieldwiseWorker(Worker):
    """rq's forking worker with a short heartbeat grace (see :meth:`RedisQueue.worker`)."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Seconds the running job's heartbeat stays valid (rq adds a fixed 60 s of grace)."""
        grace = ABANDONED_AFTER_S - HEARTBEAT_S
        if job.timeout and job.timeout > 0:
            return int(min(job.timeout - working_time, HEARTBEAT_S)) + grace
        return HEARTBEAT_S + grace

    def run_maintenance_tasks(self) -> None:
        """Release the scheduler locks of dead workers, then run rq's maintenance.

        One worker's scheduler process holds each queue's scheduler lock and moves due jobs
        (retries waiting out their interval, delayed jobs) onto the queue. rq keeps a lock for 60 s
        after its holder's last heartbeat, so when that worker was SIGKILLed, the retry of the job
        it was running waited about a minute more before any worker could run it. rq's
        maintenance starts this worker's scheduler once the lock is free.
        """
        self._release_dead_scheduler_locks()
        super().run_maintenance_tasks()

    def _release_dead_scheduler_locks(self) -> None:
        for queue in self.queues:
            lock_key = RQScheduler.get_locking_key(queue.name)
            holder = self.connection.get(lock_key)
            if holder is None:
                continue
            name = as_text(holder)
            beat = self.connection.hget(SCHEDULER_KEY_TEMPLATE % name, "last_heartbeat")
            if beat is None:
                continue  # not yet registered (starting) or already gone: its lock expires alone
            last = utcparse(as_text(beat))
            silent_s = (datetime.now(UTC) - last).total_seconds()
            if silent_s > SCHEDULER_DEAD_AFTER_S and release_lock(self.connection, lock_key, name):
                log.warning("released the scheduler lock of %s, silent for %.0f s", name, silent_s)


# --------------------------------------------------------------------------------------------------
# Embedded


@dataclass
class _EmbeddedJob:
    id: str
    func: str
    args: tuple[Any, ...]
    queue: str
    retry: RetryPolicy | None
    status: str = "queued"
    attempts: int = 0
    not_before: float = 0.0
    error: str | None = None
    result: Any = None
    finished_at: float = 0.0
    history: list[str] = field(default_factory=list)


class EmbeddedQueue:
    """Runs jobs in a worker thread of this process, with rq's dedupe and retry semantics."""

    def __init__(self, workers: int = 1) -> None:
        self._jobs: dict[str, _EmbeddedJob] = {}
        self._cond = threading.Condition()
        self._counter = 0
        self._stopping = False
        self._paused = False
        self._threads = [
            threading.Thread(target=self._work, name=f"fieldwise-embedded-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def enqueue(
        self,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Queue a job in this process (see :class:`JobQueue`)."""
        return self._add(func, args, job_id, queue, retry, not_before=None)

    def enqueue_in(
        self,
        delay_s: float,
        func: str,
        *args: Any,
        job_id: str | None = None,
        queue: str = "default",
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> str | None:
        """Queue a job to run in this process after ``delay_s`` seconds."""
        return self._add(func, args, job_id, queue, retry, not_before=time.time() + delay_s)

    def _add(
        self,
        func: str,
        args: tuple[Any, ...],
        job_id: str | None,
        queue: str,
        retry: RetryPolicy | None,
        not_before: float | None,
    ) -> str | None:
        if queue not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUE_NAMES)}")
        resolve(func)
        with self._cond:
            self._expire_finished()
            if job_id is not None and job_id in self._jobs:
                return None
            if job_id is None:
                self._counter += 1
                job_id = f"embedded-{self._counter}"
            job = _EmbeddedJob(job_id, func, tuple(args), queue, retry)
            if not_before is not None:
                job.status, job.not_before = "scheduled", not_before
            self._jobs[job_id] = job
            self._cond.notify_all()
        return job_id

    def status(self, job_id: str) -> str | None:
        """The status of a job."""
        with self._cond:
            job = self._jobs.get(job_id)
            return None if job is None else job.status

    def error(self, job_id: str) -> str | None:
        """The last error of a job."""
        with self._cond:
            job = self._jobs.get(job_id)
            return None if job is None else job.error

    def jobs(self) -> list[dict[str, Any]]:
        """Every job this queue knows, oldest first: id, function, arguments, queue and status."""
        with self._cond:
            return [
                {"id": j.id, "func": j.func, "args": j.args, "queue": j.queue, "status": j.status}
                for j in self._jobs.values()
            ]

    def health(self) -> dict[str, Any]:
        """Queue depths per status."""
        with self._cond:
            counts: dict[str, int] = {}
            for job in self._jobs.values():
                counts[job.status] = counts.get(job.status, 0) + 1
        return {"backend": "embedded", "jobs": counts}

    def depth(self) -> dict[str, int]:
        """Jobs waiting per queue name (queued or scheduled)."""
        with self._cond:
            counts = dict.fromkeys(QUEUE_NAMES, 0)
            for job in self._jobs.values():
                if job.status in {"queued", "scheduled"}:
                    counts[job.queue] += 1
            return counts

    def failed(self, limit: int = 50) -> list[dict[str, Any]]:
        """Failed jobs, newest first."""
        with self._cond:
            jobs = [j for j in self._jobs.values() if j.status == "failed"]
        jobs.sort(key=lambda j: j.finished_at, reverse=True)
        return [
            {"id": j.id, "func": j.func, "args": j.args, "queue": j.queue, "error": j.error,
             "ended_at": datetime.fromtimestamp(j.finished_at, UTC)}
            for j in jobs[:limit]
        ]  # fmt: skip

    def requeue(self, job_id: str) -> bool:
        """Queue a failed job again with a fresh retry allowance."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.status != "failed":
                return False
            job.status, job.attempts, job.not_before = "queued", 0, 0.0
            self._cond.notify_all()
        return True

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until no job is queued or running, and none is scheduled to run within the wait.

        Jobs scheduled past the deadline (the next periodic sweep, say) do not hold this up.

        Returns:
            False when the timeout passed first.
        """
        deadline = time.monotonic() + timeout_s
        wall_deadline = time.time() + timeout_s

        def busy(job: _EmbeddedJob) -> bool:
            if job.status == "scheduled":
                return job.not_before <= wall_deadline
            return job.status in {"queued", "started"}

        with self._cond:
            while any(busy(j) for j in self._jobs.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.05))
        return True

    def pause(self) -> None:
        """Hold queued jobs (running ones finish); like stopping every rq worker."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        """Start taking jobs again."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the worker threads after their current job."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _next(self) -> _EmbeddedJob | None:
        if self._paused:
            return None
        now = time.time()
        for name in QUEUE_NAMES:
            for job in self._jobs.values():
                ready = job.status == "queued" or (
                    job.status == "scheduled" and job.not_before <= now
                )
                if job.queue == name and ready:
                    job.status = "started"
                    job.attempts += 1
                    return job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._stopping and (job := self._next()) is None:
                    self._cond.wait(timeout=0.05)
                if self._stopping or job is None:
                    return
            self._run(job)

    def _run(self, job: _EmbeddedJob) -> None:
        try:
            result = resolve(job.func)(*job.args)
        except Exception:
            error = traceback.format_exc()
            log.warning("job %s (%s) failed on attempt %d", job.id, job.func, job.attempts)
            with self._cond:
                job.error = error
                retries_done = job.attempts - 1
                if job.retry is not None and retries_done < job.retry.max:
                    job.status = "scheduled"
                    job.not_before = time.time() + job.retry.delay(retries_done + 1)
                else:
                    job.status = "failed"
                    job.finished_at = time.time()
                self._cond.notify_all()
            return
        with self._cond:
            job.status = "finished"
            job.result = result
            job.finished_at = time.time()
            self._cond.notify_all()

    def _expire_finished(self) -> None:
        horizon = time.time() - RESULT_TTL_S
        for job_id in [
            j.id for j in self._jobs.values() if j.status == "finished" and j.finished_at < horizon
        ]:
            del self._jobs[job_id]


# --------------------------------------------------------------------------------------------------
# The process-wide queue

_current: JobQueue | None = None
_current_lock = threading.Lock()


def build(config: Config) -> JobQueue:
    """A queue for the configuration: rq when ``redis_url`` is set, else embedded."""
    if config.redis_url:
        return RedisQueue(config.redis_url)
    return EmbeddedQueue()


def configure(config: Config) -> JobQueue:
    """Set this process's queue from configuration (web, worker and CLI start-up call this)."""
    global _current
    with _current_lock:
        if isinstance(_current, EmbeddedQueue):
            _current.stop()
        _current = build(config)
        return _current


def current() -> JobQueue:
    """This process's queue; jobs use it to enqueue follow-up jobs.

    Raises:
        RuntimeError: :func:`configure` has not been called in this process.
    """
    if _current is None:
        raise RuntimeError(
            "the job queue is not configured; call core.queue.configure(config) first"
        )
    return _current
