"""Load a generated history straight into the store as canonical records (tests and benchmarks).

The real path runs a sandbox CRM, syncs it through ``connectors/`` and lands canonical records in
LanceDB. This module is the fast path to the same place: :func:`load_history_into_store` writes what
the connectors would have written, with the generator's keys (``lead-000042``) as CRM ids. It copies
the connectors' lossy spots on purpose, so features built from it behave as they would in production:

* Salesforce ``ConvertedDate`` and a Task's ``ActivityDate`` are dates, so the canonical
  ``converted_at`` and ``occurred_at`` of calls, emails and tasks fall at midnight UTC.
* Marketing engagement arrives only as roll-ups (opens, clicks, visits, forms, last engagement).
* Custom fields keep their CRM names: ``Budget_Confirmed__c`` for Salesforce, ``budget_confirmed``
  for HubSpot (the HubSpot loader's own property naming).
* HubSpot has one contact record for a lead and the contact it becomes: a converted lead's
  ``converted_contact_id`` is the lead's own id there.

The deals' stage, close-date and amount history goes to the ``deal_field_history`` feature table,
as the connectors' field-history reads put it there. What neither can hold is left out exactly as
the connectors leave it out: each lead's individual engagement events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

from core.store import Store
from sandbox.history_model import Activity, History, Lead, Note, Opportunity

_BATCH = 5000


def load_history_into_store(
    store: Store, history: History, tenant_id: str, crm: str = "salesforce"
) -> None:
    """Write a history's users, accounts, contacts, leads, deals, field history, activities, notes.

    Args:
        store: the target store.
        history: a generated history (:func:`sandbox.history.generate`).
        tenant_id: the tenant the records belong to.
        crm: ``salesforce`` or ``hubspot``; decides custom field names and date precision.

    Raises:
        ValueError: an unknown ``crm``.
    """
    if crm not in ("salesforce", "hubspot"):
        raise ValueError(f"unknown crm {crm!r}; expected salesforce or hubspot")
    mapper = _Mapper(history, tenant_id, crm)
    _write(store, tenant_id, "user", (mapper.user(r) for r in history.reps))
    _write(store, tenant_id, "account", (mapper.account(a) for a in history.accounts))
    _write(store, tenant_id, "contact", (mapper.contact(c) for c in history.contacts))
    _write(store, tenant_id, "lead", (mapper.lead(x) for x in history.leads))
    _write(store, tenant_id, "opportunity", (mapper.opportunity(o) for o in history.opportunities))
    _write(store, tenant_id, "activity", (mapper.activity(a) for a in history.activities))
    _write(store, tenant_id, "note", (mapper.note(n) for n in history.notes))
    from copilot.field_history import load_generated_history

    load_generated_history(store, history, tenant_id)


def _write(store: Store, tenant_id: str, entity: str, records: Iterable[dict[str, Any]]) -> None:
    for batch in _chunks(records, _BATCH):
        store.upsert(tenant_id, entity, batch)


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _midnight(moment: datetime | date) -> datetime:
    day = moment.date() if isinstance(moment, datetime) else moment
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class _Mapper:
    """History objects to canonical records for one tenant and CRM."""

    def __init__(self, history: History, tenant_id: str, crm: str) -> None:
        self.history = history
        self.tenant_id = tenant_id
        self.crm = crm
        self.salesforce = crm == "salesforce"
        if not self.salesforce:
            from sandbox.hubspot.loader import LEAD_STATUS_MAP, custom_property_name

            self._status_map: Mapping[str, str] = LEAD_STATUS_MAP
            self._custom_name = custom_property_name
        # On HubSpot the converted contact is the lead's own record.
        self.lead_of_contact = {
            c.key: c.from_lead_key for c in history.contacts if c.from_lead_key is not None
        }

    def _base(self, crm_id: str, created: datetime | None, updated: datetime) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "crm": self.crm,
            "crm_id": crm_id,
            "created_at": created,
            "updated_at": max(updated, created) if created else updated,
        }

    def _custom(self, values: Mapping[str, object]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            out[key if self.salesforce else self._custom_name(key)] = value
        return out

    def user(self, rep: Any) -> dict[str, Any]:
        return {
            **self._base(rep.key, None, self.history.now),
            "first_name": rep.first_name,
            "last_name": rep.last_name,
            "email": rep.email,
            "title": rep.title,
            "is_active": True,
            "territory": rep.territory,
            "custom": self._custom(
                {"Expertise__c": ";".join(rep.expertise), "Capacity__c": float(rep.capacity)}
            ),
        }

    def account(self, acc: Any) -> dict[str, Any]:
        return {
            **self._base(acc.key, acc.created_at, acc.created_at),
            "name": acc.name,
            "domain": acc.domain,
            "industry": acc.industry,
            "employees": acc.employees,
            "annual_revenue": float(acc.annual_revenue),
            "country": acc.country,
            "region": acc.region,
            "owner_id": acc.owner_key,
            "custom": {},
        }

    def contact(self, con: Any) -> dict[str, Any]:
        return {
            **self._base(con.key, con.created_at, con.created_at),
            "first_name": con.first_name,
            "last_name": con.last_name,
            "email": con.email,
            "phone": con.phone,
            "title": con.title,
            "account_id": con.account_key,
            "owner_id": con.owner_key,
            "lifecycle_stage": None if self.salesforce else "customer",
            "custom": {},
        }

    def lead(self, lead: Lead) -> dict[str, Any]:
        counts = {"email_open": 0, "email_click": 0, "page_visit": 0, "form_fill": 0}
        last_touch: datetime | None = None
        for event in lead.engagement:
            counts[event.type] += 1
            if last_touch is None or event.at > last_touch:
                last_touch = event.at
        converted_at = lead.converted_at
        if converted_at is not None and self.salesforce:
            converted_at = _midnight(converted_at)
        moments = [lead.created_at, last_touch, lead.converted_at]
        updated = max(m for m in moments if m is not None)
        if self.salesforce:
            contact_id = lead.converted_contact_key
            status = lead.status
        else:
            contact_id = lead.key if lead.converted else None
            status = self._status_map.get(lead.status, "OPEN")
        return {
            **self._base(lead.key, lead.created_at, updated),
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "email": lead.email,
            "phone": lead.phone,
            "title": lead.title,
            "company": lead.company,
            "industry": lead.industry,
            "employees": lead.employees,
            "annual_revenue": float(lead.annual_revenue),
            "country": lead.country,
            "region": lead.region,
            "source": lead.source,
            "status": status,
            "owner_id": lead.owner_key,
            "is_converted": lead.converted,
            "converted_at": converted_at,
            "converted_contact_id": contact_id,
            "converted_opportunity_id": lead.converted_opportunity_key,
            "email_opens": counts["email_open"],
            "email_clicks": counts["email_click"],
            "page_visits": counts["page_visit"],
            "form_fills": counts["form_fill"],
            "last_engaged_at": last_touch,
            "custom": self._custom({**lead.custom, "Product_Interest__c": lead.product_interest}),
        }

    def opportunity(self, opp: Opportunity) -> dict[str, Any]:
        changes = [c.at for c in opp.history]
        updated = max([opp.created_at, *changes, *([opp.closed_at] if opp.closed_at else [])])
        return {
            **self._base(opp.key, opp.created_at, updated),
            "name": opp.name,
            "account_id": opp.account_key,
            "owner_id": opp.owner_key,
            "amount": float(opp.amount),
            "stage": opp.stage,
            "close_date": opp.close_date,
            "is_closed": opp.is_closed,
            "is_won": opp.is_won,
            "lead_source": opp.lead_source,
            "competitors": list(opp.competitors),
            "custom": self._custom({"Product__c": opp.product, "Loss_Reason__c": opp.loss_reason}),
        }

    def activity(self, act: Activity) -> dict[str, Any]:
        occurred = act.at
        if self.salesforce and act.type != "meeting":
            occurred = _midnight(act.at)  # Task.ActivityDate is a date
        lead_id = act.lead_key
        contact_id = act.contact_key
        if not self.salesforce and contact_id and lead_id is None:
            # A HubSpot engagement on a converted lead's contact is on the lead's own record.
            lead_id = self.lead_of_contact.get(contact_id)
        return {
            **self._base(act.key, act.at, act.at),
            "type": act.type,
            "subject": act.subject,
            "body": act.body,
            "occurred_at": occurred,
            "owner_id": act.owner_key,
            "lead_id": lead_id,
            "contact_id": contact_id,
            "account_id": act.account_key,
            "opportunity_id": act.opportunity_key,
            "duration_minutes": act.duration_minutes,
            "direction": act.direction,
            "status": "Completed" if act.completed else "Not Started",
            "custom": {},
        }

    def note(self, note: Note) -> dict[str, Any]:
        return {
            **self._base(note.key, note.at, note.at),
            "title": note.title,
            "body": note.body,
            "author_id": note.author_key,
            "lead_id": note.lead_key,
            "contact_id": note.contact_key,
            "account_id": note.account_key,
            "opportunity_id": note.opportunity_key,
            "custom": {},
        }
