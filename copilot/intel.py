"""Competitor documents: ingest, chunk, embed and store them for battle cards to cite.

``fieldwise intel add COMPETITOR FILE...`` lands here. Markdown, plain text and PDF are accepted.
Text is split at headings and blank lines and packed into chunks of about 800 characters (a long
paragraph is cut at sentence ends), each carrying the heading it sits under. Chunks are embedded
with the same model as notes and stored in the tenant-scoped feature table ``intel_chunks``.

A document's id is a hash of the competitor and the file's name, so adding the same file again
replaces its chunks rather than adding a second copy. Everything is read, checked and chunked
before anything is written: one bad file (missing, empty, binary, unsupported, a PDF without a
text layer) fails the whole command with its reason and changes nothing. A competitor the tenant
has not named before is added to its copilot settings, spelled as typed; a name that matches a
known one apart from case takes the known spelling.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from copilot.competitors import canonical_name, normalise_name, opportunities_with_competitor
from core.embeddings import DIMENSION, get_embedder
from core.store import Store

TABLE = "intel_chunks"
SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("doc_id", pa.string()),
        ("competitor", pa.string()),
        ("source", pa.string()),
        ("doc_hash", pa.string()),
        ("title", pa.string()),
        ("chunk", pa.int32()),
        ("text", pa.string()),
        ("vector", pa.list_(pa.float32(), DIMENSION)),
        ("added_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""One chunk of one competitor document. ``doc_hash`` (SHA-256 of the extracted text) is the
document's version: battle cards rebuild when it changes."""

SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".pdf": "pdf",
}
"""Accepted file types by suffix."""
CHUNK_CHARS = 800
"""Target chunk size in characters."""
MAX_FILE_BYTES = 20 * 1024 * 1024
"""Larger files are refused: competitor briefs are pages, not books."""

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class IntelError(ValueError):
    """A competitor document could not be added; nothing was changed."""


@dataclass(frozen=True)
class IntelDocument:
    """One document as stored."""

    doc_id: str
    competitor: str
    source: str
    chunks: int
    doc_hash: str
    replaced: bool = False


@dataclass(frozen=True)
class IntelAdded:
    """What :func:`add_intel` did."""

    competitor: str
    new_competitor: bool
    documents: list[IntelDocument]
    refresh_opportunity_ids: list[str]
    """Open deals whose battle card depends on this competitor and should be rebuilt."""
    refresh_enqueued: bool


def doc_id_for(competitor: str, file_name: str) -> str:
    """The stable id of a competitor's document: the same file added again gets the same id."""
    key = f"{competitor.casefold()}\0{Path(file_name).name}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def add_intel(
    services: Any, tenant_id: str, competitor: str, paths: Sequence[str | Path]
) -> IntelAdded:
    """Ingest competitor documents for a tenant (replacing earlier versions of the same files).

    Args:
        services: the process's services (store, registry, queue).
        tenant_id: whose intel.
        competitor: the competitor's name (a new name is added to the tenant's competitors).
        paths: markdown, text or PDF files.

    Returns:
        The documents stored and the deals whose battle cards need a refresh.

    Raises:
        IntelError: unknown tenant, bad competitor name, no files, or a file that is missing,
            too large, empty, binary, of an unsupported type or without extractable text.
    """
    from copilot.competitors import CompetitorNameError, tenant_competitors
    from copilot.settings import save_settings
    from core.tenants import UnknownTenantError

    try:
        services.registry.get(tenant_id)
    except UnknownTenantError as exc:
        raise IntelError(str(exc)) from None
    try:
        typed = normalise_name(competitor)
    except CompetitorNameError as exc:
        raise IntelError(str(exc)) from None
    if not paths:
        raise IntelError("no files given; name at least one markdown, text or PDF file")
    names = [Path(p).name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IntelError(f"file name {duplicates[0]!r} is given twice; documents are keyed by name")

    known = tenant_competitors(services, tenant_id)
    name = canonical_name(typed, known) or typed
    is_new = canonical_name(typed, known) is None
    prepared = [(Path(p), _chunks_of(Path(p))) for p in paths]

    texts = [
        f"{title} {body}" if title else body for _, chunks in prepared for title, body in chunks
    ]
    vectors = get_embedder().embed(texts)
    now = datetime.now(UTC)
    store: Store = services.store
    if is_new:
        from copilot.settings import load_settings

        configured = {
            k: list(v) for k, v in load_settings(services.registry, tenant_id).competitors.items()
        }
        configured[name] = [name]
        save_settings(services.registry, tenant_id, {"competitors": configured})
    documents = []
    row = 0
    for path, chunks in prepared:
        doc_id = doc_id_for(name, path.name)
        doc_hash = hashlib.sha256(
            "\n\n".join(f"{t}\n{b}" for t, b in chunks).encode("utf-8")
        ).hexdigest()
        replaced = store.delete_rows(tenant_id, TABLE, SCHEMA, {"doc_id": doc_id}) > 0
        rows = []
        for index, (title, body) in enumerate(chunks):
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "doc_id": doc_id,
                    "competitor": name,
                    "source": path.name,
                    "doc_hash": doc_hash,
                    "title": title or None,
                    "chunk": index,
                    "text": body,
                    "vector": vectors[row].tolist(),
                    "added_at": now,
                }
            )
            row += 1
        store.append_rows(tenant_id, TABLE, SCHEMA, rows)
        documents.append(IntelDocument(doc_id, name, path.name, len(rows), doc_hash, replaced))

    aliases = tuple(known.get(name, (name,)))
    refresh = opportunities_with_competitor(store, tenant_id, name, aliases=aliases)
    enqueued = _enqueue_refresh(services, tenant_id, refresh)
    return IntelAdded(name, is_new, documents, refresh, enqueued)


def list_intel(store: Store, tenant_id: str, competitor: str | None = None) -> list[dict[str, Any]]:
    """A tenant's documents: doc id, competitor, source file, chunk count, version and added time."""
    filters = {"competitor": competitor} if competitor else None
    rows = store.read_rows(
        tenant_id,
        TABLE,
        SCHEMA,
        filters,
        columns=["doc_id", "competitor", "source", "doc_hash", "added_at"],
    )
    documents: dict[str, dict[str, Any]] = {}
    for row in rows:
        doc = documents.setdefault(row["doc_id"], {**row, "chunks": 0})
        doc["chunks"] += 1
    return sorted(documents.values(), key=lambda d: (d["competitor"].casefold(), d["source"]))


def read_chunks(
    store: Store, tenant_id: str, *, competitor: str | None = None, with_vectors: bool = False
) -> list[dict[str, Any]]:
    """A tenant's chunks (of one competitor when named), in document and chunk order."""
    columns = [n for n in SCHEMA.names if with_vectors or n != "vector"]
    filters = {"competitor": competitor} if competitor else None
    rows = store.read_rows(tenant_id, TABLE, SCHEMA, filters, columns=columns)
    return sorted(rows, key=lambda r: (r["doc_id"], r["chunk"]))


def read_chunk(store: Store, tenant_id: str, doc_id: str, chunk: int) -> dict[str, Any] | None:
    """One chunk of a tenant's document (without its vector), or None."""
    columns = [n for n in SCHEMA.names if n != "vector"]
    rows = store.read_rows(
        tenant_id, TABLE, SCHEMA, {"doc_id": doc_id, "chunk": chunk}, columns=columns, limit=1
    )
    return rows[0] if rows else None


def doc_versions(store: Store, tenant_id: str, competitor: str) -> dict[str, str]:
    """Doc id -> content hash of a competitor's documents (what a battle card's freshness keys on)."""
    rows = store.read_rows(
        tenant_id, TABLE, SCHEMA, {"competitor": competitor}, columns=["doc_id", "doc_hash"]
    )
    return {row["doc_id"]: row["doc_hash"] for row in rows}


# --------------------------------------------------------------------------------------------------
# Reading and chunking


def _chunks_of(path: Path) -> list[tuple[str, str]]:
    """Read, extract and chunk one file, or raise :class:`IntelError` naming the file and why."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise IntelError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(SUFFIXES))}"
        )
    if not path.exists():
        raise IntelError(f"{path}: no such file")
    if not path.is_file():
        raise IntelError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise IntelError(f"{path}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise IntelError(f"{path}: {size} bytes is more than the {MAX_FILE_BYTES} accepted")
    data = path.read_bytes()
    text = _pdf_text(path, data) if kind == "pdf" else _plain_text(path, data)
    chunks = chunk_text(text)
    if not chunks:
        raise IntelError(f"{path}: no text found in the file")
    return chunks


def _plain_text(path: Path, data: bytes) -> str:
    if b"\x00" in data:
        raise IntelError(f"{path}: looks binary (NUL bytes); expected UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntelError(f"{path}: not UTF-8 text (byte {exc.start} is invalid)") from None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > len(text) // 100:
        raise IntelError(f"{path}: looks binary (control characters); expected text")
    return text


def _pdf_text(path: Path, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.startswith(b"%PDF-"):
        raise IntelError(f"{path}: not a PDF (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise IntelError(f"{path}: the PDF is encrypted; export an unprotected copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except IntelError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise IntelError(f"{path}: unreadable PDF ({exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise IntelError(f"{path}: the PDF has no text layer (scanned pages are not read)")
    return text


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[tuple[str, str]]:
    """Split text into ``(heading, chunk)`` pairs of about ``size`` characters.

    Headings (markdown ``#`` lines) start a new chunk and title the chunks under them; paragraphs
    (blank-line separated) are packed together up to ``size``; a paragraph longer than ``size`` is
    cut at sentence ends, and a sentence longer than that at ``size``.
    """
    sections: list[tuple[str, list[str]]] = [("", [])]
    paragraph: list[str] = []

    def close_paragraph() -> None:
        if paragraph:
            joined = " ".join(line.strip() for line in paragraph).strip()
            if joined:
                sections[-1][1].append(joined)
            paragraph.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        heading = _HEADING.match(line)
        if heading:
            close_paragraph()
            sections.append((heading.group(1).strip(), []))
        elif not line.strip():
            close_paragraph()
        else:
            paragraph.append(line)
    close_paragraph()

    chunks: list[tuple[str, str]] = []
    for title, paragraphs in sections:
        current = ""
        for piece in (p for para in paragraphs for p in _pieces(para, size)):
            if current and len(current) + 2 + len(piece) > size:
                chunks.append((title, current))
                current = piece
            else:
                current = f"{current}\n\n{piece}" if current else piece
        if current:
            chunks.append((title, current))
    return chunks


def _pieces(paragraph: str, size: int) -> list[str]:
    if len(paragraph) <= size:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:size])
            sentence = sentence[size:]
        if current and len(current) + 1 + len(sentence) > size:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def _enqueue_refresh(services: Any, tenant_id: str, opportunity_ids: Sequence[str]) -> bool:
    """Queue the deals' copilot refresh (battle card, then write-back) when the jobs module exists."""
    if not opportunity_ids:
        return False
    try:
        from copilot import jobs
    except ImportError:
        return False
    queue_refresh = getattr(jobs, "queue_refresh", None)
    if not callable(queue_refresh):
        return False
    return bool(queue_refresh(services, tenant_id, "opportunity", list(opportunity_ids)))


def summary(added: IntelAdded) -> Mapping[str, Any]:
    """JSON-ready report of an :class:`IntelAdded` (what the CLI prints)."""
    return {
        "competitor": added.competitor,
        "new_competitor": added.new_competitor,
        "documents": [
            {"doc_id": d.doc_id, "source": d.source, "chunks": d.chunks, "replaced": d.replaced}
            for d in added.documents
        ],
        "refresh_opportunity_ids": added.refresh_opportunity_ids,
        "refresh_enqueued": added.refresh_enqueued,
    }
