from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from scoring_service_fixtures import TENANT, scoring_services

from connectors.base import Page
from sandbox.canonical import _Mapper
from sandbox.history import generate
from sync import jobs


class PagedAccounts:
    """A connector whose ``changed`` pages through a fixed list of accounts and notes resumes."""

    crm = "salesforce"

    def __init__(self, records: list[dict[str, Any]], page_size: int) -> None:
        self.records = records
        self.page_size = page_size
        self.resumed_from: list[int] = []
        self.pages_read = 0

    def changed(
        self, entity: str, since: datetime | None, checkpoint: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        start = int((checkpoint or {}).get("offset", 0))
        self.resumed_from.append(start)
        for offset in range(start, len(self.records), self.page_size):
            end = offset + self.page_size
            self.pages_read += 1
            yield Page(self.records[offset:end], {"offset": end}, end >= len(self.records))


@pytest.fixture
def services(demo_config, tmp_path, monkeypatch):
    services, queue = scoring_services(demo_config, str(tmp_path / "store"))
    monkeypatch.setattr(jobs, "current", lambda: services)
    yield services
    queue.stop()


@pytest.fixture(scope="module")
def accounts() -> list[dict[str, Any]]:
    history = generate(seed=3, n_leads=300)
    mapper = _Mapper(history, TENANT, "salesforce")
    return [mapper.account(a) for a in history.accounts]


def test_pages_read_ahead_arrive_in_order_and_a_reading_error_surfaces_where_it_happened():
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("the CRM went away")

    seen = []
    with pytest.raises(RuntimeError, match="went away"), jobs._Prefetch(pages()) as ahead:
        for page in ahead:
            seen.append(page)
    assert seen == [1, 2]


def test_leaving_early_stops_the_reader_instead_of_reading_every_page():
    read = []
    finished = threading.Event()

    def pages() -> Iterator[int]:
        try:
            for number in range(1000):
                read.append(number)
                yield number
        finally:
            finished.set()

    with jobs._Prefetch(pages()) as ahead:
        assert next(iter(ahead)) == 0
    deadline = time.monotonic() + 5
    while not finished.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    # One page handed over, one waiting in the hand-off, one read while it waited.
    assert len(read) <= 3


def test_a_backfill_sliced_after_one_page_resumes_from_what_was_stored_and_stores_each_once(
    services, accounts
):
    connector = PagedAccounts(accounts, page_size=max(1, len(accounts) // 4))
    first = jobs.run_backfill(services, connector, TENANT, "account", slice_s=0.0)
    assert first == {"entity": "account", "records": connector.page_size, "done": False}
    # The reader may have read further ahead; the next run starts after the stored page anyway.
    second = jobs.run_backfill(services, connector, TENANT, "account")
    assert second == {"entity": "account", "records": len(accounts), "done": True}
    assert connector.resumed_from == [0, connector.page_size]
    assert services.store.count(TENANT, "account") == len(accounts)
    assert jobs.backfill_progress(services.store, TENANT)["account"] == {
        "records": len(accounts),
        "done": True,
    }


def test_after_the_backfill_both_models_train_in_jobs_of_their_own(services):
    result = jobs.after_backfill(TENANT)
    queued = [(j["func"], j["args"]) for j in services.queue.jobs()]
    assert ("sync.jobs.train_and_score", (TENANT, "lead")) in queued
    assert ("sync.jobs.train_and_score", (TENANT, "opportunity")) in queued
    assert ("copilot.jobs.refresh_segments", (TENANT,)) in queued
    assert len(result["queued"]) == 2
