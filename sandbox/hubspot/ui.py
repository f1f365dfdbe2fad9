"""A plain, server-rendered stand-in for HubSpot's record pages.

``/ui/<objectType>`` lists records with links; ``/ui/<objectType>/<id>`` shows every property
(HubSpot's own and custom ones such as the AI properties Fieldwise writes) and embeds the Fieldwise
card in an iframe when the sandbox knows the widget's base URL. Everything shown is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from flask import Flask, Response, request

from sandbox.hubspot.properties import OBJECT_TYPE_IDS, canonical_type

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
            query = urlencode(
                {
                    "portalId": sb.portal_id,
                    "objectType": OBJECT_TYPE_IDS[canonical],
                    "objectId": rec["id"],
                }
            )
            src = f"{sb.widget_base_url}/cards/hubspot?{query}"
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
