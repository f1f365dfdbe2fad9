"""Load a generated :class:`~sandbox.history_model.History` straight into the sandbox's store.

Reps become Users, accounts Accounts, leads Leads (marketing engagement rolled up into
``Email_Opens__c``, ``Email_Clicks__c``, ``Page_Visits__c``, ``Form_Fills__c`` and
``Last_Engagement_Date__c``; the lead's tenant-specific ``custom`` values as custom fields; converted
leads with ``IsConverted``, ``ConvertedDate`` and the converted ids), contacts Contacts,
opportunities Opportunities (``Competitors__c`` multi-select picklist, ``Product__c``,
``Loss_Reason__c``) with their ``OpportunityFieldHistory``, calls/emails/tasks Tasks, meetings
Events and notes Notes. Timestamps come from the history. Records are written in bulk, one
transaction per object, not through HTTP; custom fields are registered so describe shows them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.history_model import Activity, History
from sandbox.salesforce.ids import format_datetime
from sandbox.salesforce.metadata import field_from_metadata
from sandbox.salesforce.records import HISTORY_TRACKED, RecordEngine

if TYPE_CHECKING:
    from sandbox.salesforce.server import SalesforceSandbox

_NUMBER = {"type": "Number", "precision": 18, "scale": 0}
_TEXT = {"type": "Text", "length": 255}
BASE_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "User": {"Territory__c": _TEXT, "Expertise__c": _TEXT, "Capacity__c": _NUMBER},
    "Account": {"Region__c": _TEXT},
    "Lead": {
        "Region__c": _TEXT,
        "Product_Interest__c": _TEXT,
        "Email_Opens__c": _NUMBER,
        "Email_Clicks__c": _NUMBER,
        "Page_Visits__c": _NUMBER,
        "Form_Fills__c": _NUMBER,
        "Last_Engagement_Date__c": {"type": "DateTime"},
    },
    "Opportunity": {"Product__c": _TEXT, "Loss_Reason__c": _TEXT},
}
_ENGAGEMENT_FIELDS = {
    "email_open": "Email_Opens__c",
    "email_click": "Email_Clicks__c",
    "page_visit": "Page_Visits__c",
    "form_fill": "Form_Fills__c",
}


def _dt(value: datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _label(name: str) -> str:
    return name.removesuffix("__c").replace("_", " ")


def _custom_type(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "Checkbox", "defaultValue": "false"}
    if isinstance(value, int):
        return dict(_NUMBER)
    if isinstance(value, float):
        return {"type": "Number", "precision": 18, "scale": 2}
    if isinstance(value, datetime):
        return {"type": "DateTime"}
    if isinstance(value, date):
        return {"type": "Date"}
    return dict(_TEXT)


def _custom_value(value: object) -> object:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return ";".join(str(v) for v in value)
    return value


def _register_fields(sandbox: SalesforceSandbox, history: History) -> None:
    wanted: dict[str, dict[str, dict[str, Any]]] = {k: dict(v) for k, v in BASE_FIELDS.items()}
    competitors = sorted(history.competitors)
    wanted["Opportunity"]["Competitors__c"] = {
        "type": "MultiselectPicklist",
        "visibleLines": 4,
        "valueSet": {
            "restricted": False,
            "valueSetDefinition": {
                "sorted": True,
                "value": [{"fullName": c, "label": c, "default": False} for c in competitors],
            },
        },
    }
    for lead in history.leads:
        for name, value in lead.custom.items():
            if name not in wanted["Lead"] and value is not None:
                wanted["Lead"][name] = _custom_type(value)
    items = []
    for object_name, fields in wanted.items():
        for name, meta in fields.items():
            existing = sandbox.schema.custom_field(object_name, name)
            if existing is not None and not (
                name == "Competitors__c" and set(competitors) - set(existing.picklist)
            ):
                continue
            full_name = f"{object_name}.{name}"
            obj, fdef = field_from_metadata(
                sandbox.schema,
                full_name,
                {"fullName": full_name, "label": _label(name), **meta},
                existing.metadata.get("id") if existing else None,
            )
            items.append((obj, fdef))
    if items:
        sandbox.schema.add_custom_fields(items, replace=True)


class _Batch:
    """Builds the records of one object with system fields, then writes them in one go."""

    def __init__(self, sandbox: SalesforceSandbox, object_name: str, count: int) -> None:
        self.engine: RecordEngine = sandbox.engine
        obj = sandbox.schema.object(object_name)
        assert obj is not None
        self.obj = obj
        self.ids = iter(self.engine.ids.make(obj.key_prefix, count)) if count else iter(())
        self.blank = self.engine.blank_record(obj)
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.default_user = sandbox.user_id

    def add(
        self,
        values: dict[str, Any],
        created: datetime,
        modified: datetime | None = None,
        created_by: str | None = None,
    ) -> str:
        record_id = next(self.ids)
        record = dict(self.blank)
        record.update(values)
        by = created_by or values.get("OwnerId") or self.default_user
        modified_text = _dt(max(modified or created, created))
        record.update(
            {
                "Id": record_id,
                "IsDeleted": False,
                "CreatedDate": _dt(created),
                "CreatedById": by,
                "LastModifiedDate": modified_text,
                "LastModifiedById": by,
                "SystemModstamp": modified_text,
            }
        )
        RecordEngine.derive(self.obj, record)
        self.rows.append((record_id, record))
        return record_id

    def write(self, sandbox: SalesforceSandbox) -> list[str]:
        sandbox.state.store.put_many(self.obj.name, self.rows)
        ids = [rid for rid, _ in self.rows]
        sandbox.relay.gap_events(self.obj.name, ids, sandbox.user_id)
        return ids


def load_history(sandbox: SalesforceSandbox, history: History) -> dict[str, str]:
    """Translate a History into Salesforce records and write them to the store.

    Args:
        sandbox: the target sandbox (need not be started).
        history: the generated history.

    Returns:
        A mapping from every generator key (reps, accounts, leads, contacts, opportunities,
        activities, notes) to the Salesforce id it was given.
    """
    _register_fields(sandbox, history)
    ids: dict[str, str] = {}
    with sandbox.engine.lock:
        users = _Batch(sandbox, "User", len(history.reps))
        for rep in history.reps:
            ids[rep.key] = users.add(
                {
                    "Username": rep.email,
                    "FirstName": rep.first_name,
                    "LastName": rep.last_name,
                    "Email": rep.email,
                    "Alias": (rep.first_name[:1] + rep.last_name)[:8].lower(),
                    "Title": rep.title,
                    "Department": rep.territory,
                    "IsActive": True,
                    "UserType": "Standard",
                    "TimeZoneSidKey": "GMT",
                    "Territory__c": rep.territory,
                    "Expertise__c": ";".join(rep.expertise),
                    "Capacity__c": float(rep.capacity),
                },
                history.now - timedelta(days=730),
                created_by=sandbox.user_id,
            )
        users.write(sandbox)

        def owner(key: str | None) -> str:
            return ids.get(key or "", sandbox.user_id)

        accounts = _Batch(sandbox, "Account", len(history.accounts))
        for acc in history.accounts:
            ids[acc.key] = accounts.add(
                {
                    "Name": acc.name,
                    "Website": acc.domain,
                    "Industry": acc.industry,
                    "NumberOfEmployees": acc.employees,
                    "AnnualRevenue": float(acc.annual_revenue),
                    "BillingCountry": acc.country,
                    "Region__c": acc.region,
                    "Type": "Prospect",
                    "OwnerId": owner(acc.owner_key),
                },
                acc.created_at,
            )
        accounts.write(sandbox)

        contacts = _Batch(sandbox, "Contact", len(history.contacts))
        for con in history.contacts:
            ids[con.key] = contacts.add(
                {
                    "FirstName": con.first_name,
                    "LastName": con.last_name,
                    "Email": con.email,
                    "Phone": con.phone,
                    "Title": con.title,
                    "AccountId": ids.get(con.account_key),
                    "OwnerId": owner(con.owner_key),
                },
                con.created_at,
            )
        contacts.write(sandbox)

        opps = _Batch(sandbox, "Opportunity", len(history.opportunities))
        history_rows = sum(len(o.history) + 1 for o in history.opportunities)
        field_history = _Batch(sandbox, "OpportunityFieldHistory", history_rows)
        for opp in history.opportunities:
            changed_at = [c.at for c in opp.history]
            last = max([opp.created_at, *changed_at, *([opp.closed_at] if opp.closed_at else [])])
            opp_id = opps.add(
                {
                    "Name": opp.name,
                    "AccountId": ids.get(opp.account_key),
                    "ContactId": ids.get(opp.contact_key or ""),
                    "Amount": float(opp.amount),
                    "StageName": opp.stage,
                    "CloseDate": opp.close_date.isoformat(),
                    "LeadSource": opp.lead_source,
                    "OwnerId": owner(opp.owner_key),
                    "Competitors__c": ";".join(opp.competitors) or None,
                    "Product__c": opp.product,
                    "Loss_Reason__c": opp.loss_reason,
                    "Type": "New Business",
                },
                opp.created_at,
                last,
            )
            ids[opp.key] = opp_id
            entries: list[tuple[str, Any, Any, datetime, str]] = [
                ("created", None, None, opp.created_at, owner(opp.owner_key))
            ]
            for change in opp.history:
                entries.append(
                    (
                        change.field,
                        _custom_value(change.old_value),
                        _custom_value(change.new_value),
                        change.at,
                        owner(change.by_rep_key),
                    )
                )
            for name, old, new, at, by in entries:
                field_history.add(
                    {
                        "OpportunityId": opp_id,
                        "Field": name,
                        "DataType": HISTORY_TRACKED.get(name, "Text"),
                        "OldValue": float(old) if name == "Amount" and old is not None else old,
                        "NewValue": float(new) if name == "Amount" and new is not None else new,
                    },
                    at,
                    created_by=by,
                )
        opps.write(sandbox)
        field_history.write(sandbox)

        leads = _Batch(sandbox, "Lead", len(history.leads))
        for lead in history.leads:
            counts = dict.fromkeys(_ENGAGEMENT_FIELDS.values(), 0.0)
            last_touch: datetime | None = None
            for event in lead.engagement:
                counts[_ENGAGEMENT_FIELDS[event.type]] += 1
                last_touch = event.at if last_touch is None or event.at > last_touch else last_touch
            values: dict[str, Any] = {
                "FirstName": lead.first_name,
                "LastName": lead.last_name,
                "Email": lead.email,
                "Phone": lead.phone,
                "Title": lead.title,
                "Company": lead.company,
                "Industry": lead.industry,
                "NumberOfEmployees": lead.employees,
                "AnnualRevenue": float(lead.annual_revenue),
                "Country": lead.country,
                "Region__c": lead.region,
                "LeadSource": lead.source,
                "Product_Interest__c": lead.product_interest,
                "OwnerId": owner(lead.owner_key),
                "Status": lead.status,
                "Last_Engagement_Date__c": _dt(last_touch),
                **counts,
            }
            for name, value in lead.custom.items():
                values[name] = _custom_value(value)
            if lead.converted:
                contact_id = ids.get(lead.converted_contact_key or "")
                contact = sandbox.state.store.get("Contact", contact_id) if contact_id else None
                values.update(
                    {
                        "IsConverted": True,
                        "ConvertedDate": lead.converted_at.date().isoformat()
                        if lead.converted_at
                        else None,
                        "ConvertedContactId": contact_id,
                        "ConvertedOpportunityId": ids.get(lead.converted_opportunity_key or ""),
                        "ConvertedAccountId": (contact or {}).get("AccountId")
                        or ids.get(lead.account_key or ""),
                    }
                )
            modified = max(
                [
                    lead.created_at,
                    *([last_touch] if last_touch else []),
                    *([lead.converted_at] if lead.converted_at else []),
                ]
            )
            ids[lead.key] = leads.add(values, lead.created_at, modified)
        leads.write(sandbox)

        meetings = [a for a in history.activities if a.type == "meeting"]
        tasks = [a for a in history.activities if a.type != "meeting"]
        task_batch = _Batch(sandbox, "Task", len(tasks))
        for act in tasks:
            ids[act.key] = task_batch.add(_task_values(act, ids, owner), act.at)
        task_batch.write(sandbox)
        event_batch = _Batch(sandbox, "Event", len(meetings))
        for act in meetings:
            minutes = act.duration_minutes or 30
            values = _links(act, ids)
            values.update(
                {
                    "Subject": act.subject,
                    "Description": act.body,
                    "Type": "Meeting",
                    "StartDateTime": _dt(act.at),
                    "ActivityDateTime": _dt(act.at),
                    "EndDateTime": _dt(act.at + timedelta(minutes=minutes)),
                    "DurationInMinutes": minutes,
                    "OwnerId": owner(act.owner_key),
                }
            )
            ids[act.key] = event_batch.add(values, act.at)
        event_batch.write(sandbox)

        notes = _Batch(sandbox, "Note", len(history.notes))
        for note in history.notes:
            parent = (
                ids.get(note.opportunity_key or "")
                or ids.get(note.contact_key or "")
                or ids.get(note.lead_key or "")
                or ids.get(note.account_key or "")
            )
            if parent is None:
                continue
            ids[note.key] = notes.add(
                {
                    "Title": note.title[:80],
                    "Body": note.body,
                    "ParentId": parent,
                    "IsPrivate": False,
                    "OwnerId": owner(note.author_key),
                },
                note.at,
            )
        notes.write(sandbox)
    return ids


def _links(act: Activity, ids: dict[str, str]) -> dict[str, Any]:
    who = ids.get(act.contact_key or "") or ids.get(act.lead_key or "")
    what = None
    if not (act.lead_key and not act.contact_key):  # a lead cannot be combined with WhatId
        what = ids.get(act.opportunity_key or "") or ids.get(act.account_key or "")
    return {"WhoId": who, "WhatId": what}


def _task_values(act: Activity, ids: dict[str, str], owner: Any) -> dict[str, Any]:
    subtype = {"call": "Call", "email": "Email"}.get(act.type, "Task")
    values = _links(act, ids)
    values.update(
        {
            "Subject": act.subject,
            "Description": act.body,
            "ActivityDate": act.at.date().isoformat(),
            "Status": "Completed" if act.completed else "Not Started",
            "Priority": "Normal",
            "TaskSubtype": subtype,
            "Type": {"Call": "Call", "Email": "Email"}.get(subtype, "Other"),
            "OwnerId": owner(act.owner_key),
        }
    )
    if act.type == "call":
        values["CallDurationInSeconds"] = (act.duration_minutes or 0) * 60
        values["CallType"] = {"inbound": "Inbound", "outbound": "Outbound"}.get(act.direction or "")
    return values
