"""The CRM-neutral shape of a generated history, shared by the generator and both sandbox loaders.

``sandbox.history.generate`` produces a :class:`History`; ``SalesforceSandbox.load_history`` and
``HubSpotSandbox.load_history`` translate it into each CRM's own objects (Lead/Contact/Account/
Opportunity/Task/Event/Note/User in Salesforce; contacts/companies/deals/notes/calls/emails/meetings/
tasks/owners in HubSpot). All ids here are the generator's own stable keys (``"rep-0001"``,
``"lead-000042"``); each sandbox assigns its CRM-style ids when loading and keeps the mapping.
Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

LeadSource = Literal[
    "Web", "Webinar", "Referral", "Paid Search", "Trade Show", "Partner", "Outbound"
]
ActivityType = Literal["call", "email", "meeting", "task"]
EngagementType = Literal["email_open", "email_click", "page_visit", "form_fill"]


@dataclass
class Rep:
    """A sales rep (a CRM user who owns records)."""

    key: str
    first_name: str
    last_name: str
    email: str
    territory: str
    """One of the regions accounts and leads come from."""
    expertise: list[str]
    """Products the rep sells best."""
    capacity: int
    """Open leads the rep can work at once."""
    title: str = "Account Executive"


@dataclass
class Account:
    """A company."""

    key: str
    name: str
    domain: str
    industry: str
    employees: int
    annual_revenue: float
    region: str
    country: str
    owner_key: str
    created_at: datetime


@dataclass
class EngagementEvent:
    """Marketing engagement of a lead (not a CRM activity record; rolled up into lead fields)."""

    type: EngagementType
    at: datetime


@dataclass
class Lead:
    """A lead. In HubSpot it is a contact whose lifecycle stage is lead/marketingqualifiedlead."""

    key: str
    first_name: str
    last_name: str
    email: str
    phone: str
    title: str
    company: str
    account_key: str | None
    """The account the lead's company became or already was, when there is one."""
    industry: str
    employees: int
    annual_revenue: float
    region: str
    country: str
    source: LeadSource
    product_interest: str
    owner_key: str
    created_at: datetime
    engagement: list[EngagementEvent]
    status: str
    """Salesforce-style status: Open - Not Contacted, Working - Contacted, Closed - Converted,
    Closed - Not Converted."""
    converted: bool
    converted_at: datetime | None
    converted_contact_key: str | None
    converted_opportunity_key: str | None
    true_probability: float
    """The hidden model's probability that this lead converts (before the noise draw)."""
    custom: dict[str, object] = field(default_factory=dict)
    """Tenant-specific custom fields (e.g. ``Budget_Confirmed__c``)."""


@dataclass
class Contact:
    """A contact at an account (converted leads become contacts)."""

    key: str
    first_name: str
    last_name: str
    email: str
    phone: str
    title: str
    account_key: str
    owner_key: str
    created_at: datetime
    from_lead_key: str | None


@dataclass
class StageChange:
    """One entry of an opportunity's field history."""

    field: Literal["StageName", "Amount", "CloseDate"]
    old_value: object
    new_value: object
    at: datetime
    by_rep_key: str


@dataclass
class Opportunity:
    """A deal, with its full stage, amount and close-date history."""

    key: str
    name: str
    account_key: str
    owner_key: str
    contact_key: str | None
    amount: float
    stage: str
    """Current stage: Prospecting, Qualification, Needs Analysis, Proposal, Negotiation,
    Closed Won, Closed Lost."""
    close_date: date
    created_at: datetime
    closed_at: datetime | None
    is_closed: bool
    is_won: bool
    competitors: list[str]
    product: str
    lead_source: LeadSource
    history: list[StageChange]
    true_probability: float
    """The hidden model's probability that this deal is won (before the noise draw)."""
    loss_reason: str | None = None


@dataclass
class Activity:
    """A logged call, email, meeting or task on a lead, contact or opportunity."""

    key: str
    type: ActivityType
    subject: str
    body: str
    at: datetime
    owner_key: str
    lead_key: str | None = None
    contact_key: str | None = None
    opportunity_key: str | None = None
    account_key: str | None = None
    duration_minutes: int | None = None
    direction: Literal["inbound", "outbound"] | None = None
    completed: bool = True


@dataclass
class Note:
    """A free-text note or call summary attached to a lead, contact, opportunity or account."""

    key: str
    title: str
    body: str
    at: datetime
    author_key: str
    lead_key: str | None = None
    contact_key: str | None = None
    opportunity_key: str | None = None
    account_key: str | None = None


@dataclass
class History:
    """A whole generated company's CRM history."""

    seed: int
    now: datetime
    """The generator's 'today': every timestamp is at or before it."""
    reps: list[Rep]
    accounts: list[Account]
    leads: list[Lead]
    contacts: list[Contact]
    opportunities: list[Opportunity]
    activities: list[Activity]
    notes: list[Note]
    competitors: dict[str, list[str]]
    """Competitor name to the aliases notes use for it."""
