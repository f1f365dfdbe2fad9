"""Plain server-rendered record pages, standing in for Lightning record pages in the demo.

``/ui/<sObject>`` lists records with links; ``/ui/<sObject>/<id>`` shows every field, custom fields
(where Fieldwise writes its AI results) in their own section, and embeds the Fieldwise widget in an
iframe at ``{widget_base_url}/cards/salesforce/<id>`` when the sandbox has a widget base URL. Every
value is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Flask, Response

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
            src = f"{sandbox.widget_base_url}/cards/salesforce/{quote(normal or '')}"
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
