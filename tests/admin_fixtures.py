"""A small loaded, trained and scored tenant behind the admin console, shared by its tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from scoring_service_fixtures import TENANT, scoring_services
from werkzeug.security import generate_password_hash

from core.config import Config
from core.services import Services
from handlers.app import create_app
from handlers.context import EXTENSION
from sandbox.canonical import load_history_into_store
from sandbox.history import generate
from scoring import jobs
from scoring.training import train

N_LEADS = 1500


@dataclass
class Console:
    """The app, its services, the admin password and the scored tenant's id."""

    app: Flask
    services: Services
    password: str
    tenant_id: str


@contextmanager
def scored_console(root: Path, n_leads: int = N_LEADS, **overrides: object) -> Iterator[Console]:
    """An app whose store holds one tenant with a trained lead model and a scored ledger."""
    password = secrets.token_urlsafe(12)
    config = Config.for_demo(
        lancedb_uri=str(root / "lancedb"),
        admin_password_hash=_secret(generate_password_hash(password)),
        **overrides,
    )
    app = create_app(config)
    services, queue = scoring_services(config, str(root / "store"))
    app.extensions[EXTENSION] = services
    history = generate(seed=7, n_leads=n_leads, now=datetime.now(UTC).replace(microsecond=0))
    load_history_into_store(services.store, history, TENANT)
    train(services.store, TENANT, "lead", as_of=history.now)
    # Scoring jobs find their services through scoring.jobs.current; point it at this store only
    # for the one call, so a session-long console never captures other tests' jobs.
    original = jobs.current
    jobs.current = lambda: services  # type: ignore[assignment]
    try:
        jobs.score_all(TENANT, "lead")
    finally:
        jobs.current = original  # type: ignore[assignment]
    try:
        yield Console(app, services, password, TENANT)
    finally:
        queue.stop()


def _secret(value: str):  # type: ignore[no-untyped-def]
    from core.config import Secret

    return Secret(value)
