from __future__ import annotations

import socket

import numpy as np
import pytest

from core.embeddings import DIMENSION, Embedder, get_embedder


@pytest.fixture
def network_off(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is off for this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_paraphrases_are_closer_than_an_unrelated_sentence_with_the_network_off(network_off):
    embedder = Embedder()
    a, b, unrelated = embedder.embed(
        [
            "The customer wants a discount before they sign the contract.",
            "They asked us to lower the price ahead of signing.",
            "The office plants need watering twice a week.",
        ]
    )
    assert float(a @ b) > float(a @ unrelated) + 0.3
    assert float(a @ b) > float(b @ unrelated) + 0.3


def test_embeddings_are_unit_length_batched_consistently_and_shaped():
    embedder = get_embedder()
    texts = [f"note number {i} about pricing" for i in range(70)] + [""]
    vectors = embedder.embed(texts, batch_size=16)
    assert vectors.shape == (71, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = embedder.embed([texts[33]])[0]
    assert np.allclose(alone, vectors[33], atol=1e-4)


def test_the_model_loads_once_per_process():
    assert get_embedder() is get_embedder()


def test_a_single_string_is_refused_instead_of_embedding_each_character():
    with pytest.raises(TypeError, match="sequence of texts"):
        get_embedder().embed("one text")


def test_repeated_and_duplicate_texts_get_the_same_vectors_as_a_fresh_embedding():
    embedder = get_embedder()
    texts = [
        "Pricing came up again on the call",
        "Security review passed",
        "Pricing came up again on the call",
    ]
    first = embedder.embed(texts)
    again = embedder.embed(texts[:2])
    fresh = Embedder().embed(texts[:2])
    assert np.array_equal(first[0], first[2])
    assert np.array_equal(first[:2], again)
    assert np.allclose(again, fresh, atol=1e-6)


def test_texts_of_mixed_lengths_embed_as_they_would_alone_however_they_are_batched():
    words = [
        "pricing",
        "security",
        "renewal",
        "champion",
        "budget",
        "procurement",
        "timeline",
        "competitor",
    ]
    texts = [" ".join(words[: 1 + i % 8] * (1 + i % 13)) + f" #{i}" for i in range(50)]
    alone = Embedder(threads=1)
    one_by_one = np.stack([alone.embed([t])[0] for t in texts[:6]])
    sequential = Embedder(threads=1).embed(texts, batch_size=8)
    side_by_side = Embedder(threads=2).embed(texts, batch_size=8)
    assert np.allclose(sequential[:6], one_by_one, atol=1e-5)
    assert np.allclose(sequential, side_by_side, atol=1e-6)
