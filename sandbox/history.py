"""Deterministic generator of a realistic company CRM history, loaded by both sandbox CRMs.

:func:`generate` builds a :class:`~sandbox.history_model.History` from a seed and a lead count: reps
with territories, accounts, leads with marketing engagement, conversions into contacts and
opportunities, stage/amount/close-date histories, activities, and free-text notes. The same seed and
size always give the same history, byte for byte once serialised.

Outcomes follow a hidden model so a scorer has something real to learn:

* **Leads.** Every lead has a 30-day qualification window (:data:`QUALIFY_DAYS`) after creation. All
  of its engagement happens inside that window; the decision (convert or not) falls 1 to 14 days
  after it closes. The conversion probability is the sigmoid of a nonlinear function of what the
  lead record shows at decision time: source, title seniority, company-size band, industry fit,
  engagement counts and recency, form fills, whether the owner's territory matches the lead's
  region, ``Budget_Confirmed__c``, ``Tech_Stack__c`` and a few interactions, plus a small latent
  term. ``Lead.true_probability`` is that probability; the outcome is one Bernoulli draw from it.
  Leads whose window has not closed yet (the last ~6 weeks) are still open; their probability
  uses the engagement seen so far.
* **Opportunities.** A deal's win probability is computed from what its record shows before it
  closes: the furthest stage reached, close-date pushes, competitors named, buying signals and
  objections written up in notes, the amount against what a company of that size usually pays,
  activity density, and whether the product is in the owner's expertise. Deals whose planned close
  lies after ``now`` stay open with a future close date and a probability from what is visible now.

What happens after an outcome carries later timestamps: closing notes, kickoff meetings, contacts'
later e-mails. A scorer must cut features at the outcome time (``converted_at``, ``closed_at``).
``Lead.account_key`` is set for leads whose company is or became an account, so it is itself
partly a consequence of conversion and must not be used as a feature.

:func:`best_achievable_auc` measures how well the hidden probabilities rank the realised outcomes,
the ceiling any scorer can reach on this history.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np

from sandbox import history_text as text
from sandbox.history_model import (
    Account,
    Activity,
    Contact,
    EngagementEvent,
    History,
    Lead,
    LeadSource,
    Note,
    Opportunity,
    Rep,
    StageChange,
)

DEFAULT_NOW = datetime(2026, 11, 1, tzinfo=UTC)
"""The generator's 'today' unless the caller passes one."""
HISTORY_DAYS = 730
"""Leads and deals are created over this many days before ``now``."""
QUALIFY_DAYS = 30
"""Days after creation in which a lead's engagement happens; the decision follows."""
DECISION_LAG_DAYS = 14
"""Most days between the end of the qualification window and the conversion decision."""
LEADS_PER_REP = 150
MIN_REPS, MAX_REPS = 4, 200

DAY = 86_400
HOUR = 3_600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)

# --------------------------------------------------------------------------------------------------
# The company's world: regions, industries, products, titles, sources and competitors.

REGIONS: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] = (
    ("North America", 0.45, (("United States", 0.82), ("Canada", 0.18))),
    (
        "EMEA",
        0.30,
        (
            ("United Kingdom", 0.35),
            ("Germany", 0.25),
            ("France", 0.2),
            ("Netherlands", 0.1),
            ("Sweden", 0.1),
        ),
    ),
    ("APAC", 0.15, (("Australia", 0.35), ("Japan", 0.25), ("Singapore", 0.2), ("India", 0.2))),
    ("LATAM", 0.10, (("Brazil", 0.5), ("Mexico", 0.35), ("Chile", 0.15))),
)
"""Region name, share of the market, and its countries with their shares."""

COUNTRIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "United States": (
        ".com",
        "+1 (212|415|312|617|512|206) 555-01##",
        ("New York", "Chicago", "Austin", "Seattle"),
    ),
    "Canada": (".ca", "+1 (416|604|514) 555-01##", ("Toronto", "Vancouver", "Montreal")),
    "United Kingdom": (".co.uk", "+44 20 7946 0###", ("London", "Manchester", "Leeds")),
    "Germany": (".de", "+49 30 ### #####", ("Berlin", "Munich", "Hamburg")),
    "France": (".fr", "+33 1 ## ## ## ##", ("Paris", "Lyon", "Lille")),
    "Netherlands": (".nl", "+31 20 ### ####", ("Amsterdam", "Rotterdam", "Utrecht")),
    "Sweden": (".se", "+46 8 ### ## ##", ("Stockholm", "Gothenburg", "Malmo")),
    "Australia": (".com.au", "+61 2 5550 ####", ("Sydney", "Melbourne", "Brisbane")),
    "Japan": (".co.jp", "+81 3 #### ####", ("Tokyo", "Osaka", "Yokohama")),
    "Singapore": (".sg", "+65 6### ####", ("Singapore",)),
    "India": (".in", "+91 22 #### ####", ("Mumbai", "Bengaluru", "Pune")),
    "Brazil": (".com.br", "+55 11 9#### ####", ("Sao Paulo", "Rio de Janeiro", "Curitiba")),
    "Mexico": (".com.mx", "+52 55 #### ####", ("Mexico City", "Monterrey", "Guadalajara")),
    "Chile": (".cl", "+56 2 #### ####", ("Santiago", "Valparaiso")),
}
"""Country to (domain suffix, phone pattern, cities). In a pattern ``#`` is a random digit and
``a|b|c`` picks one area code; North American numbers use the fictional 555-01xx range."""

INDUSTRIES: tuple[tuple[str, float, float, float, tuple[str, ...]], ...] = (
    ("Software", 0.16, 0.6, 220e3, ("Software", "Systems", "Labs", "Technologies", "Cloud")),
    (
        "Financial Services",
        0.12,
        0.45,
        400e3,
        ("Capital", "Financial", "Bank", "Advisors", "Trust"),
    ),
    ("Healthcare", 0.11, 0.15, 150e3, ("Health", "Medical", "Care", "Diagnostics", "Pharma")),
    ("Manufacturing", 0.12, 0.1, 250e3, ("Manufacturing", "Industries", "Components", "Machinery")),
    ("Retail", 0.1, -0.15, 180e3, ("Retail", "Stores", "Brands", "Outfitters", "Market")),
    ("Logistics", 0.09, 0.05, 200e3, ("Logistics", "Freight", "Shipping", "Transport", "Cargo")),
    ("Education", 0.07, -0.45, 90e3, ("Learning", "Academy", "Education", "Institute", "Schools")),
    ("Government", 0.05, -0.6, 120e3, ("Agency", "Authority", "Council", "Public Services")),
    ("Media", 0.08, -0.1, 210e3, ("Media", "Studios", "Publishing", "Entertainment", "Press")),
    ("Energy", 0.1, 0.15, 600e3, ("Energy", "Power", "Renewables", "Utilities", "Solar")),
)
"""Industry, market share, fit with the product (logit effect), revenue per employee, name nouns."""

_STEMS_A = (
    "North", "Blue", "Silver", "Granite", "Cedar", "Harbor", "Summit", "Iron", "Bright", "Clear",
    "Red", "Oak", "River", "Stone", "Star", "Pine", "Eagle", "Crest", "Maple", "Golden", "Falcon",
    "Hudson", "Atlas", "Nova", "Vertex", "Apex", "Lumen", "Pioneer", "Sterling", "Keystone",
    "Evergreen", "Meridian", "Polar", "Crimson", "Copper", "Coastal", "Prairie", "Highland", "Union",
    "Liberty", "Bay", "Fox", "Wolf", "Birch", "Willow", "Sun", "Moon", "Delta", "Echo", "Orion",
)  # fmt: skip
_STEMS_B = (
    "gate", "field", "stone", "wave", "bridge", "point", "view", "line", "ridge", "wood", "brook",
    "crest", "path", "works", "peak", "haven", "port", "side", "dale", "mark", "shore", "light",
    "way", "well", "ford", "vale", "spring", "land", "fall", "hill",
)  # fmt: skip
_NAME_SUFFIXES = ("", "", " Group", " Inc.", " Ltd", " International", " & Co")

PRODUCTS: tuple[tuple[str, float, float], ...] = (
    ("Insight Analytics", 0.32, 24_000.0),
    ("Flow Automation", 0.28, 30_000.0),
    ("Data Vault", 0.2, 42_000.0),
    ("Team Workspace", 0.2, 12_000.0),
)
"""Product, share of interest, typical first-year amount for a 200-employee company."""

SENIORITY: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("C-Level", 0.06, 0.45, ("CEO", "CFO", "CTO", "CIO", "COO", "Chief Revenue Officer")),
    (
        "VP",
        0.10,
        0.6,
        ("VP Sales", "VP Marketing", "VP Engineering", "VP Operations", "VP Revenue Operations"),
    ),
    (
        "Director",
        0.17,
        0.45,
        (
            "Director of Sales Operations",
            "IT Director",
            "Director of Marketing",
            "Director of Data",
        ),
    ),
    (
        "Manager",
        0.27,
        0.15,
        ("Sales Manager", "Marketing Manager", "IT Manager", "RevOps Manager", "Product Manager"),
    ),
    (
        "Individual Contributor",
        0.34,
        -0.25,
        (
            "Software Engineer",
            "Data Analyst",
            "Sales Representative",
            "Business Analyst",
            "Marketing Specialist",
            "Systems Administrator",
        ),
    ),
    ("Student", 0.06, -1.4, ("Student", "Intern", "Graduate Student")),
)
"""Seniority level, share of leads, logit effect, titles."""

SOURCES: tuple[tuple[LeadSource, float, float, float, bool], ...] = (
    ("Web", 0.27, 0.0, 0.2, True),
    ("Webinar", 0.12, 0.25, 0.3, True),
    ("Referral", 0.08, 1.0, 0.0, False),
    ("Paid Search", 0.18, -0.35, 0.1, True),
    ("Trade Show", 0.09, 0.1, -0.1, False),
    ("Partner", 0.08, 0.6, 0.0, False),
    ("Outbound", 0.18, -0.55, -0.4, False),
)
"""Source, share, conversion logit effect, engagement shift, whether a form fill created the lead."""

EMPLOYEE_BANDS: tuple[tuple[str, int, float], ...] = (
    ("1-50", 50, -0.5),
    ("51-200", 200, 0.0),
    ("201-1000", 1000, 0.35),
    ("1001-5000", 5000, 0.3),
    ("5000+", 10**9, -0.15),
)
"""``Employees_Band__c`` value, inclusive upper bound, logit effect (peaks in the mid-market)."""

TECH_STACKS: tuple[tuple[str, float, float], ...] = (
    ("Salesforce", 0.3, 0.25),
    ("HubSpot", 0.22, 0.2),
    ("Dynamics 365", 0.12, 0.0),
    ("Spreadsheets", 0.16, -0.35),
    ("Pipedrive", 0.08, 0.05),
    ("Homegrown", 0.12, -0.25),
)
"""``Tech_Stack__c`` value, share, logit effect."""

COMPETITORS: dict[str, tuple[str, ...]] = {
    "Vantora": ("Vantora", "Vantora CRM", "VTR"),
    "Pipewell": ("Pipewell", "PipeWell Cloud", "PWL"),
    "Quillmark": ("Quillmark", "Quill", "QMark"),
    "Brightlane": ("Brightlane", "Brightlane One", "BLN"),
    "Corvex": ("Corvex", "Corvex Sales Cloud"),
}
"""Competitor to every wording notes use for it (the name first)."""

STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation")
CLOSED_WON, CLOSED_LOST = "Closed Won", "Closed Lost"

# Hidden lead model: intercept and weights (see the module docstring).
_LEAD_INTERCEPT = -4.05
_LEAD_LATENT_SD = 0.35

# Hidden deal model.
_DEAL_INTERCEPT = -1.5
_DEAL_LATENT_SD = 0.3
_STAGE_EFFECT = (-1.35, -0.7, -0.25, 0.15, 0.55)
_STAGE_CONTINUE = (1.3, 0.9, 0.5, 0.6)
_SIGNALS = (
    # kind, earliest stage index, base logit of appearing, win-logit weight
    ("champion", 1, -1.0, 0.6),
    ("budget", 1, -1.2, 0.45),
    ("timeline", 2, -0.8, 0.3),
    ("pilot", 2, -1.5, 0.5),
    ("legal", 3, -0.6, 0.4),
)
_OBJECTIONS = (
    ("price", 2, -1.3, -0.45),
    ("security", 2, -2.0, -0.4),
    ("integration", 1, -1.8, -0.3),
    ("timing", 0, -1.8, -0.35),
    ("incumbent", 0, -0.9, -0.5),
)
_LEAD_ACTS, _LEAD_ACT_CUM = ("call", "email", "task"), (0.45, 0.85, 1.0)
_DEAL_ACTS, _DEAL_ACT_CUM = ("call", "email", "meeting", "task"), (0.35, 0.7, 0.9, 1.0)
_LOSS_REASONS = (
    "Price",
    "Lost to Competitor",
    "No Decision",
    "Timing",
    "Security Review",
    "Integration Effort",
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _at(sec: int) -> datetime:
    return _EPOCH + timedelta(seconds=sec)


def _day(sec: int) -> date:
    return _EPOCH_DATE + timedelta(days=sec // DAY)


def _slug(value: str) -> str:
    return "".join(ch for ch in value.lower() if ch.isalnum())


def _poisson(rnd: random.Random, lam: float) -> int:
    """Draw a Poisson count (Knuth's method; ``lam`` stays small here)."""
    limit, k, prod = math.exp(-min(lam, 60.0)), 0, rnd.random()
    while prod > limit:
        k += 1
        prod *= rnd.random()
    return k


def expected_amount(product: str, employees: int) -> float:
    """The usual first-year amount of ``product`` for a company with ``employees`` people.

    Args:
        product: One of the product names in :data:`PRODUCTS`.
        employees: The buying company's head count.

    Returns:
        The amount the hidden deal model compares a deal's amount against.
    """
    base = next(amount for name, _, amount in PRODUCTS if name == product)
    return base * min(max((employees / 200.0) ** 0.35, 0.3), 6.0)


def employees_band(employees: int) -> str:
    """The ``Employees_Band__c`` value for a head count."""
    return next(label for label, upper, _ in EMPLOYEE_BANDS if employees <= upper)


# --------------------------------------------------------------------------------------------------
# Public API


def generate(seed: int = 7, n_leads: int = 5000, *, now: datetime | None = None) -> History:
    """Generate a company's CRM history.

    Args:
        seed: Seeds every random draw; the same seed and size give the same history.
        n_leads: How many leads to create (a few hundred up to 200k).
        now: The history's 'today' (timezone-aware); defaults to :data:`DEFAULT_NOW`.

    Returns:
        The history, every timestamp at or before ``now``.

    Raises:
        ValueError: If ``n_leads`` is not positive or ``now`` is naive.
    """
    if n_leads <= 0:
        raise ValueError("n_leads must be positive")
    now = DEFAULT_NOW if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # Hundreds of thousands of small records make the cyclic collector rescan the heap over and
    # over; nothing built here forms cycles, so pausing it cuts generation time by about a third.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Generator(seed, n_leads, now.astimezone(UTC)).run()
    finally:
        if was_enabled:
            gc.enable()


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """ROC AUC by ranks (the Mann-Whitney statistic), tied scores sharing their average rank.

    Args:
        scores: Higher means more likely positive.
        labels: The realised outcomes.

    Returns:
        The probability that a random positive outranks a random negative (ties count half).

    Raises:
        ValueError: If the inputs differ in length or hold only one class.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both outcomes present")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    # Average rank of each run of equal scores: ranks are 1-based positions in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], s.size]
    run_ranks = (starts + 1 + ends) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def best_achievable_auc(
    history: History, kind: Literal["leads", "opportunities"] = "leads"
) -> float:
    """AUC of the hidden true probabilities against the realised outcomes.

    Only records whose outcome is realised count: leads with a closed status and closed deals.

    Args:
        history: A generated history.
        kind: ``"leads"`` (converted or not) or ``"opportunities"`` (won or lost).

    Returns:
        The ROC AUC no scorer can beat on this history, up to sampling luck.

    Raises:
        ValueError: For an unknown ``kind`` or when only one outcome occurs.
    """
    if kind == "leads":
        decided = [lead for lead in history.leads if lead.status.startswith("Closed")]
        return roc_auc([x.true_probability for x in decided], [x.converted for x in decided])
    if kind == "opportunities":
        closed = [opp for opp in history.opportunities if opp.is_closed]
        return roc_auc([x.true_probability for x in closed], [x.is_won for x in closed])
    raise ValueError(f"unknown kind {kind!r}")


# --------------------------------------------------------------------------------------------------
# The generator


class _Generator:
    """One generation run: seeded draws plus the records built so far."""

    def __init__(self, seed: int, n_leads: int, now: datetime) -> None:
        self.seed = seed
        self.n = n_leads
        self.now_dt = now
        self.now = int((now - _EPOCH).total_seconds())
        self.start = self.now - HISTORY_DAYS * DAY
        self.rng = np.random.default_rng(seed)
        self.rnd = random.Random(seed * 1_000_003 + 17)
        self.reps: list[Rep] = []
        self.accounts: list[Account] = []
        self.contacts: list[Contact] = []
        self.opportunities: list[Opportunity] = []
        self.activities: list[Activity] = []
        self.notes: list[Note] = []
        self.emails: set[str] = set()
        self.comp_names = list(COMPETITORS)

    # ---------------------------------------------------------------- people and places

    def _phone(self, country: str) -> str:
        pattern = COUNTRIES[country][1]
        if "|" in pattern:
            head, rest = pattern.split("(", 1)
            codes, tail = rest.split(")", 1)
            pattern = f"{head}({self.rnd.choice(codes.split('|'))}){tail}"
        parts = pattern.split("#")
        digits = f"{self.rnd.randrange(10 ** (len(parts) - 1)):0{len(parts) - 1}d}"
        return parts[0] + "".join(d + p for d, p in zip(digits, parts[1:], strict=True))

    def _email(self, first: str, last: str, domain: str, style: int) -> str:
        f, la = _slug(first), _slug(last)
        local = (f"{f}.{la}", f"{f[0]}{la}", f"{f}_{la}", f"{f}{la[0]}")[style]
        email = f"{local}@{domain}"
        k = 2
        while email in self.emails:
            email = f"{local}{k}@{domain}"
            k += 1
        self.emails.add(email)
        return email

    def _when(self, sec: int) -> str:
        """A human date a week or a few ahead of ``sec``, in one of several styles."""
        d = _day(sec + self.rnd.randint(5, 40) * DAY)
        style = self.rnd.randrange(4)
        if style == 0:
            return f"{text.MONTHS[d.month - 1]} {d.day}"
        if style == 1:
            return d.isoformat()
        if style == 2:
            return f"{d.day} {text.MONTHS[d.month - 1]}"
        return f"the end of {text.MONTHS[d.month - 1]}"

    def _make_reps(self) -> None:
        n_reps = min(max(round(self.n / LEADS_PER_REP), MIN_REPS), MAX_REPS)
        shares = np.array([share for _, share, _ in REGIONS])
        # One rep per region first, then the rest in proportion to each region's share.
        counts = np.ones(len(REGIONS), dtype=int)
        extra = n_reps - len(REGIONS)
        if extra > 0:
            counts += np.floor(shares * extra).astype(int)
            for i in np.argsort(-shares)[: n_reps - counts.sum()]:
                counts[i] += 1
        used: set[tuple[str, str]] = set()
        product_names = [p[0] for p in PRODUCTS]
        rnd = self.rnd
        for region_idx, count in enumerate(counts):
            for _ in range(count):
                while True:
                    name = (rnd.choice(text.FIRST_NAMES), rnd.choice(text.LAST_NAMES))
                    if name not in used:
                        used.add(name)
                        break
                key = f"rep-{len(self.reps) + 1:04d}"
                self.reps.append(
                    Rep(
                        key=key,
                        first_name=name[0],
                        last_name=name[1],
                        email=self._email(name[0], name[1], "orbitra-sales.com", 0),
                        territory=REGIONS[region_idx][0],
                        expertise=sorted(rnd.sample(product_names, rnd.choice((1, 2, 2, 3)))),
                        capacity=rnd.randrange(40, 160, 5),
                        title="Senior Account Executive"
                        if rnd.random() < 0.3
                        else "Account Executive",
                    )
                )
        self.rep_region = np.array([[r[0] for r in REGIONS].index(r.territory) for r in self.reps])
        self.rep_capacity = np.array([r.capacity for r in self.reps], dtype=float)

    def _pick_owner(self, region_idx: np.ndarray, match: np.ndarray) -> np.ndarray:
        """Owners by territory, weighted by capacity; where ``match`` is false, any rep at all."""
        rng = self.rng
        owner = rng.choice(
            len(self.reps), size=region_idx.size, p=self.rep_capacity / self.rep_capacity.sum()
        )
        for r in range(len(REGIONS)):
            members = np.flatnonzero(self.rep_region == r)
            rows = np.flatnonzero((region_idx == r) & match)
            w = self.rep_capacity[members]
            owner[rows] = members[rng.choice(members.size, size=rows.size, p=w / w.sum())]
        return owner

    def _make_companies(self) -> None:
        rng = self.rng
        nc = max(40, int(self.n * 0.45))
        self.nc = nc
        self.c_region = rng.choice(len(REGIONS), size=nc, p=[r[1] for r in REGIONS])
        self.c_country = [""] * nc
        for r, (_, _, countries) in enumerate(REGIONS):
            rows = np.flatnonzero(self.c_region == r)
            picks = rng.choice(len(countries), size=rows.size, p=[c[1] for c in countries])
            for row, pick in zip(rows.tolist(), picks.tolist(), strict=True):
                self.c_country[row] = countries[pick][0]
        self.c_industry = rng.choice(len(INDUSTRIES), size=nc, p=[i[1] for i in INDUSTRIES])
        employees = np.exp(rng.normal(5.2, 1.7, size=nc))
        self.c_employees = np.clip(np.round(employees), 3, 250_000).astype(int)
        rev_per = np.array([i[3] for i in INDUSTRIES])[self.c_industry]
        revenue = self.c_employees * rev_per * np.exp(rng.normal(0, 0.35, size=nc))
        self.c_revenue = np.round(revenue / 1000.0) * 1000.0
        self.c_existing = rng.random(nc) < 0.22
        # Popularity: a few companies send many leads, most send one or two.
        weights = 1.0 / (np.arange(nc) + 8.0) ** 0.85
        self.c_weights = weights / weights.sum()
        self.c_name: dict[int, str] = {}
        self.c_domain: dict[int, str] = {}
        self.c_city: dict[int, str] = {}
        self.c_account: dict[int, Account] = {}
        self.c_contacts: dict[int, list[Contact]] = {}
        self._names_taken: set[str] = set()
        self._domains_taken: set[str] = set()

    def _company(self, c: int) -> None:
        """Name a company the first time anything refers to it."""
        if c in self.c_name:
            return
        rnd = self.rnd
        nouns = INDUSTRIES[self.c_industry[c]][4]
        while True:
            stem = rnd.choice(_STEMS_A) + rnd.choice(_STEMS_B)
            noun = rnd.choice(nouns)
            name = f"{stem} {noun}{rnd.choice(_NAME_SUFFIXES)}"
            if name not in self._names_taken:
                break
        self._names_taken.add(name)
        country = self.c_country[c]
        tld = ".com" if rnd.random() < 0.45 else COUNTRIES[country][0]
        base = _slug(stem) + ("-" if rnd.random() < 0.3 else "") + _slug(noun)
        domain, k = f"{base}{tld}", 2
        while domain in self._domains_taken:
            domain = f"{base}{k}{tld}"
            k += 1
        self._domains_taken.add(domain)
        self.c_name[c] = name
        self.c_domain[c] = domain
        self.c_city[c] = rnd.choice(COUNTRIES[country][2])

    def _new_account(self, c: int, owner: int, created: int) -> Account:
        self._company(c)
        account = Account(
            key=f"acct-{len(self.accounts) + 1:06d}",
            name=self.c_name[c],
            domain=self.c_domain[c],
            industry=INDUSTRIES[self.c_industry[c]][0],
            employees=int(self.c_employees[c]),
            annual_revenue=float(self.c_revenue[c]),
            region=REGIONS[self.c_region[c]][0],
            country=self.c_country[c],
            owner_key=self.reps[owner].key,
            created_at=_at(created),
        )
        self.accounts.append(account)
        self.c_account[c] = account
        return account

    def _random_title(self) -> str:
        rnd = self.rnd
        level = rnd.choices(range(len(SENIORITY)), weights=[s[1] for s in SENIORITY[:-1]] + [0])[0]
        return rnd.choice(SENIORITY[level][3])

    def _make_existing_accounts(self) -> None:
        """Accounts (with a few contacts each) that were in the CRM before the history starts."""
        rnd = self.rnd
        existing = np.flatnonzero(self.c_existing)
        owners = self._pick_owner(self.c_region[existing], self.rng.random(existing.size) < 0.9)
        for c, owner in zip(existing.tolist(), owners.tolist(), strict=True):
            created = self.start - rnd.randint(30, 1000) * DAY + rnd.randrange(DAY)
            account = self._new_account(c, owner, created)
            contacts = []
            for _ in range(rnd.choice((1, 1, 2, 3))):
                first, last = rnd.choice(text.FIRST_NAMES), rnd.choice(text.LAST_NAMES)
                at = min(created + rnd.randint(0, 400) * DAY + rnd.randrange(DAY), self.now)
                contacts.append(
                    self._new_contact(
                        first,
                        last,
                        self._email(first, last, account.domain, rnd.randrange(4)),
                        self._phone(account.country),
                        self._random_title(),
                        account,
                        owner,
                        at,
                        None,
                    )
                )
            self.c_contacts[c] = contacts
            if rnd.random() < 0.2:
                main = contacts[0]
                at = min(created + rnd.randint(1, 500) * DAY, self.now)
                incumbent = None
                if rnd.random() < 0.4:
                    incumbent = rnd.choice(COMPETITORS[rnd.choice(self.comp_names)])
                ctx = self._ctx(main, account, self.c_city[c], rnd.choice(PRODUCTS)[0], owner, 0.0)
                ctx.when = self._when(at)
                title, body = text.account_note(
                    rnd,
                    ctx,
                    stakeholders=[f"{x.first_name} {x.last_name}" for x in contacts],
                    incumbent=incumbent,
                )
                self._note(title, body, at, owner, account_key=account.key)

    def _new_contact(
        self,
        first: str,
        last: str,
        email: str,
        phone: str,
        title: str,
        account: Account,
        owner: int,
        created: int,
        lead_key: str | None,
    ) -> Contact:
        contact = Contact(
            key=f"contact-{len(self.contacts) + 1:06d}",
            first_name=first,
            last_name=last,
            email=email,
            phone=phone,
            title=title,
            account_key=account.key,
            owner_key=self.reps[owner].key,
            created_at=_at(created),
            from_lead_key=lead_key,
        )
        self.contacts.append(contact)
        return contact

    def _ctx(
        self,
        person: Contact | Lead,
        account: Account | None,
        city: str,
        product: str,
        owner: int,
        amount: float,
    ) -> text.NoteContext:
        return text.NoteContext(
            contact=f"{person.first_name} {person.last_name}",
            email=person.email,
            phone=person.phone,
            title=person.title,
            company=account.name if account is not None else getattr(person, "company", ""),
            city=city,
            product=product,
            rep_first=self.reps[owner].first_name,
            amount=amount,
        )

    def _note(self, title: str, body: str, at: int, owner: int, **links: str | None) -> None:
        self.notes.append(
            Note(
                key="", title=title, body=body, at=_at(at), author_key=self.reps[owner].key, **links
            )
        )

    def _activity(
        self, kind: str, at: int, owner: int, ctx: text.NoteContext, **links: str | None
    ) -> None:
        rnd = self.rnd
        subject, body = text.activity_text(rnd, kind, ctx)
        duration: int | None = None
        direction: Literal["inbound", "outbound"] | None = None
        completed = True
        if kind == "call":
            duration = rnd.randint(1, 55)
            direction = "inbound" if rnd.random() < 0.2 else "outbound"
        elif kind == "meeting":
            duration = rnd.choice((30, 30, 45, 60, 90))
        elif kind == "email":
            direction = "inbound" if rnd.random() < 0.3 else "outbound"
        elif self.now - at < 10 * DAY and rnd.random() < 0.5:
            completed = False
        self.activities.append(
            Activity(
                key="",
                type=kind,  # type: ignore[arg-type]
                subject=subject,
                body=body,
                at=_at(at),
                owner_key=self.reps[owner].key,
                duration_minutes=duration,
                direction=direction,
                completed=completed,
                **links,
            )
        )

    # ---------------------------------------------------------------- leads

    def _make_leads(self) -> None:
        rng, rnd, n, now = self.rng, self.rnd, self.n, self.now
        # Creation times skew recent (the company grows); sorted so keys follow time.
        offsets = np.sort(rng.random(n) ** 0.85) * (HISTORY_DAYS * DAY - HOUR)
        created = self.start + offsets.astype(np.int64)
        company = rng.choice(self.nc, size=n, p=self.c_weights)
        region = self.c_region[company]
        industry = self.c_industry[company]
        employees = self.c_employees[company]
        band = np.searchsorted([b[1] for b in EMPLOYEE_BANDS], employees)
        source = rng.choice(len(SOURCES), size=n, p=[s[1] for s in SOURCES])
        level = rng.choice(len(SENIORITY), size=n, p=[s[1] for s in SENIORITY])
        senior = level <= 2
        stack = rng.choice(len(TECH_STACKS), size=n, p=[t[1] for t in TECH_STACKS])
        product = rng.choice(len(PRODUCTS), size=n, p=[p[1] for p in PRODUCTS])
        interest = rng.normal(0.0, 1.0, size=n)
        owner = self._pick_owner(region, rng.random(n) < 0.85)
        match = self.rep_region[owner] == region

        # Engagement inside the qualification window, driven by the (hidden) interest.
        shift = np.array([s[3] for s in SOURCES])[source] + 0.15 * senior
        opens = rng.poisson(np.exp(0.9 + 0.55 * interest + shift))
        clicks = rng.binomial(opens, _sigmoid(-1.3 + 0.6 * interest))
        visits = rng.poisson(np.exp(0.4 + 0.65 * interest + shift))
        forms = rng.poisson(np.exp(-1.6 + 0.7 * interest))
        per_type = np.stack([opens, clicks, visits, forms], axis=1)
        totals = per_type.sum(axis=1)
        ev_lead = np.repeat(np.arange(n), totals)
        ev_type = np.repeat(np.tile(np.arange(4), n), per_type.ravel())
        lateness = np.repeat(np.exp(0.6 * interest), totals)
        ev_time = created[ev_lead] + (rng.beta(lateness, 1.0) * QUALIFY_DAYS * DAY).astype(np.int64)
        # A form fill created the web, webinar and paid-search leads.
        form_created = np.flatnonzero(np.array([s[4] for s in SOURCES])[source])
        ev_lead = np.r_[ev_lead, form_created]
        ev_type = np.r_[ev_type, np.full(form_created.size, 3)]
        ev_time = np.r_[ev_time, created[form_created]]
        visible = ev_time <= now
        ev_lead, ev_type, ev_time = ev_lead[visible], ev_type[visible], ev_time[visible]
        order = np.lexsort((ev_type, ev_time, ev_lead))
        ev_lead, ev_type, ev_time = ev_lead[order], ev_type[order], ev_time[order]
        seen = np.bincount(ev_lead * 4 + ev_type, minlength=4 * n).reshape(n, 4)
        window_end = created + QUALIFY_DAYS * DAY
        reference = np.minimum(window_end, now)
        last = created.copy()
        np.maximum.at(last, ev_lead, ev_time)
        recency = (reference - last) / DAY

        budget = rng.random(n) < _sigmoid(-1.4 + 0.7 * interest + 0.4 * senior)
        o, c, v, f = seen[:, 0], seen[:, 1], seen[:, 2], seen[:, 3]
        logit = (
            _LEAD_INTERCEPT
            + np.array([s[2] for s in SOURCES])[source]
            + np.array([s[2] for s in SENIORITY])[level]
            + np.array([b[2] for b in EMPLOYEE_BANDS])[band]
            + np.array([i[2] for i in INDUSTRIES])[industry]
            + 0.6 * np.log1p(c)
            + 0.4 * np.log1p(v)
            + 0.12 * np.log1p(o)
            + 0.45 * np.minimum(f, 3)
            - 0.035 * recency
            + 0.45 * match
            + 0.75 * budget
            + np.array([t[2] for t in TECH_STACKS])[stack]
            + 0.45 * (senior & (band >= 2))
            + 0.35 * ((source == 1) & (c >= 2))
            + 0.3 * (budget & senior)
            + rng.normal(0.0, _LEAD_LATENT_SD, size=n)
        )
        prob = _sigmoid(logit)
        decided = window_end + DECISION_LAG_DAYS * DAY <= now
        converted = decided & (rng.random(n) < prob)
        converted_at = window_end + rng.integers(HOUR, DECISION_LAG_DAYS * DAY, size=n)

        # Rep work on the lead during the window depends only on what the rep can see.
        n_acts = rng.poisson(
            0.4 + 0.35 * np.log1p(totals) + 0.9 * (source == 6) + 0.3 * senior
        ).astype(int)
        has_note = rng.random(n) < 0.25 + 0.25 * (totals >= 6)
        mood = interest + rng.normal(0.0, 0.8, size=n)
        first_idx = rng.integers(len(text.FIRST_NAMES), size=n)
        last_idx = rng.integers(len(text.LAST_NAMES), size=n)
        email_style = rng.integers(4, size=n)
        self.l_interest = interest
        self.l_budget = budget

        bounds = np.searchsorted(ev_lead, np.arange(n + 1)).tolist()
        ev_type_l, ev_time_l = ev_type.tolist(), ev_time.tolist()
        etypes = ("email_open", "email_click", "page_visit", "form_fill")
        company_l, created_l, owner_l = company.tolist(), created.tolist(), owner.tolist()
        window_l = np.minimum(window_end, now).tolist()
        self.leads: list[Lead] = []
        self.l_company = company_l
        self.l_product = product.tolist()
        self.l_owner = owner_l
        conversions: list[tuple[int, int]] = []
        for i in range(n):
            c = company_l[i]
            self._company(c)
            country = self.c_country[c]
            first, last_name = text.FIRST_NAMES[first_idx[i]], text.LAST_NAMES[last_idx[i]]
            lo, hi = bounds[i], bounds[i + 1]
            engagement = [
                EngagementEvent(type=etypes[ev_type_l[j]], at=_at(ev_time_l[j]))  # type: ignore[arg-type]
                for j in range(lo, hi)
            ]
            acts = int(n_acts[i])
            if converted[i]:
                status = "Closed - Converted"
            elif decided[i]:
                status = "Closed - Not Converted"
            elif acts:
                status = "Working - Contacted"
            else:
                status = "Open - Not Contacted"
            lead = Lead(
                key=f"lead-{i + 1:06d}",
                first_name=first,
                last_name=last_name,
                email=self._email(first, last_name, self.c_domain[c], int(email_style[i])),
                phone=self._phone(country),
                title=rnd.choice(SENIORITY[level[i]][3]),
                company=self.c_name[c],
                account_key=None,
                industry=INDUSTRIES[industry[i]][0],
                employees=int(employees[i]),
                annual_revenue=float(self.c_revenue[c]),
                region=REGIONS[region[i]][0],
                country=country,
                source=SOURCES[source[i]][0],
                product_interest=PRODUCTS[product[i]][0],
                owner_key=self.reps[owner_l[i]].key,
                created_at=_at(created_l[i]),
                engagement=engagement,
                status=status,
                converted=False,
                converted_at=None,
                converted_contact_key=None,
                converted_opportunity_key=None,
                true_probability=float(prob[i]),
                custom={
                    "Budget_Confirmed__c": bool(budget[i]),
                    "Employees_Band__c": EMPLOYEE_BANDS[band[i]][0],
                    "Tech_Stack__c": TECH_STACKS[stack[i]][0],
                },
            )
            self.leads.append(lead)
            start, end = created_l[i], window_l[i]
            if acts or has_note[i]:
                ctx = self._ctx(lead, None, self.c_city[c], lead.product_interest, owner_l[i], 0.0)
                for _ in range(acts):
                    kind = rnd.choices(_LEAD_ACTS, cum_weights=_LEAD_ACT_CUM)[0]
                    at = rnd.randint(start, end)
                    self._activity(kind, at, owner_l[i], ctx, lead_key=lead.key)
                if has_note[i]:
                    at = rnd.randint(start, end)
                    ctx.when = self._when(at)
                    incumbent = None
                    if rnd.random() < 0.2:
                        incumbent = rnd.choice(COMPETITORS[rnd.choice(self.comp_names)])
                    title, body = text.lead_note(
                        rnd, ctx, mood=float(mood[i]), budget=bool(budget[i]), incumbent=incumbent
                    )
                    self._note(title, body, at, owner_l[i], lead_key=lead.key)
            if converted[i]:
                conversions.append((int(converted_at[i]), i))
        conversions.sort()
        self.conversions = conversions

    def _convert(self) -> None:
        """Turn converted leads into contacts, accounts and (mostly) opportunities, in time order."""
        rnd = self.rnd
        for at, i in self.conversions:
            lead = self.leads[i]
            c, owner = self.l_company[i], self.l_owner[i]
            account = self.c_account.get(c) or self._new_account(c, owner, at)
            contact = self._new_contact(
                lead.first_name,
                lead.last_name,
                lead.email,
                lead.phone,
                lead.title,
                account,
                owner,
                at,
                lead.key,
            )
            self.c_contacts.setdefault(c, []).append(contact)
            lead.converted = True
            lead.converted_at = _at(at)
            lead.converted_contact_key = contact.key
            if rnd.random() < 0.85:
                q = 0.45 * float(self.l_interest[i]) + 0.3 * bool(self.l_budget[i])
                q += rnd.gauss(0.0, 0.85)
                opp = self._deal(
                    account=account,
                    contact=contact,
                    owner=owner,
                    created=at,
                    product=lead.product_interest,
                    source=lead.source,
                    q=q,
                    city=self.c_city[c],
                )
                lead.converted_opportunity_key = opp.key
            elif rnd.random() < 0.6:
                # No deal yet: the rep still works the new contact.
                ctx = self._ctx(contact, account, self.c_city[c], lead.product_interest, owner, 0)
                for _ in range(rnd.randint(1, 3)):
                    when = at + rnd.randint(HOUR, 60 * DAY)
                    if when <= self.now:
                        kind = rnd.choice(("email", "call", "meeting"))
                        self._activity(
                            kind, when, owner, ctx, contact_key=contact.key, account_key=account.key
                        )
        for i, lead in enumerate(self.leads):
            known = self.c_account.get(self.l_company[i])
            if known is not None:
                lead.account_key = known.key

    def _expansion_deals(self) -> None:
        """Deals reps open at existing accounts without a lead (upsell, new teams)."""
        rnd = self.rnd
        candidates = sorted(c for c in self.c_contacts if self.c_existing[c])
        if not candidates:
            return
        for _ in range(round(0.03 * self.n)):
            c = rnd.choice(candidates)
            account = self.c_account[c]
            owner = next(i for i, r in enumerate(self.reps) if r.key == account.owner_key)
            created = rnd.randint(self.start, self.now - DAY)
            self._deal(
                account=account,
                contact=rnd.choice(self.c_contacts[c]),
                owner=owner,
                created=created,
                product=rnd.choice(PRODUCTS)[0],
                source=rnd.choice(("Outbound", "Referral", "Partner")),
                q=rnd.gauss(0.2, 1.0),
                city=self.c_city[c],
            )

    # ---------------------------------------------------------------- deals

    def _deal(
        self,
        *,
        account: Account,
        contact: Contact,
        owner: int,
        created: int,
        product: str,
        source: LeadSource,
        q: float,
        city: str,
    ) -> Opportunity:
        rnd, now = self.rnd, self.now
        rep = self.reps[owner]
        size = math.log10(max(account.employees, 5))
        expected = expected_amount(product, account.employees)
        amount = max(1000.0, round(expected * math.exp(rnd.gauss(0.0, 0.35)) / 500.0) * 500.0)

        # How far the deal gets, and when it enters each stage.
        reached = 0
        while reached < 4 and rnd.random() < _sig(_STAGE_CONTINUE[reached] + 0.9 * q):
            reached += 1
        enter = [created]
        for _ in range(reached):
            enter.append(enter[-1] + int((2 + rnd.gammavariate(2.0, 3.0 + 1.5 * size)) * DAY))
        n_slips = min(_poisson(rnd, math.exp(-0.9 - 0.5 * q + 0.25 * reached)), 5)
        close_at = enter[-1] + int((2 + rnd.gammavariate(2.0, 3.0 + 1.5 * size)) * DAY)
        close_at += int(n_slips * rnd.uniform(4, 12) * DAY)
        span = close_at - created
        slip_times = sorted(rnd.randint(created + HOUR, close_at - HOUR) for _ in range(n_slips))

        competitors: list[str] = []
        comp_at = close_at + 1
        if rnd.random() < 0.5:
            competitors = rnd.sample(self.comp_names, 2 if rnd.random() < 0.2 else 1)
            comp_at = created + int(span * rnd.random() ** 2)
        aliases = tuple(rnd.choice(COMPETITORS[name]) for name in competitors)

        events: list[tuple[int, str, str]] = []  # (time, "signal"|"objection", kind)
        for kind, stage, base, _ in _SIGNALS:
            if reached >= stage and rnd.random() < _sig(base + 1.0 * q):
                events.append((rnd.randint(enter[stage], close_at - HOUR), "signal", kind))
        for kind, stage, base, _ in _OBJECTIONS:
            if kind == "incumbent" and not competitors:
                continue
            if reached >= stage and rnd.random() < _sig(base - 0.7 * q):
                at = max(rnd.randint(enter[stage], close_at - HOUR), comp_at if competitors else 0)
                events.append((min(at, close_at - HOUR), "objection", kind))
        events.sort()

        amount_change: tuple[int, float] | None = None
        if reached >= 3 and rnd.random() < 0.4:
            new_amount = max(1000.0, round(amount * rnd.uniform(0.8, 1.2) / 500.0) * 500.0)
            if new_amount != amount:
                amount_change = (rnd.randint(enter[3], close_at - HOUR), new_amount)

        lam = max(span, 7 * DAY) / (30 * DAY) * math.exp(0.7 + 0.4 * q)
        n_acts = min(_poisson(rnd, lam), 80)
        act_times = sorted(rnd.randint(created + HOUR, close_at - HOUR) for _ in range(n_acts))

        # Close dates: planned at creation, pushed at each slip.
        close_date = _day(created + int((25 + 12 * size) * DAY))
        date_changes: list[tuple[int, date, date]] = []
        for at in slip_times:
            new_date = max(close_date, _day(at)) + timedelta(days=rnd.randint(14, 45))
            date_changes.append((at, close_date, new_date))
            close_date = new_date

        is_closed = close_at <= now
        cut = close_at if is_closed else now + 1  # features use what happened strictly before
        if not is_closed:
            visible_dates = [x for x in date_changes if x[0] < cut]
            current = (
                visible_dates[-1][2]
                if visible_dates
                else _day(created + int((25 + 12 * size) * DAY))
            )
            if current <= self.now_dt.date():
                last_seen = max([created] + [x[0] for x in visible_dates])
                at = max(last_seen + 1, now - rnd.randint(0, 3 * DAY))
                at = min(at, now)
                new_date = self.now_dt.date() + timedelta(days=rnd.randint(7, 60))
                visible_dates.append((at, current, new_date))
                current = new_date
            date_changes = visible_dates
            close_date = current

        stage_now = max(j for j in range(reached + 1) if enter[j] < cut)
        slips = sum(1 for at, old, new in date_changes if at < cut and new > old)
        comp_known = bool(competitors) and comp_at < cut
        seen = [e for e in events if e[0] < cut]
        amount_now = amount
        if amount_change is not None and amount_change[0] < cut:
            amount_now = amount_change[1]
        acts_seen = sum(1 for t in act_times if t < cut)
        months = max((min(cut, now) - created) / (30 * DAY), 0.5)
        logit = (
            _DEAL_INTERCEPT
            + _STAGE_EFFECT[stage_now]
            - 0.3 * slips
            - 0.45 * comp_known
            + sum(w for kind, _, _, w in _SIGNALS if any(e[2] == kind for e in seen))
            + sum(w for kind, _, _, w in _OBJECTIONS if any(e[2] == kind for e in seen))
            - 0.6 * max(math.log(amount_now / expected), 0.0)
            + 0.45 * math.log1p(acts_seen / months)
            + 0.35 * (product in rep.expertise)
            + rnd.gauss(0.0, _DEAL_LATENT_SD)
        )
        prob = _sig(logit)
        won = is_closed and rnd.random() < prob
        loss_reason = None
        if is_closed and not won:
            kinds = {e[2] for e in seen}
            weights = (
                2.0 if "price" in kinds else 0.5,
                3.0 if comp_known else 0.0,
                1.0,
                1.5 if "timing" in kinds else 0.5,
                2.0 if "security" in kinds else 0.2,
                1.5 if "integration" in kinds else 0.3,
            )
            loss_reason = rnd.choices(_LOSS_REASONS, weights)[0]

        key = f"opp-{len(self.opportunities) + 1:06d}"
        rep_key = rep.key
        history = [StageChange("StageName", None, STAGES[0], _at(created), rep_key)]
        for j in range(1, stage_now + 1):
            history.append(
                StageChange("StageName", STAGES[j - 1], STAGES[j], _at(enter[j]), rep_key)
            )
        for at, old, new in date_changes:
            history.append(StageChange("CloseDate", old, new, _at(at), rep_key))
        if amount_change is not None and amount_change[0] < cut:
            history.append(
                StageChange("Amount", amount, amount_change[1], _at(amount_change[0]), rep_key)
            )
        if is_closed:
            final = CLOSED_WON if won else CLOSED_LOST
            history.append(
                StageChange("StageName", STAGES[stage_now], final, _at(close_at), rep_key)
            )
            if close_date != _day(close_at):
                history.append(
                    StageChange("CloseDate", close_date, _day(close_at), _at(close_at), rep_key)
                )
                close_date = _day(close_at)
        history.sort(key=lambda h: h.at)

        opp = Opportunity(
            key=key,
            name=f"{account.name} - {product}",
            account_key=account.key,
            owner_key=rep_key,
            contact_key=contact.key,
            amount=amount_now,
            stage=(CLOSED_WON if won else CLOSED_LOST) if is_closed else STAGES[stage_now],
            close_date=close_date,
            created_at=_at(created),
            closed_at=_at(close_at) if is_closed else None,
            is_closed=is_closed,
            is_won=won,
            competitors=competitors if comp_known else [],
            product=product,
            lead_source=source,
            history=history,
            true_probability=prob,
            loss_reason=loss_reason,
        )
        self.opportunities.append(opp)

        # The paper trail: activities, a discovery note, one note per signal or objection, and
        # (after the close, so later in time) a closing note and a kickoff for wins.
        ctx = self._ctx(contact, account, city, product, owner, amount)
        links = {"opportunity_key": key, "contact_key": contact.key, "account_key": account.key}
        for at in act_times:
            if at < cut:
                kind = rnd.choices(_DEAL_ACTS, cum_weights=_DEAL_ACT_CUM)[0]
                self._activity(kind, at, owner, ctx, **links)
        note_links = {"opportunity_key": key, "contact_key": contact.key}
        mood_base = q + rnd.gauss(0.0, 0.8)
        first_at = created + rnd.randint(HOUR, 3 * DAY)
        if first_at < cut:
            ctx.when = self._when(first_at)
            ctx.aliases = aliases[:1]
            title, body = text.deal_note(
                rnd,
                ctx,
                pains=rnd.randint(1, 2),
                competitor=aliases[0] if comp_known and comp_at <= first_at else None,
                mood=mood_base,
            )
            self._note(title, body, first_at, owner, **note_links)
        for at, what, kind in seen:
            ctx.when = self._when(at)
            alias = None
            if competitors and comp_at <= at and (kind == "incumbent" or rnd.random() < 0.35):
                alias = rnd.choice(COMPETITORS[competitors[0]])
            ctx.aliases = (alias,) if alias else ()
            title, body = text.deal_note(
                rnd,
                ctx,
                signals=(kind,) if what == "signal" else (),
                objections=(kind,) if what == "objection" else (),
                competitor=alias,
                pains=1 if rnd.random() < 0.3 else 0,
                mood=mood_base + (0.7 if what == "signal" else -0.7),
            )
            self._note(title, body, at, owner, **note_links)
        if comp_known and not any(comp_at <= e[0] for e in seen) and comp_at > first_at:
            ctx.when = self._when(comp_at)
            alias = rnd.choice(COMPETITORS[competitors[-1]])
            title, body = text.deal_note(rnd, ctx, competitor=alias, mood=mood_base)
            self._note(title, body, comp_at, owner, **note_links)
        if is_closed:
            at = close_at + rnd.randint(HOUR, 2 * DAY)
            if at <= now:
                ctx.when = self._when(at)
                ctx.amount = amount_now
                ctx.aliases = (rnd.choice(COMPETITORS[competitors[0]]),) if competitors else ()
                title, body = text.close_note(rnd, ctx, won=won, loss_reason=loss_reason)
                self._note(title, body, at, owner, **note_links)
            kickoff = close_at + rnd.randint(3 * DAY, 14 * DAY)
            if won and kickoff <= now:
                self.activities.append(
                    Activity(
                        key="",
                        type="meeting",
                        subject=text.KICKOFF[0],
                        body=text.KICKOFF[1].format(first=contact.first_name),
                        at=_at(kickoff),
                        owner_key=rep_key,
                        duration_minutes=60,
                        opportunity_key=key,
                        contact_key=contact.key,
                        account_key=account.key,
                    )
                )
        return opp

    # ---------------------------------------------------------------- assembly

    def run(self) -> History:
        self._make_reps()
        self._make_companies()
        self._make_existing_accounts()
        self._make_leads()
        self._convert()
        self._expansion_deals()
        # Timelines read best in time order; keys follow it.
        self.activities.sort(key=lambda a: a.at)
        for i, activity in enumerate(self.activities, 1):
            activity.key = f"act-{i:07d}"
        self.notes.sort(key=lambda x: x.at)
        for i, note in enumerate(self.notes, 1):
            note.key = f"note-{i:07d}"
        return History(
            seed=self.seed,
            now=self.now_dt,
            reps=self.reps,
            accounts=self.accounts,
            leads=self.leads,
            contacts=self.contacts,
            opportunities=self.opportunities,
            activities=self.activities,
            notes=self.notes,
            competitors={name: list(aliases) for name, aliases in COMPETITORS.items()},
        )
