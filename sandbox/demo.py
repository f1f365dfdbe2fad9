"""``fieldwise demo``: the whole journey on one machine, against the sandbox CRMs.

One command, nothing else installed: both sandbox CRMs start seeded with a generated company
history; the Fieldwise web app starts with the embedded queue and LanceDB in a local folder, with
secrets generated for this run. Fieldwise is then installed into both CRMs through their OAuth
consent, provisions its fields and webhooks, backfills, trains, scores, routes and writes back.
Finally a few records are changed in each CRM the way a rep would, and the demo waits for the AI
fields to update through the webhooks. The summary reads every AI field back through the CRMs' own
APIs, not from Fieldwise's store: the leads' scores, and on deals where a competitor is in play the
battle card, forecast note and risk flags the copilot wrote (offline, with its label, when no
Anthropic key is set).

The Salesforce install hands over the widget secret once; the demo pastes it into the sandbox
org's External Credential as the admin would, so the record pages' widget can sign its calls.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
import secrets
import shutil
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
from hubspot import HubSpot
from hubspot.crm import contacts as hubspot_contacts
from hubspot.crm import deals as hubspot_deals
from simple_salesforce import Salesforce
from werkzeug.security import generate_password_hash
from werkzeug.serving import BaseWSGIServer, make_server

from core.config import Config, Secret
from core.services import Services
from handlers.app import create_app
from handlers.context import EXTENSION
from sandbox.history import best_achievable_auc
from sandbox.runner import Sandboxes, crm_settings, start_sandboxes

log = logging.getLogger(__name__)

SAMPLE_SIZE = 5
LIVE_CHANGES = 3
CONTESTED_SAMPLE = 2
"""Deals with a battle card shown in the summary, per CRM."""
WORK_TIMEOUT_S = 600.0


@dataclass
class DemoRun:
    """A running demo: the sandboxes, the app server, the services and the summary."""

    sandboxes: Sandboxes
    app_server: BaseWSGIServer
    app_url: str
    services: Services
    summary: dict[str, Any]
    admin_password: str = ""
    """The admin console's password for this run (its hash is in the run's configuration)."""

    def stop(self) -> None:
        """Stop the app, its queue and the sandboxes."""
        self.app_server.shutdown()
        stop = getattr(self.services.queue, "stop", None)
        if stop is not None:
            stop()
        self.sandboxes.stop()


def run_demo(data_dir: Path, *, seed_leads: int = 3000, seed: int = 7) -> DemoRun:
    """Run the journey from install to live updates and build the summary.

    Args:
        data_dir: the demo's own folder; it is emptied first so every run starts fresh.
        seed_leads: size of the generated history loaded into both sandbox CRMs.
        seed: seed of the generated history.

    Returns:
        The running demo; call ``stop()`` when done.
    """
    started = time.perf_counter()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    sandboxes = start_sandboxes(
        data_dir / "sandbox", seed_leads=seed_leads, seed=seed, widget_base_url=app_url
    )
    salesforce, hubspot = sandboxes.salesforce, sandboxes.hubspot
    admin_password = secrets.token_urlsafe(12)
    config = Config.for_demo(
        lancedb_uri=str(data_dir / "lancedb"),
        public_url=app_url,
        log_level="WARNING",
        admin_password_hash=Secret(generate_password_hash(admin_password)),
        **crm_settings(salesforce, hubspot),
    )
    app = create_app(config)
    logging.getLogger("werkzeug").setLevel(
        logging.WARNING
    )  # one line per request drowns the summary
    services: Services = app.extensions[EXTENSION]
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="fieldwise-app", daemon=True).start()
    run = DemoRun(sandboxes, server, app_url, services, {}, admin_password)
    try:
        tenants = {
            "salesforce": install_with_consent(
                app_url, "salesforce", salesforce.session(), sandboxes
            ),
            "hubspot": install_with_consent(app_url, "hubspot", requests.Session(), sandboxes),
        }
        wait_for_work(services)
        initial_calls = _api_calls(sandboxes)
        before = {crm: _coldest(services, tenant_id) for crm, tenant_id in tenants.items()}
        live = {
            "salesforce": _live_salesforce_changes(sandboxes, list(before["salesforce"])),
            "hubspot": _live_hubspot_changes(sandboxes, list(before["hubspot"])),
        }
        wait_for_work(services)
        updated = {}
        for crm, changed_ids in live.items():
            rows = _wait_for_updates(sandboxes, crm, changed_ids, before[crm])
            updated[crm] = [{**row, "score_before": before[crm][row["crm_id"]]} for row in rows]
        run.summary = _summary(
            sandboxes,
            services,
            tenants,
            initial_calls,
            live,
            updated,
            time.perf_counter() - started,
            app_url,
        )
    except BaseException:
        run.stop()
        raise
    return run


# --------------------------------------------------------------------------------------------------
# Steps


def install_with_consent(
    app_url: str, crm: str, browser: requests.Session, sandboxes: Sandboxes
) -> str:
    """Install through Fieldwise's own /install route, consenting as the admin would.

    The Salesforce install answers with the widget secret once; it goes into the org's External
    Credential, which the record-page widget signs its calls with.
    """
    start = requests.get(f"{app_url}/install/{crm}", allow_redirects=False, timeout=30)
    if start.status_code != 302:
        raise RuntimeError(f"{crm} install did not start: {start.status_code} {start.text}")
    # The sandbox consent pages approve at once when asked with auto=1 (a person clicks Allow).
    consent = browser.get(start.headers["Location"] + "&auto=1", allow_redirects=False, timeout=30)
    if consent.status_code != 302:
        raise RuntimeError(f"{crm} consent failed: {consent.status_code}")
    finished = requests.get(consent.headers["Location"], timeout=60)
    if finished.status_code != 200:
        raise RuntimeError(f"{crm} install failed: {finished.text}")
    answer = finished.json()
    if crm == "salesforce":
        org = sandboxes.salesforce
        pasted = org.session().post(
            f"{org.instance_url}/__admin/fieldwise-credential",
            json={"secret": answer["widget_secret"]},
            timeout=30,
        )
        if pasted.status_code != 200:
            raise RuntimeError(f"the widget secret was refused: {pasted.text}")
    tenant_id: str = answer["tenant_id"]
    return tenant_id


def wait_for_work(services: Services) -> None:
    """Wait until every queued job has run (copilot and write-back jobs included).

    Raises:
        RuntimeError: the jobs did not finish in time, or one failed (with its error).
    """
    drain = getattr(services.queue, "drain", None)
    if drain is not None and not drain(timeout_s=WORK_TIMEOUT_S):
        raise RuntimeError(f"the demo's jobs did not finish within {WORK_TIMEOUT_S:.0f} s")
    failed = [j for j in getattr(services.queue, "jobs", list)() if j["status"] == "failed"]
    if failed:
        errors = [services.queue.error(j["id"]) for j in failed]
        raise RuntimeError(f"{len(failed)} demo job(s) failed; first: {errors[0]}")


def _coldest(services: Services, tenant_id: str) -> dict[str, int]:
    """The open leads Fieldwise scored lowest, with their scores.

    New activity from a rep should move these scores the most.
    """
    from scoring.predict import latest_results

    results = latest_results(services.store, tenant_id, "lead")
    ranked = sorted(results.values(), key=lambda r: (r.score, r.crm_id))
    return {r.crm_id: r.score for r in ranked[:LIVE_CHANGES]}


def _live_salesforce_changes(sandboxes: Sandboxes, lead_ids: list[str]) -> list[str]:
    """A rep logs fresh engagement on some cold leads, as they would in Salesforce."""
    sf = salesforce_as_rep(sandboxes)
    for lead_id in lead_ids:
        sf.restful(
            f"sobjects/Lead/{lead_id}",
            method="PATCH",
            json={"Title": "VP of Revenue", "Email_Opens__c": 40, "Page_Visits__c": 60,
                  "Form_Fills__c": 5, "Budget_Confirmed__c": True},
        )  # fmt: skip
    return lead_ids


def _live_hubspot_changes(sandboxes: Sandboxes, contact_ids: list[str]) -> list[str]:
    """A rep updates some cold contacts in HubSpot's own UI."""
    for contact_id in contact_ids:
        requests.post(
            f"{sandboxes.hubspot.base_url}/__admin/ui-edit",
            json={"objectType": "contacts", "id": contact_id,
                  "properties": {"jobtitle": "VP of Revenue", "hs_email_open": "40",
                                 "hs_analytics_num_page_views": "60", "num_conversion_events": "5"}},
            timeout=30,
        ).raise_for_status()  # fmt: skip
    return contact_ids


def _wait_for_updates(
    sandboxes: Sandboxes, crm: str, ids: list[str], before: dict[str, int]
) -> list[dict[str, Any]]:
    """Read the changed records back from the CRM until their AI Score differs from before."""
    deadline = time.monotonic() + 60
    while True:
        rows = read_back(sandboxes, crm, ids)
        moved = [
            row for row in rows
            if row.get("AI Score") is not None and float(row["AI Score"]) != before[row["crm_id"]]
        ]  # fmt: skip
        if len(moved) == len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------------
# Reading back through the CRMs' own APIs


def _salesforce_client(sandboxes: Sandboxes, token: str | None = None) -> Salesforce:
    sb = sandboxes.salesforce
    return Salesforce(
        instance_url=sb.instance_url, session_id=token or sb.access_token, session=sb.session()
    )


def salesforce_as_rep(sandboxes: Sandboxes) -> Salesforce:
    """A session for a sales rep (not the integration user Fieldwise writes as)."""
    sb = sandboxes.salesforce
    admin = _salesforce_client(sandboxes)
    rep = admin.query(
        f"SELECT Username FROM User WHERE Id != '{sb.user_id}' AND IsActive = true LIMIT 1"
    )["records"][0]["Username"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    redirect_uri = "https://rep.example/callback"
    consent = sb.session().get(
        f"{sb.instance_url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": sb.client_id, "redirect_uri": redirect_uri,
                "login_hint": rep, "auto": "1", "code_challenge": challenge.decode(),
                "code_challenge_method": "S256"},
        allow_redirects=False, timeout=30,
    )  # fmt: skip
    code = parse_qs(urlparse(consent.headers["Location"]).query)["code"][0]
    token = sb.session().post(
        f"{sb.instance_url}/services/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "client_id": sb.client_id,
              "client_secret": sb.client_secret, "redirect_uri": redirect_uri,
              "code_verifier": verifier},
        timeout=30,
    ).json()["access_token"]  # fmt: skip
    return _salesforce_client(sandboxes, token)


def _hubspot_client(sandboxes: Sandboxes) -> HubSpot:
    return HubSpot(access_token=sandboxes.hubspot.access_token, host=sandboxes.hubspot.base_url)


_SF_FIELDS = {
    "Name": "Name", "AI Score": "Fieldwise_AI_Score__c", "AI Grade": "Fieldwise_AI_Grade__c",
    "AI Reasons": "Fieldwise_AI_Reasons__c", "AI Next Step": "Fieldwise_AI_Next_Step__c",
    "AI Suggested Owner": "Fieldwise_AI_Suggested_Owner__c",
    "AI Score Changed At": "Fieldwise_AI_Score_Changed_At__c",
    "AI Model Version": "Fieldwise_AI_Model_Version__c",
}  # fmt: skip
_HS_FIELDS = {
    "First name": "firstname", "Last name": "lastname",
    "AI Score": "fieldwise_ai_score", "AI Grade": "fieldwise_ai_grade",
    "AI Reasons": "fieldwise_ai_reasons", "AI Next Step": "fieldwise_ai_next_step",
    "AI Suggested Owner": "fieldwise_ai_suggested_owner",
    "AI Score Changed At": "fieldwise_ai_score_changed_at",
    "AI Model Version": "fieldwise_ai_model_version",
}  # fmt: skip
_SF_DEAL_FIELDS = {
    "Name": "Name", "AI Battle Card": "Fieldwise_AI_Battle_Card__c",
    "AI Forecast Note": "Fieldwise_AI_Forecast_Note__c",
    "AI Risk Flags": "Fieldwise_AI_Risk_Flags__c",
}  # fmt: skip
_HS_DEAL_FIELDS = {
    "Name": "dealname", "AI Battle Card": "fieldwise_ai_battle_card",
    "AI Forecast Note": "fieldwise_ai_forecast_note", "AI Risk Flags": "fieldwise_ai_risk_flags",
}  # fmt: skip


def read_back(
    sandboxes: Sandboxes, crm: str, ids: list[str] | None = None, *, deals: bool = False
) -> list[dict[str, Any]]:
    """Records as the CRM shows them, read through its own API.

    Leads: the given ids, or the top-scored ones. Deals (``deals=True``): the given ids, or a few
    that carry an AI Battle Card (a competitor is in play).
    """
    if crm == "salesforce":
        return _read_back_salesforce(sandboxes, ids, deals)
    return _read_back_hubspot(sandboxes, ids, deals)


def _read_back_salesforce(
    sandboxes: Sandboxes, ids: list[str] | None, deals: bool
) -> list[dict[str, Any]]:
    sf = _salesforce_client(sandboxes)
    fields, sobject = (_SF_DEAL_FIELDS, "Opportunity") if deals else (_SF_FIELDS, "Lead")
    if ids:
        where, order = "Id IN (" + ", ".join(f"'{i}'" for i in ids) + ")", "Id"
    elif deals:
        where, order = "Fieldwise_AI_Battle_Card__c != null", "Id"
    else:
        where, order = "Fieldwise_AI_Score__c != null", "Fieldwise_AI_Score__c DESC"
    limit = len(ids) if ids else CONTESTED_SAMPLE if deals else SAMPLE_SIZE
    soql = (
        f"SELECT Id, {', '.join(fields.values())} FROM {sobject} WHERE {where} "
        f"ORDER BY {order} LIMIT {limit}"
    )
    return [
        {"crm_id": r["Id"], **{label: r.get(api) for label, api in fields.items()}}
        for r in sf.query(soql)["records"]
    ]


def _read_back_hubspot(
    sandboxes: Sandboxes, ids: list[str] | None, deals: bool
) -> list[dict[str, Any]]:
    client = _hubspot_client(sandboxes)
    if deals:
        api, models, fields = client.crm.deals, hubspot_deals, _HS_DEAL_FIELDS
        present, limit, sorts = "fieldwise_ai_battle_card", CONTESTED_SAMPLE, []
    else:
        api, models, fields = client.crm.contacts, hubspot_contacts, _HS_FIELDS
        present, limit = "fieldwise_ai_score", SAMPLE_SIZE
        sorts = [{"propertyName": "fieldwise_ai_score", "direction": "DESCENDING"}]
    properties = list(fields.values())
    if ids:
        records = api.batch_api.read(
            models.BatchReadInputSimplePublicObjectId(
                inputs=[models.SimplePublicObjectId(id=i) for i in ids], properties=properties
            )
        ).results
    else:
        has_value = models.Filter(property_name=present, operator="HAS_PROPERTY")
        records = api.search_api.do_search(
            models.PublicObjectSearchRequest(
                filter_groups=[models.FilterGroup(filters=[has_value])],
                sorts=sorts,
                limit=limit,
                properties=properties,
            )
        ).results
    rows = []
    for record in records:
        row = {label: record.properties.get(api_name) for label, api_name in fields.items()}
        if not deals:
            row["Name"] = " ".join(filter(None, (row.pop("First name"), row.pop("Last name"))))
        rows.append({"crm_id": record.id, **row})
    return rows


# --------------------------------------------------------------------------------------------------
# Summary


def _api_calls(sandboxes: Sandboxes) -> dict[str, int]:
    calls = {}
    for crm, sandbox in (("salesforce", sandboxes.salesforce), ("hubspot", sandboxes.hubspot)):
        calls[crm] = sum(1 for e in sandbox.state.log.snapshot()["requests"] if e.get("api_call"))
    return calls


def _summary(
    sandboxes: Sandboxes,
    services: Services,
    tenants: dict[str, str],
    initial_calls: dict[str, int],
    live: dict[str, list[str]],
    updated: dict[str, list[dict[str, Any]]],
    seconds: float,
    app_url: str,
) -> dict[str, Any]:
    from scoring.predict import latest_results
    from scoring.registry import ModelRegistry

    store = services.store
    registry = ModelRegistry(store)
    calls = _api_calls(sandboxes)
    history = sandboxes.history
    best = {
        "lead": best_achievable_auc(history, "leads") if history else None,
        "opportunity": best_achievable_auc(history, "opportunities") if history else None,
    }
    crms: dict[str, Any] = {}
    for crm, tenant_id in tenants.items():
        models = {}
        for kind in ("lead", "opportunity"):
            model = registry.current(tenant_id, kind)
            report = model.report if model else {}
            models[kind] = {
                "model_version": model.version if model else None,
                "rule_based": model.rule_based if model else None,
                "auc": report.get("auc"),
                "best_auc": best[kind],
                "ece": report.get("ece"),
                "lift_top20": report.get("lift_top20"),
                "n_train": report.get("n_train"),
                "n_holdout": report.get("n_holdout"),
            }
        leads = latest_results(store, tenant_id, "lead")
        written = {
            e["crm_id"] for e in store.audit(tenant_id, limit=10**9) if e["outcome"] == "written"
        }
        crms[crm] = {
            "tenant_id": tenant_id,
            "api_calls": calls[crm],
            "api_calls_for_live_changes": calls[crm] - initial_calls[crm],
            "records_synced": {
                entity: store.count(tenant_id, entity)
                for entity in (
                    "user",
                    "account",
                    "lead",
                    "contact",
                    "opportunity",
                    "activity",
                    "note",
                )
            },
            "scored": len(leads) + len(latest_results(store, tenant_id, "opportunity")),
            "written": len(written),
            "grades": dict(Counter(r.grade for r in leads.values())),
            "models": models,
            "sample_leads": read_back(sandboxes, crm),
            "live_changes": updated[crm],
            "contested_deals": [
                {**row, "record_page": _record_page(sandboxes, crm, row["crm_id"])}
                for row in read_back(sandboxes, crm, deals=True)
            ],
            "record_pages": _record_page(sandboxes, crm),
        }
    lead_models = [c["models"]["lead"] for c in crms.values()]
    return {
        "seconds": round(seconds, 1),
        "auc": lead_models[0]["auc"],
        "best_auc": lead_models[0]["best_auc"],
        "crms": crms,
        "live_change_ids": live,
        "admin_console": f"{app_url}/admin/",
    }


def _record_page(sandboxes: Sandboxes, crm: str, deal_id: str | None = None) -> str:
    """The sandbox's lead list, or a deal's record page (with the Fieldwise widget)."""
    if crm == "salesforce":
        base = sandboxes.salesforce.instance_url
        return f"{base}/ui/Opportunity/{deal_id}" if deal_id else f"{base}/ui/Lead"
    base = sandboxes.hubspot.base_url
    return f"{base}/ui/deals/{deal_id}" if deal_id else f"{base}/ui/contacts"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def render(summary: dict[str, Any]) -> str:
    """The summary as a person reads it in a terminal."""
    lines = [f"Fieldwise demo finished in {summary['seconds']} s", ""]
    for crm, facts in summary["crms"].items():
        lead = facts["models"]["lead"]
        opportunity = facts["models"]["opportunity"]
        lines += [
            f"{crm.title()} ({facts['tenant_id']})",
            f"  synced: {json.dumps(facts['records_synced'])}",
            f"  scored {facts['scored']} records, wrote AI fields on {facts['written']}, "
            f"{facts['api_calls']} API calls in all ({facts['api_calls_for_live_changes']} for the "
            "live changes)",
            f"  lead model {lead['model_version']}: holdout AUC {_num(lead['auc'])} "
            f"(best achievable {_num(lead['best_auc'])}), ECE {_num(lead['ece'])}, "
            f"lift in the top 20% {_num(lead['lift_top20'])}",
            f"  opportunity model {opportunity['model_version']}"
            + (" (rule-based: not enough history)" if opportunity["rule_based"] else "")
            + f": AUC {_num(opportunity['auc'])}",
            f"  grades: {json.dumps(facts['grades'])}",
            "  top leads as the CRM shows them:",
        ]
        for row in facts["sample_leads"]:
            lines.append(
                f"    {row['Name']}: {row['AI Score']} {row['AI Grade']} - {row['AI Next Step']}"
            )
        lines.append("  changed live by a rep, then rescored through the webhooks:")
        for row in facts["live_changes"]:
            lines.append(
                f"    {row['Name']}: {row['score_before']} -> {row['AI Score']} {row['AI Grade']} "
                f"(changed at {row['AI Score Changed At']})"
            )
        lines.append("  deals with a competitor in play, as the CRM shows them:")
        for deal in facts["contested_deals"]:
            card = _plain_text(deal["AI Battle Card"] or "").splitlines()
            lines += [
                f"    {deal['Name']} ({deal['record_page']})",
                f"      AI Battle Card: {' / '.join(card[:2])} [{card[-1] if card else ''}]",
                f"      AI Forecast Note: {deal['AI Forecast Note']}",
                "      AI Risk Flags: "
                + "\n                     ".join((deal["AI Risk Flags"] or "").splitlines()),
            ]
        lines.append(f"  record pages: {facts['record_pages']}")
        lines.append("")
    lines.append(f"Admin console: {summary['admin_console']}")
    return "\n".join(lines)


_TAG = re.compile(r"<[^>]+>")


def _plain_text(value: str) -> str:
    """An HTML field value (the battle card) as lines of text for the terminal."""
    broken = re.sub(r"</(?:p|li)>", "\n", value)
    return html.unescape(_TAG.sub("", broken)).strip()


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
