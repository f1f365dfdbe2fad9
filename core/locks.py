"""Named locks that hold across processes when Redis is configured.

Token refresh is the main user: when a Salesforce access token expires, several workers notice at
once, and only one may spend the refresh token (Salesforce may rotate it, invalidating the old one).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from core.queue import QueueUnavailable

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


@contextmanager
def named_lock(redis_url: str | None, name: str, timeout_s: float = 30.0) -> Iterator[None]:
    """Hold the lock ``name`` for the block: a Redis lock when ``redis_url`` is set, else in-process.

    Args:
        redis_url: the shared Redis, or None for a single process.
        name: what is locked, e.g. ``refresh:salesforce-00D...``.
        timeout_s: longest wait for the lock, and the Redis lock's expiry (a crashed holder
            cannot block others for longer).

    Raises:
        TimeoutError: the lock was not free within ``timeout_s``.
        QueueUnavailable: Redis is unreachable.
    """
    if redis_url:
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        lock = connection.lock(
            f"fieldwise:lock:{name}", timeout=timeout_s, blocking_timeout=timeout_s
        )
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
        if not acquired:
            raise TimeoutError(
                f"lock {name!r} is still held by another process after {timeout_s} s"
            )
        try:
            yield
        finally:
            # A lock that expired while held may already belong to another process: nothing to undo.
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()
            connection.close()
        return
    with _local_guard:
        local = _local_locks.setdefault(name, threading.Lock())
    if not local.acquire(timeout=timeout_s):
        raise TimeoutError(f"lock {name!r} is still held after {timeout_s} s")
    try:
        yield
    finally:
        local.release()
