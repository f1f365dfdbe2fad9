"""Webhook event dedupe, burst coalescing and counters, shared across processes through Redis.

CRMs deliver the same event more than once and change one record many times in a burst. Handlers
remember each event key for a week, and add changed record ids to a pending set per tenant and
object (:meth:`EventLedger.add_pending`). Only the first id to arrive
while no fetch is scheduled schedules one; the fetch job claims the whole set when it runs, so a
burst of changes to one record becomes one fetch. Ids are removed only after the fetch succeeded,
so a failed job retries them.

Each addition of an id stamps it with a new generation number, and a fetch removes only the ids
whose stamp is no newer than its claim (:meth:`EventLedger.claim`). An id changed again while a
fetch runs must stay pending: that fetch may have read the record before the change, and the
fetch the new change scheduled must still find the id. (Removing ids unconditionally lost exactly
those updates when several workers fetched the same tenant.)

A webhook delivery does all of that in one call, :meth:`EventLedger.ingest`, which on Redis is one
script run: one round trip per delivery instead of one per step. The script also compares values
the caller's view was based on (a tenant's registry generation, say) and changes nothing when one
moved, so a process can cache what those values guard.

Without Redis, the same structures live in this process (the embedded, single-process mode).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from redis.connection import AbstractConnection

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


# One delivery in one round trip. KEYS: the counters hash, the watched keys, three keys per scope
# (pending zset, scheduled flag, generation counter), then one seen flag per event. ARGV: the number
# of watched keys and of scopes, the seen TTL, the defer flag (1/0), the duplicate counter, each
# watched key's expected value; then per event a header "<scope number, 0: none> <remember 1/0>
# <number of ids> <drop reason, may be empty>" and its ids; then the number of extra counters and
# each one's name and amount. Watched values are compared first: if one moved, nothing changes and the
# answer is an array of (position, value now) pairs. Every seen flag is read (MGET) before anything
# is written, so an event repeated in the batch reads as its first copy did. Otherwise the answer
# is one string: the settled flag, one new/seen flag per event, ':', the scopes to schedule.
_INGEST = """
local watched, scopes = tonumber(ARGV[1]), tonumber(ARGV[2])
local stale = {}
for i = 1, watched do
  local now = redis.call('GET', KEYS[1 + i]) or ''
  if now ~= ARGV[5 + i] then
    stale[#stale + 1] = tostring(i)
    stale[#stale + 1] = now
  end
end
if #stale > 0 then return stale end
local first_seen = 1 + watched + 3 * scopes
local events = #KEYS - first_seen
local seen = {}
for start = first_seen + 1, #KEYS, 1000 do
  local part = redis.call('MGET', unpack(KEYS, start, math.min(start + 999, #KEYS)))
  for i = 1, #part do seen[#seen + 1] = part[i] end
end
local flags, marks, counts, members = {}, {}, {}, {}
local pos = 6 + watched
for e = 1, events do
  local scope, remember, n, reason = string.match(ARGV[pos], '^(%d+) (%d) (%d+) (.*)$')
  scope, n = tonumber(scope), tonumber(n)
  if seen[e] then
    flags[e] = '0'
    counts[ARGV[5]] = (counts[ARGV[5]] or 0) + 1
  else
    flags[e] = '1'
    if reason ~= '' then counts[reason] = (counts[reason] or 0) + 1 end
    if remember == '1' then marks[#marks + 1] = KEYS[first_seen + e] end
    if scope > 0 and n > 0 then
      local list = members[scope] or {}
      for i = 1, n do list[#list + 1] = ARGV[pos + i] end
      members[scope] = list
    end
  end
  pos = pos + 1 + n
end
local schedule = {}
for scope = 1, scopes do
  local list = members[scope]
  if list then
    local base = 1 + watched + 3 * (scope - 1)
    local generation = redis.call('INCR', KEYS[base + 3])
    local scored = {}
    for i = 1, #list do
      scored[2 * i - 1] = generation
      scored[2 * i] = list[i]
    end
    for start = 1, #scored, 2000 do
      redis.call('ZADD', KEYS[base + 1], unpack(scored, start, math.min(start + 1999, #scored)))
    end
    if redis.call('SET', KEYS[base + 2], 1, 'NX', 'EX', 3600) then
      schedule[#schedule + 1] = scope
    end
  end
end
for i = 1, tonumber(ARGV[pos]) do
  local name = ARGV[pos + 2 * i - 1]
  counts[name] = (counts[name] or 0) + tonumber(ARGV[pos + 2 * i])
end
local answer = table.concat(flags) .. ':' .. table.concat(schedule, ',')
if #schedule > 0 or ARGV[4] == '1' then return '0' .. answer end
for i = 1, #marks do redis.call('SET', marks[i], 1, 'EX', ARGV[3]) end
for name, amount in pairs(counts) do redis.call('HINCRBY', KEYS[1], name, amount) end
return '1' .. answer
"""


class IngestEvent(NamedTuple):
    """One event of a webhook delivery, classified by its handler before dedupe.

    Attributes:
        key: the event's dedupe key.
        scope: the pending set (``tenant:object``) its record ids join when the event is new.
        record_ids: the ids it adds to ``scope``.
        drop_reason: the counter to add to when the event is new but becomes no work.
        remember: whether a new event is marked seen (an event from an unknown tenant is not).
    """

    key: str
    scope: str | None = None
    record_ids: tuple[str, ...] = ()
    drop_reason: str | None = None
    remember: bool = True


@dataclass(frozen=True)
class Ingested:
    """What :meth:`EventLedger.ingest` did.

    Attributes:
        fresh: per event, whether it was new (not seen before).
        schedule: scopes that had no fetch scheduled: the caller enqueues one for each.
        settled: new events are marked seen and counters added; when False (fetches to schedule
            or other jobs to queue first), call :meth:`EventLedger.settle` once they are queued.
        stale: watched keys whose value moved, with the value now; when set, nothing was done.
    """

    fresh: tuple[bool, ...] = ()
    schedule: tuple[str, ...] = ()
    settled: bool = False
    stale: dict[str, str] = field(default_factory=dict)


_INGEST_SHA = hashlib.sha1(_INGEST.encode()).hexdigest().encode()


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
        # Each thread runs the ingest script on a connection of its own (see _run_ingest).
        self._own = threading.local()

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

    def ingest(
        self,
        events: Sequence[IngestEvent],
        *,
        duplicate_reason: str,
        counts: Mapping[str, int] | None = None,
        watch: Mapping[str, str] | None = None,
        defer: bool = False,
    ) -> Ingested:
        """Dedupe a delivery's events, add the new ones' ids to pending sets, mark them, count.

        On Redis this is one round trip. It dedupes against the keys remembered for a week and
        does what :meth:`add_pending` and :meth:`count` do, with the same rules: a seen event is
        counted as ``duplicate_reason``; each scope that gets new ids is stamped with a new
        generation and asks for a fetch when none is scheduled; events are marked seen only
        once all their work is queued. So when a fetch must be scheduled, or ``defer`` says
        the caller has other jobs to queue, marking and counting wait for :meth:`settle`.

        Args:
            events: the delivery's events in order; a key repeated in the batch reads as seen or
                unseen like its first copy (callers count in-batch repeats themselves).
            duplicate_reason: the counter for events seen before.
            counts: counters to add besides the events' own (drops decided before dedupe).
            watch: Redis keys and the values the caller's view was built from; when one moved,
                nothing is done and :attr:`Ingested.stale` says which.
            defer: leave marking and counting to :meth:`settle` in any case.

        Raises:
            QueueUnavailable: Redis is unreachable; nothing is marked seen.
        """
        counts = dict(counts or {})
        if self._redis is None:
            # Nothing sets a watched key without Redis: each reads "" (see :meth:`values`).
            moved = {key: "" for key, value in (watch or {}).items() if value != ""}
            if moved:
                return Ingested(stale=moved)
            return self._ingest_in_memory(events, duplicate_reason, counts, defer)
        watched = dict(watch or {})
        scopes = list(dict.fromkeys(e.scope for e in events if e.scope and e.record_ids))
        slot = {scope: position + 1 for position, scope in enumerate(scopes)}
        keys = [_PREFIX + "counters", *watched]
        for scope in scopes:
            keys += [_pending_key(scope), _PREFIX + "scheduled:" + scope, _generation_key(scope)]
        keys += [_PREFIX + "seen:" + e.key for e in events]
        args = [b"%d" % len(watched), b"%d" % len(scopes), b"%d" % SEEN_TTL_S]
        args += [b"1" if defer else b"0", duplicate_reason.encode()]
        args += [value.encode() for value in watched.values()]
        for e in events:
            position = slot[e.scope] if e.scope and e.record_ids else 0
            header = f"{position} {int(e.remember)} {len(e.record_ids)} {e.drop_reason or ''}"
            args.append(header.encode())
            args += [record_id.encode() for record_id in e.record_ids]
        args.append(b"%d" % len(counts))
        for name, amount in counts.items():
            args += [name.encode(), b"%d" % amount]
        try:
            reply = self._run_ingest(keys, args)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        if isinstance(reply, list):
            names, pairs = list(watched), [_text(item) for item in reply]
            return Ingested(
                stale={
                    names[int(i) - 1]: now for i, now in zip(pairs[::2], pairs[1::2], strict=True)
                }
            )
        answer = _text(reply)
        flags, _, schedule = answer[1:].partition(":")
        return Ingested(
            fresh=tuple(flag == "1" for flag in flags),
            schedule=tuple(scopes[int(s) - 1] for s in schedule.split(",") if s),
            settled=answer[0] == "1",
        )

    def _run_ingest(self, keys: list[str], args: list[bytes]) -> Any:
        """Run the ingest script on this thread's own connection to Redis.

        Every delivery pays for this call, and going through the connection pool (checkout, a
        readiness check, retry bookkeeping, check-in) cost about as much CPU as the exchange
        itself, and so did encoding the arguments one by one. A connection per thread needs none
        of the pool's work, and does what the pool would do where it matters: it reconnects when
        the server closed it (a Redis restart). The command goes out as the script's digest,
        packed here in one step, and the script is loaded when Redis lost it.
        """
        assert self._redis is not None
        owner = getattr(self._own, "owner", None)
        connection: AbstractConnection | None = getattr(self._own, "connection", None)
        if connection is None or owner != os.getpid():  # a forked child opens its own
            pool = self._redis.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            self._own.connection, self._own.owner = connection, os.getpid()
        try:
            connection.connect()
            if connection.can_read():  # closed by the server, or a stray reply: start afresh
                connection.disconnect()
                connection.connect()
            command = _resp(
                b"EVALSHA", _INGEST_SHA, b"%d" % len(keys), *map(str.encode, keys), *args
            )
            connection.send_packed_command([command])
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                connection.send_command("SCRIPT", "LOAD", _INGEST)
                connection.read_response()
                connection.send_packed_command([command])
                return connection.read_response()
        except redis.ResponseError:
            raise  # an error reply leaves the connection in step
        except BaseException:
            connection.disconnect()  # a reply may be half read: never reuse this socket
            raise

    def _ingest_in_memory(
        self,
        events: Sequence[IngestEvent],
        duplicate_reason: str,
        counts: dict[str, int],
        defer: bool,
    ) -> Ingested:
        now = time.time()
        with self._lock:
            fresh = tuple(self._seen.get(e.key, 0) < now for e in events)
            ids_by_scope: dict[str, list[str]] = {}
            for event, new in zip(events, fresh, strict=True):
                reason = event.drop_reason if new else duplicate_reason
                if reason:
                    counts[reason] = counts.get(reason, 0) + 1
                if new and event.scope and event.record_ids:
                    ids_by_scope.setdefault(event.scope, []).extend(event.record_ids)
            schedule = []
            for scope, ids in ids_by_scope.items():
                self._generation += 1
                pending = self._pending.setdefault(scope, {})
                for record_id in ids:
                    pending[record_id] = self._generation
                if scope not in self._scheduled:
                    self._scheduled.add(scope)
                    schedule.append(scope)
            settled = not schedule and not defer
            if settled:
                for event, new in zip(events, fresh, strict=True):
                    if new and event.remember:
                        self._seen[event.key] = now + SEEN_TTL_S
                self._counters.update(counts)
        return Ingested(fresh=fresh, schedule=tuple(schedule), settled=settled)

    def settle(self, keys: Sequence[str], counts: Mapping[str, int]) -> None:
        """Mark event keys seen and add to counters, in one round trip (after :meth:`ingest`).

        Raises:
            QueueUnavailable: Redis is unreachable.
        """
        if self._redis is None:
            expires = time.time() + SEEN_TTL_S
            with self._lock:
                for key in keys:
                    self._seen[key] = expires
                self._counters.update(counts)
            return
        if not keys and not counts:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.set(_PREFIX + "seen:" + key, 1, ex=SEEN_TTL_S)
            for name, amount in counts.items():
                pipe.hincrby(_PREFIX + "counters", name, amount)
            pipe.execute()
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc

    def values(self, keys: Sequence[str]) -> list[str]:
        """The current values of Redis keys a caller watches in :meth:`ingest` (``""`` if unset).

        Without Redis nothing is watched, and every value reads ``""``.

        Raises:
            QueueUnavailable: Redis is unreachable.
        """
        if self._redis is None or not keys:
            return [""] * len(keys)
        try:
            found = self._redis.mget(list(keys))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        return ["" if value is None else _text(value) for value in found]

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


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resp(*parts: bytes) -> bytes:
    """A Redis command in its wire format (RESP): an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])
