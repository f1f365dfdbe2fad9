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

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from core.store import SCORE_LEDGER_SCHEMA, Store
from scoring.grades import grade_for, hysteresis_grade
from scoring.matching import replay
from scoring.settings import ScoringSettings, parse_settings

MAX_DAYS = 365
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

    Returns:
        One summary per settings object: ``records``, ``crossings`` and ``grades`` (label,
        count, expected conversions), best grade first.
    """
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    rows = store.read_rows(
        tenant_id,
        "score_ledger",
        SCORE_LEDGER_SCHEMA,
        {"kind": kind, "stale": False},
        since=("scored_at", since),
        columns=["crm_id", "scored_at", "old_score", "new_score"],
    )
    rows.sort(key=lambda r: (r["scored_at"], r["crm_id"]))
    history: dict[str, list[int]] = {}
    for row in rows:
        scores = history.get(row["crm_id"])
        if scores is None:
            scores = history[row["crm_id"]] = []
            if row["old_score"] is not None:
                scores.append(int(row["old_score"]))
        scores.append(int(row["new_score"]))
    summaries = []
    for one in settings:
        counts = {label: 0 for label in one.grade_labels}
        expected = {label: 0.0 for label in one.grade_labels}
        crossings = 0
        for scores in history.values():
            grade = grade_for(scores[0], one.grades)
            for score in scores[1:]:
                new = hysteresis_grade(score, grade, one.grades, one.hysteresis_margin)
                crossings += new != grade
                grade = new
            counts[grade] += 1
            expected[grade] += scores[-1] / 100.0
        summaries.append(
            {
                "records": len(history),
                "entries": len(rows),
                "crossings": crossings,
                "grades": [
                    {
                        "grade": label,
                        "min_score": low,
                        "count": counts[label],
                        "expected_conversions": round(expected[label], 1),
                    }
                    for label, low in one.grades
                ],
            }
        )
    return summaries


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
        "routing": {"before", "after", "reps"} | {"error": ...} | None}``.

    Raises:
        ScoringSettingsError: the proposed settings are invalid.
        ValueError: ``days`` is out of range.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
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
        before = replay(store, tenant_id, days, current)
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
