"""Grades with hysteresis: noise near a band edge never flips a grade back and forth.

A record rises into a better band as soon as its score reaches that band's lower edge, but falls
out of a band only when its score drops below the edge minus the margin. Between the two, the
grade it already had stands. So a score wobbling around 70 crosses into Hot once and stays Hot
until it really falls (below 65 with the default margin of 5); a workflow triggered on "grade
changed to Hot" fires once per real crossing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Bands = Sequence[tuple[str, float]]
"""Grade label and lowest score, best first, the last starting at 0 (``ScoringSettings.grades``)."""


@dataclass(frozen=True)
class GradeDecision:
    """The grade a new score earns against the previous one, and whether the change matters."""

    grade: str
    previous_grade: str | None
    crossed: bool
    """The grade differs from the previous one (a first grade is not a crossing)."""
    material: bool
    """Worth a ledger entry and a fresh ``score_changed_at``: first score, crossing, or a big move."""

    @property
    def crossing(self) -> str | None:
        """``"Warm->Hot"`` when the grade changed, else None."""
        return f"{self.previous_grade}->{self.grade}" if self.crossed else None


def grade_for(score: float, bands: Bands) -> str:
    """The band ``score`` falls in, ignoring history."""
    for label, low in bands:
        if score >= low:
            return label
    return bands[-1][0]


def rank(grade: str, bands: Bands) -> int:
    """0 for the best band, 1 for the next, and so on.

    Raises:
        ValueError: ``grade`` is not one of the bands (for instance the bands were renamed).
    """
    for position, (label, _) in enumerate(bands):
        if label == grade:
            return position
    raise ValueError(f"unknown grade {grade!r}; expected one of {', '.join(b[0] for b in bands)}")


def hysteresis_grade(score: float, previous: str | None, bands: Bands, margin: float) -> str:
    """The grade for ``score`` given the grade the record held before.

    Rising: the band whose edge the score reached. Falling: only as far as ``score + margin``
    reaches, that is, out of a band only once the score is below its edge minus the margin.
    A previous grade that is no longer a band (the tenant renamed its bands) is ignored.
    """
    plain = grade_for(score, bands)
    if previous is None or previous not in {label for label, _ in bands}:
        return plain
    if rank(plain, bands) <= rank(previous, bands):
        return plain
    sticky = grade_for(score + margin, bands)
    return sticky if rank(sticky, bands) > rank(previous, bands) else previous


def decide(
    score: float,
    previous_grade: str | None,
    previous_score: float | None,
    bands: Bands,
    margin: float,
    material_points: float,
) -> GradeDecision:
    """Grade a new score against the record's last scored grade and score.

    Args:
        score: the new score, 0-100.
        previous_grade: the grade last recorded for this record, None if never scored.
        previous_score: the score last recorded, None if never scored.
        bands: the tenant's grade bands.
        margin: hysteresis margin in score points.
        material_points: a move at least this large is material without a crossing.
    """
    grade = hysteresis_grade(score, previous_grade, bands, margin)
    known = previous_grade is not None and previous_grade in {label for label, _ in bands}
    crossed = known and grade != previous_grade
    moved = previous_score is None or abs(score - previous_score) >= material_points
    return GradeDecision(
        grade=grade,
        previous_grade=previous_grade,
        crossed=crossed,
        material=crossed or moved or not known,
    )
