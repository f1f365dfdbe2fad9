"""Shared builders for the scoring tests: a generated history loaded into a temporary store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.embeddings import DIMENSION
from core.store import Store
from sandbox.canonical import load_history_into_store
from sandbox.history import generate
from sandbox.history_model import History
from scoring.training import Params

TENANT = "acme"
FAST = Params(iterations=200, early_stopping_rounds=40)
"""Small CatBoost runs keep the suite fast; the bench trains at full size."""


class ConstantEmbedder:
    """Notes need a vector to be stored; scoring never reads it."""

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def loaded_store(path: Path, n_leads: int, seed: int = 7) -> tuple[Store, History]:
    """A store under ``path`` holding a generated history for :data:`TENANT`."""
    history = generate(seed=seed, n_leads=n_leads)
    store = Store(str(path / "lancedb"), embedder=ConstantEmbedder())  # type: ignore[arg-type]
    load_history_into_store(store, history, TENANT)
    return store, history
