"""Dry run of new scoring and routing settings over the last N days, before an admin saves them.

Grades: the score ledger holds every material score change of the window in order. Each record's
scores are replayed through :func:`scoring.grades.hysteresis_grade` twice, once with the tenant's
settings and once with the proposed ones, starting from the plain grade of the score it had before
its first change in the window. The result per side is the final grade count, the expected
conversions in each grade (a score is ``round(100 * calibrated probability)``, so the sum of
``score / 100`` over a grade is the conversions its leads are expected to bring) and the number of
grade crossings, which is how often CRM workflows triggered on a grade change would have fired.

Routing: :func:`scoring.matching.replay` routes the window's leads again with each side's capacity
and fairness settings; its per-rep load, fairness and expected conversions are set side by side.

Nothing is saved here; :func:`scoring.settings.save_settings` does that after the admin has looked.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.store import SCORE_LEDGER_SCHEMA, Store
from scoring.matching import replay
from scoring.settings import ScoringSettings, parse_settings

log = logging.getLogger(__name__)

MAX_DAYS = 365
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROUTING_KEYS = (
    "capacity_default",
    "capacity_per_rep",
    "fairness_band",
    "unavailable_reps",
    "lead_open_days",
)
"""Settings that change routing; when none differs, the routing replay runs once."""


def proposed_settings(current: ScoringSettings, changes: Mapping[str, Any]) -> ScoringSettings:
    """The settings ``changes`` would give, validated exactly as saving would validate them.

    Raises:
        ScoringSettingsError: the merged settings are invalid (message names each key).
    """
    return parse_settings({**current.to_dict(), **dict(changes)})


@dataclass(frozen=True)
class LedgerScores:
    """A tenant's non-stale score-ledger entries of one kind as arrays, oldest first.

    ``record`` numbers the records (``crm_id``) from 0; ``old_score`` is -1 where the entry had
    none (the record's first score).
    """

    covers_from: datetime
    """Entries at or after this moment are all here."""
    scored_at: np.ndarray
    """Microseconds since the epoch (UTC), ascending."""
    record: np.ndarray
    old_score: np.ndarray
    new_score: np.ndarray
    derived: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)
    """Results computed from these arrays (per window, per grade settings), dropped with them."""


def ledger_scores(store: Store, tenant_id: str, kind: str, since: datetime) -> LedgerScores:
    """The compact score ledger from ``since`` on.

    The ledger of the last :data:`MAX_DAYS` is kept (``Store.memo``) until the ledger changes, so
    a dry run over any window in it reads no rows; an older ``since`` reads afresh.
    """
    covered: LedgerScores = store.memo(
        tenant_id, ("tuning-ledger", kind), ["score_ledger"],
        lambda: _read_ledger(store, tenant_id, kind, datetime.now(UTC) - timedelta(days=MAX_DAYS)),
    )  # fmt: skip
    if since >= covered.covers_from:
        return covered
    return _read_ledger(store, tenant_id, kind, since)


def _read_ledger(store: Store, tenant_id: str, kind: str, since: datetime) -> LedgerScores:
    table = store.read_arrow(
        tenant_id, "score_ledger", SCORE_LEDGER_SCHEMA, {"kind": kind, "stale": False},
        since=("scored_at", since), columns=["crm_id", "scored_at", "old_score", "new_score"],
    )  # fmt: skip
    stamps = table.column("scored_at").cast(pa.int64()).to_numpy()
    ids = pc.dictionary_encode(table.column("crm_id")).combine_chunks()
    record = ids.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    old = table.column("old_score").fill_null(-1).to_numpy().astype(np.int64)
    new = table.column("new_score").fill_null(0).to_numpy().astype(np.int64)
    order = np.argsort(stamps, kind="stable")
    return LedgerScores(since, stamps[order], record[order], old[order], new[order])


def _rank_of(scores: np.ndarray, bands: Sequence[tuple[str, float]]) -> np.ndarray:
    """:func:`scoring.grades.grade_for` as band positions (0 best) for many scores at once."""
    lows = np.sort(np.array([low for _, low in bands], dtype=float))
    # The position is the number of bands whose lowest score is above the score.
    above = len(lows) - np.searchsorted(lows, scores, side="right")
    return np.minimum(above, len(bands) - 1)


_DERIVED_ENTRIES = 16
"""Results kept per ledger (windows and grade settings tried); the oldest goes first."""
_derived_lock = threading.Lock()


def _kept(ledger: LedgerScores, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """``build()``, kept with ``ledger`` under ``key``.

    Every proposal replays the same window under the current settings again, and the admin tries
    the same few thresholds back and forth.
    """
    with _derived_lock:
        found = ledger.derived.get(key)
    if found is None:
        found = build()
        with _derived_lock:
            while len(ledger.derived) >= _DERIVED_ENTRIES:
                ledger.derived.pop(next(iter(ledger.derived)))
            ledger.derived[key] = found
    return found


@dataclass(frozen=True)
class _Sequences:
    """Each record's replayed scores in a window, one sequence after another."""

    scores: np.ndarray
    start: np.ndarray
    """Where each record's sequence starts in ``scores``."""
    length: np.ndarray
    last: np.ndarray
    """Each record's last score."""
    records: int
    entries: int


def _sequences(ledger: LedgerScores, low: int) -> _Sequences:
    """The sequences of the ledger's entries from position ``low`` on."""
    record = ledger.record[low:]
    old = ledger.old_score[low:]
    new = ledger.new_score[low:]
    entries = len(record)
    # Group each record's entries together, keeping their time order.
    order = np.argsort(record, kind="stable")
    record, old, new = record[order], old[order], new[order]
    first = np.ones(entries, dtype=bool)
    first[1:] = record[1:] != record[:-1]
    starts = np.flatnonzero(first)
    records = len(starts)
    # A record's replayed sequence: the score before its first change in the window (when the
    # ledger has it), then each new score.
    has_start = old[starts] >= 0
    length = np.diff(np.append(starts, entries)) + has_start
    sequence_start = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
    scores = np.empty(int(length.sum()), dtype=np.int64)
    scores[sequence_start[has_start]] = old[starts][has_start]
    owner = np.repeat(np.arange(records), np.diff(np.append(starts, entries)))
    position = np.arange(entries) - starts[owner] + has_start[owner]
    scores[sequence_start[owner] + position] = new
    last = scores[sequence_start + length - 1] if records else scores[:0]
    return _Sequences(scores, sequence_start, length, last, records, entries)


def _grade_summary(window: _Sequences, one: ScoringSettings) -> dict[str, Any]:
    """One settings object's replay of ``window`` (see :func:`replay_grades`)."""
    records, sequence_start, length = window.records, window.start, window.length
    plain = _rank_of(window.scores.astype(float), one.grades)
    sticky = _rank_of(window.scores + float(one.hysteresis_margin), one.grades)
    grade = plain[sequence_start] if records else plain[:0]
    crossings = 0
    alive = np.arange(records)
    for step in range(1, int(length.max()) if records else 0):
        alive = alive[length[alive] > step]
        at = sequence_start[alive] + step
        held = grade[alive]
        moved = np.where(plain[at] <= held, plain[at], np.maximum(held, sticky[at]))
        crossings += int(np.count_nonzero(moved != held))
        grade[alive] = moved
    counts = np.bincount(grade, minlength=len(one.grades))
    points = np.bincount(grade, weights=window.last, minlength=len(one.grades))
    return {
        "records": records,
        "entries": window.entries,
        "crossings": crossings,
        "grades": [
            {
                "grade": label,
                "min_score": low_score,
                "count": int(counts[i]),
                "expected_conversions": round(float(points[i]) / 100.0, 1),
            }
            for i, (label, low_score) in enumerate(one.grades)
        ],
    }


def replay_grades(
    store: Store,
    tenant_id: str,
    settings: list[ScoringSettings],
    *,
    days: int,
    kind: str = "lead",
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Replay the score ledger of the last ``days`` under each of ``settings``.

    Every record's scores are replayed one step at a time for all records at once: step ``j`` moves
    each record that has a ``j``-th score through :func:`scoring.grades.hysteresis_grade` (in band
    positions: rising takes the plain band, falling stops at the band ``score + margin`` reaches
    or the band held, whichever is worse).

    Returns:
        One summary per settings object: ``records``, ``entries``, ``crossings`` and ``grades``
        (label, lowest score, count, expected conversions), best grade first.
    """
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    ledger = ledger_scores(store, tenant_id, kind, since)
    low = int(np.searchsorted(ledger.scored_at, _micros(since), side="left"))
    window: _Sequences = _kept(ledger, ("window", low), lambda: _sequences(ledger, low))
    summaries = []
    for one in settings:
        key = ("grades", low, one.grades, one.hysteresis_margin)
        summary = _kept(ledger, key, functools.partial(_grade_summary, window, one))
        # A copy: the kept summary must not change with what a caller does to its answer.
        summaries.append(copy.deepcopy(summary))
    return summaries


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def dry_run(
    store: Store,
    tenant_id: str,
    current: ScoringSettings,
    changes: Mapping[str, Any],
    *,
    days: int = 30,
    kind: str = "lead",
    now: datetime | None = None,
    routing: bool = True,
) -> dict[str, Any]:
    """Before and after numbers for ``changes`` over the last ``days``.

    Args:
        store: the store.
        tenant_id: the tenant.
        current: the tenant's settings now.
        changes: the proposed settings (partial; merged over ``current``).
        days: the window, 1 to 365 days back from ``now``.
        kind: ``lead`` or ``opportunity`` ledger entries.
        now: the end of the window (default: now).
        routing: also replay lead routing (leads only).

    Returns:
        ``{"days", "kind", "settings": {"before", "after"}, "grades": {"before", "after"},
        "routing": {"before", "after", "reps"} | {"error": ...} | None, "refreshing"}``;
        ``refreshing`` is true when figures kept from before the latest changes were used while
        new ones are built (a second later the preview reflects every change).

    Raises:
        ScoringSettingsError: the proposed settings are invalid.
        ValueError: ``days`` is out of range.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    # The page answers from the kept window, ledger and routing while changes made since are
    # folded in behind it, and says so; a preview must not stall for seconds after every sync.
    with store.stale_ok() as served_stale:
        result = _dry_run(store, tenant_id, current, changes, days, kind, now, routing)
    if served_stale:
        _refresh_behind(store, tenant_id, current, days, kind, now, routing)
    result["refreshing"] = bool(served_stale)
    return result


_refreshing: set[tuple[int, str, int, str]] = set()
_refreshing_lock = threading.Lock()


def _refresh_behind(
    store: Store,
    tenant_id: str,
    current: ScoringSettings,
    days: int,
    kind: str,
    now: datetime | None,
    routing: bool,
) -> None:
    """Rebuild, on a thread of its own, what a dry run answered from out-of-date figures.

    One refresh per store, tenant, window and kind at a time; the next preview after it finishes
    reflects every change.
    """
    key = (id(store), tenant_id, days, kind)
    with _refreshing_lock:
        if key in _refreshing:
            return
        _refreshing.add(key)

    def refresh() -> None:
        try:
            _dry_run(store, tenant_id, current, {}, days, kind, now, routing)
        except Exception:  # the out-of-date figures stay; the next preview tries again
            log.exception("refreshing the dry run of %s failed", tenant_id)
        finally:
            with _refreshing_lock:
                _refreshing.discard(key)

    threading.Thread(target=refresh, name="fieldwise-dry-run-refresh", daemon=True).start()


def warm_dry_run(
    store: Store, tenant_id: str, settings: ScoringSettings, *, days: int = 30
) -> bool:
    """Build and keep the inputs a tenant's first lead preview would otherwise build while it waits.

    The first preview of a tenant reads its score ledger and replays its routing under the current
    settings: seconds at 100k leads. Callers run this behind the requests (the admin console does,
    on a thread) so that the preview an admin asks for finds them built.

    Args:
        store: the store.
        tenant_id: the tenant.
        settings: the tenant's current scoring settings.
        days: the window the preview page opens with.

    Returns:
        False when the tenant has no current lead model (nothing to replay), else True.
    """
    if not any(row["is_current"] for row in store.get_models(tenant_id, "lead")):
        return False
    _dry_run(store, tenant_id, settings, {}, days, "lead", None, True)
    return True


def _dry_run(
    store: Store,
    tenant_id: str,
    current: ScoringSettings,
    changes: Mapping[str, Any],
    days: int,
    kind: str,
    now: datetime | None,
    routing: bool,
) -> dict[str, Any]:
    proposed = proposed_settings(current, changes)
    before, after = replay_grades(
        store, tenant_id, [current, proposed], days=days, kind=kind, now=now
    )
    result: dict[str, Any] = {
        "days": days,
        "kind": kind,
        "settings": {"before": current.to_dict(), "after": proposed.to_dict()},
        "grades": {"before": before, "after": after},
        "routing": None,
    }
    if routing and kind == "lead":
        result["routing"] = _routing(store, tenant_id, current, proposed, days)
    return result


def _routing(
    store: Store, tenant_id: str, current: ScoringSettings, proposed: ScoringSettings, days: int
) -> dict[str, Any]:
    try:
        # The current settings' replay is the same for every proposal until leads or reps change.
        key = ("tuning-routing", days, *(repr(getattr(current, k)) for k in ROUTING_KEYS))
        before = store.memo(
            tenant_id, key, ["leads", "users"], lambda: replay(store, tenant_id, days, current)
        )
    except ValueError as exc:  # no leads or reps in the window: say so beside the grades
        return {"error": str(exc)}
    same = all(getattr(current, k) == getattr(proposed, k) for k in ROUTING_KEYS)
    after = before if same else replay(store, tenant_id, days, proposed)
    by_rep = {row["rep"]: row for row in after["reps"]}
    reps = [
        {
            "rep": row["rep"],
            "name": row["name"],
            "before_assigned": row["assigned"],
            "after_assigned": by_rep[row["rep"]]["assigned"],
            "before_peak_open": row["peak_open"],
            "after_peak_open": by_rep[row["rep"]]["peak_open"],
            "before_capacity": row["capacity"],
            "after_capacity": by_rep[row["rep"]]["capacity"],
            "before_expected": row["expected_conversions"],
            "after_expected": by_rep[row["rep"]]["expected_conversions"],
        }
        for row in before["reps"]
    ]
    return {
        "before": _routing_summary(before),
        "after": _routing_summary(after),
        "reps": reps,
    }


def _routing_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "leads": report["leads"],
        "unrouted": report["unrouted"],
        "expected_conversions": report["fieldwise"]["expected_conversions"],
        "expected_rate": report["fieldwise"]["expected_rate"],
        "within_band": report["fairness"]["within_band"],
        "max_share": report["fairness"]["max_share"],
        "min_share": report["fairness"]["min_share"],
        "capacity_within": report["capacity"]["within"],
        "over_capacity": report["capacity"]["over"],
    }
