"""A plain, server-rendered stand-in for HubSpot's record pages.

``/ui/<objectType>`` lists records with links; ``/ui/<objectType>/<id>`` shows every property
(HubSpot's own and custom ones such as the AI properties Fieldwise writes) and embeds the Fieldwise
card in an iframe when the sandbox knows the widget's base URL. Everything shown is HTML-escaped.

The card is rendered here, as HubSpot renders an app card: ``/ui/<objectType>/<id>/fieldwise``
calls Fieldwise's ``/cards/hubspot`` the way ``hubspot.fetch`` does (portalId, userId, userEmail
and appId appended, signed with the app's client secret, v3) and shows the JSON; its thumbs
buttons post back here and are forwarded, signed the same way, to ``/feedback``.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from sandbox.common import render_fieldwise_card, render_fieldwise_problem
from sandbox.hubspot.properties import OBJECT_TYPE_IDS, canonical_type
from sandbox.hubspot.webhooks import sign_v3

if TYPE_CHECKING:
    from sandbox.hubspot.server import HubSpotSandbox

PAGE_SIZE = 100

_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#33475b}"
    "table{border-collapse:collapse}td,th{border:1px solid #cbd6e2;padding:4px 8px;text-align:left}"
    "th{background:#f5f8fa}.custom{background:#fdf7e3}iframe{border:1px solid #cbd6e2}"
)


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return Response(html, status=status, mimetype="text/html")


def register(app: Flask, sb: HubSpotSandbox) -> None:
    """Add the record list and record pages."""

    @app.get("/ui/")
    @app.get("/ui")
    def ui_home() -> Response:
        links = "".join(
            f"<li><a href='/ui/{escape(t)}'>{escape(t)}</a> ({sb.repo.count(t)})</li>"
            for t in OBJECT_TYPE_IDS
        )
        return _page(f"Portal {sb.portal_id}", f"<h1>Portal {sb.portal_id}</h1><ul>{links}</ul>")

    @app.get("/ui/<object_type>")
    def ui_list(object_type: str) -> Response:
        canonical = canonical_type(object_type)
        if canonical is None:
            return _page("Not found", f"<p>Unknown object type {escape(object_type)}</p>", 404)
        try:
            offset = max(0, int(request.args.get("offset", "0")))
        except ValueError:
            offset = 0
        records = sb.repo.all(canonical)
        rows = []
        for rec in records[offset : offset + PAGE_SIZE]:
            label = _label(canonical, rec["properties"])
            rows.append(
                f"<tr><td><a href='/ui/{escape(canonical)}/{escape(rec['id'])}'>"
                f"{escape(rec['id'])}</a></td><td>{escape(label)}</td>"
                f"<td>{escape(rec['updatedAt'])}</td></tr>"
            )
        more = ""
        if offset + PAGE_SIZE < len(records):
            more = f"<p><a href='/ui/{escape(canonical)}?offset={offset + PAGE_SIZE}'>Next page</a></p>"
        body = (
            f"<h1>{escape(canonical.capitalize())} ({len(records)})</h1>"
            "<table><tr><th>ID</th><th>Name</th><th>Last modified</th></tr>"
            + "".join(rows)
            + f"</table>{more}"
        )
        return _page(canonical, body)

    @app.get("/ui/<object_type>/<record_id>")
    def ui_record(object_type: str, record_id: str) -> Response:
        canonical = canonical_type(object_type)
        rec = sb.repo.get(canonical, record_id) if canonical else None
        if canonical is None or rec is None:
            return _page(
                "Not found", f"<p>No {escape(object_type)} record {escape(record_id)}</p>", 404
            )
        rows = []
        for name in sorted(rec["properties"]):
            prop = sb.registry.get(canonical, name)
            custom = prop is not None and not prop["hubspotDefined"]
            label = prop["label"] if prop else name
            rows.append(
                f"<tr class='{'custom' if custom else 'standard'}'><th>{escape(label)}</th>"
                f"<td><code>{escape(name)}</code></td><td>{escape(rec['properties'][name])}</td></tr>"
            )
        links = []
        for to_type, targets in sorted(rec["associations"].items()):
            for to_id in sorted(targets, key=int):
                links.append(
                    f"<li><a href='/ui/{escape(to_type)}/{escape(to_id)}'>"
                    f"{escape(to_type)} {escape(to_id)}</a></li>"
                )
        widget = ""
        if sb.widget_base_url:
            src = f"/ui/{canonical}/{rec['id']}/fieldwise"
            widget = (
                "<h2>Fieldwise</h2>"
                f"<iframe id='fieldwise-card' src='{escape(src)}' width='480' height='640'"
                " title='Fieldwise'></iframe>"
            )
        title = _label(canonical, rec["properties"]) or f"{canonical} {rec['id']}"
        body = (
            f"<p><a href='/ui/{escape(canonical)}'>&larr; {escape(canonical)}</a></p>"
            f"<h1>{escape(title)}</h1>"
            "<table><tr><th>Property</th><th>Internal name</th><th>Value</th></tr>"
            + "".join(rows)
            + "</table>"
            + (f"<h2>Associations</h2><ul>{''.join(links)}</ul>" if links else "")
            + widget
        )
        return _page(title, body)

    @app.get("/ui/<object_type>/<record_id>/fieldwise")
    def ui_fieldwise_card(object_type: str, record_id: str) -> Response:
        canonical = canonical_type(object_type)
        if canonical is None or sb.repo.get(canonical, record_id) is None:
            return Response(render_fieldwise_problem("No such record"), 404, mimetype="text/html")
        if not sb.widget_base_url:
            return Response(render_fieldwise_problem("The Fieldwise app card is not installed"),
                            mimetype="text/html")  # fmt: skip
        query = {"objectTypeId": OBJECT_TYPE_IDS[canonical], "objectId": record_id}
        answer = _fetch(sb, "GET", "/cards/hubspot", query, None)
        if answer is None or answer.status_code != 200:
            return Response(render_fieldwise_problem(_problem(answer)), mimetype="text/html")
        action = f"/ui/{canonical}/{record_id}/fieldwise/feedback"
        return Response(render_fieldwise_card(answer.json(), action), mimetype="text/html")

    @app.post("/ui/<object_type>/<record_id>/fieldwise/feedback")
    def ui_fieldwise_feedback(object_type: str, record_id: str) -> BaseResponse:
        canonical = canonical_type(object_type)
        if canonical is None or sb.repo.get(canonical, record_id) is None or not sb.widget_base_url:
            return Response(render_fieldwise_problem("No such record"), 404, mimetype="text/html")
        user_id, _ = _viewer(sb)
        body = {
            "crm": "hubspot",
            "object_type": OBJECT_TYPE_IDS[canonical],
            "record_id": record_id,
            "result": request.form.get("result", ""),
            "vote": request.form.get("vote", ""),
            "user_id": user_id,
        }
        answer = _fetch(sb, "POST", "/feedback", {}, body)
        if answer is None or answer.status_code != 201:
            return Response(render_fieldwise_problem(_problem(answer)), mimetype="text/html")
        return redirect(f"/ui/{canonical}/{record_id}/fieldwise", code=303)


def _viewer(sb: HubSpotSandbox) -> tuple[str, str]:
    """The HubSpot user looking at the page: ``?userId=`` or the portal's first owner."""
    owners = sb.owners()
    wanted = request.args.get("userId")
    for owner in owners:
        if wanted is None or str(owner.get("userId") or owner.get("id")) == wanted:
            return str(owner.get("userId") or owner.get("id")), str(owner.get("email") or "")
    return wanted or "1", ""


def _fetch(
    sb: HubSpotSandbox, method: str, path: str, query: dict[str, Any], body: dict[str, Any] | None
) -> requests.Response | None:
    """Call Fieldwise as ``hubspot.fetch`` does: account and user appended, v3-signed."""
    user_id, email = _viewer(sb)
    params = {**query, "userId": user_id, "userEmail": email, "appId": sb.app_id,
              "portalId": sb.portal_id}  # fmt: skip
    url = f"{sb.widget_base_url}{path}?{urlencode(params)}"
    raw = json.dumps(body) if body is not None else ""
    timestamp = str(int(time.time() * 1000))
    headers = {
        "X-HubSpot-Signature-v3": sign_v3(sb.client_secret, method, url, raw, timestamp),
        "X-HubSpot-Request-Timestamp": timestamp,
        "Content-Type": "application/json",
    }
    try:
        return requests.request(method, url, data=raw.encode(), headers=headers, timeout=15)
    except requests.RequestException:
        return None


def _problem(answer: requests.Response | None) -> str:
    if answer is None:
        return "Fieldwise could not be reached."
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text[:200]
    return f"Fieldwise answered {answer.status_code}: {message}"


def _label(object_type: str, props: dict[str, str]) -> str:
    if object_type == "contacts":
        return " ".join(filter(None, [props.get("firstname"), props.get("lastname")])) or props.get(
            "email", ""
        )
    if object_type == "companies":
        return props.get("name", "")
    if object_type == "deals":
        return props.get("dealname", "")
    for key in ("hs_call_title", "hs_email_subject", "hs_meeting_title", "hs_task_subject"):
        if props.get(key):
            return props[key]
    return (props.get("hs_note_body") or "")[:60]
