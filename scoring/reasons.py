"""Reasons a rep can read: the strongest SHAP drivers of a score, in words, with their evidence.

CatBoost's SHAP values say how much each feature moved one record's log-odds. The few largest
positive and negative ones become short sentences ("Clicked 5 emails", "No engagement in 62
days"). Where the feature came from a note or an activity (``FeatureFrame.evidence``), the sentence
cites it: "Competitor Vantora mentioned (call on 3 Oct, ref 00T...)". A next step is then derived
from the grade and those reasons. A rule-based score says so first, with the data it was missing.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

MIN_CONTRIBUTION = 0.02
"""Drivers smaller than this (in log-odds) are noise, not reasons."""
REASONS_MAX_CHARS = 1000
"""Longest reasons text written to a record (the HubSpot textarea shows about this much at once)."""
NEXT_STEP_MAX_CHARS = 255
"""The next-step field is a 255-character text field in both CRMs."""
TOP_POSITIVE, TOP_NEGATIVE = 3, 2
CONTRIBUTION_DIGITS = 4
"""Decimals of a contribution in the JSON detail."""


@dataclass(frozen=True)
class Evidence:
    """A note or activity that drove a feature."""

    id: str
    kind: str
    """``note``, ``call``, ``email``, ``meeting`` or ``task``."""
    at: datetime | None = None
    title: str | None = None
    mentions: tuple[str, ...] = ()
    """Competitor names the note or activity text names."""

    def citation(self) -> str:
        """``call on 3 Oct 2026, ref 00T...``."""
        when = f" on {_day(self.at)}" if self.at is not None else ""
        return f"{self.kind}{when}, ref {self.id}"


class Reason(NamedTuple):
    """One driver of a score.

    A named tuple rather than a dataclass: a batch of 5,000 leads makes about 25,000 of them, and
    a tuple is one allocation, built in C by ``map`` (see ``_explain_batch``), where a dataclass
    instance is two and needs a Python call each.
    """

    feature: str
    value: Any
    contribution: float
    """SHAP value in log-odds: positive raised the score."""
    text: str
    """The sentence without the citation."""
    evidence: tuple[Evidence, ...] = ()
    evidence_ids: tuple[str, ...] = ()
    """Every id the feature named, including any the batch had no details of."""

    @property
    def positive(self) -> bool:
        """Whether this driver raised the score."""
        return self.contribution > 0

    def sentence(self) -> str:
        """The sentence with its citation (the newest evidence; a count of the rest)."""
        if self.evidence:
            newest = self.evidence[0]
            more = len(self.evidence_ids) - 1
            extra = f"; {more} more" if more > 0 else ""
            return f"{self.text} ({newest.citation()}{extra})"
        if self.evidence_ids:
            more = len(self.evidence_ids) - 1
            extra = f" and {more} more" if more > 0 else ""
            return f"{self.text} (ref {self.evidence_ids[0]}{extra})"
        return self.text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready detail for the ledger and the widgets.

        Its sequences are tuples, which JSON writes as arrays all the same. A dict that holds
        only strings, numbers and tuples of them is left out of the cyclic garbage collector's
        scans, and most details (those citing nothing) are such dicts: a batch of 5,000 leads
        holds about 25,000 details, and scanning them as lists cost a fifth of its reasons' time.
        """
        return {
            "feature": self.feature,
            "value": _plain(self.value),
            "contribution": round(self.contribution, CONTRIBUTION_DIGITS),
            "direction": "+" if self.positive else "-",
            "text": self.sentence(),
            "evidence": tuple(
                {"id": e.id, "kind": e.kind, "at": e.at.isoformat() if e.at else None}
                for e in self.evidence
            ),
            "evidence_ids": self.evidence_ids,
        }


class Explanation(NamedTuple):
    """A record's reasons, ready for its fields (a named tuple, as :class:`Reason` is)."""

    positive: tuple[Reason, ...]
    negative: tuple[Reason, ...]
    preface: str | None
    """Said before the reasons (a rule-based score's disclosure)."""
    detail: list[dict[str, Any]]
    """The reasons as JSON-ready dicts (:meth:`Reason.as_dict`), for the ledger and widgets."""

    def text(self) -> str:
        """One line per reason, strongest first, ``+`` raising and ``-`` lowering the score."""
        lines = [self.preface] if self.preface else []
        lines += [f"+ {r.sentence()}" for r in self.positive]
        lines += [f"- {r.sentence()}" for r in self.negative]
        if not self.positive and not self.negative:
            lines.append("No single factor stands out: the score is close to your usual rate")
        return _clip("\n".join(lines), REASONS_MAX_CHARS)


# --------------------------------------------------------------------------------------------------
# Feature names to sentences


Phrase = Callable[[Any, bool], str]
"""(value, raised the score) -> sentence."""


def _count(singular: str, plural: str | None = None) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        n = _number(value)
        if n is None:
            return f"{plural or singular + 's'}: unknown"
        k = round(n)
        noun = singular if k == 1 else (plural or singular + "s")
        return f"{noun[0].upper()}{noun[1:]}: {k}" if k == 0 else f"{k} {noun}"

    return phrase


def _engaged(verb: str, noun: str) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        n = _number(value)
        if n is None or n <= 0:
            return f"Has not {verb} any {noun}s"
        k = round(n)
        sentence = f"{verb} {k} {noun}{'' if k == 1 else 's'}"
        return f"Only {sentence}" if not positive else sentence[0].upper() + sentence[1:]

    return phrase


def _days_since(what: str) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        n = _number(value)
        if n is None:
            return f"No {what} on record"
        k = round(n)
        if positive or k <= 14:
            return f"Last {what} {k} day{'' if k == 1 else 's'} ago"
        return f"No {what} in {k} days"

    return phrase


def _flag(yes: str, no: str) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        return yes if _truthy(value) else no

    return phrase


def _labelled(label: str) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        return f"{label}: {_show(value)}"

    return phrase


def _noted(yes: str, no: str) -> Phrase:
    """A note signal: the value counts the notes that show it."""

    def phrase(value: Any, positive: bool) -> str:
        n = _number(value)
        return yes if n is not None and n > 0 else no

    return phrase


def _tally(noun: str, plural: str, none: str) -> Phrase:
    def phrase(value: Any, positive: bool) -> str:
        n = _number(value)
        if n is None or n <= 0:
            return none
        k = round(n)
        return f"{k} {noun if k == 1 else plural}"

    return phrase


def _touches(value: Any, positive: bool) -> str:
    n = _number(value)
    if n is None or n <= 0:
        return "No marketing engagement"
    k = round(n)
    sentence = f"{k} marketing touch{'' if k == 1 else 'es'}"
    return sentence if positive else f"Only {sentence}"


def _rate(value: Any, positive: bool) -> str:
    n = _number(value)
    if n is None:
        return "No emails opened yet"
    return f"Clicked {round(100 * n)}% of the emails they opened"


def _sentiment(value: Any, positive: bool) -> str:
    n = _number(value)
    if n is None:
        return "No notes to read the mood from"
    if n > 0.1:
        return "Notes sound positive"
    if n < -0.1:
        return "Notes sound negative"
    return "Notes sound neutral"


def _competitor_set(value: Any, positive: bool) -> str:
    if not _present(value) or str(value).lower() == "none":
        return "No competitor on the deal"
    return "Competing against " + ", ".join(str(value).split(";"))


def _amount_fit(value: Any, positive: bool) -> str:
    if _number(value) is None:
        return "Amount not set"
    return (
        "Amount fits the company's size" if positive else "Amount is unusual for the company's size"
    )


def _seniority(value: Any, positive: bool) -> str:
    levels = {"c-level": "C-level", "vp": "VP", "individual": "individual contributor"}
    if not _present(value):
        return "Seniority not known"
    return f"Seniority: {levels.get(str(value), str(value))}"


def _interest(value: Any, positive: bool) -> str:
    return f"Interested in {value}" if _present(value) else "No product interest recorded"


COMPETITOR_FEATURES = frozenset({"competitor_mentions", "competitor_named", "competitive"})
"""Note features whose sentence names the competitor found in the cited notes."""

PHRASES: tuple[tuple[str, Phrase], ...] = (
    # Order matters: the first pattern that matches a feature name wins. The names are those
    # ``scoring.features`` builds; anything else reads as ``Name: value``.
    (r"^days_since_engaged$|recency", _days_since("engagement")),
    (r"^days_since_activity$", _days_since("activity")),
    (r"^days_open$", _count("day open", "days open")),
    (r"^click_rate$", _rate),
    (r"^engagement_total$", _touches),
    (r"email_clicks", _engaged("clicked", "email")),
    (r"email_opens", _engaged("opened", "email")),
    (r"page_visits", _engaged("visited", "web page")),
    (r"form_fills", _engaged("filled in", "form")),
    (
        r"email_personal_domain",
        _flag("Uses a personal email address", "Uses a company email address"),
    ),
    (r"owner_territory_match", _flag("Owner covers their region", "Owner is outside their region")),
    (
        r"owner_custom_overlap",
        _tally(
            "match with the owner's expertise",
            "matches with the owner's expertise",
            "Owner's expertise does not match their interests",
        ),
    ),
    (r"^signal_budget$", _noted("Budget approved in notes", "No budget confirmation in notes")),
    (r"^signal_champion$", _noted("A champion is pushing for us", "No champion identified")),
    (r"^signal_timeline$", _noted("A buying timeline is set", "No buying timeline in notes")),
    (r"^signal_legal$", _noted("Legal or contract review under way", "No legal review yet")),
    (r"^signal_pilot$", _noted("Pilot requested", "No pilot discussed")),
    (r"^objection_price$", _noted("Pushback on price", "No pushback on price")),
    (r"^objection_security$", _noted("Security review raised", "No security concerns")),
    (r"^objection_integration$", _noted("Integration effort raised", "No integration concerns")),
    (r"^objection_timing$", _noted("Timing concerns raised", "No timing concerns")),
    (r"^objection_incumbent$", _noted("Tied to an incumbent tool", "Not tied to an incumbent")),
    (r"^budget_missing$", _noted("Budget unclear or missing", "No budget concerns in notes")),
    (
        r"^buying_signals$",
        _tally("buying signal in notes", "buying signals in notes", "No buying signals in notes"),
    ),
    (
        r"^objections$",
        _tally("objection in notes", "objections in notes", "No objections in notes"),
    ),
    (
        r"^(competitor_mentions|competitor_named|competitive)$",
        _noted("Competitor mentioned", "No competitor mentioned"),
    ),
    (
        r"^n_competitors$",
        _tally("competitor on the deal", "competitors on the deal", "No competitor on the deal"),
    ),
    (r"^competitor_set$", _competitor_set),
    (r"^sentiment", _sentiment),
    (r"^n_calls$", _tally("call logged", "calls logged", "No calls logged")),
    (r"^n_emails$", _tally("email logged", "emails logged", "No emails logged")),
    (r"^n_meetings$", _tally("meeting held", "meetings held", "No meetings held")),
    (r"^n_tasks$", _tally("task logged", "tasks logged", "No tasks logged")),
    (
        r"^n_inbound$",
        _tally("inbound reply or call", "inbound replies or calls", "No inbound replies or calls"),
    ),
    (r"^n_activities$", _tally("activity logged", "activities logged", "No activities logged")),
    (r"^activities_per_30d$", _labelled("Activities a month")),
    (r"^n_notes$", _tally("note", "notes", "No notes")),
    (r"^title_level$", _seniority),
    (r"budget", _flag("Budget confirmed", "Budget not confirmed")),
    (r"product_?interest", _interest),
    (r"log_amount_per_employee", _amount_fit),
    (r"tech_?stack", _labelled("Current tools")),
    (r"employees_?band", _labelled("Company size")),
    (r"^title$", _labelled("Title")),
    (r"source", _labelled("Source")),
    (r"^industry$", _labelled("Industry")),
    (r"^employees$", _labelled("Employees")),
    (r"^annual_revenue$", _labelled("Annual revenue")),
    (r"^amount$", _labelled("Amount")),
    (r"^country$", _labelled("Country")),
    (r"^region$", _labelled("Region")),
)
_COMPILED = tuple((re.compile(pattern, re.IGNORECASE), phrase) for pattern, phrase in PHRASES)


def phrase_for(feature: str, value: Any, positive: bool) -> str:
    """The sentence for a feature's value; unknown features read as ``Name: value``."""
    return _phrase_of(feature)(value, positive)


def _phrase_of(feature: str) -> Phrase:
    """The phrase a feature reads with: the first pattern that matches its name."""
    for pattern, phrase in _COMPILED:
        if pattern.search(feature):
            return phrase
    return _labelled(_humanise(feature))


# --------------------------------------------------------------------------------------------------
# Explaining a batch


def explain_batch(
    contributions: pd.DataFrame,
    frame: pd.DataFrame,
    evidence: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    sources: pd.DataFrame | None = None,
    preface: str | None = None,
    competitors: Sequence[str] = (),
    top_positive: int = TOP_POSITIVE,
    top_negative: int = TOP_NEGATIVE,
) -> dict[str, Explanation]:
    """Reasons for every record of a batch, citing the notes and activities behind them.

    Args:
        contributions: SHAP values, index crm_id, one column per feature (other columns, such as
            an expected-value column, are ignored).
        frame: the feature values the model saw, index crm_id.
        evidence: crm_id -> feature -> ids of the notes and activities behind it.
        sources: those notes and activities, index crm_id (``FeatureFrame.sources``, read with
            the features); None, or an id missing from it, cites the id alone.
        preface: a first line for every record (rule-based disclosure).
        competitors: competitor names to look for in cited notes and activities, so a competitor
            reason can name the one that was mentioned.
        top_positive: at most this many positive reasons.
        top_negative: at most this many negative reasons.
    """
    with _collector_paused():
        return _explain_batch(
            contributions,
            frame,
            evidence,
            sources,
            preface,
            competitors,
            top_positive,
            top_negative,
        )


def _explain_batch(
    contributions: pd.DataFrame,
    frame: pd.DataFrame,
    evidence: Mapping[str, Mapping[str, Sequence[str]]],
    sources: pd.DataFrame | None,
    preface: str | None,
    competitors: Sequence[str],
    top_positive: int,
    top_negative: int,
) -> dict[str, Explanation]:
    # The strongest drivers of every row at once, then only those cells are read and phrased.
    columns = [c for c in contributions.columns if c in frame.columns]
    keys = [str(i) for i in contributions.index.tolist()]
    shap = contributions[columns].to_numpy(dtype=float)
    ups_at = _strongest(shap, top_positive, raising=True)
    downs_at = _strongest(shap, top_negative, raising=False)
    chosen = np.concatenate([ups_at, downs_at], axis=1)
    # The chosen cells in row order, each row's positive drivers first, strongest first.
    cells = np.flatnonzero(chosen.ravel() >= 0)
    cell_rows, cell_slots = np.divmod(cells, chosen.shape[1])
    cell_columns = chosen.ravel()[cells]
    cell_shap = shap[cell_rows, cell_columns]
    raising = cell_slots < ups_at.shape[1]
    bounds = np.searchsorted(cell_rows, np.arange(len(keys) + 1)).tolist()
    splits = (np.array(bounds[:-1]) + (ups_at >= 0).sum(axis=1)).tolist()
    names = np.array(columns, dtype=object)[cell_columns].tolist()
    # Drivers that notes or activities stand behind cite them, with the dates and kinds the
    # features were computed from.
    backed: list[tuple[int, Mapping[str, Sequence[str]]]] = []
    wanted: set[str] = set()
    citing = {name for cited in evidence.values() for name in cited}
    maybe = np.flatnonzero(
        np.isin(cell_columns, [at for at, c in enumerate(columns) if c in citing])
    )
    for cell in maybe.tolist():
        cited = evidence.get(keys[cell_rows[cell]])
        ids = cited.get(names[cell]) if cited else None
        if cited and ids:
            backed.append((cell, cited))
            wanted.update(ids)
    found = _cited(sources, wanted, competitors) if sources is not None and wanted else {}
    frame, positions = _row_positions(frame, keys)
    values, texts, plains = _phrase_cells(
        frame, columns, cell_columns, positions[cell_rows], raising
    )
    contributions_of = cell_shap.tolist()
    # Reasons are built by map in C; their JSON details by one pass of Python.
    reasons = list(
        map(
            tuple.__new__,
            repeat(Reason),
            zip(names, values, contributions_of, texts, repeat(()), repeat(())),
        )
    )
    details = [
        {
            "feature": name,
            "value": plain,
            "contribution": rounded,
            "direction": "+" if up else "-",
            "text": text,
            "evidence": (),
            "evidence_ids": (),
        }
        for name, plain, rounded, up, text in zip(
            names,
            plains,
            _rounded(cell_shap, CONTRIBUTION_DIGITS).tolist(),
            raising.tolist(),
            texts,
            strict=True,
        )
    ]
    for cell, cited in backed:
        reason = _reason(
            names[cell], contributions_of[cell], values[cell], texts[cell], cited, found
        )
        reasons[cell] = reason
        details[cell] = reason.as_dict()
    # Each record's explanation holds slices of the batch's reasons and details, cut in C.
    made = tuple(reasons)  # slices of a tuple are the tuples each explanation holds
    stops = bounds[1:]
    explanations = map(
        tuple.__new__,
        repeat(Explanation),
        zip(
            map(made.__getitem__, map(slice, bounds, splits)),
            map(made.__getitem__, map(slice, splits, stops)),
            repeat(preface),
            map(details.__getitem__, map(slice, bounds, stops)),
        ),
    )
    return dict(zip(keys, explanations, strict=True))


def _rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """``round(v, digits)`` of every value, vectorised and exactly equal to Python's.

    ``rint(v * 10**digits) / 10**digits`` is the double nearest the correctly rounded decimal,
    which is what ``round`` returns, unless ``v * 10**digits`` lies within float error of a tie
    (or is huge or not finite): those few go through ``round`` itself.
    """
    scale = 10.0**digits
    scaled = values * scale
    out = np.rint(scaled) / scale
    with np.errstate(invalid="ignore"):
        off_tie = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5)
        doubtful = ~(np.abs(scaled) < 1e9) | (off_tie < 1e-6)
    for at in zip(*np.nonzero(doubtful), strict=True):
        out[at] = round(float(values[at]), digits)
    return out


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a loop that builds many small, acyclic objects.

    A batch builds about 25 containers per record (reasons, detail dicts, their lists), none in a
    reference cycle. Left on, the collector runs every few hundred allocations and now and then
    walks every long-lived object of the process (models, frames, the store's caches): measured at
    about half of the loop's time. Reference counting still frees everything as usual. The young
    generation is collected once on the way out, so that pass is paid here, not by whatever
    allocates next.
    """
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(0)


def _strongest(shap: np.ndarray, limit: int, *, raising: bool) -> np.ndarray:
    """Per row, the columns of the ``limit`` strongest drivers of one direction, strongest first.

    Drivers are finite contributions of at least :data:`MIN_CONTRIBUTION` in the direction asked;
    equally strong ones keep their column order. Rows with fewer drivers are padded with -1.
    """
    rows, width = shap.shape
    limit = max(0, min(limit, width))
    if limit == 0 or rows == 0:
        return np.full((rows, limit), -1, dtype=np.int64)
    strength = shap if raising else -shap
    with np.errstate(invalid="ignore"):
        eligible = (strength >= MIN_CONTRIBUTION) & (strength < np.inf)  # NaN fails both
    score = np.where(eligible, strength, -np.inf)
    if limit > 8:
        best = np.argsort(-score, axis=1, kind="stable")[:, :limit]
        best[np.take_along_axis(score, best, axis=1) == -np.inf] = -1
        return best
    # A few passes of argmax: it returns a row's first largest column, which keeps column order
    # among equally strong drivers, and each pass removes the one it took.
    best = np.empty((rows, limit), dtype=np.int64)
    every_row = np.arange(rows)
    for rank in range(limit):
        at = score.argmax(axis=1)
        taken = score[every_row, at]
        best[:, rank] = np.where(taken == -np.inf, -1, at)
        score[every_row, at] = -np.inf
    return best


def _row_positions(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The frame (first of any repeated ids) and each key's row in it, -1 where it has none."""
    if not frame.index.is_unique:
        frame = frame[~frame.index.duplicated()]
    return frame, frame.index.get_indexer(pd.Index(keys, dtype=object))


def _phrase_cells(
    frame: pd.DataFrame,
    columns: Sequence[str],
    cell_columns: np.ndarray,
    cell_positions: np.ndarray,
    raising: np.ndarray,
) -> tuple[list[Any], list[str], list[Any]]:
    """Value, sentence and JSON-ready value of each chosen driver (a column at a frame row).

    A value is what ``frame.at`` gives (None where the row is -1, a key the frame lacks). Most
    drivers of a batch repeat a few (feature, value, direction) combinations, so each distinct one
    is phrased once: values are grouped with numpy per column.
    """
    values = np.empty(len(cell_columns), dtype=object)
    texts = np.empty(len(cell_columns), dtype=object)
    plains = np.empty(len(cell_columns), dtype=object)
    order = np.argsort(cell_columns, kind="stable")
    used, starts = np.unique(cell_columns[order], return_index=True)
    stops = np.append(starts[1:], len(order))
    for at, start, stop in zip(used.tolist(), starts.tolist(), stops.tolist(), strict=True):
        name = columns[at]
        phrase = _phrase_of(name)
        column = frame[name]
        nan_strings = isinstance(column.dtype, pd.StringDtype) and column.dtype.na_value is np.nan
        cells = order[start:stop]
        positions = cell_positions[cells]
        present = positions >= 0
        found, codes, samples, found_plains = _group_values(
            _column_array(column), positions[present], nan_strings=nan_strings
        )
        if not present.all():  # keys the frame lacks: value None, a group of their own
            found = _spread(found, present, None)
            codes = _spread(codes, present, len(samples))
            samples, found_plains = [*samples, None], [*found_plains, None]
        # Phrase each group once per direction it drives in.
        sided = codes * 2 + raising[cells]
        sentences = np.empty(2 * len(samples), dtype=object)
        wanted = np.zeros(len(sentences), dtype=bool)
        wanted[sided] = True
        for pair in np.flatnonzero(wanted).tolist():
            sentences[pair] = phrase(samples[pair // 2], bool(pair % 2))
        values[cells] = found
        texts[cells] = sentences[sided]
        plains[cells] = np.fromiter(found_plains, dtype=object, count=len(found_plains))[codes]
    return values.tolist(), texts.tolist(), plains.tolist()


def _spread(values: np.ndarray, mask: np.ndarray, fill: Any) -> np.ndarray:
    """``values`` placed where ``mask`` is true, ``fill`` elsewhere."""
    out = np.full(len(mask), fill, dtype=values.dtype)
    out[mask] = values
    return out


def _group_values(
    array: Any, positions: np.ndarray, *, nan_strings: bool = False
) -> tuple[np.ndarray, np.ndarray, list[Any], list[Any]]:
    """The values at ``positions``, a group per value, a sample and JSON-ready value per group.

    Values in a group phrase alike: same type and value, NaNs together, 0.0 apart from -0.0.
    ``nan_strings`` says the array holds only strings, and NaN for missing ones.
    """
    values = np.empty(len(positions), dtype=object)
    if isinstance(array, np.ndarray) and array.dtype.kind in "biuf":
        picked = array[positions]
        values[:] = list(picked)  # numpy scalars, as ``frame.at`` gives them
        # Equal bit patterns are equal values of one type; signed zeros differ in their bits.
        if picked.dtype == np.float64:
            found, uniques = pd.factorize(picked.view(np.uint64))
            codes, samples = np.asarray(found, dtype=np.int64), uniques.view(np.float64)
        else:
            keys = picked.view(f"u{picked.dtype.itemsize}") if picked.dtype.kind == "f" else picked
            _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
            samples = picked[first]
        # What _plain gives a number: the float, or its text where it is not finite.
        plains: list[Any] = samples.astype(float).tolist()
        for at in np.flatnonzero(~np.isfinite(samples.astype(float))).tolist():
            plains[at] = str(samples[at])
        return values, codes.reshape(-1), list(samples), plains
    if isinstance(array, np.ndarray) and array.dtype.kind == "O" and nan_strings:
        # Strings with NaN for missing: factorize groups equal strings, and NaNs under -1.
        picked = array[positions]
        values[:] = picked
        found, uniques = pd.factorize(picked, use_na_sentinel=True)
        codes = np.asarray(found, dtype=np.int64)
        listed = list(uniques)
        if (codes < 0).any():
            missing = codes < 0
            codes[missing] = len(listed)
            listed.append(picked[int(np.argmax(missing))])
        return values, codes, listed, [_plain(v) for v in listed]
    # Other objects and dates: group by hashable key where there is one.
    codes = np.empty(len(positions), dtype=np.int64)
    found_samples: list[Any] = []
    seen: dict[Any, int] = {}
    for cell, position in enumerate(positions.tolist()):
        value = array[position]
        values[cell] = value
        try:
            key = _value_key(value)
            group = seen.get(key)
        except TypeError:  # unhashable: a group of its own
            key, group = None, None
        if group is None:
            group = len(found_samples)
            found_samples.append(value)
            if key is not None:
                seen[key] = group
        codes[cell] = group
    return values, codes, found_samples, [_plain(v) for v in found_samples]


def _column_array(column: pd.Series) -> Any:
    """Something indexable by row position that yields the scalars ``frame.at`` would."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcO":
        return column.to_numpy()
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is np.nan:
        return column.to_numpy()
    # Dates, nullable integers and the like: the extension array's own scalars.
    return column.array


def _value_key(value: Any) -> tuple[Any, ...]:
    """A key under which values phrase alike: same type and value, NaNs together, signed zeros apart."""
    if isinstance(value, float):
        if value != value:
            return (type(value), "nan")
        if value == 0.0:
            return (type(value), "zero", math.copysign(1.0, value))
    return (type(value), value)


def _reason(
    name: str,
    contribution: float,
    value: Any,
    text: str,
    cited: Mapping[str, Sequence[str]],
    found: Mapping[str, Evidence],
) -> Reason:
    """The reason for one driver with evidence; ``text`` is its sentence before citations."""
    ids = tuple(dict.fromkeys(cited.get(name, ())))
    refs = sorted(
        (found[i] for i in ids if i in found),
        key=lambda e: e.at.timestamp() if e.at is not None else float("-inf"),
        reverse=True,
    )
    named = sorted({m for e in refs for m in e.mentions})
    if name in COMPETITOR_FEATURES and named:
        text = f"Competitor {_join(named)} mentioned"
    return Reason(
        feature=name,
        value=value,
        contribution=contribution,
        text=text,
        evidence=tuple(refs),
        evidence_ids=ids,
    )


def _cited(sources: pd.DataFrame, ids: set[str], competitors: Sequence[str]) -> dict[str, Evidence]:
    """The evidence of ``ids`` found in ``sources``, with the competitors each one names."""
    names = [c for c in competitors if c]
    pattern = (
        re.compile(r"\b(" + "|".join(re.escape(c) for c in names) + r")\b", re.IGNORECASE)
        if names
        else None
    )
    canonical = {c.lower(): c for c in names}
    rows = sources[sources.index.isin(list(ids))]
    found: dict[str, Evidence] = {}
    for crm_id, kind, at, title, body in zip(
        rows.index.tolist(),
        rows["kind"].tolist(),
        rows["at"].tolist(),
        rows["title"].tolist(),
        rows["body"].tolist(),
        strict=True,
    ):
        mentioned: tuple[str, ...] = ()
        if pattern is not None:
            texts = (t for t in (title, body) if isinstance(t, str))
            mentioned = tuple(
                sorted({canonical[m.lower()] for t in texts for m in pattern.findall(t)})
            )
        # A later row of the same id wins: a note over an activity, as the features read them.
        found[crm_id] = Evidence(
            crm_id,
            kind if isinstance(kind, str) and kind else "activity",
            None if at is None or at is pd.NaT else at.to_pydatetime(),
            title if isinstance(title, str) and title else None,
            mentioned,
        )
    return found


# --------------------------------------------------------------------------------------------------
# Rule-based disclosure and next steps


def rule_based_preface(report: Mapping[str, Any] | None) -> str:
    """The first line of a rule-based score's reasons, naming the data the model lacked.

    Reads the failed requirements of the training report's ``sufficiency`` section (each with
    ``needed``, ``have`` and a ``description``), else a top-level ``needed``/``have`` pair.
    """
    report = report or {}
    sufficiency = report.get("sufficiency") or {}
    requirements = [
        r for r in sufficiency.get("requirements", []) if isinstance(r, Mapping) and not r.get("ok")
    ]
    if not requirements and "needed" in report and "have" in report:
        requirements = [{"needed": report["needed"], "have": report["have"], "description": ""}]
    needs = []
    for req in requirements[:2]:
        what = re.sub(r"\s*\(.*?\)", "", str(req.get("description") or "records")).strip()
        needs.append(f"needs {int(req['needed']):,} {what}, has {int(req['have']):,}")
    if needs:
        return f"Rule-based score (not enough history for a model: {'; '.join(needs)})"
    return "Rule-based score (not enough history for a model yet)"


def next_step(
    grade: str,
    grades: Sequence[str],
    explanation: Explanation | None,
    kind: str = "lead",
) -> str:
    """The single most useful next action, from the grade and the reasons behind it.

    The best band gets an action for today, the worst a nurture or review step, the bands between a
    follow-up; each names the reasons that justify it.
    """
    position = grades.index(grade) if grade in grades else len(grades) - 1
    ups = [r.text for r in explanation.positive] if explanation else []
    downs = [r.text for r in explanation.negative] if explanation else []
    because = _join([_lower_first(t) for t in ups[:2]])
    against = _lower_first(downs[0]) if downs else ""
    if kind == "opportunity":
        if position == 0:
            step = f"Push to close: {because}" if because else "Push to close this week"
        elif position == len(grades) - 1:
            step = f"Review the deal's risks: {against}" if against else "Review the deal's risks"
        else:
            step = (
                f"Book the next meeting; address: {against}"
                if against
                else (f"Book the next meeting: {because}" if because else "Book the next meeting")
            )
        return _clip(step, NEXT_STEP_MAX_CHARS)
    if position == 0:
        step = f"Call today: {because}" if because else "Call today"
    elif position == len(grades) - 1:
        step = f"Nurture: {against}" if against else "Nurture with marketing content"
    elif against:
        step = f"Follow up this week; watch: {against}"
    else:
        step = f"Follow up this week: {because}" if because else "Follow up this week"
    return _clip(step, NEXT_STEP_MAX_CHARS)


# --------------------------------------------------------------------------------------------------
# Small helpers


def _humanise(name: str) -> str:
    cleaned = re.sub(r"__c$", "", name.removeprefix("custom:"))
    cleaned = re.sub(r"[_\.]+", " ", cleaned).strip()
    cleaned = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", cleaned)
    return cleaned[:1].upper() + cleaned[1:].lower() if cleaned else name


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y"}
    number = _number(value)
    return bool(number) if number is not None else False


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)  # any other float prints as a number
    return str(value).strip().lower() not in {"", "none", "nan", "missing", "unknown"}


def _show(value: Any) -> str:
    if not _present(value):
        return "not known"
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return f"{number:,.0f}" if abs(number) >= 100 or number == int(number) else f"{number:.2f}"
    return str(value)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    number = _number(value)
    if number is not None:
        return number
    return str(value)


def _day(at: datetime | date) -> str:
    return f"{at.day} {at.strftime('%b')} {at.year}"


def _join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
