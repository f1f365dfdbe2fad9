"""Webhook event dedupe, burst coalescing and counters, shared across processes through Redis.

CRMs deliver the same event more than once and change one record many times in a burst. Handlers
remember each event key for a week (:meth:`EventLedger.unseen`), and add changed record ids to a
pending set per tenant and object (:meth:`EventLedger.add_pending`). Only the first id to arrive
while no fetch is scheduled schedules one; the fetch job claims the whole set when it runs, so a
burst of changes to one record becomes one fetch. Ids are removed only after the fetch succeeded,
so a failed job retries them.

Each addition of an id stamps it with a new generation number, and a fetch removes only the ids
whose stamp is no newer than its claim (:meth:`EventLedger.claim`). An id changed again while a
fetch runs must stay pending: that fetch may have read the record before the change, and the
fetch the new change scheduled must still find the id. (Removing ids unconditionally lost exactly
those updates when several workers fetched the same tenant.)

Without Redis, the same structures live in this process (the embedded, single-process mode).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from core.queue import QueueUnavailable

# Stamp ids with a fresh generation and schedule a fetch unless one is scheduled (KEYS: pending
# zset, scheduled flag, generation counter; ARGV: ids). Returns 1 when the caller must schedule.
_ADD_PENDING = """
local generation = redis.call('INCR', KEYS[3])
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], generation, ARGV[i]) end
if redis.call('SET', KEYS[2], 1, 'NX', 'EX', 3600) then return 1 end
return 0
"""
# Remove ids whose stamp is at most ARGV[1] (the claim's generation); later stamps stay pending.
_DONE_PENDING = """
local removed = 0
for i = 2, #ARGV do
  local stamp = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if stamp and tonumber(stamp) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


@dataclass(frozen=True)
class Claim:
    """The ids a fetch took, and the newest generation among them."""

    ids: list[str]
    generation: int


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
        self._pending: dict[str, dict[str, int]] = {}
        self._generation = 0
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
                keys = [_pending_key(scope), _PREFIX + "scheduled:" + scope, _generation_key(scope)]
                return bool(self._redis.eval(_ADD_PENDING, len(keys), *keys, *ids))
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        with self._lock:
            self._generation += 1
            pending = self._pending.setdefault(scope, {})
            for record_id in ids:
                pending[record_id] = self._generation
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

    def claim(self, scope: str) -> Claim:
        """Start a fetch: clear the scheduled flag, then read every pending id and its stamp.

        Clearing first means an id added while the fetch runs schedules another fetch, so nothing
        slips between the read and the clear. Pass the claim's generation to
        :meth:`done_pending`, so ids stamped again meanwhile stay pending.
        """
        self.unschedule(scope)
        if self._redis is not None:
            try:
                members: list[tuple[bytes, float]] = self._redis.zrange(  # type: ignore[assignment]
                    _pending_key(scope), 0, -1, withscores=True
                )
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            stamped = {
                (m.decode() if isinstance(m, bytes) else str(m)): int(score) for m, score in members
            }
        else:
            with self._lock:
                stamped = dict(self._pending.get(scope, {}))
        return Claim(sorted(stamped), max(stamped.values(), default=0))

    def claim_pending(self, scope: str) -> list[str]:
        """Start a fetch and return the pending ids (see :meth:`claim`)."""
        return self.claim(scope).ids

    def done_pending(
        self, scope: str, record_ids: Sequence[str], generation: int | None = None
    ) -> None:
        """Remove ids whose fetch succeeded.

        With the ``generation`` of the fetch's :class:`Claim`, an id stamped after the claim (it
        changed again while the fetch ran) stays pending for the next fetch.
        """
        if not record_ids:
            return
        upto = float("inf") if generation is None else generation
        if self._redis is not None:
            try:
                bound = "inf" if generation is None else str(generation)
                self._redis.eval(_DONE_PENDING, 1, _pending_key(scope), bound, *record_ids)
            except redis.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
            return
        with self._lock:
            pending = self._pending.get(scope, {})
            for record_id in record_ids:
                if record_id in pending and pending[record_id] <= upto:
                    del pending[record_id]

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


def _pending_key(scope: str) -> str:
    # A sorted set (id -> generation); the name differs from the plain set this replaced.
    return _PREFIX + "pending-gen:" + scope


def _generation_key(scope: str) -> str:
    return _PREFIX + "pending-generation:" + scope
