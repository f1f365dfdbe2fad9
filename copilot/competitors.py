"""Which competitors a tenant meets, and where their names turn up.

A tenant's competitor list is the union of two sources: the names and aliases an admin configured
in the copilot settings, and the values the CRM itself holds on deals (Salesforce's
``Competitors__c`` / ``OpportunityCompetitor``, HubSpot's ``competitors`` deal property), which land
in the canonical opportunity's ``competitors`` list. Names are matched without regard to case, so
"vantora" on one deal and "Vantora" in the settings are one competitor, spelled the way it was
first configured.

Detection finds those names and aliases in free text (notes, activity bodies) as whole words.
Short all-capital aliases ("VTR", "BLN") match only in capitals: in lower case they are too often
ordinary words or fragments of other tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.store import Store

MAX_NAME_LENGTH = 100
"""Longest competitor name or alias accepted (the settings schema allows the same)."""
_SHORT_CAPS = re.compile(r"^[A-Z0-9]{2,5}$")
_SPACES = re.compile(r"\s+")

Competitors = Mapping[str, Sequence[str]]
"""Competitor name -> every wording that refers to it (the name itself included)."""


class CompetitorNameError(ValueError):
    """A competitor name that cannot be stored (empty, too long, control characters)."""


def normalise_name(name: object) -> str:
    """Trim a competitor name and collapse its inner whitespace.

    Raises:
        CompetitorNameError: the name is not a string, is empty, too long or has control characters.
    """
    if not isinstance(name, str):
        raise CompetitorNameError(f"a competitor name must be text, got {type(name).__name__}")
    cleaned = _SPACES.sub(" ", name).strip()
    if not cleaned:
        raise CompetitorNameError("a competitor name must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise CompetitorNameError(
            f"competitor name {cleaned[:40]!r}... is longer than {MAX_NAME_LENGTH} characters"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise CompetitorNameError(f"competitor name {cleaned!r} contains control characters")
    return cleaned


def merge_competitors(
    configured: Competitors, seen_on_deals: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """The tenant's competitor list: configured names first, then names only deals carry.

    A deal value equal (ignoring case) to a configured name or alias is that competitor; any other
    value becomes a competitor of its own, known by that one wording.

    Args:
        configured: name -> aliases from the copilot settings.
        seen_on_deals: competitor values found on the tenant's opportunities.

    Returns:
        Name -> aliases, each alias list starting with the name itself, without duplicates.
    """
    merged: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for raw_name, raw_aliases in configured.items():
        name = normalise_name(raw_name)
        wordings = _unique([name, *(normalise_name(a) for a in raw_aliases)])
        merged[name] = tuple(wordings)
        for wording in wordings:
            owner.setdefault(wording.casefold(), name)
    for value in seen_on_deals:
        try:
            name = normalise_name(value)
        except CompetitorNameError:
            continue
        if name.casefold() not in owner:
            merged[name] = (name,)
            owner[name.casefold()] = name
    return merged


def canonical_name(name: str, competitors: Competitors) -> str | None:
    """The configured spelling of a name or alias (ignoring case), or None when unknown."""
    wanted = _SPACES.sub(" ", name).strip().casefold()
    for known, aliases in competitors.items():
        if wanted == known.casefold() or any(wanted == a.casefold() for a in aliases):
            return known
    return None


def deal_competitor_values(store: Store, tenant_id: str) -> list[str]:
    """Every distinct competitor value on a tenant's opportunities, in first-seen order."""
    table = store.to_arrow(tenant_id, "opportunity", columns=["competitors"])
    seen: dict[str, None] = {}
    for values in table.column("competitors").to_pylist():
        for value in values or ():
            seen.setdefault(value, None)
    return list(seen)


def tenant_competitors(services: Any, tenant_id: str) -> dict[str, tuple[str, ...]]:
    """A tenant's competitors: its settings merged with the values on its deals.

    Args:
        services: the process's services (registry and store).
        tenant_id: whose competitors.

    Returns:
        Name -> aliases (see :func:`merge_competitors`).
    """
    from copilot.settings import load_settings

    settings = load_settings(services.registry, tenant_id)
    return merge_competitors(
        settings.competitors, deal_competitor_values(services.store, tenant_id)
    )


class CompetitorMatcher:
    """Finds competitor mentions in text; build once per competitor list, use many times."""

    def __init__(self, competitors: Competitors) -> None:
        self.competitors = {
            name: tuple(aliases) or (name,) for name, aliases in competitors.items()
        }
        self._owner: dict[str, str] = {}
        loose: list[str] = []
        exact: list[str] = []
        for name, aliases in self.competitors.items():
            for wording in _unique([name, *aliases]):
                if _SHORT_CAPS.match(wording):
                    self._owner.setdefault(wording, name)
                    exact.append(wording)
                else:
                    self._owner.setdefault(wording.casefold(), name)
                    loose.append(wording)
        self._loose = _word_pattern(loose, re.IGNORECASE)
        self._exact = _word_pattern(exact, 0)

    def find(self, text: str | None) -> list[str]:
        """Competitor names mentioned in ``text``, in order of first mention."""
        return [name for name, _ in self.mentions(text)]

    def mentions(self, text: str | None) -> list[tuple[str, str]]:
        """``(competitor name, wording as written)`` of each competitor, first mention first."""
        if not text:
            return []
        hits: list[tuple[int, str, str]] = []
        if self._loose is not None:
            for match in self._loose.finditer(text):
                hits.append((match.start(), self._owner[match.group(0).casefold()], match.group(0)))
        if self._exact is not None:
            for match in self._exact.finditer(text):
                hits.append((match.start(), self._owner[match.group(0)], match.group(0)))
        found: dict[str, str] = {}
        for _, name, wording in sorted(hits):
            found.setdefault(name, wording)
        return list(found.items())

    def mentions_competitor(self, text: str | None, name: str) -> bool:
        """Whether ``text`` names this one competitor (by any of its wordings)."""
        return name in self.find(text)


def detect_competitors(text: str | None, competitors: Competitors) -> list[str]:
    """Competitor names mentioned in ``text``, first mention first (a one-off matcher)."""
    return CompetitorMatcher(competitors).find(text)


def opportunities_with_competitor(
    store: Store,
    tenant_id: str,
    competitor: str,
    *,
    aliases: Sequence[str] = (),
    open_only: bool = True,
) -> list[str]:
    """Deals whose battle card depends on a competitor: it is on the deal or named in its notes.

    Args:
        store: the store.
        tenant_id: whose deals.
        competitor: the competitor's name.
        aliases: further wordings of it found in notes.
        open_only: only deals still open (closed deals get no card).

    Returns:
        Opportunity ids, sorted.
    """
    name = normalise_name(competitor)
    wordings = {w.casefold() for w in (name, *aliases)}
    deals = store.to_arrow(
        tenant_id, "opportunity", columns=["crm_id", "competitors", "is_closed"]
    ).to_pylist()
    if open_only:
        deals = [d for d in deals if not d["is_closed"]]
    found = {
        d["crm_id"] for d in deals if any(v.casefold() in wordings for v in d["competitors"] or ())
    }
    rest = [d["crm_id"] for d in deals if d["crm_id"] not in found]
    if rest:
        matcher = CompetitorMatcher({name: (name, *aliases)})
        notes = store.to_arrow(
            tenant_id, "note", filters={"opportunity_id": rest}, columns=["opportunity_id", "body"]
        ).to_pylist()
        found.update(n["opportunity_id"] for n in notes if matcher.find(n["body"]))
    return sorted(found)


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return list(seen.values())


def _word_pattern(wordings: Sequence[str], flags: int) -> re.Pattern[str] | None:
    if not wordings:
        return None
    # Longest first, so "Vantora CRM" wins over "Vantora" at the same position.
    ordered = sorted(set(wordings), key=len, reverse=True)
    body = "|".join(re.escape(w) for w in ordered)
    return re.compile(rf"(?<![\w])(?:{body})(?![\w])", flags)
