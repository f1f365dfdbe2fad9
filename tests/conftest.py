"""Fixtures every test layer shares: configuration, the app, real Redis, and a network guard."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Config

# The live harness and its helpers live beside the end-to-end tests; the benches import them too.
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from redis_databases import base_url, process_base_url


def _session_redis_url() -> str:
    """The unit tests' Redis database for this test process (``redis_databases``).

    ``make test`` runs the suite in two processes (pytest-xdist); each flushes its own databases.
    The environment is updated so the live harness counts down from this process's base.
    """
    try:
        session_url = process_base_url(base_url(), os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ["FIELDWISE_TEST_REDIS_URL"] = session_url
    return session_url


TEST_REDIS_URL = _session_redis_url()
"""Tests use their own Redis database number and flush it; never point this at real data."""
REDIS_REQUIRED = os.environ.get("FIELDWISE_REQUIRE_REDIS") == "1"


class NetworkAccessError(RuntimeError):
    """A test tried to reach an address off this machine."""


_real_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address: Any) -> Any:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise NetworkAccessError(f"tests may only connect to loopback, not {address!r}")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network_beyond_loopback() -> Iterator[None]:
    """Everything Fieldwise needs in tests is local; any other connection is a bug."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture
def demo_config(tmp_path: Path) -> Config:
    """A demo configuration (fresh secrets) with the store in a temporary folder."""
    return Config.for_demo(lancedb_uri=str(tmp_path / "lancedb"))


@pytest.fixture
def services(demo_config: Config) -> Iterator[Any]:
    """This process's services on the demo configuration (embedded queue, store in tmp)."""
    from core.services import configure

    built = configure(demo_config)
    yield built
    stop = getattr(built.queue, "stop", None)
    if stop is not None:
        stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The URL of a real, reachable Redis database, flushed before and after the test.

    Skips with the reason when Redis is not reachable, unless FIELDWISE_REQUIRE_REDIS=1, where an
    unreachable Redis fails the test instead.
    """
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {TEST_REDIS_URL}: {exc}"
        if REDIS_REQUIRED:
            pytest.fail(f"{message} (FIELDWISE_REQUIRE_REDIS=1 makes it required)")
        pytest.skip(message)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def fake_anthropic() -> Iterator[Any]:
    """A local fake of Anthropic's Messages API (``tests/fake_anthropic.py``), stopped after."""
    from fake_anthropic import FakeAnthropic

    server = FakeAnthropic()
    yield server
    server.close()
