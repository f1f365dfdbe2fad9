"""Plain server-rendered record pages, standing in for Lightning record pages in the demo.

``/ui/<sObject>`` lists records with links; ``/ui/<sObject>/<id>`` shows every field, custom fields
(where Fieldwise writes its AI results) in their own section, and embeds the Fieldwise widget in an
iframe when the sandbox has a widget base URL. Every value is HTML-escaped.

The widget is rendered here, as Lightning renders the ``fieldwiseInsights`` component:
``/ui/<sObject>/<id>/fieldwise`` calls Fieldwise's ``/cards/salesforce/<id>`` as the Apex
controller does through the Named Credential, with the headers its External Credential formula
produces (an HMAC over method, path, timestamp, org, user, nonce and body hash, keyed with the
widget secret the admin stored in it), and shows the JSON; the thumbs buttons post back here and
are forwarded, signed the same way, to ``/feedback``. ``POST /__admin/fieldwise-credential`` with
``{"secret": ...}`` is the admin pasting that secret into the External Credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from flask import Flask, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from sandbox.common import render_fieldwise_card, render_fieldwise_problem
from sandbox.salesforce.ids import to18

if TYPE_CHECKING:
    from sandbox.salesforce.server import SalesforceSandbox

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#181818}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;"
    "text-align:left;vertical-align:top}th{color:#555;font-weight:500}"
    ".ai{background:#f3f8ff}iframe{border:1px solid #ccc;width:100%;height:420px}"
)
LIST_LIMIT = 200
CREDENTIAL_KEY = "fieldwise.external_credential"
"""Where the sandbox org keeps the External Credential Fieldwise_API_Auth's signing secret."""


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return Response(html, status=status, mimetype="text/html")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✔" if value else ""
    return escape(str(value)).replace("\n", "<br>")


def register_ui(app: Flask, sandbox: SalesforceSandbox) -> None:
    """Add the record list and record page routes to the sandbox app."""
    store = sandbox.state.store

    def store_credential(body: dict[str, Any]) -> dict[str, Any]:
        secret = body.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ValueError("secret is required (the widget secret `fieldwise` printed)")
        store.set_meta(CREDENTIAL_KEY, {"secret": secret})
        return {"configured": True}

    sandbox.state.hooks["fieldwise-credential"] = store_credential

    def record_of(sobject: str, record_id: str) -> tuple[Any, str | None]:
        obj = sandbox.schema.object(sobject)
        normal = to18(record_id)
        record = store.get(obj.name, normal) if obj is not None and normal else None
        return (obj, normal) if record is not None else (None, None)

    @app.get("/ui/<sobject>/<record_id>/fieldwise")
    def fieldwise_widget(sobject: str, record_id: str) -> Response:
        obj, normal = record_of(sobject, record_id)
        if obj is None or normal is None:
            return Response(render_fieldwise_problem("Record not found"), 404, mimetype="text/html")
        answer = _callout(sandbox, "GET", f"/cards/salesforce/{normal}", b"")
        if isinstance(answer, str) or answer.status_code != 200:
            return Response(render_fieldwise_problem(_problem(answer)), mimetype="text/html")
        action = f"/ui/{obj.name}/{normal}/fieldwise/feedback"
        return Response(render_fieldwise_card(answer.json(), action), mimetype="text/html")

    @app.post("/ui/<sobject>/<record_id>/fieldwise/feedback")
    def fieldwise_feedback(sobject: str, record_id: str) -> BaseResponse:
        obj, normal = record_of(sobject, record_id)
        if obj is None or normal is None:
            return Response(render_fieldwise_problem("Record not found"), 404, mimetype="text/html")
        body = {
            "crm": "salesforce",
            "object_type": obj.name,
            "record_id": normal,
            "result": request.form.get("result", ""),
            "vote": request.form.get("vote", ""),
            "user_id": _viewer(sandbox),
        }
        answer = _callout(sandbox, "POST", "/feedback", json.dumps(body).encode())
        if isinstance(answer, str) or answer.status_code != 201:
            return Response(render_fieldwise_problem(_problem(answer)), mimetype="text/html")
        return redirect(f"/ui/{obj.name}/{normal}/fieldwise", code=303)

    @app.get("/ui/<sobject>")
    def record_list(sobject: str) -> Response:
        obj = sandbox.schema.object(sobject)
        if obj is None:
            return _page("Not found", f"<h1>No object {escape(sobject)}</h1>", 404)
        label_field = "Name" if obj.field("Name") else ("Title" if obj.field("Title") else "Id")
        rows = []
        for count, (record_id, record) in enumerate(store.iter(obj.name)):
            if count >= LIST_LIMIT:
                break
            link = f"/ui/{quote(obj.name)}/{quote(record_id)}"
            rows.append(
                f"<tr><td><a href='{escape(link, quote=True)}'>"
                f"{_cell(record.get(label_field) or record_id)}</a></td>"
                f"<td>{_cell(record_id)}</td><td>{_cell(record.get('LastModifiedDate'))}</td></tr>"
            )
        body = (
            f"<h1>{escape(obj.label)}s</h1><p>{store.count(obj.name)} records</p>"
            "<table><tr><th>Name</th><th>Id</th><th>Last modified</th></tr>"
            f"{''.join(rows)}</table>"
        )
        return _page(obj.label, body)

    @app.get("/ui/<sobject>/<record_id>")
    def record_page(sobject: str, record_id: str) -> Response:
        obj = sandbox.schema.object(sobject)
        normal = to18(record_id)
        record = store.get(obj.name, normal) if obj is not None and normal else None
        if obj is None or record is None:
            return _page("Not found", "<h1>Record not found</h1>", 404)
        standard: list[str] = []
        custom: list[str] = []
        for fdef in obj.fields.values():
            row = (
                f"<tr{' class=ai' if fdef.custom else ''}><th>{escape(fdef.label)}"
                f"<br><small>{escape(fdef.name)}</small></th>"
                f"<td>{_cell(record.get(fdef.name))}</td></tr>"
            )
            (custom if fdef.custom else standard).append(row)
        title = str(record.get("Name") or record.get("Title") or record.get("Subject") or normal)
        widget = ""
        if sandbox.widget_base_url:
            src = f"/ui/{quote(obj.name)}/{quote(normal or '')}/fieldwise"
            widget = (
                f"<h2>Fieldwise</h2><iframe title='Fieldwise' src='{escape(src, quote=True)}'"
                " sandbox='allow-scripts allow-forms allow-same-origin allow-popups'>"
                "</iframe>"
            )
        body = (
            f"<p><a href='/ui/{escape(quote(obj.name), quote=True)}'>{escape(obj.label)}s</a></p>"
            f"<h1>{escape(title)}</h1>{widget}"
            f"<h2>Custom fields</h2><table>{''.join(custom) or '<tr><td>none</td></tr>'}</table>"
            f"<h2>Details</h2><table>{''.join(standard)}</table>"
        )
        return _page(title, body)


def _viewer(sandbox: SalesforceSandbox) -> str:
    """The user looking at the page: ``?userId=`` or the org's integration user."""
    return to18(request.args.get("userId", "")) or sandbox.user_id


def _callout(sandbox: SalesforceSandbox, method: str, path: str, body: bytes) -> Any:
    """Call Fieldwise as Apex does through the Named Credential Fieldwise_API.

    Returns the response, or a sentence saying why no call could be made.
    """
    credential = sandbox.state.store.get_meta(CREDENTIAL_KEY)
    if not sandbox.widget_base_url:
        return "The Named Credential Fieldwise_API has no URL."
    if not credential:
        return (
            "The External Credential Fieldwise_API_Auth has no signing secret yet: paste the one "
            "`fieldwise widgets secret` prints."
        )
    stamp, nonce, user_id = str(int(time.time())), secrets.token_hex(16), _viewer(sandbox)
    # The External Credential's header formula: BASE64ENCODE(HMAC('SHA-256', canonical, secret)).
    canonical = "|".join(
        (method, path, stamp, sandbox.org_id, user_id, nonce, hashlib.sha256(body).hexdigest())
    )
    mac = hmac.new(credential["secret"].encode(), canonical.encode(), hashlib.sha256).digest()
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "X-Fieldwise-Org-Id": sandbox.org_id,
        "X-Fieldwise-User-Id": user_id,
        "X-Fieldwise-Timestamp": stamp,
        "X-Fieldwise-Nonce": nonce,
        "X-Fieldwise-Signature": base64.b64encode(mac).decode(),
    }
    try:
        return requests.request(
            method, f"{sandbox.widget_base_url}{path}", data=body, headers=headers, timeout=15
        )
    except requests.RequestException as exc:
        return f"Fieldwise could not be reached: {exc}"


def _problem(answer: Any) -> str:
    if isinstance(answer, str):
        return answer
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text[:200]
    return f"Fieldwise answered {answer.status_code}: {message}"
