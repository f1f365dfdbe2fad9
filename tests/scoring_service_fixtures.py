"""Helpers the scoring-side tests share: a fast embedder, services on a paused queue, one tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from core.config import Config
from core.embeddings import DIMENSION, Embedder
from core.queue import EmbeddedQueue
from core.services import Services, configure
from core.store import Store
from core.tenants import Tenant, TenantRegistry

TENANT = "salesforce-00DTEST"


class HashEmbedder(Embedder):
    """Deterministic vectors from a text hash: thousands of notes load in a second, not a minute."""

    def __init__(self) -> None:  # no model to load
        pass

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            vector = np.random.default_rng(seed).normal(size=DIMENSION).astype(np.float32)
            out[i] = vector / np.linalg.norm(vector)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def scoring_services(config: Config, uri: str) -> tuple[Services, EmbeddedQueue]:
    """Services over a fresh store (fast embedder) and a paused embedded queue, with one tenant."""
    base = configure(config)
    if isinstance(base.queue, EmbeddedQueue):
        base.queue.stop()
    store = Store(uri, embedder=HashEmbedder())
    queue = EmbeddedQueue()
    queue.pause()
    registry = TenantRegistry(store, base.cipher)
    registry.save(
        Tenant(
            TENANT, "salesforce", "00DTEST", "https://example.my.salesforce.com", status="active"
        )
    )
    return replace(base, store=store, queue=queue, registry=registry), queue


def set_scoring(services: Services, **settings: Any) -> None:
    """Replace the test tenant's scoring settings."""
    tenant = services.registry.get(TENANT)
    services.registry.save(replace(tenant, settings={**tenant.settings, "scoring": settings}))
