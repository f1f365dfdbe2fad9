"""Charts for the model card, drawn on the server as inline SVG: no script, no chart library.

Each function returns a ``Markup`` string ready to drop into a template. Colours are SVG
presentation attributes (not ``style``), so the console's Content-Security-Policy, which allows no
inline styles, still lets them through. Every chart has a ``<title>`` and ``role="img"`` so a
screen reader gets a name for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 360, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 36
PALETTE = ("#2563eb", "#f59e0b", "#64748b", "#10b981", "#ef4444", "#8b5cf6")
"""Series colours; grade charts take them in band order (best grade first)."""


def _x(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return LEFT + (value - low) / span * (WIDTH - LEFT - RIGHT)


def _y(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return HEIGHT - BOTTOM - (value - low) / span * (HEIGHT - TOP - BOTTOM)


def _frame(title: str, x_label: str, y_label: str, body: list[str], ticks: list[str]) -> Markup:
    plot_bottom = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{plot_bottom}" x2="{WIDTH - RIGHT}" y2="{plot_bottom}" '
        'stroke="#94a3b8"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{plot_bottom}" stroke="#94a3b8"/>',
        *ticks,
        *body,
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" '
        f'font-size="11" fill="#334155">{escape(x_label)}</text>',
        f'<text x="12" y="{(TOP + plot_bottom) / 2:.0f}" text-anchor="middle" font-size="11" '
        f'fill="#334155" transform="rotate(-90 12 {(TOP + plot_bottom) / 2:.0f})">'
        f"{escape(y_label)}</text>",
        "</svg>",
    ]
    return Markup("".join(parts))


def _unit_ticks(high: float = 1.0) -> list[str]:
    ticks = []
    for i in range(5):
        value = high * i / 4
        x, y = _x(value, 0, high), _y(value, 0, high)
        label = f"{value:.2f}".rstrip("0").rstrip(".") if high <= 1 else f"{value:.0f}"
        ticks.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="10" '
            f'fill="#475569">{label}</text>'
            f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10" '
            f'fill="#475569">{label}</text>'
        )
    return ticks


def _polyline(points: Sequence[tuple[float, float]], colour: str, x_high: float = 1.0) -> str:
    coords = " ".join(f"{_x(a, 0, x_high):.1f},{_y(b, 0, 1):.1f}" for a, b in points)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'


def _diagonal() -> str:
    return (
        f'<line x1="{_x(0, 0, 1):.1f}" y1="{_y(0, 0, 1):.1f}" x2="{_x(1, 0, 1):.1f}" '
        f'y2="{_y(1, 0, 1):.1f}" stroke="#cbd5e1" stroke-dasharray="4 3"/>'
    )


def roc_chart(points: Sequence[Sequence[float]], auc: float | None) -> Markup:
    """The ROC curve (false against true positive rate) over the chance diagonal."""
    title = "ROC curve" + (f", AUC {auc:.3f}" if auc is not None else "")
    body = [_diagonal(), _polyline([(float(a), float(b)) for a, b in points], PALETTE[0])]
    return _frame(title, "false positive rate", "true positive rate", body, _unit_ticks())


def calibration_chart(points: Sequence[Mapping[str, float]]) -> Markup:
    """Observed conversion against predicted probability per bin; dots sized by count."""
    most = max((p["n"] for p in points), default=1) or 1
    body = [_diagonal(), _polyline([(p["predicted"], p["observed"]) for p in points], PALETTE[0])]
    for p in points:
        radius = 2.5 + 4.5 * (p["n"] / most) ** 0.5
        body.append(
            f'<circle cx="{_x(p["predicted"], 0, 1):.1f}" cy="{_y(p["observed"], 0, 1):.1f}" '
            f'r="{radius:.1f}" fill="{PALETTE[0]}"><title>predicted {p["predicted"]:.2f}, '
            f"observed {p['observed']:.2f}, {int(p['n'])} leads</title></circle>"
        )
    return _frame("Calibration", "predicted probability", "observed rate", body, _unit_ticks())


def lift_chart(points: Sequence[Mapping[str, float]]) -> Markup:
    """Lift per decile as bars, with the cumulative share of conversions captured as a line."""
    high = max([2.0, *(float(p["lift"]) for p in points)])
    slot = (WIDTH - LEFT - RIGHT) / max(len(points), 1)
    body = [
        f'<line x1="{LEFT}" y1="{_y(1, 0, high):.1f}" x2="{WIDTH - RIGHT}" '
        f'y2="{_y(1, 0, high):.1f}" stroke="#cbd5e1" stroke-dasharray="4 3"/>'
    ]
    ticks = []
    for i, p in enumerate(points):
        x = LEFT + i * slot + slot * 0.15
        top = _y(float(p["lift"]), 0, high)
        body.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{HEIGHT - BOTTOM - top:.1f}" fill="{PALETTE[0]}"><title>decile '
            f"{int(p['decile'])}: lift {p['lift']:.2f}, {p['cumulative_capture']:.0%} of "
            f"conversions captured so far</title></rect>"
        )
        ticks.append(
            f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" '
            f'font-size="10" fill="#475569">{int(p["decile"])}</text>'
        )
    capture = " ".join(
        f"{LEFT + (i + 0.5) * slot:.1f},{_y(float(p['cumulative_capture']) * high, 0, high):.1f}"
        for i, p in enumerate(points)
    )
    body.append(
        f'<polyline points="{capture}" fill="none" stroke="{PALETTE[1]}" stroke-width="2"/>'
    )
    for i in range(5):
        value = high * i / 4
        ticks.append(
            f'<text x="{LEFT - 4}" y="{_y(value, 0, high) + 3:.1f}" text-anchor="end" '
            f'font-size="10" fill="#475569">{value:.1f}</text>'
        )
    return _frame("Lift by decile (bars) and conversions captured (line)",
                  "decile, best-scored first", "lift over base rate", body, ticks)  # fmt: skip


def stacked_weeks(weeks: Sequence[Mapping[str, object]], labels: Sequence[str]) -> Markup:
    """Grade shares per week as stacked bars, best grade at the bottom."""
    slot = (WIDTH - LEFT - RIGHT) / max(len(weeks), 1)
    body, ticks = [], []
    for i, week in enumerate(weeks):
        counts: Mapping[str, int] = week["counts"]  # type: ignore[assignment]
        total = sum(counts.values()) or 1
        base = 0.0
        x = LEFT + i * slot + slot * 0.1
        for colour, label in zip(PALETTE, labels, strict=False):
            share = counts.get(label, 0) / total
            if share <= 0:
                continue
            top, bottom = _y(base + share, 0, 1), _y(base, 0, 1)
            body.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{bottom - top:.1f}" fill="{colour}"><title>week of {escape(week["week"])}'
                f": {escape(label)} {counts.get(label, 0)} ({share:.0%})</title></rect>"
            )
            base += share
        if len(weeks) <= 12 or i % max(1, len(weeks) // 6) == 0:
            ticks.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" '
                f'font-size="9" fill="#475569">{escape(str(week["week"])[5:])}</text>'
            )
    for i in range(5):
        ticks.append(
            f'<text x="{LEFT - 4}" y="{_y(i / 4, 0, 1) + 3:.1f}" text-anchor="end" '
            f'font-size="10" fill="#475569">{i * 25}%</text>'
        )
    return _frame("Grades held at the end of each week", "week", "share of scored records",
                  body, ticks)  # fmt: skip


def legend(labels: Sequence[str]) -> Markup:
    """A small colour legend matching :func:`stacked_weeks`."""
    items = "".join(
        f'<span class="legend-item"><svg width="10" height="10" aria-hidden="true">'
        f'<rect width="10" height="10" fill="{colour}"/></svg> {escape(label)}</span>'
        for colour, label in zip(PALETTE, labels, strict=False)
    )
    return Markup(f'<div class="legend">{items}</div>')
