from __future__ import annotations

from datetime import UTC, datetime

import pytest
from scoring_service_fixtures import TENANT, scoring_services

from sandbox.canonical import load_history_into_store
from sandbox.history import generate
from scoring import jobs
from scoring.training import train


@pytest.fixture
def trained(demo_config, tmp_path, monkeypatch):
    services, queue = scoring_services(demo_config, str(tmp_path / "store"))
    # The history ends today: scoring runs on the real clock, and recency features must agree.
    history = generate(seed=7, n_leads=2000, now=datetime.now(UTC).replace(microsecond=0))
    load_history_into_store(services.store, history, TENANT)
    report = train(services.store, TENANT, "lead", as_of=history.now)
    assert report["model_version"]
    monkeypatch.setattr(jobs, "current", lambda: services)
    yield services
    queue.stop()


def queued(services, func):
    return [j for j in services.queue.jobs() if j["func"] == func]


def test_batch_scoring_schedules_itself_for_tomorrow_and_queues_no_retrain(trained):
    summary = jobs.score_all(TENANT, "lead")
    assert summary["scored"] > 0
    (next_run,) = queued(trained, "scoring.jobs.score_all")
    assert next_run["status"] == "scheduled" and next_run["args"] == (TENANT, "lead")
    assert queued(trained, "scoring.training.train_job") == []
