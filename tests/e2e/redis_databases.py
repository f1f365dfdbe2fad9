"""The Redis databases the tests and benches flush, all counted from one base database.

A test process uses its base database (the unit tests', 15 unless ``FIELDWISE_TEST_REDIS_URL``
names another), the one below it (live deployments, ``live_harness.live_redis_url``) and the
fifth below it (the fuzz tests' console). ``make test`` runs two test processes; the second's base
is six below the first's, so neither flushes the other's data. ``tests/conftest.py`` sets each
process's base; the live harness, in tests and benches alike, counts down from it.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

DEFAULT_BASE_URL = "redis://127.0.0.1:6379/15"
PER_PROCESS = 6
"""Databases one test process uses, its base and the five below it."""
LIVE_BELOW = 1
"""Live deployments use the database this far below the base."""
FUZZ_BELOW = 5
"""The fuzz tests' console uses the database this far below the base."""


def base_url() -> str:
    """This process's base database: ``FIELDWISE_TEST_REDIS_URL``, else database 15."""
    return os.environ.get("FIELDWISE_TEST_REDIS_URL", DEFAULT_BASE_URL)


def below(url: str, count: int) -> str:
    """``url`` with a database number ``count`` lower."""
    return urlparse(url)._replace(path=f"/{_database(url) - count}").geturl()


def process_base_url(url: str, worker: str) -> str:
    """The base database of a test process (pytest-xdist's ``gw0``, ``gw1``, ...) given the first's.

    Raises:
        ValueError: a database the process would use is below 0.
    """
    shift = PER_PROCESS * int(worker.removeprefix("gw") or 0)
    lowest = _database(url) - shift - (PER_PROCESS - 1)
    if lowest < 0:
        raise ValueError(
            f"FIELDWISE_TEST_REDIS_URL names database {_database(url)}; test process {worker} "
            f"would use databases {lowest} to {lowest + PER_PROCESS - 1}. Name database 11 or "
            "higher (15, the default, leaves room for two test processes)."
        )
    return below(url, shift)


def _database(url: str) -> int:
    return int(urlparse(url).path.strip("/") or 0)
