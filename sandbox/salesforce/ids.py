"""Salesforce record ids and timestamps: 18-character ids with key prefixes, and the wire date formats.

A Salesforce id is a 3-character key prefix naming the object, 12 characters that are unique in the
org, and (in the 18-character form) a 3-character suffix that encodes which of the first 15
characters are upper case, so the id survives case-insensitive tools.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")

SF_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def case_safe_suffix(id15: str) -> str:
    """Return the 3-character suffix that turns a 15-character id into its 18-character form.

    Args:
        id15: a 15-character case-sensitive id.

    Returns:
        Three characters, one per 5-character chunk, each encoding that chunk's upper-case mask.
    """
    out = []
    for start in range(0, 15, 5):
        bits = 0
        for offset, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << offset
        out.append(_SUFFIX_ALPHABET[bits])
    return "".join(out)


def to18(record_id: str) -> str | None:
    """Normalise a 15- or 18-character id to 18 characters; None when it is not id-shaped.

    An 18-character id whose suffix does not match its first 15 characters is rejected too, as
    Salesforce does.
    """
    if not isinstance(record_id, str) or not _ID_RE.match(record_id):
        return None
    head = record_id[:15]
    suffix = case_safe_suffix(head)
    if len(record_id) == 18 and record_id[15:].upper() != suffix:
        return None
    return head + suffix


def looks_like_id(value: str) -> bool:
    """True when ``value`` is a well-formed 15- or 18-character id."""
    return to18(value) is not None


class IdFactory:
    """Makes new ids per key prefix from a persisted counter, so ids never repeat across restarts."""

    def __init__(
        self,
        load_counter: Callable[[str], int],
        save_counter: Callable[[str, int], None],
        pod: str = "8d",
    ) -> None:
        self._lock = threading.Lock()
        self._load = load_counter
        self._save = save_counter
        self._pod = pod

    def make(self, prefix: str, count: int = 1) -> list[str]:
        """Return ``count`` fresh 18-character ids with the given key prefix.

        Args:
            prefix: the 3-character key prefix ("00Q" for Lead, ...).
            count: how many ids to allocate in one go.
        """
        with self._lock:
            first = int(self._load(prefix))
            self._save(prefix, first + count)
        return [self._format(prefix, n) for n in range(first, first + count)]

    def _format(self, prefix: str, number: int) -> str:
        digits = []
        # Mix the counter so consecutive ids differ in several places, like real ones do.
        mixed = (number * 2_654_435_761 + 12_345) % (62**7)
        for _ in range(7):
            mixed, rem = divmod(mixed, 62)
            digits.append(_BASE62[rem])
        head = f"{prefix}{self._pod}{''.join(digits)}{number % 1000:03d}"[:15]
        return head + case_safe_suffix(head)


def format_datetime(value: datetime) -> str:
    """Format a datetime the way the REST API does: ``2026-11-22T15:04:05.000+0000`` (UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return f"{value.strftime(SF_DATETIME_FORMAT)}.{value.microsecond // 1000:03d}+0000"


def now_string() -> str:
    """The current time in the REST API's datetime format."""
    return format_datetime(datetime.now(UTC))


_DT_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(text: str) -> datetime | None:
    """Parse the ISO 8601 forms Salesforce accepts; None when ``text`` is not one.

    A value without an offset is taken as UTC.
    """
    if not isinstance(text, str):
        return None
    match = _DT_RE.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, frac, offset = match.groups()
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        parsed = parsed - sign * timedelta(minutes=minutes)
    return parsed


def parse_date(text: str) -> date | None:
    """Parse ``YYYY-MM-DD``; None when ``text`` is not a valid date."""
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
