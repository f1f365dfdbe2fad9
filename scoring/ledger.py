"""The score ledger: every material change of a record's score or grade, and the owner suggestions.

The score ledger answers "what did Fieldwise last *score* for this record?" (the write-back keeps
its own ledger of what it last *wrote*). An entry is added when a score changes materially: the
first score, a grade crossing, or a move of at least ``material_change_points``. It also gets one
entry when scoring a record fails, marked stale, so the admin console shows since when a value is
old. Each entry holds old and new score and grade, the crossing (``"Warm->Hot"``), the model
version and the reasons, so the console and the CRM timeline can show why a grade moved.

The routing ledger keeps each owner suggestion with the owner the lead had at that moment; a later
owner that is neither of those two was set by a person, and routing then leaves the lead alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.store import Store

READ_CHUNK = 500
"""Record ids per ledger read (the filter is an SQL ``IN`` list)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One material change of a record's score."""

    tenant_id: str
    kind: str
    crm_id: str
    scored_at: datetime
    old_score: int | None
    new_score: int
    old_grade: str | None
    new_grade: str
    model_version: str
    reasons: str
    reasons_detail: list[dict[str, Any]] = field(default_factory=list)
    next_step: str | None = None
    segment: str | None = None
    stale: bool = False

    @property
    def crossing(self) -> str | None:
        """``"Warm->Hot"`` when the grade changed, else None."""
        if self.old_grade is None or self.old_grade == self.new_grade:
            return None
        return f"{self.old_grade}->{self.new_grade}"

    def row(self) -> dict[str, Any]:
        """The store row."""
        return {
            "tenant_id": self.tenant_id,
            "kind": self.kind,
            "crm_id": self.crm_id,
            "scored_at": self.scored_at,
            "old_score": self.old_score,
            "new_score": self.new_score,
            "old_grade": self.old_grade,
            "new_grade": self.new_grade,
            "crossing": self.crossing,
            "model_version": self.model_version,
            "reasons": self.reasons,
            "reasons_json": json.dumps(self.reasons_detail, default=str),
            "next_step": self.next_step,
            "segment": self.segment,
            "stale": self.stale,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LedgerEntry:
        """Rebuild an entry from a store row."""
        return cls(
            tenant_id=row["tenant_id"],
            kind=row["kind"],
            crm_id=row["crm_id"],
            scored_at=row["scored_at"],
            old_score=row["old_score"],
            new_score=int(row["new_score"]),
            old_grade=row["old_grade"],
            new_grade=row["new_grade"],
            model_version=row["model_version"],
            reasons=row["reasons"] or "",
            reasons_detail=json.loads(row["reasons_json"] or "[]"),
            next_step=row["next_step"],
            segment=row["segment"],
            stale=bool(row["stale"]),
        )


@dataclass(frozen=True)
class Suggestion:
    """One owner suggestion for a lead."""

    tenant_id: str
    crm_id: str
    suggested_at: datetime
    suggested_owner: str
    """The rep's user id."""
    owner_at_suggestion: str | None
    auto_assigned: bool
    reason: str
    suggested_owner_name: str | None = None
    expected_conversion: float | None = None
    manual_owner: bool = False
    """True when the entry records a person's owner choice that Fieldwise keeps."""

    def row(self) -> dict[str, Any]:
        """The store row."""
        return {
            "tenant_id": self.tenant_id,
            "crm_id": self.crm_id,
            "suggested_at": self.suggested_at,
            "suggested_owner": self.suggested_owner,
            "suggested_owner_name": self.suggested_owner_name,
            "owner_at_suggestion": self.owner_at_suggestion,
            "auto_assigned": self.auto_assigned,
            "manual_owner": self.manual_owner,
            "expected_conversion": self.expected_conversion,
            "reason": self.reason,
        }

    @property
    def display(self) -> str:
        """``"user id - name"``, the suggested-owner field's format."""
        if self.suggested_owner_name:
            return f"{self.suggested_owner} - {self.suggested_owner_name}"
        return self.suggested_owner

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Suggestion:
        """Rebuild a suggestion from a store row."""
        return cls(
            tenant_id=row["tenant_id"],
            crm_id=row["crm_id"],
            suggested_at=row["suggested_at"],
            suggested_owner=row["suggested_owner"],
            suggested_owner_name=row["suggested_owner_name"],
            owner_at_suggestion=row["owner_at_suggestion"],
            auto_assigned=bool(row["auto_assigned"]),
            reason=row["reason"] or "",
            expected_conversion=row["expected_conversion"],
            manual_owner=bool(row["manual_owner"]),
        )


class ScoreLedger:
    """Reads and appends the score ledger and the routing ledger of any tenant."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -------------------------------------------------------------------------------- scores

    def record(self, entries: Sequence[LedgerEntry]) -> int:
        """Append entries (any tenants); returns how many were written."""
        written = 0
        for tenant_id in sorted({e.tenant_id for e in entries}):
            rows = [e.row() for e in entries if e.tenant_id == tenant_id]
            written += self._store.append_score_entries(tenant_id, rows)
        return written

    def history(
        self,
        tenant_id: str,
        kind: str,
        crm_ids: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[LedgerEntry]:
        """Entries oldest first, optionally for some records or since a time."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(crm_ids):
            rows += self._store.score_entries(tenant_id, kind, crm_ids=chunk, since=since)
        rows.sort(key=lambda r: r["scored_at"])
        return [LedgerEntry.from_row(r) for r in rows]

    def last(
        self, tenant_id: str, kind: str, crm_ids: Sequence[str] | None = None
    ) -> dict[str, LedgerEntry]:
        """The newest entry per record (stale ones included): what was last scored."""
        latest: dict[str, LedgerEntry] = {}
        for entry in self.history(tenant_id, kind, crm_ids):
            latest[entry.crm_id] = entry
        return latest

    def last_good(
        self, tenant_id: str, kind: str, crm_ids: Sequence[str] | None = None
    ) -> dict[str, LedgerEntry]:
        """The newest entry per record that a working scorer produced."""
        latest: dict[str, LedgerEntry] = {}
        for entry in self.history(tenant_id, kind, crm_ids):
            if not entry.stale:
                latest[entry.crm_id] = entry
        return latest

    def crossings(
        self,
        tenant_id: str,
        kind: str,
        *,
        into: str | None = None,
        since: datetime | None = None,
    ) -> list[LedgerEntry]:
        """Entries where the grade changed, optionally only those into one grade."""
        return [
            e
            for e in self.history(tenant_id, kind, since=since)
            if e.crossing is not None and (into is None or e.new_grade == into)
        ]

    # -------------------------------------------------------------------------------- routing

    def record_suggestions(self, suggestions: Sequence[Suggestion]) -> int:
        """Append owner suggestions (any tenants)."""
        written = 0
        for tenant_id in sorted({s.tenant_id for s in suggestions}):
            rows = [s.row() for s in suggestions if s.tenant_id == tenant_id]
            written += self._store.append_routing_entries(tenant_id, rows)
        return written

    def suggestions(
        self,
        tenant_id: str,
        crm_ids: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[Suggestion]:
        """Owner suggestions oldest first."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(crm_ids):
            rows += self._store.routing_entries(tenant_id, crm_ids=chunk, since=since)
        rows.sort(key=lambda r: r["suggested_at"])
        return [Suggestion.from_row(r) for r in rows]

    def last_suggestions(
        self, tenant_id: str, crm_ids: Sequence[str] | None = None
    ) -> dict[str, Suggestion]:
        """The newest suggestion per lead."""
        latest: dict[str, Suggestion] = {}
        for suggestion in self.suggestions(tenant_id, crm_ids):
            latest[suggestion.crm_id] = suggestion
        return latest


def _chunks(crm_ids: Sequence[str] | None) -> Iterable[Sequence[str] | None]:
    if crm_ids is None:
        yield None
        return
    unique = list(dict.fromkeys(crm_ids))
    for start in range(0, len(unique), READ_CHUNK):
        yield unique[start : start + READ_CHUNK]
