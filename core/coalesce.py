"""Webhook event dedupe, burst coalescing and counters, shared across processes through Redis.

CRMs deliver the same event more than once and change one record many times in a burst. Handlers
remember each event key for a week (:meth:`EventLedger.unseen`), and add changed record ids to a
pending set per tenant and object (:meth:`EventLedger.add_pending`). Only the first id to arrive
while no fetch is scheduled schedules one; the fetch job claims the whole set when it runs, so a
burst of changes to one record becomes one fetch. Ids are removed only after the fetch succeeded,
so a failed job retries them.

Without Redis, the same structures live in this process (the embedded, single-process mode).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence

import redis

from core.queue import QueueUnavailable

SEEN_TTL_S = 7 * 24 * 3600
"""Event keys are remembered this long: longer than HubSpot's 24 h and Salesforce's 24 h of retries."""
_PREFIX = "fieldwise:"


class EventLedger:
    """Dedupe, pending record ids and counters, in Redis or in memory."""

    def __init__(self, redis_url: str | None) -> None:
        self._redis = (
            redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
            if redis_url
            else None
        )
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._pending: dict[str, set[str]] = {}
        self._scheduled: set[str] = set()
        self._counters: Counter[str] = Counter()

    def unseen(self, keys: Sequence[str]) -> list[str]:
        """The keys not seen before (they are not marked yet: call :meth:`mark_seen` after queueing)."""
        if not keys:
            return []
        if self._redis is not None:
            try:
                flags = self._redis.mget([_PREFIX + "seen:" + k for k in keys])
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return [k for k, flag in zip(keys, flags, strict=True) if flag is None]
        now = time.time()
        with self._lock:
            return [k for k in keys if self._seen.get(k, 0) < now]

    def mark_seen(self, keys: Iterable[str]) -> None:
        """Remember event keys once their work is durably queued."""
        keys = list(keys)
        if not keys:
            return
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for key in keys:
                    pipe.set(_PREFIX + "seen:" + key, 1, ex=SEEN_TTL_S)
                pipe.execute()
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return
        expires = time.time() + SEEN_TTL_S
        with self._lock:
            for key in keys:
                self._seen[key] = expires

    def add_pending(self, scope: str, record_ids: Iterable[str]) -> bool:
        """Add changed record ids for ``scope`` (``tenant:object``).

        Returns:
            True when the caller must schedule a fetch (none is scheduled for this scope yet).
        """
        ids = list(record_ids)
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=True)
                if ids:
                    pipe.sadd(_PREFIX + "pending:" + scope, *ids)
                pipe.set(_PREFIX + "scheduled:" + scope, 1, nx=True, ex=3600)
                return bool(pipe.execute()[-1])
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        with self._lock:
            self._pending.setdefault(scope, set()).update(ids)
            if scope in self._scheduled:
                return False
            self._scheduled.add(scope)
            return True

    def unschedule(self, scope: str) -> None:
        """Forget that a fetch is scheduled (its enqueue failed, or it is starting to run)."""
        if self._redis is not None:
            try:
                self._redis.delete(_PREFIX + "scheduled:" + scope)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return
        with self._lock:
            self._scheduled.discard(scope)

    def claim_pending(self, scope: str) -> list[str]:
        """Start a fetch: clear the scheduled flag, then read every pending id.

        Clearing first means an id added while the fetch runs schedules another fetch, so nothing
        slips between the read and the clear.
        """
        self.unschedule(scope)
        if self._redis is not None:
            try:
                members = self._redis.smembers(_PREFIX + "pending:" + scope)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        with self._lock:
            return sorted(self._pending.get(scope, set()))

    def done_pending(self, scope: str, record_ids: Sequence[str]) -> None:
        """Remove ids whose fetch succeeded."""
        if not record_ids:
            return
        if self._redis is not None:
            try:
                self._redis.srem(_PREFIX + "pending:" + scope, *record_ids)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return
        with self._lock:
            self._pending.get(scope, set()).difference_update(record_ids)

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a named counter (dropped echoes, unknown portals, duplicates...)."""
        if self._redis is not None:
            try:
                self._redis.hincrby(_PREFIX + "counters", name, amount)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return
        with self._lock:
            self._counters[name] += amount

    def counters(self) -> dict[str, int]:
        """Every counter's value."""
        if self._redis is not None:
            try:
                raw = self._redis.hgetall(_PREFIX + "counters")
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return {
                (k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()
            }
        with self._lock:
            return dict(self._counters)
