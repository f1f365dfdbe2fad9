"""Personal data out, placeholders in: what keeps names, emails and numbers away from the model.

A :class:`Redactor` lives for one generation. It replaces each distinct piece of personal data it
finds with a stable placeholder (``[PERSON_1]``, ``[EMAIL_1]``, ``[PHONE_1]``, ``[ID_1]``,
``[URL_1]``): the same text always gets the same placeholder within the generation, so the model
can still tell people apart and refer to them. :meth:`Redactor.restore` puts the originals back
into every string of the model's answer.

What counts as personal data:

* people's names: the first and last names of the tenant's own leads, contacts and users, taken
  from the store (:func:`people_names`, cached per tenant and rebuilt when stale). Only
  capitalised words are candidates, looked up in a set, so a long note costs one regex pass
  however many people the tenant has; two adjacent words that form a known full name become one
  placeholder;
* email addresses and phone numbers, by pattern;
* free-text identifiers: runs of six or more digits, record-id-like tokens mixing letters and
  digits (``0015e00000AbCdE``, ``CUST-8823197``), and URLs with a path (a profile or document
  link names a person more often than not). ISO dates and times are left alone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.store import Store

PLACEHOLDER = re.compile(r"\[(?:PERSON|EMAIL|PHONE|ID|URL)_\d+\]")
"""What a placeholder looks like; :meth:`Redactor.restore` replaces every match it knows."""

NAME_CACHE_SECONDS = 600.0
"""How long a tenant's name index is reused before the store is read again."""

PEOPLE_ENTITIES = ("lead", "contact", "user")

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
# A phone number: an optional +, then digit groups split by spaces, dots, dashes or parentheses.
# The digit count (7 to 15, ITU E.164) is checked after matching, and dates are excluded.
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d().\- ]{5,}\d(?![\w])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")
_ID = re.compile(r"(?<![\w-])[A-Za-z0-9][A-Za-z0-9_-]{5,}(?![\w-])")
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_GAP = re.compile(r"\s+")


@dataclass(frozen=True)
class NameIndex:
    """The tenant's people's names, for matching.

    Attributes:
        parts: casefolded single name words (first names, last names, each word of either).
        full_names: casefolded ``"first last"`` pairs.
    """

    parts: frozenset[str]
    full_names: frozenset[str]

    @classmethod
    def from_people(cls, people: Iterable[tuple[str | None, str | None]]) -> NameIndex:
        """Build an index from ``(first name, last name)`` pairs.

        Args:
            people: first and last names; either may be None or empty.

        Returns:
            The index; words shorter than two letters are left out.
        """
        parts: set[str] = set()
        full: set[str] = set()
        for first, last in people:
            first_words = _WORD.findall(first or "")
            last_words = _WORD.findall(last or "")
            parts.update(w.casefold() for w in (*first_words, *last_words) if len(w) >= 2)
            if first_words and last_words:
                full.add(f"{first_words[-1]} {last_words[0]}".casefold())
        return cls(frozenset(parts), frozenset(full))


EMPTY_NAMES = NameIndex(frozenset(), frozenset())


class NameCache:
    """Per-tenant :class:`NameIndex` built from the store, reused for ``ttl_s`` seconds."""

    def __init__(
        self,
        store: Store,
        ttl_s: float = NAME_CACHE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._built: dict[str, tuple[float, NameIndex]] = {}

    def get(self, tenant_id: str) -> NameIndex:
        """The tenant's index, rebuilt when older than the time to live."""
        with self._lock:
            cached = self._built.get(tenant_id)
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
        index = people_names(self._store, tenant_id)
        with self._lock:
            self._built[tenant_id] = (self._clock(), index)
        return index

    def invalidate(self, tenant_id: str) -> None:
        """Forget a tenant's index so the next call reads the store (after a sync or erasure)."""
        with self._lock:
            self._built.pop(tenant_id, None)


def people_names(store: Store, tenant_id: str) -> NameIndex:
    """Every first and last name of a tenant's leads, contacts and users.

    Reads two columns per entity as Arrow, so 100k leads take well under a second.

    Args:
        store: the store.
        tenant_id: whose people.

    Returns:
        The tenant's name index.
    """
    pairs: list[tuple[str | None, str | None]] = []
    for entity in PEOPLE_ENTITIES:
        table = store.to_arrow(tenant_id, entity, columns=["first_name", "last_name"])
        pairs.extend(
            zip(
                table.column("first_name").to_pylist(),
                table.column("last_name").to_pylist(),
                strict=True,
            )
        )
    return NameIndex.from_people(pairs)


class Redactor:
    """Replaces personal data with placeholders and puts it back; one per generation."""

    def __init__(self, names: NameIndex = EMPTY_NAMES) -> None:
        self._names = names
        self._by_text: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self.placeholders: dict[str, str] = {}
        """Placeholder to the original text it stands for."""

    def redact(self, text: str) -> str:
        """``text`` with every piece of personal data replaced by its placeholder."""
        spans = sorted(self._spans(text), key=lambda span: (span[0], -span[1]))
        pieces: list[str] = []
        cursor = 0
        for start, end, kind in spans:
            if start < cursor:
                continue
            pieces.append(text[cursor:start])
            pieces.append(self._placeholder(kind, text[start:end]))
            cursor = end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def redact_data(self, value: Any) -> Any:
        """Redact every string inside nested mappings and lists (keys are left as they are)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(item) for item in value]
        return value

    def restore(self, value: Any) -> Any:
        """Put the originals back into every string of ``value``, recursively.

        Placeholders this redactor did not issue are left as they are.
        """
        if isinstance(value, str):
            return PLACEHOLDER.sub(lambda m: self.placeholders.get(m.group(0), m.group(0)), value)
        if isinstance(value, Mapping):
            return {key: self.restore(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.restore(item) for item in value]
        return value

    def _placeholder(self, kind: str, original: str) -> str:
        key = (kind, original.casefold() if kind in {"EMAIL", "PERSON"} else original)
        found = self._by_text.get(key)
        if found is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            found = f"[{kind}_{self._counts[kind]}]"
            self._by_text[key] = found
            self.placeholders[found] = original
        return found

    def _spans(self, text: str) -> Iterable[tuple[int, int, str]]:
        for match in _URL.finditer(text):
            if _has_path(match.group(0)):
                yield match.start(), match.end(), "URL"
        for match in _EMAIL.finditer(text):
            yield match.start(), match.end(), "EMAIL"
        dates = [(m.start(), m.end()) for m in _ISO_DATE.finditer(text)]
        for match in _PHONE.finditer(text):
            start, end = match.start(), match.end()
            # The pattern may take a trailing space or bracket; keep the number itself.
            while end > start and not text[end - 1].isdigit():
                end -= 1
            number = text[start:end]
            digits = sum(ch.isdigit() for ch in number)
            # A bare digit run has no phone shape; the identifier rule below decides on it.
            if number.isdigit():
                continue
            if 7 <= digits <= 15 and not _inside(dates, start, end):
                yield start, end, "PHONE"
        for match in _ID.finditer(text):
            if _looks_like_id(match.group(0)) and not _inside(dates, match.start(), match.end()):
                yield match.start(), match.end(), "ID"
        yield from self._name_spans(text)

    def _name_spans(self, text: str) -> Iterable[tuple[int, int, str]]:
        if not self._names.parts:
            return
        words = [m for m in _WORD.finditer(text) if m.group(0)[0].isupper()]
        skip_next = False
        for position, word in enumerate(words):
            if skip_next:
                skip_next = False
                continue
            following = words[position + 1] if position + 1 < len(words) else None
            if following is not None and _GAP.fullmatch(text[word.end() : following.start()]):
                pair = f"{word.group(0)} {following.group(0)}".casefold()
                if pair in self._names.full_names:
                    yield word.start(), following.end(), "PERSON"
                    skip_next = True
                    continue
            if word.group(0).casefold() in self._names.parts:
                yield word.start(), word.end(), "PERSON"


def _has_path(url: str) -> bool:
    rest = url.split("://", 1)[-1]
    _, _, path = rest.partition("/")
    return bool(path.strip("/"))


def _looks_like_id(token: str) -> bool:
    digits = sum(ch.isdigit() for ch in token)
    letters = sum(ch.isalpha() for ch in token)
    if digits >= 6:
        return True
    # Record ids and reference numbers mix letters and digits ("0015e00000AbCdE", "INV88A21").
    return len(token) >= 8 and digits >= 3 and letters >= 2


def _inside(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(low <= start and end <= high for low, high in ranges)
