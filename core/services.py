"""The services one process builds from its configuration, shared by handlers, jobs and the CLI.

Web processes build them in ``create_app``; ``fieldwise worker`` builds them before working; jobs
reach them through :func:`current`. Building is cheap: connections open lazily.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from connectors.base import ConnectorContext
from core import queue as job_queue
from core.coalesce import EventLedger
from core.config import Config
from core.crypto import TokenCipher
from core.ratelimit import WindowCounter, counter_for
from core.store import Store
from core.tenants import TenantRegistry


@dataclass(frozen=True)
class Services:
    """Configuration plus what is built from it: store, queue, tenants, budgets, event ledger."""

    config: Config
    store: Store
    queue: job_queue.JobQueue
    cipher: TokenCipher
    registry: TenantRegistry
    counter: WindowCounter
    events: EventLedger

    @property
    def connector_context(self) -> ConnectorContext:
        """What connectors need: configuration, tenants and the shared request budgets."""
        return ConnectorContext(self.config, self.registry, self.counter)


_current: Services | None = None
_lock = threading.Lock()


def configure(config: Config) -> Services:
    """Build this process's services (replacing any earlier ones) and return them."""
    global _current
    store = Store.from_config(config)
    cipher = TokenCipher.from_config(config)
    built = Services(
        config=config,
        store=store,
        queue=job_queue.configure(config),
        cipher=cipher,
        registry=TenantRegistry(store, cipher, redis_url=config.redis_url),
        counter=counter_for(config.redis_url),
        events=EventLedger(config.redis_url),
    )
    with _lock:
        _current = built
    return built


def current() -> Services:
    """This process's services.

    Raises:
        RuntimeError: :func:`configure` was not called in this process.
    """
    if _current is None:
        raise RuntimeError(
            "services are not configured; call core.services.configure(config) first"
        )
    return _current
