"""The model card's weekly grade counts: array arithmetic equal to replaying the ledger row by row."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from handlers.admin.data import weekly_grade_counts

LEDGER = pa.schema(
    [
        ("crm_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("new_grade", pa.string()),
    ]
)


def replayed(rows, labels, weeks):
    """The grades each record holds at each week's end, replaying entries one by one in time order."""
    rows = sorted((r for r in rows if r["scored_at"] is not None), key=lambda r: r["scored_at"])
    held: dict = {}
    counts: Counter = Counter()
    out: list[dict] = []
    for row in rows:
        monday = (row["scored_at"] - timedelta(days=row["scored_at"].weekday())).date().isoformat()
        if not out or out[-1]["week"] != monday:
            out.append({"week": monday, "counts": None})
        if row["crm_id"] in held:
            counts[held[row["crm_id"]]] -= 1
        held[row["crm_id"]] = row["new_grade"]
        counts[row["new_grade"]] += 1
        out[-1]["counts"] = {g: counts.get(g, 0) for g in labels}
    return out[-weeks:]


def test_a_record_regraded_in_a_later_week_moves_between_grades():
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)  # a Monday
    rows = [
        {"crm_id": "a", "scored_at": start, "new_grade": "Cold"},
        {"crm_id": "b", "scored_at": start + timedelta(days=1), "new_grade": "Warm"},
        {"crm_id": "a", "scored_at": start + timedelta(days=8), "new_grade": "Hot"},
    ]
    weeks = weekly_grade_counts(pa.Table.from_pylist(rows, LEDGER), ["Hot", "Warm", "Cold"])
    assert weeks == [
        {"week": "2026-11-02", "counts": {"Hot": 0, "Warm": 1, "Cold": 1}},
        {"week": "2026-11-09", "counts": {"Hot": 1, "Warm": 1, "Cold": 0}},
    ]


def test_an_empty_ledger_has_no_weeks():
    assert weekly_grade_counts(LEDGER.empty_table(), ["Hot"]) == []


@pytest.mark.parametrize("seed", range(60))
def test_counts_equal_a_row_by_row_replay(seed):
    rng = random.Random(seed)
    base = datetime(1969, 12, 1, tzinfo=UTC)  # weeks before 1970 too
    ids = [f"r{k}" for k in range(rng.randint(1, 40))] + [None]
    rows = [
        {
            "crm_id": rng.choice(ids),
            "scored_at": base + timedelta(hours=rng.randint(0, 24 * rng.choice([3, 30, 400]))),
            "new_grade": rng.choice(["Hot", "Warm", "Cold", "Other", None]),
        }
        for _ in range(rng.randint(0, 400))
    ]
    labels = rng.choice([["Hot", "Warm", "Cold"], ["Hot", "Missing"], ["A"]])
    weeks = rng.choice([1, 5, 26, 100])
    cut = rng.randint(0, len(rows))  # two chunks, as a scan over several fragments gives
    table = pa.concat_tables(
        [pa.Table.from_pylist(rows[:cut], LEDGER), pa.Table.from_pylist(rows[cut:], LEDGER)]
    )
    assert weekly_grade_counts(table, labels, weeks) == replayed(rows, labels, weeks)
