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

import bisect
import functools
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

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
    skip = set(exclude)
    reps = {}
    for row in store.query(tenant_id, "user"):
        if not row.get("is_active", True) or row["crm_id"] in skip:
            continue
        custom = row.get("custom") or {}
        expertise = _tokens(v for k, v in custom.items() if _EXPERTISE_KEY.search(str(k)))
        crm_capacity = next(
            (_int(v) for k, v in custom.items() if _CAPACITY_KEY.search(str(k))), None
        )
        name = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
        reps[row["crm_id"]] = Rep(
            id=row["crm_id"],
            name=name or (row.get("email") or ""),
            territory=row.get("territory"),
            expertise=expertise,
            capacity=settings.capacity_for(row["crm_id"], crm_capacity),
            available=row["crm_id"] not in settings.unavailable_reps,
        )
    return reps


def lead_view(record: Mapping[str, Any]) -> LeadView:
    """A canonical lead as routing sees it."""
    custom = record.get("custom") or {}
    product = next((str(v) for k, v in custom.items() if _INTEREST_KEY.search(str(k)) and v), None)
    status = str(record.get("status") or "").lower()
    return LeadView(
        crm_id=record["crm_id"],
        region=record.get("region"),
        segment=size_band(record.get("employees")) or UNKNOWN_SEGMENT,
        product=product,
        owner_id=record.get("owner_id"),
        created_at=record.get("created_at") or record.get("updated_at"),
        converted=bool(record.get("is_converted")),
        converted_at=record.get("converted_at"),
        closed=status.startswith("closed") or "unqualified" in status or "not converted" in status,
    )


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
        segments = sorted({x.segment for x in rows} | {UNKNOWN_SEGMENT})
        if not rows:
            return cls({s: -2.0 for s in segments}, TERRITORY_FLOOR, EXPERTISE_FLOOR, {}, {}, {}, 0)
        position = {s: i for i, s in enumerate(segments)}
        n, k = len(rows), len(segments)
        x = np.zeros((n, k + 2))
        y = np.array([1.0 if r.converted else 0.0 for r in rows])
        for i, lead in enumerate(rows):
            rep = reps[lead.owner_id or ""]
            x[i, position[lead.segment]] = 1.0
            x[i, k] = float(territory_match(lead, rep))
            x[i, k + 1] = float(expertise_match(lead, rep))
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
        observed: dict[tuple[str, str], float] = {}
        predicted: dict[tuple[str, str], float] = {}
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for lead, p, outcome in zip(rows, expected, y, strict=True):
            key = (lead.owner_id or "", lead.segment)
            observed[key] = observed.get(key, 0.0) + outcome
            predicted[key] = predicted.get(key, 0.0) + p
            seen, won = counts.get(key, (0, 0))
            counts[key] = (seen + 1, won + int(outcome))
        strength = _prior_strength(observed, predicted)
        lift = {key: (observed[key] + strength) / (predicted[key] + strength) for key in observed}
        team = {}
        for segment in segments:
            outcomes = [o for r, o in zip(rows, y, strict=True) if r.segment == segment]
            team[segment] = float(np.mean(outcomes)) if outcomes else float(y.mean())
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
    if not leads or not reps:
        raise ValueError(f"tenant {tenant_id} has no leads or no reps to replay")
    end = now or _created(leads[-1])
    start = end - timedelta(days=days)
    open_for = timedelta(days=settings.lead_open_days)

    def closes(lead: LeadView) -> datetime:
        assert lead.created_at is not None
        done = lead.created_at + open_for
        if lead.converted and lead.converted_at is not None:
            return min(done, lead.converted_at)
        return done

    # ``leads`` is sorted by creation time, so the history and the window are two slices.
    first = bisect.bisect_left(leads, start, key=_created)
    history = leads[:first]
    window = leads[first : bisect.bisect_right(leads, end, key=_created)]
    if not window:
        raise ValueError(f"no leads were created in the last {days} days")
    fit = _history_fit(store, tenant_id, history, start, reps)

    # A lead counts against capacity at most ``open_for`` after it was created.
    recent = history[bisect.bisect_right(history, start - open_for, key=_created) :]
    hist_load: dict[str, int] = {}
    # Leads closing, soonest first: (when, order pushed, whose load, rep id).
    closing: list[tuple[datetime, int, str, str]] = []
    pushed = itertools.count()
    for lead in recent:
        if lead.owner_id in reps and closes(lead) > start:
            owner = lead.owner_id or ""
            hist_load[owner] = hist_load.get(owner, 0) + 1
            closing.append((closes(lead), next(pushed), "both", owner))
    heapq.heapify(closing)
    router = Router(fit, reps, settings, dict(hist_load))
    peak = dict(router.open_load)
    hist_peak = dict(hist_load)
    fieldwise_expected = historical_expected = 0.0
    per_rep: dict[str, dict[str, Any]] = {
        r.id: {"assigned": 0, "historical_assigned": 0, "expected": 0.0} for r in reps.values()
    }
    unrouted = 0
    assignments: dict[str, str] = {}
    matched_fw = matched_hist = expert_fw = expert_hist = 0
    actual_conversions, decided_in_window = 0, 0
    for lead in window:
        assert lead.created_at is not None
        while closing and closing[0][0] <= lead.created_at:
            _, _, who, owner = heapq.heappop(closing)
            if who in ("both", "fieldwise"):
                router.release(owner)
            if who in ("both", "historical"):
                hist_load[owner] = max(0, hist_load.get(owner, 0) - 1)
        historical = reps.get(lead.owner_id or "")
        if historical is not None:
            p = router.expected_with(lead, historical.id)
            historical_expected += p
            per_rep[historical.id]["historical_assigned"] += 1
            matched_hist += territory_match(lead, historical)
            expert_hist += expertise_match(lead, historical)
            hist_load[historical.id] = hist_load.get(historical.id, 0) + 1
            hist_peak[historical.id] = max(
                hist_peak.get(historical.id, 0), hist_load[historical.id]
            )
            heapq.heappush(closing, (closes(lead), next(pushed), "historical", historical.id))
        if lead.decided:
            decided_in_window += 1
            actual_conversions += lead.converted
        choice = router.choose(lead, explain=False)
        if choice is None:
            unrouted += 1
            continue
        router.assign(choice)
        rep = choice.rep
        assignments[lead.crm_id] = rep.id
        fieldwise_expected += choice.expected
        per_rep[rep.id]["assigned"] += 1
        per_rep[rep.id]["expected"] += choice.expected
        matched_fw += territory_match(lead, rep)
        expert_fw += expertise_match(lead, rep)
        peak[rep.id] = max(peak.get(rep.id, 0), router.open_load[rep.id])
        heapq.heappush(closing, (closes(lead), next(pushed), "fieldwise", rep.id))

    pool = [r for r in reps.values() if r.available]
    routed_total = sum(per_rep[r.id]["assigned"] for r in pool)
    hist_total = sum(v["historical_assigned"] for v in per_rep.values())
    equal = 1.0 / len(pool)
    rows = []
    for rep in sorted(reps.values(), key=lambda r: r.id):
        stats = per_rep[rep.id]
        share = stats["assigned"] / routed_total if routed_total else 0.0
        hist_share = stats["historical_assigned"] / hist_total if hist_total else 0.0
        rows.append(
            {
                "rep": rep.id,
                "name": rep.name,
                "territory": rep.territory,
                "available": rep.available,
                "capacity": rep.capacity,
                "assigned": stats["assigned"],
                "share": round(share, 4),
                "expected_conversions": round(float(stats["expected"]), 2),
                "peak_open": peak.get(rep.id, 0),
                "within_capacity": peak.get(rep.id, 0) <= rep.capacity,
                "historical_assigned": stats["historical_assigned"],
                "historical_share": round(hist_share, 4),
                "historical_peak_open": hist_peak.get(rep.id, 0),
            }
        )
    shares = [r["share"] for r in rows if r["available"]]
    hist_shares = [r["historical_share"] for r in rows if r["available"]]
    band = settings.fairness_band
    n = len(window)
    report: dict[str, Any] = {
        "tenant_id": tenant_id,
        "days": days,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "leads": n,
        "unrouted": unrouted,
        "fieldwise": {
            "expected_conversions": round(fieldwise_expected, 2),
            "expected_rate": round(fieldwise_expected / max(n - unrouted, 1), 4),
            "territory_match": round(matched_fw / max(n - unrouted, 1), 4),
            "expertise_match": round(expert_fw / max(n - unrouted, 1), 4),
        },
        "historical": {
            "expected_conversions": round(historical_expected, 2),
            "expected_rate": round(historical_expected / max(hist_total, 1), 4),
            "territory_match": round(matched_hist / max(hist_total, 1), 4),
            "expertise_match": round(expert_hist / max(hist_total, 1), 4),
            "decided": decided_in_window,
            "actual_conversions": actual_conversions,
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
        "fit": fit.describe(),
    }
    if include_assignments:
        report["assignments"] = assignments
    return report


REPLAY_LEAD_COLUMNS = (
    "crm_id", "region", "employees", "custom", "owner_id", "created_at", "updated_at",
    "is_converted", "converted_at", "status",
)  # fmt: skip
"""The lead columns :func:`lead_view` reads."""


def replay_leads(store: Store, tenant_id: str) -> list[LeadView]:
    """A tenant's leads with a creation time as routing sees them, oldest first (then by id).

    Kept (``Store.memo``) until the leads table changes: a dry run replays the same leads under
    several settings.
    """

    def build() -> list[LeadView]:
        rows = store.query(tenant_id, "lead", columns=REPLAY_LEAD_COLUMNS)
        views = [lead_view(row) for row in rows]
        return sorted((x for x in views if x.created_at is not None), key=_arrival)

    leads: list[LeadView] = store.memo(tenant_id, ("replay-leads",), ["leads"], build)
    return leads


def _history_fit(
    store: Store,
    tenant_id: str,
    history: Sequence[LeadView],
    start: datetime,
    reps: Mapping[str, Rep],
) -> FitModel:
    """The fit model learned from leads decided before ``start`` (kept while leads and reps are)."""
    # Capacity and availability do not change what the fit learns; who the reps are does.
    who = tuple(
        sorted((r.id, r.territory or "", tuple(sorted(r.expertise))) for r in reps.values())
    )

    def build() -> FitModel:
        trained = [
            x for x in history if x.decided and (x.converted_at is None or x.converted_at < start)
        ]
        return FitModel.fit(trained, reps)

    fit: FitModel = store.memo(
        tenant_id, ("replay-fit", start.isoformat(), who), ["leads", "users"], build
    )
    return fit


def _created(lead: LeadView) -> datetime:
    assert lead.created_at is not None
    return lead.created_at


def _arrival(lead: LeadView) -> tuple[datetime, str]:
    return (_created(lead), lead.crm_id)


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
