"""Lead-to-rep matching: predicted fit first, then capacity, availability and fairness.

**Fit.** :class:`FitModel` predicts how likely a lead converts if a given rep works it. A small
team-wide logistic model learns the conversion rate of each lead segment (company size band, the
same band ``scoring.features`` writes as the segment) and the lift of an owner who covers the lead's
region (territory) and sells the product the lead is interested in (expertise). Each rep's own
record per segment then scales that: observed conversions against what the team model expected for
the same leads, shrunk toward 1 (the team average) by empirical Bayes: how far reps really differ
is estimated from all cells at once (a gamma prior fitted by moments), and each cell's ratio is
pulled toward 1 in proportion to how little history it has. A rep with two lucky leads is judged as
an average rep, and when reps do not measurably differ at all, every lift is 1. Territory and
expertise never count against a rep: their effects are at least :data:`TERRITORY_FLOOR` and
:data:`EXPERTISE_FLOOR`.

**Routing.** :class:`Router` ranks the reps for each lead by that expected conversion and takes the
best one that is available, below capacity (open leads) and inside the fairness band: no rep may
pass ``1 + band`` times an equal share of routed leads, and a rep that falls under ``1 - band``
is served first. The reason names the rep's territory, expertise, segment record and workload.

**People win.** A suggestion is made once per lead. When the lead's owner later changes to someone
who is neither the owner it had when Fieldwise suggested nor the suggested rep, a person chose; that
choice is recorded and the lead is never routed again. The owner field itself is only written when
the tenant turned ``auto_assign`` on.

**Replay.** :func:`replay` learns the fit model from leads decided before a window, routes the
window's leads in arrival order with today's rules, and compares the expected conversion of those
assignments against the owners the leads actually had, with per-rep load, shares and capacity.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.store import Store
from scoring.features import size_band
from scoring.ledger import ScoreLedger, Suggestion
from scoring.settings import ScoringSettings

TERRITORY_FLOOR = 0.25
"""Least lift (log-odds) of an owner who covers the lead's region. The learned effect is used when
it is larger; a small history cannot talk routing into sending leads across the world."""
EXPERTISE_FLOOR = 0.15
"""Least lift (log-odds) of an owner who sells the product the lead is interested in."""
MAX_PRIOR_CONVERSIONS = 1e6
"""Cap on the shrinkage strength (no measurable rep differences: every lift is 1)."""
RIDGE = 1.0
"""L2 penalty of the team model (keeps rare segments from running off)."""
FAIRNESS_SAFETY = 0.8
"""Routing enforces this fraction of the configured band, so the measured shares end inside it."""
FAIRNESS_SLACK = 2
"""Leads a rep may be over or under an exact share before fairness steps in: with few leads
routed, shares are too coarse to mean anything."""
UNKNOWN_SEGMENT = "unknown size"
_EXPERTISE_KEY = re.compile(r"expertise|products?_?sold|specialt", re.IGNORECASE)
_CAPACITY_KEY = re.compile(r"capacity|max_?leads|lead_?cap", re.IGNORECASE)
_INTEREST_KEY = re.compile(r"product_?interest|interest(ed)?_?in|product$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
# Reps and leads as routing sees them


@dataclass(frozen=True)
class Rep:
    """A rep who can be given leads."""

    id: str
    name: str
    territory: str | None
    expertise: frozenset[str]
    capacity: int
    available: bool = True

    @property
    def display(self) -> str:
        """``"user id - name"`` (the suggested-owner field's format)."""
        return f"{self.id} - {self.name}" if self.name else self.id


@dataclass(frozen=True)
class LeadView:
    """What routing needs of a lead."""

    crm_id: str
    region: str | None
    segment: str
    product: str | None
    owner_id: str | None
    created_at: datetime | None
    converted: bool = False
    converted_at: datetime | None = None
    closed: bool = False

    @property
    def decided(self) -> bool:
        """Whether the lead's outcome is known."""
        return self.converted or self.closed


def reps_from_store(
    store: Store, tenant_id: str, settings: ScoringSettings, exclude: Iterable[str] = ()
) -> dict[str, Rep]:
    """Active users who can own leads: territory, expertise and capacity from the CRM's fields.

    Expertise and capacity are read from the user's custom fields whose names say so
    (``Expertise__c``, ``Capacity__c`` and the like); the tenant's settings override capacity.
    """
    skip = tuple(sorted(set(exclude)))

    def build() -> list[tuple[str, str, str | None, frozenset[str], int | None]]:
        found = []
        for row in store.query(tenant_id, "user"):
            if not row.get("is_active", True) or row["crm_id"] in skip:
                continue
            custom = row.get("custom") or {}
            expertise = _tokens(v for k, v in custom.items() if _EXPERTISE_KEY.search(str(k)))
            crm_capacity = next(
                (_int(v) for k, v in custom.items() if _CAPACITY_KEY.search(str(k))), None
            )
            name = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
            found.append(
                (row["crm_id"], name or (row.get("email") or ""), row.get("territory"),
                 expertise, crm_capacity)
            )  # fmt: skip
        return found

    # Reading the users is most of the cost and does not depend on the settings: it is kept
    # until the users table changes, and only capacity and availability are applied per call.
    users: list[tuple[str, str, str | None, frozenset[str], int | None]] = store.memo(
        tenant_id, ("rep-users", skip), ["users"], build
    )
    return {
        user_id: Rep(
            id=user_id,
            name=name,
            territory=territory,
            expertise=expertise,
            capacity=settings.capacity_for(user_id, crm_capacity),
            available=user_id not in settings.unavailable_reps,
        )
        for user_id, name, territory, expertise, crm_capacity in users
    }


def lead_view(record: Mapping[str, Any]) -> LeadView:
    """A canonical lead as routing sees it."""
    return LeadView(
        crm_id=record["crm_id"],
        region=record.get("region"),
        segment=lead_segment(record.get("employees")),
        product=product_interest(record.get("custom")),
        owner_id=record.get("owner_id"),
        created_at=record.get("created_at") or record.get("updated_at"),
        converted=bool(record.get("is_converted")),
        converted_at=record.get("converted_at"),
        closed=status_closed(record.get("status")),
    )


def lead_segment(employees: Any) -> str:
    """The routing segment of a head count: its size band, or :data:`UNKNOWN_SEGMENT`."""
    return size_band(employees) or UNKNOWN_SEGMENT


def product_interest(custom: Mapping[str, Any] | None) -> str | None:
    """The product a lead is interested in, from the first custom field whose name says so."""
    fields = custom or {}
    return next((str(v) for k, v in fields.items() if _INTEREST_KEY.search(str(k)) and v), None)


def status_closed(status: Any) -> bool:
    """Whether a lead status says the lead is closed (converted, unqualified or lost)."""
    text = str(status or "").lower()
    return text.startswith("closed") or "unqualified" in text or "not converted" in text


def territory_match(lead: LeadView, rep: Rep) -> bool:
    """Whether the rep covers the lead's region."""
    if not lead.region or not rep.territory:
        return False
    return _same(lead.region, rep.territory)


def expertise_match(lead: LeadView, rep: Rep) -> bool:
    """Whether the rep sells what the lead is interested in."""
    return bool(lead.product) and _norm(lead.product or "") in rep.expertise


# --------------------------------------------------------------------------------------------------
# The fit model


@dataclass
class FitModel:
    """Expected conversion of a lead if a given rep works it."""

    segment_logit: dict[str, float]
    territory_effect: float
    expertise_effect: float
    lift: dict[tuple[str, str], float]
    """(rep id, segment) -> shrunk observed/expected conversion ratio."""
    rep_segment_stats: dict[tuple[str, str], tuple[int, int]]
    """(rep id, segment) -> (decided leads, conversions) the lift was learned from."""
    team_rate: dict[str, float]
    trained_on: int
    default_logit: float = -2.0
    expected_rows: dict[tuple[str, ...], dict[tuple[str, str, str], np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Routers' cache: per rep order, each kind of lead's expected conversion with every rep."""
    learned_effects: tuple[float, float] = (0.0, 0.0)
    """Territory and expertise effects as the history alone estimated them."""
    prior_strength: float = MAX_PRIOR_CONVERSIONS
    """Pseudo-conversions each rep's segment record is shrunk with."""

    @classmethod
    def fit(cls, leads: Sequence[LeadView], reps: Mapping[str, Rep]) -> FitModel:
        """Learn from decided leads and the reps who owned them."""
        rows = [x for x in leads if x.decided and x.owner_id in reps]
        owners: dict[str, int] = {}
        segments: dict[str, int] = {}
        return cls.fit_arrays(
            owner=np.array(
                [owners.setdefault(x.owner_id or "", len(owners)) for x in rows], dtype=np.int64
            ),
            owner_ids=list(owners),
            segment=np.array(
                [segments.setdefault(x.segment, len(segments)) for x in rows], dtype=np.int64
            ),
            segment_names=list(segments),
            territory=np.array(
                [territory_match(x, reps[x.owner_id or ""]) for x in rows], dtype=bool
            ),
            expertise=np.array(
                [expertise_match(x, reps[x.owner_id or ""]) for x in rows], dtype=bool
            ),
            converted=np.array([x.converted for x in rows], dtype=bool),
        )

    @classmethod
    def fit_arrays(
        cls,
        *,
        owner: np.ndarray,
        owner_ids: Sequence[str],
        segment: np.ndarray,
        segment_names: Sequence[str],
        territory: np.ndarray,
        expertise: np.ndarray,
        converted: np.ndarray,
    ) -> FitModel:
        """:meth:`fit` on decided leads of known reps given as arrays, one entry per lead.

        Args:
            owner: each lead's owner, numbered in ``owner_ids``.
            owner_ids: rep ids, in any order.
            segment: each lead's segment, numbered in ``segment_names`` (distinct names).
            segment_names: segment names, in any order.
            territory: whether the owner covers the lead's region.
            expertise: whether the owner sells the product the lead is interested in.
            converted: whether the lead converted.
        """
        owner_ids, segment_names = list(owner_ids), list(segment_names)
        n = len(owner)
        present = {segment_names[c] for c in np.unique(segment).tolist()}
        segments = sorted(present | {UNKNOWN_SEGMENT})
        if not n:
            return cls({s: -2.0 for s in segments}, TERRITORY_FLOOR, EXPERTISE_FLOOR, {}, {}, {}, 0)
        position = {s: i for i, s in enumerate(segments)}
        k = len(segments)
        column = np.array([position.get(s, 0) for s in segment_names], dtype=np.int64)[segment]
        x = np.zeros((n, k + 2))
        x[np.arange(n), column] = 1.0
        x[:, k] = territory
        x[:, k + 1] = expertise
        y = np.where(converted, 1.0, 0.0)
        base = math.log(max(y.mean(), 1e-3) / max(1 - y.mean(), 1e-3))
        prior = np.r_[np.full(k, base), 0.0, 0.0]
        learned = _logistic(x, y, prior)
        effects = np.array([max(learned[k], TERRITORY_FLOOR), max(learned[k + 1], EXPERTISE_FLOOR)])
        if np.any(effects != learned[k:]):
            # Hold the floored effects fixed and refit the segment rates around them, so the
            # expected conversions stay calibrated to what the team actually converted.
            offset = x[:, k:] @ effects
            segment_weights = _logistic(x[:, :k], y, prior[:k], offset)
            weights = np.r_[segment_weights, effects]
        else:
            weights = learned
        expected = 1.0 / (1.0 + np.exp(-(x @ weights)))
        # Each (rep, segment) cell's sums, added in lead order (bincount adds one entry at a time),
        # and the cells in the order they first appear: the prior's strength sums over them.
        cell = owner.astype(np.int64) * len(segment_names) + segment
        cells, first, inverse = np.unique(cell, return_index=True, return_inverse=True)
        observed_sums = np.bincount(inverse, weights=y, minlength=len(cells))
        predicted_sums = np.bincount(inverse, weights=expected, minlength=len(cells))
        seen = np.bincount(inverse, minlength=len(cells))
        won = np.bincount(inverse[np.asarray(converted, dtype=bool)], minlength=len(cells))
        observed: dict[tuple[str, str], float] = {}
        predicted: dict[tuple[str, str], float] = {}
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for c in np.argsort(first, kind="stable").tolist():
            who, where = divmod(int(cells[c]), len(segment_names))
            key = (owner_ids[who], segment_names[where])
            observed[key] = observed_sums[c]
            predicted[key] = predicted_sums[c]
            counts[key] = (int(seen[c]), int(won[c]))
        strength = _prior_strength(observed, predicted)
        lift = {key: (observed[key] + strength) / (predicted[key] + strength) for key in observed}
        team = {}
        for i, name in enumerate(segments):
            outcomes = y[column == i]
            team[name] = float(np.mean(outcomes)) if len(outcomes) else float(y.mean())
        return cls(
            segment_logit={s: float(weights[position[s]]) for s in segments},
            territory_effect=float(weights[k]),
            expertise_effect=float(weights[k + 1]),
            learned_effects=(float(learned[k]), float(learned[k + 1])),
            prior_strength=strength,
            lift=lift,
            rep_segment_stats=counts,
            team_rate=team,
            trained_on=n,
            default_logit=base,
        )

    def expected(self, lead: LeadView, rep: Rep) -> float:
        """Probability the lead converts with this rep."""
        logit = self.segment_logit.get(lead.segment, self.default_logit)
        logit += self.territory_effect * territory_match(lead, rep)
        logit += self.expertise_effect * expertise_match(lead, rep)
        p = 1.0 / (1.0 + math.exp(-logit))
        return min(p * self.lift.get((rep.id, lead.segment), 1.0), 0.99)

    def expected_table(
        self,
        segments: Sequence[str],
        territory: np.ndarray,
        expertise: np.ndarray,
        rep_ids: Sequence[str],
    ) -> np.ndarray:
        """:meth:`expected` for many kinds of lead with many reps at once, the same numbers.

        Args:
            segments: each kind's segment.
            territory: (kinds x reps) whether the rep covers the kind's region.
            expertise: (kinds x reps) whether the rep sells the kind's product.
            rep_ids: the reps, in the order of the columns.

        Returns:
            (kinds x reps) expected conversions.
        """
        out = np.empty((len(segments), len(rep_ids)))
        lifts: dict[str, np.ndarray] = {}
        for i, segment in enumerate(segments):
            lift = lifts.get(segment)
            if lift is None:
                lift = lifts[segment] = np.array(
                    [self.lift.get((rep_id, segment), 1.0) for rep_id in rep_ids], dtype=float
                )
            # Only four probabilities per segment: the scalar arithmetic of :meth:`expected`.
            base = self.segment_logit.get(segment, self.default_logit)
            chance = np.empty(4)
            for covers in (False, True):
                for sells in (False, True):
                    logit = base
                    logit += self.territory_effect * covers
                    logit += self.expertise_effect * sells
                    chance[2 * covers + sells] = 1.0 / (1.0 + math.exp(-logit))
            which = 2 * territory[i].astype(np.int64) + expertise[i].astype(np.int64)
            out[i] = np.minimum(chance[which] * lift, 0.99)
        return out

    def rep_rate(self, rep: Rep, segment: str) -> float | None:
        """The rep's own conversion rate in a segment, shrunk (None without history there)."""
        stats = self.rep_segment_stats.get((rep.id, segment))
        if stats is None:
            return None
        return self.team_rate.get(segment, 0.0) * self.lift.get((rep.id, segment), 1.0)

    def describe(self) -> dict[str, Any]:
        """What the model learned, for the replay report."""
        return {
            "trained_on": self.trained_on,
            "territory_effect_logit": round(self.territory_effect, 3),
            "expertise_effect_logit": round(self.expertise_effect, 3),
            "learned_territory_effect_logit": round(self.learned_effects[0], 3),
            "learned_expertise_effect_logit": round(self.learned_effects[1], 3),
            "segment_rates": {s: round(r, 4) for s, r in sorted(self.team_rate.items())},
            "prior_conversions": round(self.prior_strength, 2),
            "rep_lift_range": [
                round(min(self.lift.values(), default=1.0), 3),
                round(max(self.lift.values(), default=1.0), 3),
            ],
        }


def _prior_strength(
    observed: Mapping[tuple[str, str], float], predicted: Mapping[tuple[str, str], float]
) -> float:
    """Empirical-Bayes strength of the gamma prior on rep lifts, by the method of moments.

    With ``O ~ Poisson(E * lift)`` and lift ~ Gamma(mean 1, variance v), ``E[(O - E)^2] = E + v E^2``;
    so ``v`` is estimated from the excess spread of all cells and the prior is worth ``1 / v``
    pseudo-conversions. No excess spread means no measurable rep differences.
    """
    excess = sum((observed[k] - predicted[k]) ** 2 - predicted[k] for k in observed)
    scale = sum(predicted[k] ** 2 for k in observed)
    if scale <= 0 or excess <= 0:
        return MAX_PRIOR_CONVERSIONS
    return float(min(max(scale / excess, 1.0), MAX_PRIOR_CONVERSIONS))


def _logistic(
    x: np.ndarray,
    y: np.ndarray,
    prior: np.ndarray,
    offset: np.ndarray | None = None,
    steps: int = 50,
) -> np.ndarray:
    """Ridge logistic regression by Newton's method, penalised toward ``prior``."""
    w = prior.astype(float).copy()
    shift = np.zeros(len(y)) if offset is None else offset
    penalty = RIDGE * np.eye(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + shift)))
        gradient = x.T @ (p - y) + penalty @ (w - prior)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


# --------------------------------------------------------------------------------------------------
# Routing


@dataclass(frozen=True)
class Choice:
    """The rep chosen for a lead, and why."""

    lead_id: str
    rep: Rep
    expected: float
    reason: str
    runner_up: float | None = None


@dataclass
class Router:
    """Routes leads one at a time, keeping per-rep load and shares up to date."""

    fit: FitModel
    reps: Mapping[str, Rep]
    settings: ScoringSettings
    open_load: dict[str, int] = field(default_factory=dict)
    """Open leads each rep holds now (kept up to date by :meth:`assign` and :meth:`release`)."""
    routed: dict[str, int] = field(default_factory=dict)
    """Leads routed to each rep in the fairness window."""

    def __post_init__(self) -> None:
        # The same counts as arrays over the reps, so one choice is a few vector operations
        # rather than a loop over every rep (a replay makes thousands of choices among 200 reps).
        self._order = list(self.reps.values())
        self._position = {rep.id: i for i, rep in enumerate(self._order)}
        self._capacity = np.array([r.capacity for r in self._order], dtype=np.int64)
        self._available = np.array([r.available for r in self._order], dtype=bool)
        self._id_rank = np.argsort(np.argsort(np.array([r.id for r in self._order], dtype=object)))
        self._load = np.array([self.open_load.get(r.id, 0) for r in self._order], dtype=np.int64)
        self._routed = np.array([self.routed.get(r.id, 0) for r in self._order], dtype=np.int64)
        self._pool_size = int(self._available.sum())
        self._pool_routed = int(self._routed[self._available].sum())
        # Reps that can take a lead now, and the fewest and most leads routed to one rep of the
        # pool: most choices need neither the fairness nor the "owed" test rep by rep.
        self._room = self._available & (self._load < self._capacity)
        self._room_count = int(self._room.sum())
        pool_routed = self._routed[self._available]
        self._routed_min = int(pool_routed.min()) if len(pool_routed) else 0
        self._routed_max = int(pool_routed.max()) if len(pool_routed) else 0
        self._expected = self.fit.expected_rows.setdefault(tuple(rep.id for rep in self._order), {})

    @property
    def pool(self) -> list[Rep]:
        """The reps that can take leads at all."""
        return [r for r in self.reps.values() if r.available]

    def expected_all(self, lead: LeadView) -> np.ndarray:
        """:meth:`FitModel.expected` of ``lead`` with every rep, in the order of ``reps``.

        It depends only on the lead's segment, region and product, so it is computed once per
        such combination.
        """
        key = (lead.segment, _norm(lead.region or ""), _norm(lead.product or ""))
        found = self._expected.get(key)
        if found is None:
            found = self._expected[key] = np.array(
                [self.fit.expected(lead, rep) for rep in self._order], dtype=float
            )
        return found

    def choose(self, lead: LeadView, *, explain: bool = True) -> Choice | None:
        """The best eligible rep for ``lead`` (None when every rep is away or full).

        Candidates are the available reps below capacity and inside the fairness band (those
        owed leads first); the best has the highest expected conversion, then the lightest load
        for its capacity, then the smallest id. With ``explain`` off the reason is left empty (a
        replay reports numbers, not sentences).
        """
        if not self._room_count:
            return None
        with_room = self._room
        band = self.settings.fairness_band * FAIRNESS_SAFETY
        total = self._pool_routed + 1
        equal = total / self._pool_size
        ceiling = max(math.floor((1 + band) * equal), math.ceil(equal) + FAIRNESS_SLACK)
        floor = min((1 - band) * equal, math.floor(equal) - FAIRNESS_SLACK)
        fair = with_room
        if self._routed_max + 1 > ceiling:
            fair = with_room & (self._routed + 1 <= ceiling)
            if not fair.any():
                fair = with_room
        is_owed = False
        candidates = fair
        if self._routed_min < floor:
            owed = fair & (self._routed < floor)
            is_owed = bool(owed.any())
            candidates = owed if is_owed else fair
        expected = self.expected_all(lead)
        ranked = np.where(candidates, expected, -np.inf)
        tied = np.flatnonzero(ranked == ranked.max())
        if len(tied) > 1:
            ratio = self._load[tied] / np.maximum(self._capacity[tied], 1)
            tied = tied[ratio == ratio.min()]
        best = int(tied[np.argmin(self._id_rank[tied])]) if len(tied) > 1 else int(tied[0])
        rep = self._order[best]
        if not explain:
            return Choice(lead.crm_id, rep, float(expected[best]), "")
        others = np.where(with_room, expected, -np.inf)
        others[best] = -np.inf
        runner_up = float(others.max()) if np.isfinite(others.max()) else None
        reason = self._reason(lead, rep, float(expected[best]), runner_up, is_owed)
        return Choice(lead.crm_id, rep, float(expected[best]), reason, runner_up)

    def expected_with(self, lead: LeadView, rep_id: str) -> float:
        """:meth:`FitModel.expected` of ``lead`` with one of the reps."""
        return float(self.expected_all(lead)[self._position[rep_id]])

    def _recount(self, position: int) -> None:
        room = bool(self._available[position] and self._load[position] < self._capacity[position])
        if room != self._room[position]:
            self._room[position] = room
            self._room_count += 1 if room else -1

    def assign(self, choice: Choice) -> None:
        """Count a routed lead against its rep."""
        rep_id = choice.rep.id
        self.routed[rep_id] = self.routed.get(rep_id, 0) + 1
        self.open_load[rep_id] = self.open_load.get(rep_id, 0) + 1
        position = self._position.get(rep_id)
        if position is not None:
            self._routed[position] += 1
            self._load[position] += 1
            self._recount(position)
            if self._available[position]:
                self._pool_routed += 1
                count = int(self._routed[position])
                self._routed_max = max(self._routed_max, count)
                if count - 1 == self._routed_min:
                    self._routed_min = int(self._routed[self._available].min())

    def release(self, rep_id: str) -> None:
        """A lead of this rep closed (replay): one open lead fewer."""
        self.open_load[rep_id] = max(0, self.open_load.get(rep_id, 0) - 1)
        position = self._position.get(rep_id)
        if position is not None:
            self._load[position] = self.open_load[rep_id]
            self._recount(position)

    def _reason(
        self, lead: LeadView, rep: Rep, expected: float, runner_up: float | None, owed: bool
    ) -> str:
        parts = []
        if territory_match(lead, rep):
            parts.append(f"covers {rep.territory}")
        elif lead.region:
            parts.append(f"does not cover {lead.region}")
        if expertise_match(lead, rep):
            parts.append(f"sells {lead.product}")
        rate = self.fit.rep_rate(rep, lead.segment)
        team = self.fit.team_rate.get(lead.segment)
        if rate is not None and team is not None:
            parts.append(f"converts {lead.segment} leads at {rate:.0%} (team {team:.0%})")
        load = self.open_load.get(rep.id, 0)
        parts.append(f"{load} of {rep.capacity} open leads")
        sentence = f"{rep.name or rep.id}: " + ", ".join(parts)
        sentence += f". Expected conversion {expected:.0%}"
        if runner_up is not None:
            sentence += f" vs {runner_up:.0%} for the next best rep"
        if owed:
            sentence += ". Behind on fair share of new leads"
        return sentence + "."


# --------------------------------------------------------------------------------------------------
# Real-time routing of new and unassigned leads


@dataclass(frozen=True)
class MatchOutcome:
    """The routing result of one lead."""

    crm_id: str
    suggested_owner: str
    """``"user id - name"``."""
    match_reason: str
    assign_owner: str | None = None
    """The owner to write (auto-assign on and allowed); None otherwise."""
    manual: bool = False


def match_leads(
    store: Store,
    tenant_id: str,
    crm_ids: Sequence[str],
    settings: ScoringSettings,
    *,
    integration_user_id: str | None = None,
    now: datetime | None = None,
    record: bool = True,
) -> dict[str, MatchOutcome]:
    """Suggest owners for the new or unassigned leads among ``crm_ids``.

    A lead is routed once: when it has no owner (or one that is not an active rep, such as a queue
    or the integration user), or when it is younger than ``new_lead_hours`` and was never
    routed. A lead whose owner a person changed after Fieldwise's suggestion keeps that owner: the
    choice is recorded and the lead is left alone from then on.

    Returns:
        crm_id -> outcome, for each lead routed now or whose manual owner was just detected.
    """
    now = now or datetime.now(UTC)
    ledger = ScoreLedger(store)
    exclude = [integration_user_id] if integration_user_id else []
    reps = reps_from_store(store, tenant_id, settings, exclude)
    leads = [lead_view(r) for r in store.get_many(tenant_id, "lead", list(crm_ids))]
    previous = ledger.last_suggestions(tenant_id, [x.crm_id for x in leads])
    outcomes: dict[str, MatchOutcome] = {}
    kept: list[Suggestion] = []
    to_route: list[LeadView] = []
    for lead in leads:
        if lead.decided:
            continue
        last = previous.get(lead.crm_id)
        if last is not None:
            if last.manual_owner:
                continue
            if lead.owner_id and lead.owner_id not in {
                last.owner_at_suggestion,
                last.suggested_owner,
            }:
                owner = reps.get(lead.owner_id)
                name = owner.name if owner else None
                reason = (
                    f"Kept the owner a person chose ({name or lead.owner_id}); "
                    f"Fieldwise had suggested {last.suggested_owner_name or last.suggested_owner}"
                )
                kept.append(
                    Suggestion(tenant_id, lead.crm_id, now, lead.owner_id, last.owner_at_suggestion,
                               False, reason, name, None, manual_owner=True)
                )  # fmt: skip
                display = f"{lead.owner_id} - {name}" if name else lead.owner_id
                outcomes[lead.crm_id] = MatchOutcome(lead.crm_id, display, reason, None, True)
            continue
        unassigned = not lead.owner_id or lead.owner_id not in reps
        young = lead.created_at is not None and now - lead.created_at <= timedelta(
            hours=settings.new_lead_hours
        )
        if unassigned or young:
            to_route.append(lead)
    suggestions: list[Suggestion] = []
    if to_route and reps:
        router = _router_for(store, tenant_id, reps, settings, now, ledger)
        for lead in sorted(to_route, key=lambda x: (x.created_at or now, x.crm_id)):
            choice = router.choose(lead)
            if choice is None:
                continue
            router.assign(choice)
            assign = (
                choice.rep.id if settings.auto_assign and choice.rep.id != lead.owner_id else None
            )
            suggestions.append(
                Suggestion(tenant_id, lead.crm_id, now, choice.rep.id, lead.owner_id,
                           assign is not None, choice.reason, choice.rep.name, choice.expected)
            )  # fmt: skip
            outcomes[lead.crm_id] = MatchOutcome(
                lead.crm_id, choice.rep.display, choice.reason, assign
            )
    if record and (kept or suggestions):
        ledger.record_suggestions(kept + suggestions)
    return outcomes


def _router_for(
    store: Store,
    tenant_id: str,
    reps: Mapping[str, Rep],
    settings: ScoringSettings,
    now: datetime,
    ledger: ScoreLedger,
) -> Router:
    all_leads = [lead_view(r) for r in store.query(tenant_id, "lead")]
    fit = FitModel.fit(all_leads, reps)
    load: dict[str, int] = {}
    for lead in all_leads:
        if not lead.decided and lead.owner_id in reps:
            load[lead.owner_id or ""] = load.get(lead.owner_id or "", 0) + 1
    since = now - timedelta(days=settings.fairness_window_days)
    routed: dict[str, int] = {}
    for suggestion in ledger.last_suggestions(tenant_id).values():
        if suggestion.suggested_at >= since and not suggestion.manual_owner:
            routed[suggestion.suggested_owner] = routed.get(suggestion.suggested_owner, 0) + 1
    return Router(fit, reps, settings, load, routed)


# --------------------------------------------------------------------------------------------------
# Replay


def replay(
    store: Store,
    tenant_id: str,
    days: int,
    settings: ScoringSettings | None = None,
    *,
    now: datetime | None = None,
    integration_user_id: str | None = None,
    include_assignments: bool = False,
) -> dict[str, Any]:
    """Route the last ``days`` of leads again with today's rules and compare with what happened.

    The fit model learns only from leads decided before the window, so the window's outcomes do not
    leak into the choices. Leads are routed in arrival order; each counts against its rep's capacity
    for ``lead_open_days`` (or until it converted), and leads still open from before the window
    count against the owners they had.

    Everything that does not depend on capacity, availability and fairness (the window, the fit
    model, each lead's expected conversion with every rep, the historical owners' side) is kept
    (``Store.memo``) until leads or users change; routing itself is one pass over those arrays.

    Returns:
        A JSON-ready report: the window, expected conversions of Fieldwise's and the historical
        assignment (and the historical actual conversions where known), per-rep load and share,
        the fairness and capacity checks, and what the fit model learned; with
        ``include_assignments``, also ``assignments``: lead id -> the rep Fieldwise chose.
    """
    settings = settings or ScoringSettings()
    exclude = [integration_user_id] if integration_user_id else []
    reps = reps_from_store(store, tenant_id, settings, exclude)
    leads = replay_leads(store, tenant_id)
    if not len(leads.created) or not reps:
        raise ValueError(f"tenant {tenant_id} has no leads or no reps to replay")
    order = sorted(reps.values(), key=lambda r: r.id)
    window = _replay_window(store, tenant_id, leads, order, days, now, settings.lead_open_days)
    routed = _route_window(window, order, settings)

    pool = [r for r in reps.values() if r.available]
    routed_total = sum(routed.assigned[i] for i, r in enumerate(order) if r.available)
    hist_total = window.historical_total
    equal = 1.0 / len(pool)
    rows: list[dict[str, Any]] = []
    for i, rep in enumerate(order):
        share = routed.assigned[i] / routed_total if routed_total else 0.0
        hist_share = window.historical_assigned[i] / hist_total if hist_total else 0.0
        rows.append(
            {
                "rep": rep.id,
                "name": rep.name,
                "territory": rep.territory,
                "available": rep.available,
                "capacity": rep.capacity,
                "assigned": routed.assigned[i],
                "share": round(share, 4),
                "expected_conversions": round(float(routed.expected[i]), 2),
                "peak_open": routed.peak[i],
                "within_capacity": routed.peak[i] <= rep.capacity,
                "historical_assigned": window.historical_assigned[i],
                "historical_share": round(hist_share, 4),
                "historical_peak_open": window.historical_peak[i],
            }
        )
    shares = [r["share"] for r in rows if r["available"]]
    hist_shares = [r["historical_share"] for r in rows if r["available"]]
    band = settings.fairness_band
    n = len(window.crm_ids)
    unrouted = routed.unrouted
    fieldwise_expected = routed.total_expected
    historical_expected = window.historical_expected
    report: dict[str, Any] = {
        "tenant_id": tenant_id,
        "days": days,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "leads": n,
        "unrouted": unrouted,
        "fieldwise": {
            "expected_conversions": round(fieldwise_expected, 2),
            "expected_rate": round(fieldwise_expected / max(n - unrouted, 1), 4),
            "territory_match": round(routed.territory_matches / max(n - unrouted, 1), 4),
            "expertise_match": round(routed.expertise_matches / max(n - unrouted, 1), 4),
        },
        "historical": {
            "expected_conversions": round(historical_expected, 2),
            "expected_rate": round(historical_expected / max(hist_total, 1), 4),
            "territory_match": round(window.historical_territory / max(hist_total, 1), 4),
            "expertise_match": round(window.historical_expertise / max(hist_total, 1), 4),
            "decided": window.decided,
            "actual_conversions": window.actual_conversions,
        },
        "lift": round(fieldwise_expected / historical_expected, 4) if historical_expected else None,
        "fairness": {
            "band": band,
            "equal_share": round(equal, 4),
            "max_share": max(shares),
            "min_share": min(shares),
            "max_min_ratio": round(max(shares) / min(shares), 3) if min(shares) else None,
            "within_band": all(abs(s - equal) <= band * equal + 1e-9 for s in shares),
            "historical_max_share": max(hist_shares),
            "historical_min_share": min(hist_shares),
            "historical_within_band": all(
                abs(s - equal) <= band * equal + 1e-9 for s in hist_shares
            ),
        },
        "capacity": {
            "within": all(r["within_capacity"] for r in rows),
            "over": [r["rep"] for r in rows if not r["within_capacity"]],
            "historical_over": [
                r["rep"] for r in rows if r["historical_peak_open"] > r["capacity"]
            ],
        },
        "reps": rows,
        "fit": window.fit.describe(),
    }
    if include_assignments:
        report["assignments"] = {
            window.crm_ids[j]: order[i].id for j, i in enumerate(routed.chosen) if i >= 0
        }
    return report


REPLAY_LEAD_COLUMNS = (
    "crm_id", "region", "employees", "custom", "owner_id", "created_at", "updated_at",
    "is_converted", "converted_at", "status",
)  # fmt: skip
"""The lead columns :func:`lead_view` reads."""


@dataclass(frozen=True)
class ReplayLeads:
    """A tenant's leads with a creation time as routing sees them, as arrays in arrival order.

    Arrival order is creation time, then id. Times are microseconds since the epoch. A lead's
    ``kind`` numbers its combination of segment, region and product: all that
    :meth:`FitModel.expected` and the territory and expertise matches read of a lead.
    """

    crm_id: pa.Array
    created: np.ndarray
    last_created: datetime
    converted: np.ndarray
    converted_at: np.ndarray
    """Meaningful where ``has_converted_at``."""
    has_converted_at: np.ndarray
    decided: np.ndarray
    owner: np.ndarray
    """Index into ``owner_ids``; -1 for no owner."""
    owner_ids: list[str]
    segment: np.ndarray
    """Index into ``segment_names``."""
    segment_names: list[str]
    kind: np.ndarray
    """Index into ``kinds``."""
    kinds: list[LeadView]
    """One lead of each kind (only its segment, region and product are meaningful)."""
    kind_region: np.ndarray
    """Each kind's region, numbered in ``regions``."""
    regions: list[LeadView]
    """One lead per distinct region as matching reads it."""
    kind_product: np.ndarray
    """Each kind's product, numbered in ``products``."""
    products: list[LeadView]
    """One lead per distinct product as matching reads it."""


def replay_leads(store: Store, tenant_id: str) -> ReplayLeads:
    """A tenant's leads with a creation time as routing sees them (:func:`lead_view`), as arrays.

    Read as columns and computed once per distinct value (segments, products, statuses), so a
    hundred thousand leads take a fraction of a second. Kept (``Store.memo``) until the leads
    table changes: a dry run replays the same leads under several settings.
    """

    def build() -> ReplayLeads:
        table = store.to_arrow(tenant_id, "lead", columns=list(REPLAY_LEAD_COLUMNS))
        arrival = pc.coalesce(table.column("created_at"), table.column("updated_at"))
        table = table.append_column("arrival", arrival).filter(pc.is_valid(arrival))
        table = table.take(
            pc.sort_indices(table, [("arrival", "ascending"), ("crm_id", "ascending")])
        )
        created = _micros_of(table.column("arrival"))
        converted = table.column("is_converted").fill_null(False).to_numpy(zero_copy_only=False)
        converted_at = _micros_of(table.column("converted_at"))
        has_converted_at = pc.is_valid(table.column("converted_at")).to_numpy()
        status_code, statuses = _distinct(table.column("status"))
        closed = np.array([status_closed(v) for v in statuses] + [status_closed(None)])
        decided = converted.astype(bool) | closed[status_code]
        owner, owner_ids = _distinct(table.column("owner_id"))
        employee_code, head_counts = _distinct(table.column("employees"))
        segment_of = [lead_segment(v) for v in head_counts] + [lead_segment(None)]
        segment_names = list(dict.fromkeys(segment_of))
        segment = np.array([segment_names.index(s) for s in segment_of])[employee_code]
        # Regions and products as matching compares them: whether set, and normalised.
        region_code, region_values = _distinct(table.column("region"))
        region_key, regions = _matching_keys([*region_values, None])
        custom_code, custom_values = _distinct(table.column("custom"))
        interests = [
            product_interest(json.loads(v) if isinstance(v, str) else v) for v in custom_values
        ]
        product_key, products = _matching_keys([*interests, None])
        combined = (segment * len(regions) + region_key[region_code]) * len(products)
        combined += product_key[custom_code]
        distinct, kind = np.unique(combined, return_inverse=True)
        kind_segment, rest = np.divmod(distinct, len(regions) * len(products))
        kind_region, kind_product = np.divmod(rest, len(products))
        kinds = [
            LeadView("", regions[r].region, segment_names[s], products[p].product, None, None)
            for s, r, p in zip(
                kind_segment.tolist(), kind_region.tolist(), kind_product.tolist(), strict=True
            )
        ]
        return ReplayLeads(
            crm_id=table.column("crm_id").combine_chunks(),
            created=created,
            last_created=table.column("arrival")[-1].as_py() if len(created) else _EPOCH,
            converted=converted.astype(bool),
            converted_at=converted_at,
            has_converted_at=has_converted_at,
            decided=decided,
            owner=owner,
            owner_ids=owner_ids,
            segment=segment,
            segment_names=segment_names,
            kind=kind.reshape(-1),
            kinds=kinds,
            kind_region=kind_region,
            regions=regions,
            kind_product=kind_product,
            products=products,
        )

    leads: ReplayLeads = store.memo(tenant_id, ("replay-leads",), ["leads"], build)
    return leads


def _micros_of(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as microseconds since the epoch (-1 for none: read validity separately)."""
    as_int = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(-1)
    return as_int.to_numpy(zero_copy_only=False).astype(np.int64)


def _distinct(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """Each entry's index in the list of distinct values, and that list; null is index -1."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _matching_keys(values: Sequence[str | None]) -> tuple[np.ndarray, list[LeadView]]:
    """Number values as territory and expertise matching tell them apart (set, normalised).

    Returns each value's number and one lead per number carrying the value as region and product.
    """
    keys: dict[tuple[bool, str], int] = {}
    found: list[LeadView] = []
    numbers = []
    for value in values:
        key = (bool(value), _norm(value) if value else "")
        if key not in keys:
            keys[key] = len(found)
            found.append(LeadView("", value, UNKNOWN_SEGMENT, value, None, None))
        numbers.append(keys[key])
    return np.array(numbers, dtype=np.int64), found


@dataclass(frozen=True)
class _Window:
    """What a replay of one window needs besides the capacity, availability and fairness settings.

    Reps are in id order throughout; lead lists are in arrival order over the window's leads.
    """

    start: datetime
    end: datetime
    fit: FitModel
    crm_ids: list[str]
    kind: list[int]
    expected: list[np.ndarray]
    """Per kind of lead, the expected conversion with each rep."""
    ranking: list[list[int]]
    """Per kind, the reps from the highest expected conversion down (equal ones in id order)."""
    ranked_values: list[list[float]]
    """Per kind, the expected conversions in ``ranking`` order."""
    territory: list[list[bool]]
    """Per kind, whether each rep covers the region."""
    expertise: list[list[bool]]
    """Per kind, whether each rep sells the product."""
    open_load: list[int]
    """Leads from before the window each rep still holds at its start."""
    frees_before: list[int]
    """Per lead, the lead before which its slot frees again (the lead count: never)."""
    earlier_free: list[list[int]]
    """Per lead, the reps whose leads from before the window close just before it."""
    decided: int
    actual_conversions: int
    historical_expected: float
    historical_assigned: list[int]
    historical_peak: list[int]
    historical_total: int
    historical_territory: int
    historical_expertise: int


def _replay_window(
    store: Store,
    tenant_id: str,
    leads: ReplayLeads,
    order: Sequence[Rep],
    days: int,
    now: datetime | None,
    open_days: int,
) -> _Window:
    """The window's inputs (kept while leads and users are unchanged)."""
    who = tuple((r.id, r.territory or "", tuple(sorted(r.expertise))) for r in order)
    key = ("replay-window", days, None if now is None else _micros(now), open_days, who)

    def build() -> _Window:
        created = leads.created
        end = now or leads.last_created
        start = end - timedelta(days=days)
        start_us, open_us = _micros(start), open_days * _DAY_US
        first = int(np.searchsorted(created, start_us, side="left"))
        last = int(np.searchsorted(created, _micros(end), side="right"))
        if last <= first:
            raise ValueError(f"no leads were created in the last {days} days")
        rep_ids = [r.id for r in order]
        position = {rep_id: i for i, rep_id in enumerate(rep_ids)}
        # The owner as a rep position (-1: no owner, or not a rep); index -1 reads the appended -1.
        owner = np.array([position.get(o, -1) for o in leads.owner_ids] + [-1])[leads.owner]
        covers = np.array([[territory_match(x, r) for r in order] for x in leads.regions])
        sells = np.array([[expertise_match(x, r) for r in order] for x in leads.products])
        territory, expertise = covers[leads.kind_region], sells[leads.kind_product]
        fit = _history_fit(store, tenant_id, leads, owner, territory, expertise, first, start, who)
        expected = fit.expected_table(
            [x.segment for x in leads.kinds], territory, expertise, rep_ids
        )
        ranking = np.argsort(-expected, axis=1, kind="stable")
        closes = created + open_us
        converted = leads.converted & leads.has_converted_at
        closes[converted] = np.minimum(closes[converted], leads.converted_at[converted])
        window_created = created[first:last]
        n = last - first
        # Leads from before the window still open at its start count against their owners until
        # they close; such a lead's slot frees before the first window lead created after it closed.
        recent = np.arange(
            int(np.searchsorted(created[:first], start_us - open_us, "right")), first
        )
        still_open = recent[(owner[recent] >= 0) & (closes[recent] > start_us)]
        open_load = np.bincount(owner[still_open], minlength=len(order)).tolist()
        earlier_free: list[list[int]] = [[] for _ in range(n)]
        for rep, at in zip(
            owner[still_open].tolist(),
            np.searchsorted(window_created, closes[still_open], "left").tolist(),
            strict=True,
        ):
            if at < n:
                earlier_free[at].append(rep)
        # A window lead's slot frees before the first later lead created at or after it closed.
        frees_before = np.maximum(
            np.arange(1, n + 1), np.searchsorted(window_created, closes[first:last], "left")
        ).tolist()
        kind = leads.kind[first:last].tolist()
        window = _Window(
            start=start,
            end=end,
            fit=fit,
            crm_ids=leads.crm_id[first:last].to_pylist(),
            kind=kind,
            expected=list(expected),
            ranking=ranking.tolist(),
            ranked_values=np.take_along_axis(expected, ranking, axis=1).tolist(),
            territory=territory.tolist(),
            expertise=expertise.tolist(),
            open_load=open_load,
            frees_before=frees_before,
            earlier_free=earlier_free,
            decided=int(np.count_nonzero(leads.decided[first:last])),
            actual_conversions=int(np.count_nonzero(leads.converted[first:last])),
            historical_expected=0.0,
            historical_assigned=[0] * len(order),
            historical_peak=list(open_load),
            historical_total=0,
            historical_territory=0,
            historical_expertise=0,
        )
        return _replay_history(window, owner[first:last].tolist())

    found: _Window = store.memo(tenant_id, key, ["leads", "users"], build)
    return found


def _replay_history(window: _Window, owners: list[int]) -> _Window:
    """The window with the historical owners' side filled in: their load, peaks and matches."""
    load = list(window.open_load)
    peak = list(window.historical_peak)
    assigned = [0] * len(load)
    frees: list[list[int]] = [list(reps) for reps in window.earlier_free] + [[]]
    expected = 0.0
    total = territory = expertise = 0
    for j, (kind, owner) in enumerate(zip(window.kind, owners, strict=True)):
        for rep in frees[j]:
            load[rep] = max(0, load[rep] - 1)
        if owner < 0:
            continue
        expected += float(window.expected[kind][owner])
        assigned[owner] += 1
        total += 1
        territory += window.territory[kind][owner]
        expertise += window.expertise[kind][owner]
        load[owner] += 1
        peak[owner] = max(peak[owner], load[owner])
        frees[window.frees_before[j]].append(owner)
    return replace(
        window,
        historical_expected=expected,
        historical_assigned=assigned,
        historical_peak=peak,
        historical_total=total,
        historical_territory=territory,
        historical_expertise=expertise,
    )


@dataclass(frozen=True)
class _Routed:
    """Where one pass of routing over a window sent its leads."""

    chosen: list[int]
    """Per lead, the rep position (-1: unrouted)."""
    assigned: list[int]
    expected: list[float]
    peak: list[int]
    unrouted: int
    total_expected: float
    territory_matches: int
    expertise_matches: int


def _route_window(window: _Window, order: Sequence[Rep], settings: ScoringSettings) -> _Routed:
    """Route the window's leads in arrival order: :meth:`Router.choose` and :meth:`Router.assign`.

    The same choices as a :class:`Router` makes, by a walk down each lead's precomputed ranking
    of the reps. A rep's standing is the leads routed to it, or :data:`_NO_ROOM` when it is away
    or full; the candidates are the reps under one limit: the fair-share floor when some rep with
    room is owed leads, else the ceiling when some rep with room is under it, else none. The first
    candidate in the ranking is the best unless others share its expected conversion; then the
    lightest load for the capacity wins, then the smallest id (rankings keep id order in ties).
    """
    capacity = [r.capacity for r in order]
    available = [r.available for r in order]
    load = list(window.open_load)
    assigned = [0] * len(order)
    """Also the leads routed to each rep, which fairness counts."""
    room = [available[i] and load[i] < capacity[i] for i in range(len(order))]
    standing = [0 if has else _NO_ROOM for has in room]
    n = len(window.kind)
    # Reps with room by leads routed so far, and the fewest routed among them (n + 1: none; the
    # count there is a sentinel that stops the search for the next fewest).
    with_room_at = [0] * (n + 1) + [1]
    with_room_at[0] = room_count = sum(room)
    least = 0 if room_count else n + 1
    pool_size = sum(available)
    band = settings.fairness_band * FAIRNESS_SAFETY
    peak = list(window.open_load)
    expected_sum = [0.0] * len(order)
    chosen = [-1] * n
    frees: list[list[int]] = [[] for _ in range(n + 1)]
    unrouted = territory = expertise = 0
    total_expected = 0.0
    rankings, ranked_values = window.ranking, window.ranked_values
    covers, sells = window.territory, window.expertise
    floor_of, ceil_of = math.floor, math.ceil
    leads = zip(window.kind, window.earlier_free, frees[:n], window.frees_before, strict=True)
    for j, (kind, earlier, later, frees_before) in enumerate(leads):
        for rep in earlier + later if later else earlier:
            if load[rep] > 0:
                load[rep] -= 1
            if not room[rep] and available[rep] and load[rep] < capacity[rep]:
                room[rep] = True
                room_count += 1
                level = standing[rep] = assigned[rep]
                with_room_at[level] += 1
                if level < least:
                    least = level
        if not room_count:
            unrouted += 1
            continue
        equal = (j - unrouted + 1) / pool_size
        ceiling = max(floor_of((1 + band) * equal), ceil_of(equal) + FAIRNESS_SLACK)
        floor = min((1 - band) * equal, floor_of(equal) - FAIRNESS_SLACK)
        limit = floor if least < floor else ceiling if least < ceiling else _NO_ROOM
        ranking, values = rankings[kind], ranked_values[kind]
        at = 0
        while standing[ranking[at]] >= limit:
            at += 1
        best, value = ranking[at], values[at]
        if at + 1 < len(values) and values[at + 1] == value:
            tied = []
            while at < len(values) and values[at] == value:
                if standing[ranking[at]] < limit:
                    tied.append(ranking[at])
                at += 1
            if len(tied) > 1:
                ratio = np.array([load[r] for r in tied]) / np.maximum(
                    np.array([capacity[r] for r in tied]), 1
                )
                best = tied[int(np.flatnonzero(ratio == ratio.min())[0])]
        level = assigned[best]
        with_room_at[level] -= 1
        assigned[best] = level + 1
        load[best] += 1
        if load[best] < capacity[best]:
            standing[best] = level + 1
            with_room_at[level + 1] += 1
        else:
            room[best] = False
            room_count -= 1
            standing[best] = _NO_ROOM
            if not room_count:
                least = n + 1
        while not with_room_at[least]:
            least += 1
        if load[best] > peak[best]:
            peak[best] = load[best]
        chosen[j] = best
        expected_sum[best] += value
        total_expected += value
        territory += covers[kind][best]
        expertise += sells[kind][best]
        frees[frees_before].append(best)
    return _Routed(
        chosen, assigned, expected_sum, peak, unrouted, total_expected, territory, expertise
    )


def _history_fit(
    store: Store,
    tenant_id: str,
    leads: ReplayLeads,
    owner: np.ndarray,
    territory: np.ndarray,
    expertise: np.ndarray,
    first: int,
    start: datetime,
    who: tuple[Any, ...],
) -> FitModel:
    """The fit model learned from leads decided before ``start``.

    ``owner`` is each lead's owner as a rep position (-1: none), ``territory`` and ``expertise``
    the (kinds x reps) matches, ``first`` the first lead created at or after ``start``.

    The model is kept by a digest of exactly what it learns from, not by the leads table's
    version: most lead changes (a rep working open leads) leave the decided history as it was,
    and then the model is not learned again.
    """
    history = np.zeros(len(leads.created), dtype=bool)
    history[:first] = True
    known = ~leads.has_converted_at | (leads.converted_at < _micros(start))
    rows = np.flatnonzero(history & leads.decided & known & (owner >= 0))
    kinds, owners = leads.kind[rows], owner[rows]
    inputs = {
        "owner": owners.astype(np.int64),
        "segment": leads.segment[rows].astype(np.int64),
        "territory": territory[kinds, owners].astype(bool),
        "expertise": expertise[kinds, owners].astype(bool),
        "converted": leads.converted[rows].astype(bool),
    }
    digest = hashlib.sha256("\x1f".join(leads.segment_names).encode())
    for values in inputs.values():
        digest.update(len(values).to_bytes(8, "little"))
        digest.update(np.ascontiguousarray(values).tobytes())

    def build() -> FitModel:
        return FitModel.fit_arrays(
            owner_ids=[rep_id for rep_id, _, _ in who],
            segment_names=leads.segment_names,
            **inputs,
        )

    # Capacity and availability do not change what the fit learns; who the reps are does.
    key = ("replay-fit", start.isoformat(), who, digest.hexdigest())
    fit: FitModel = store.memo(tenant_id, key, [], build)
    return fit


_NO_ROOM = 1 << 62
"""A rep's routing standing when it cannot take a lead (above any fair-share limit)."""
_DAY_US = 24 * 3600 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------------
# Helpers


@functools.lru_cache(maxsize=4096)
def _norm(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip().lower())


def _same(a: str, b: str) -> bool:
    return _norm(a) == _norm(b)


def _tokens(values: Iterable[Any]) -> frozenset[str]:
    found: set[str] = set()
    for value in values:
        items = value if isinstance(value, list | tuple) else re.split(r"[;,]", str(value))
        found.update(_norm(str(item)) for item in items if str(item).strip())
    return frozenset(found)


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number > 0 else None
