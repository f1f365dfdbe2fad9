"""Phrase banks and composers for the free text of a generated CRM history.

Reps write notes the way people do: an opening that says who they talked to, a few sentences on what
they heard (pains, objections, buying signals, competitors), a word on how it felt, and a next step.
Every piece here comes in many wordings, and the composers pick among them with the caller's seeded
``random.Random`` so the same seed always yields the same text. Notes carry the personal data real
CRM notes carry (names, e-mail addresses, phone numbers), because redaction is tested against them.

The composers are cheap on purpose: a few ``choice`` calls and one ``str.format`` per sentence, so a
200k-lead history still generates in seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST_NAMES = (
    "Aaliyah", "Aarav", "Abigail", "Adrian", "Aiko", "Alejandro", "Amara", "Amelia", "Ana", "Andre",
    "Anika", "Ben", "Bianca", "Camila", "Carlos", "Chen", "Chloe", "Daniel", "Dana", "Darius",
    "Deepa", "Diego", "Elena", "Elif", "Emeka", "Emma", "Erik", "Fatima", "Felix", "Fiona",
    "Gabriel", "Grace", "Hana", "Hannah", "Hiro", "Ibrahim", "Ines", "Isaac", "Isabel", "Ivan",
    "Jack", "Jamal", "James", "Jana", "Javier", "Jin", "Joao", "Jonas", "Julia", "Kai",
    "Kamala", "Karin", "Kenji", "Laila", "Lars", "Leah", "Leon", "Lucas", "Lucia", "Maya",
    "Mateo", "Mei", "Mia", "Miguel", "Mohammed", "Nadia", "Naomi", "Nikhil", "Nina", "Noah",
    "Olga", "Omar", "Oscar", "Paula", "Pedro", "Priya", "Rafael", "Rahul", "Rania", "Rebecca",
    "Ricardo", "Rosa", "Ryan", "Sakura", "Samir", "Sara", "Sebastian", "Sofia", "Sven", "Tariq",
    "Tomas", "Valentina", "Victor", "Wei", "Yara", "Yusuf", "Zara", "Zoe", "Marcus", "Ingrid",
)  # fmt: skip

LAST_NAMES = (
    "Abbott", "Adeyemi", "Almeida", "Andersson", "Bauer", "Becker", "Bianchi", "Brooks", "Carvalho",
    "Castillo", "Chandra", "Chen", "Costa", "Dubois", "Eriksen", "Fischer", "Fernandes", "Garcia",
    "Goldberg", "Gupta", "Haddad", "Hansen", "Hartley", "Hoffmann", "Ibarra", "Iyer", "Jansen",
    "Johansson", "Kaur", "Kim", "Kowalski", "Kruger", "Larsen", "Laurent", "Lee", "Lindqvist",
    "Lopez", "Mahmoud", "Martin", "Matsumoto", "Mehta", "Mendes", "Meyer", "Moreau", "Morales",
    "Murphy", "Nakamura", "Nguyen", "Nielsen", "Novak", "Okafor", "Olsen", "Ortiz", "Park",
    "Patel", "Pereira", "Petrov", "Quinn", "Ramirez", "Rao", "Reyes", "Richter", "Rossi",
    "Sato", "Schmidt", "Schneider", "Shah", "Silva", "Singh", "Sousa", "Suzuki", "Tanaka",
    "Torres", "Ueda", "Van Dijk", "Vargas", "Verma", "Wagner", "Walsh", "Weber", "Whitfield",
    "Williams", "Wong", "Yamamoto", "Yilmaz", "Zhang", "Zimmermann", "O'Brien", "Delgado", "Kovacs",
)  # fmt: skip

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DEPARTMENTS = (
    "RevOps", "finance", "IT", "security", "marketing ops", "sales leadership", "data", "procurement",
    "customer success", "platform engineering",
)  # fmt: skip
EXEC_TITLES = ("CFO", "CRO", "CIO", "COO", "VP Sales", "VP Finance", "CTO", "Head of IT")
EVENTS = (
    "SaaStr conference",
    "user summit",
    "regional roadshow",
    "partner dinner",
    "industry expo",
)


@dataclass(slots=True)
class NoteContext:
    """What a note can talk about: the people, the company, the product and the numbers."""

    contact: str
    """Full name of the person the rep talked to."""
    email: str
    phone: str
    title: str
    company: str
    city: str
    product: str
    rep_first: str
    amount: float = 0.0
    aliases: tuple[str, ...] = ()
    """Competitor aliases in play, in the wording this note uses."""
    when: str = "next week"
    """A human date ("Nov 14", "2026-11-14", "the 14th") for timelines and next steps."""


# --------------------------------------------------------------------------------------------------
# Openings. Each starts with its own literal words (no opening's literal start is the start of
# another), so tests can tell which template a note came from.

OPENINGS = (
    "Spoke with {contact} at {company} about {product}.",
    "Call with {contact} ({title}) this morning.",
    "Quick sync with {contact} on {weekday}.",
    "Discovery call with {contact} and {n} colleagues from {company}.",
    "Met in person with {contact} at the {city} office.",
    "Caught up with {contact} over coffee in {city}.",
    "Had a {minutes}-minute call with {contact}.",
    "Follow-up call: {contact} joined with their {dept} lead.",
    "Intro meeting held with {contact}, {title} at {company}.",
    "Connected with {contact} after the {event}.",
    "Recap of today's call with {contact}.",
    "Notes from the {weekday} meeting with {contact}.",
    "Zoom with {contact} ran long, about {minutes} minutes.",
    "Phone call with {contact}; the line was bad but we covered the basics.",
    "Demo delivered to {contact} and the {dept} team.",
    "Second meeting with {company}, led by {contact}.",
    "Touched base with {contact} by phone.",
    "Walkthrough for {contact} of the {product} roadmap.",
    "Lunch with {contact} near their {city} office.",
    "Working session with {contact} on requirements.",
    "Finally reached {contact} on the third attempt.",
    "Inbound call from {contact} asking about {product}.",
    "Video call with {contact}, camera off most of the time.",
    "Short call with {contact} between their meetings.",
    "Conference follow-up: {contact} stopped by our booth.",
    "Debrief after the meeting with {contact}.",
    "Status call with {contact} at {company}.",
    "Technical deep dive with {contact} and two of their engineers.",
    "Executive alignment call with {contact}.",
    "Pricing conversation with {contact} today.",
    "Checked in with {contact} over Teams.",
    "Onsite visit to {company}, hosted by {contact}.",
    "Qualification call with {contact} ({title}).",
    "Earlier today, {contact} and I reviewed where things stand.",
    "Per my conversation with {contact}, here is the picture.",
    "Summary of the discussion with {contact}.",
    "Finally got {contact} on the phone for {minutes} minutes.",
    "Joined a call {contact} set up with their {dept} team.",
    "Weekly touchpoint with {contact}.",
    "Email thread with {contact} turned into a call.",
    "Had breakfast with {contact} at the {event}.",
    "Reconnected with {contact} after {n} weeks of silence.",
    "First real conversation with {contact} since the webinar.",
    "Brief chat with {contact} before their board meeting.",
    "Mapped the org chart with {contact} today.",
    "Late-afternoon call with {contact}.",
    "Spent an hour with {contact} going through use cases.",
    "Sat down with {contact} and their {dept} lead.",
)

CLOSE_WON_OPENINGS = (
    "Closed won: {company} signed for {product}.",
    "Signature received from {contact} this afternoon.",
    "Great news, {company} is officially a customer.",
    "Contract countersigned by {contact}; booking it.",
    "Won it. {contact} sent the signed order form.",
    "Deal done with {company} after a long cycle.",
)

CLOSE_LOST_OPENINGS = (
    "Closed lost: {company} will not move forward.",
    "Bad news from {contact} today.",
    "Marking {company} as lost.",
    "Heard back from {contact}: it is a no for now.",
    "Lost this one; {contact} called to explain.",
    "Post-mortem on {company}.",
)

ACCOUNT_OPENINGS = (
    "Account plan for {company}, owner {rep}.",
    "Quarterly account review of {company}.",
    "Relationship map for {company} as of this quarter.",
)

# --------------------------------------------------------------------------------------------------
# Topic sentences. {alias} is a competitor in the wording this note uses.

COMPETITOR = (
    "They are also looking at {alias}.",
    "{alias} is in the mix; {first} did a demo with them last week.",
    "Evaluating us side by side with {alias}.",
    "{alias} came in roughly {pct}% cheaper on the first quote.",
    "Heard that {alias} is offering free implementation to win this.",
    "{first} mentioned {alias} twice, so they are clearly a contender.",
    "Their {dept} team already uses {alias} and likes the reporting.",
    "Competitive: {alias}. We need the battle card before the next call.",
    "{alias} pitched their AI add-on to the {exec} directly.",
    "Someone from {alias} has been calling {first} weekly.",
    "We are up against {alias} again, same as in the last deal in {city}.",
    "{first} asked how we compare with {alias} on data residency.",
    "They shortlisted two vendors: us and {alias}.",
    "A reference call with an {alias} customer is on their calendar.",
    "{alias} has a foothold in the {dept} team.",
)

PAINS = (
    "Forecasting takes {n} hours a week of spreadsheet work.",
    "Their pipeline data lives in {n} different spreadsheets.",
    "Leadership has no single view of the funnel.",
    "Reps waste time on leads that never convert.",
    "They lost visibility after merging two sales teams.",
    "Data quality is poor; about {pct}% of records have no owner.",
    "Handoffs between marketing and sales drop leads on the floor.",
    "Reporting to the board is manual and error-prone.",
    "Current tooling cannot handle their volume of {n}k records.",
    "Win rates dropped {pct}% last year and nobody can say why.",
    "They need territory routing that does not break every quarter.",
    "Renewals keep surprising them at the last minute.",
)

SIGNALS = {
    "champion": (
        "{first} is clearly our champion and is forwarding our deck internally.",
        "We have a real champion in {first}, who is selling this to the {exec}.",
        "{first} offered to set up the meeting with the {exec} themselves.",
        "{first} said they will personally push this through.",
        "Champion identified: {first} owns the problem and the budget conversation.",
        "{first} coached us on how the {exec} likes proposals framed.",
    ),
    "budget": (
        "Budget of ${k}k is approved for this fiscal year.",
        "Finance signed off on the spend, around ${k}k.",
        "{first} confirmed the budget line is approved; no need to wait for next year.",
        "Money is there: ${k}k earmarked by the {exec}.",
        "Budget approved at the last planning cycle.",
        "They have ${k}k set aside and the {exec} has blessed it.",
    ),
    "timeline": (
        "They want to go live by {when}.",
        "Target go-live is {when}; procurement knows.",
        "Mutual close plan agreed: signature by {when}.",
        "{first} set a hard deadline of {when} for a decision.",
        "Timeline is firm: rollout starts {when}.",
        "Decision expected by {when}, per {first}.",
    ),
    "legal": (
        "Legal review kicked off; redlines expected within two weeks.",
        "The MSA is with their counsel now.",
        "Procurement sent our paper to legal on {when}.",
        "{first} says legal started on the DPA this week.",
        "Contract is in legal review; only minor comments so far.",
        "Their lawyers asked for our standard terms, a good sign.",
    ),
    "pilot": (
        "Pilot wrapped up with {n} active users and strong feedback.",
        "POC results were strong: {pct}% less time spent on reporting.",
        "The trial exceeded their success criteria.",
        "Pilot users asked to keep access after the trial ended.",
        "{first} called the pilot a clear success in front of the {exec}.",
        "Proof of concept passed all {n} test cases.",
    ),
}

OBJECTIONS = {
    "price": (
        "Pushback on price: they think we are {pct}% above their number.",
        "{first} said the quote is too rich for this year.",
        "Sticker shock on the {product} tier.",
        "Price is the main blocker; they asked for a multi-year discount.",
        "The {exec} wants us closer to ${k}k.",
        "They flagged cost as a concern more than once.",
    ),
    "security": (
        "InfoSec wants our SOC 2 report and a pen-test summary before anything moves.",
        "A security questionnaire with {n} questions landed; expect three to four weeks.",
        "Security review is holding things up.",
        "Their CISO has concerns about data residency.",
        "{first} warned the security team is slow and picky.",
        "Need to answer their vendor risk assessment first.",
    ),
    "integration": (
        "Worried about integrating with their legacy {stack} setup.",
        "IT thinks the rollout will need {n} engineers for a quarter.",
        "Integration effort is the big unknown for them.",
        "{first} asked twice how long the data migration takes.",
        "They fear a long implementation like their last project.",
        "Their admin team is stretched; integration bandwidth is thin.",
    ),
    "timing": (
        "Not a priority until next quarter.",
        "A reorg is underway and decisions are frozen until {when}.",
        "Timing is bad; they are mid-way through a system migration.",
        "{first} said to circle back after their fiscal year closes.",
        "Hiring freeze means nothing new until {when}.",
        "They are busy with year-end and asked to pause.",
    ),
    "incumbent": (
        "They are locked into {alias} until {when}.",
        "Contract with {alias} renews in {month}; the early-exit fee is steep.",
        "{alias} is the incumbent and switching costs worry {first}.",
        "Their {alias} agreement runs another {n} months.",
        "Existing {alias} contract makes a switch this year hard.",
        "{first} says leadership is comfortable with {alias} for now.",
    ),
}

BUDGET_YES = (
    "Budget is confirmed for this initiative.",
    "{first} has budget allocated already.",
    "They have money earmarked for a tool like ours.",
)
BUDGET_NO = (
    "No budget yet; would need to build a business case.",
    "Budget is unclear and probably sits with the {exec}.",
    "They have not allocated funds for this.",
)

POSITIVE = (
    "Good energy on the call.",
    "Very engaged and asked sharp questions.",
    "{first} was upbeat and wants to move quickly.",
    "Strong interest; they took a lot of notes.",
    "Felt like a real opportunity.",
    "Positive tone throughout.",
    "{first} thanked us twice for the preparation.",
)
NEUTRAL = (
    "Hard to read the room.",
    "Interest seems moderate.",
    "Fairly standard call, nothing surprising.",
    "{first} was polite but noncommittal.",
    "Mixed signals overall.",
)
NEGATIVE = (
    "Lukewarm response overall.",
    "{first} seemed distracted and short on time.",
    "Hard to get a second meeting booked.",
    "Not much urgency on their side.",
    "Felt like they were just gathering quotes.",
    "Little engagement; cameras off and few questions.",
)

NEXT_STEPS = (
    "Next step: send pricing to {email} by {when}.",
    "Follow up with {contact} ({email}) on {when}.",
    "{first} asked us to call {phone} rather than the main line.",
    "Booked a follow-up for {when}; invite sent to {email}.",
    "Action: {rep} to send the case study and call {phone} on {weekday}.",
    "Cc {other} ({other_email}) on the recap, as {first} requested.",
    "Will call {first} back at {phone} after their {dept} sync.",
    "Next meeting {when} with {first} and {other}.",
    "Send the security pack to {email} before {when}.",
    "Loop in {other} from their {dept} team ({other_email}).",
    "To do: draft the mutual plan and share it with {email}.",
    "Reminder to ping {first} on {phone} if no reply by {when}.",
)

CLOSE_WON_BODY = (
    "Final amount ${k}k for {product}.",
    "Kickoff with {first} and the {dept} team is being scheduled.",
    "What won it: {reason}.",
    "Handing over to onboarding; {first} is the main contact ({email}).",
)
WIN_REASONS = (
    "the pilot results",
    "a strong champion",
    "speed of implementation",
    "our security posture",
    "better reporting than the alternatives",
    "price flexibility on a multi-year term",
)
CLOSE_LOST_BODY = {
    "Price": ("Price was the deciding factor.", "They could not justify the cost this year."),
    "Lost to Competitor": (
        "They chose {alias}.",
        "{alias} won on price and an existing relationship.",
        "Went with {alias}; {first} said it was close.",
    ),
    "No Decision": ("They decided to do nothing for now.", "Project was shelved internally."),
    "Timing": ("Timing did not work; revisit in {month}.", "Budget moved to next year."),
    "Security Review": (
        "Could not get through their security review in time.",
        "InfoSec blocked it over data residency.",
    ),
    "Integration Effort": (
        "Integration effort was judged too high.",
        "IT would not take on the migration this year.",
    ),
}
LOST_TAIL = (
    "Keep {first} ({email}) on the nurture list.",
    "Set a reminder to reconnect in {month}.",
    "Lessons noted for the next deal in {city}.",
)


def _weekday(rnd: random.Random) -> str:
    return rnd.choice(WEEKDAYS)


def _fill(rnd: random.Random, template: str, ctx: NoteContext, alias: str = "") -> str:
    """Fill one template; only the placeholders it names are computed."""
    if "{" not in template:
        return template
    first = ctx.contact.split(" ", 1)[0]
    values: dict[str, object] = {
        "contact": ctx.contact,
        "first": first,
        "email": ctx.email,
        "phone": ctx.phone,
        "title": ctx.title,
        "company": ctx.company,
        "city": ctx.city,
        "product": ctx.product,
        "rep": ctx.rep_first,
        "when": ctx.when,
        "alias": alias or (ctx.aliases[0] if ctx.aliases else "the incumbent"),
        "k": max(5, round(ctx.amount / 1000)),
    }
    if "{weekday}" in template:
        values["weekday"] = _weekday(rnd)
    if "{n}" in template:
        values["n"] = rnd.randint(2, 14)
    if "{pct}" in template:
        values["pct"] = rnd.randrange(8, 45)
    if "{minutes}" in template:
        values["minutes"] = rnd.choice((15, 20, 25, 30, 40, 45, 50, 60))
    if "{dept}" in template:
        values["dept"] = rnd.choice(DEPARTMENTS)
    if "{exec}" in template:
        values["exec"] = rnd.choice(EXEC_TITLES)
    if "{event}" in template:
        values["event"] = rnd.choice(EVENTS)
    if "{month}" in template:
        values["month"] = rnd.choice(MONTHS)
    if "{reason}" in template:
        values["reason"] = rnd.choice(WIN_REASONS)
    if "{stack}" in template:
        values["stack"] = rnd.choice(("SAP", "Oracle", "on-prem", "homegrown", "Dynamics"))
    if "{other}" in template:
        other_first, other_last = rnd.choice(FIRST_NAMES), rnd.choice(LAST_NAMES)
        values["other"] = f"{other_first} {other_last}"
        domain = ctx.email.rsplit("@", 1)[-1]
        slug = other_last.lower().replace(" ", "").replace("'", "")
        values["other_email"] = f"{other_first.lower()}.{slug}@{domain}"
    return template.format_map(values)


def _fit_length(sentences: list[str], low: int = 20, high: int = 120) -> str:
    """Join sentences, dropping middle ones past ``high`` words (openings and next steps stay)."""
    counts = [s.count(" ") + 1 for s in sentences]
    while sum(counts) > high and len(sentences) > 2:
        del sentences[-2], counts[-2]
    body = " ".join(sentences)
    if sum(counts) < low:
        body += " Will keep the record updated as things move, and log the next touch here."
    return body


def _tone(rnd: random.Random, ctx: NoteContext, mood: float) -> str:
    """A sentiment sentence; ``mood`` is a noisy score, positive meaning things look good."""
    bank: tuple[str, ...]
    if mood > 0.5:
        bank = POSITIVE
    elif mood < -0.5:
        bank = NEGATIVE
    else:
        bank = NEUTRAL
    return _fill(rnd, rnd.choice(bank), ctx)


def lead_note(
    rnd: random.Random, ctx: NoteContext, *, mood: float, budget: bool, incumbent: str | None
) -> tuple[str, str]:
    """Compose a rep's note on a lead after a first conversation.

    Args:
        rnd: The generator's seeded text randomness.
        ctx: Who, where and what the note is about.
        mood: Noisy sentiment score (positive: the lead sounded keen).
        budget: Whether the lead's ``Budget_Confirmed__c`` is set; the note agrees with it.
        incumbent: A competitor alias the lead already uses, if the note should mention one.

    Returns:
        The note's title and body (20 to 120 words).
    """
    parts = [_fill(rnd, rnd.choice(OPENINGS), ctx)]
    for template in rnd.sample(PAINS, rnd.randint(1, 2)):
        parts.append(_fill(rnd, template, ctx))
    if incumbent is not None:
        parts.append(_fill(rnd, rnd.choice(COMPETITOR), ctx, incumbent))
    if budget or rnd.random() < 0.5:
        parts.append(_fill(rnd, rnd.choice(BUDGET_YES if budget else BUDGET_NO), ctx))
    parts.append(_tone(rnd, ctx, mood))
    parts.append(_fill(rnd, rnd.choice(NEXT_STEPS), ctx))
    title = rnd.choice(("Call summary", "Intro call notes", "First conversation", "Lead notes"))
    return title, _fit_length(parts)


def deal_note(
    rnd: random.Random,
    ctx: NoteContext,
    *,
    signals: tuple[str, ...] = (),
    objections: tuple[str, ...] = (),
    competitor: str | None = None,
    pains: int = 0,
    mood: float = 0.0,
) -> tuple[str, str]:
    """Compose a note on an open deal from the topics that came up in one conversation.

    Args:
        rnd: The generator's seeded text randomness.
        ctx: Who, where and what the note is about.
        signals: Buying-signal kinds (keys of :data:`SIGNALS`) to mention.
        objections: Objection kinds (keys of :data:`OBJECTIONS`) to mention.
        competitor: A competitor alias to mention, if any.
        pains: How many pain sentences to include.
        mood: Noisy sentiment score.

    Returns:
        The note's title and body (20 to 120 words).
    """
    parts = [_fill(rnd, rnd.choice(OPENINGS), ctx)]
    for template in rnd.sample(PAINS, pains):
        parts.append(_fill(rnd, template, ctx))
    for kind in signals:
        parts.append(_fill(rnd, rnd.choice(SIGNALS[kind]), ctx))
    for kind in objections:
        parts.append(_fill(rnd, rnd.choice(OBJECTIONS[kind]), ctx, competitor or ""))
    if competitor is not None and "incumbent" not in objections:
        parts.append(_fill(rnd, rnd.choice(COMPETITOR), ctx, competitor))
    parts.append(_tone(rnd, ctx, mood))
    parts.append(_fill(rnd, rnd.choice(NEXT_STEPS), ctx))
    if signals and not objections:
        title = rnd.choice(("Good progress", "Deal update", "Call summary", "Momentum"))
    elif objections:
        title = rnd.choice(("Concerns raised", "Deal update", "Call summary", "Risks"))
    else:
        title = rnd.choice(("Discovery notes", "Call summary", "Meeting notes", "Deal update"))
    return title, _fit_length(parts)


def close_note(
    rnd: random.Random, ctx: NoteContext, *, won: bool, loss_reason: str | None
) -> tuple[str, str]:
    """Compose the note a rep writes when a deal closes, won or lost.

    Args:
        rnd: The generator's seeded text randomness.
        ctx: Who, where and what the note is about (``aliases`` holds the winning competitor).
        won: Whether the deal was won.
        loss_reason: The recorded loss reason of a lost deal.

    Returns:
        The note's title and body (20 to 120 words).
    """
    if won:
        parts = [_fill(rnd, rnd.choice(CLOSE_WON_OPENINGS), ctx)]
        for template in CLOSE_WON_BODY:
            if rnd.random() < 0.75:
                parts.append(_fill(rnd, template, ctx))
        title = rnd.choice(("Closed won", "Won!", "Deal signed"))
    else:
        parts = [_fill(rnd, rnd.choice(CLOSE_LOST_OPENINGS), ctx)]
        bank = CLOSE_LOST_BODY.get(loss_reason or "No Decision", CLOSE_LOST_BODY["No Decision"])
        parts.append(_fill(rnd, rnd.choice(bank), ctx))
        parts.append(_fill(rnd, rnd.choice(LOST_TAIL), ctx))
        title = rnd.choice(("Closed lost", "Loss debrief", "Deal lost"))
    parts.append(_fill(rnd, rnd.choice(NEXT_STEPS[:4]), ctx))
    return title, _fit_length(parts)


def account_note(
    rnd: random.Random, ctx: NoteContext, *, stakeholders: list[str], incumbent: str | None
) -> tuple[str, str]:
    """Compose an account-plan note naming stakeholders and any incumbent vendor.

    Args:
        rnd: The generator's seeded text randomness.
        ctx: The account's main contact and context.
        stakeholders: Full names of the account's contacts.
        incumbent: A competitor alias the account uses today, if any.

    Returns:
        The note's title and body (20 to 120 words).
    """
    parts = [_fill(rnd, rnd.choice(ACCOUNT_OPENINGS), ctx)]
    parts.append(
        f"Key people: {', '.join(stakeholders)}. Main line for {ctx.contact} is {ctx.phone}."
    )
    parts.append(_fill(rnd, rnd.choice(PAINS), ctx))
    if incumbent is not None:
        parts.append(_fill(rnd, rnd.choice(COMPETITOR), ctx, incumbent))
    parts.append(_fill(rnd, rnd.choice(NEXT_STEPS), ctx))
    return "Account plan", _fit_length(parts)


# --------------------------------------------------------------------------------------------------
# Activities: short subjects and bodies, the way they look in an activity timeline.

_CALL_SUBJECTS = (
    "Call",
    "Discovery call",
    "Follow-up call",
    "Call: {product} questions",
    "Check-in",
)
_CALL_BODIES = (
    "Talked through {product} fit and next steps.",
    "Left a voicemail for {first}; will retry {weekday}.",
    "Outbound call to {phone}, no answer.",
    "{first} picked up; short conversation about timing.",
    "Reviewed open questions from the last meeting.",
    "Walked {first} through pricing options.",
)
_EMAIL_SUBJECTS = (
    "{product} overview",
    "Re: pricing",
    "Case study you asked for",
    "Following up",
    "Re: next steps",
    "Intro: {rep} from the sales team",
)
_EMAIL_BODIES = (
    "Sent overview deck to {email}.",
    "Shared a customer story from their industry.",
    "Followed up on the open questions.",
    "Replied to {first} with the requested details.",
    "Sent calendar options for the next meeting.",
)
_MEETING_SUBJECTS = ("Demo", "Discovery meeting", "Technical review", "Onsite visit", "Exec sync")
_MEETING_BODIES = (
    "Agenda: goals, current process, {product} demo.",
    "Technical review with their admins.",
    "Met {first} and the {dept} team.",
    "Covered rollout plan and success criteria.",
)
_TASK_SUBJECTS = (
    "Send proposal",
    "Update close plan",
    "Book technical review",
    "Prepare business case",
    "Send security pack",
    "Research account",
)
_TASK_BODIES = ("", "Due this week.", "Needed before the next call.", "Owner: {rep}.")

ACTIVITY_TEXT = {
    "call": (_CALL_SUBJECTS, _CALL_BODIES),
    "email": (_EMAIL_SUBJECTS, _EMAIL_BODIES),
    "meeting": (_MEETING_SUBJECTS, _MEETING_BODIES),
    "task": (_TASK_SUBJECTS, _TASK_BODIES),
}

KICKOFF = ("Kickoff meeting", "Onboarding kickoff with {first} and the project team.")


def activity_text(rnd: random.Random, kind: str, ctx: NoteContext) -> tuple[str, str]:
    """Pick a subject and a short body for one logged activity.

    Args:
        rnd: The generator's seeded text randomness.
        kind: ``call``, ``email``, ``meeting`` or ``task``.
        ctx: Who the activity is with.

    Returns:
        The activity's subject and body.
    """
    subjects, bodies = ACTIVITY_TEXT[kind]
    return _fill(rnd, rnd.choice(subjects), ctx), _fill(rnd, rnd.choice(bodies), ctx)
