"""Job functions the queue tests enqueue by dotted path (as production code enqueues its jobs)."""

from __future__ import annotations

from pathlib import Path


def append_line(path: str, text: str) -> str:
    """Append one line to a file; the file shows how often and in what order jobs ran."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return text


def fail_until_attempt(path: str, succeed_on: int) -> int:
    """Count attempts in a file; raise until the attempt number reaches ``succeed_on``."""
    counter = Path(path)
    attempt = int(counter.read_text() or "0") + 1 if counter.exists() else 1
    counter.write_text(str(attempt))
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


not_a_function = 42
