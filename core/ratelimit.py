"""Request budgets shared by every process that calls one tenant's CRM.

A CRM's limits are per portal or org, not per process: HubSpot counts calls in a rolling 10-second
window and per day, Salesforce allocates a daily number of calls to the whole org. When several
workers write for one tenant, each must see the others' calls, so the counts live in Redis (sliding
windows as sorted sets, updated atomically by a Lua script). Without Redis (one process), the same
arithmetic runs in memory.

A call that does not fit waits for room; if the wait would be longer than the caller accepts,
:class:`BudgetExhausted` says how long, and the job is deferred rather than dropped.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from core.queue import QueueUnavailable

KEY_PREFIX = "fieldwise:budget:"


class BudgetExhausted(Exception):
    """The budget has no room for this call within the caller's patience."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"request budget {name!r} is spent; room again in {retry_after_s:.1f} s")
        self.name = name
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Window:
    """At most ``limit`` units in any ``seconds``-long window."""

    limit: int
    seconds: float


class WindowCounter(Protocol):
    """Atomically take units from a sliding window, or say how long until they fit."""

    def take(self, key: str, window: Window, units: int) -> float:
        """Record ``units`` and return 0 when they fit, else the seconds until they would."""
        ...

    def used(self, key: str, seconds: float) -> int:
        """Units recorded under ``key`` in the last ``seconds``, taking none."""
        ...


class RedisWindowCounter:
    """Sliding windows in Redis sorted sets, shared by every process on that Redis."""

    # KEYS[1] the window; ARGV: now, window seconds, limit, units, unique member prefix.
    # Each unit is one member scored with its time, so partial expiry is exact.
    _SCRIPT = """
    local key = KEYS[1]
    local now = tonumber(ARGV[1])
    local span = tonumber(ARGV[2])
    local limit = tonumber(ARGV[3])
    local units = tonumber(ARGV[4])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
    local used = redis.call('ZCARD', key)
    if used + units <= limit then
      for i = 1, units do
        redis.call('ZADD', key, now, ARGV[5] .. ':' .. i)
      end
      redis.call('PEXPIRE', key, math.ceil(span * 1000) + 1000)
      return '0'
    end
    if units > limit then
      return tostring(span)
    end
    local needed = used + units - limit
    local oldest = redis.call('ZRANGE', key, needed - 1, needed - 1, 'WITHSCORES')
    return tostring(tonumber(oldest[2]) + span - now)
    """

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection
        self._script = connection.register_script(self._SCRIPT)

    def take(self, key: str, window: Window, units: int) -> float:
        """See :class:`WindowCounter`."""
        try:
            wait = self._script(
                keys=[KEY_PREFIX + key],
                args=[time.time(), window.seconds, window.limit, units, uuid.uuid4().hex],
            )
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return max(0.0, float(wait))

    def used(self, key: str, seconds: float) -> int:
        """See :class:`WindowCounter`."""
        try:
            return int(self._redis.zcount(KEY_PREFIX + key, time.time() - seconds, "+inf"))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc


class LocalWindowCounter:
    """The same sliding windows in this process's memory (embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def take(self, key: str, window: Window, units: int) -> float:
        """See :class:`WindowCounter`."""
        with self._lock:
            now = self._clock()
            events = self._events[key]
            while events and events[0] <= now - window.seconds:
                events.popleft()
            if len(events) + units <= window.limit:
                events.extend([now] * units)
                return 0.0
            if units > window.limit:
                return window.seconds
            needed = len(events) + units - window.limit
            return events[needed - 1] + window.seconds - now

    def used(self, key: str, seconds: float) -> int:
        """See :class:`WindowCounter`."""
        with self._lock:
            since = self._clock() - seconds
            return sum(1 for moment in self._events.get(key, ()) if moment > since)


class Budget:
    """A named set of windows a call must fit in all at once (e.g. 10-second and daily)."""

    def __init__(
        self,
        counter: WindowCounter,
        name: str,
        windows: dict[str, Window],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._counter = counter
        self.name = name
        self.windows = windows
        self._sleep = sleep

    def acquire(self, units: int = 1, max_wait_s: float = 30.0) -> None:
        """Take ``units`` from every window, waiting for room up to ``max_wait_s``.

        Windows are taken in order; when a later one has no room, the units already taken from
        earlier ones stay taken (they expire with their window). This errs on the side of calling
        the CRM less, never more.

        Raises:
            BudgetExhausted: room would take longer than ``max_wait_s``.
        """
        deadline = time.monotonic() + max_wait_s
        for label, window in self.windows.items():
            key = f"{self.name}:{label}"
            while (wait := self._counter.take(key, window, units)) > 0:
                if time.monotonic() + wait > deadline:
                    raise BudgetExhausted(f"{self.name}:{label}", wait)
                self._sleep(min(wait, 1.0))


def counter_for(redis_url: str | None) -> WindowCounter:
    """A Redis-backed counter when Redis is configured, else an in-memory one."""
    if redis_url:
        return RedisWindowCounter(redis.Redis.from_url(redis_url, socket_connect_timeout=2))
    return _local


_local = LocalWindowCounter()
