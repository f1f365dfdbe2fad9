"""Webhook receivers: verify, parse, drop Fieldwise's own echoes, dedupe, enqueue, answer.

Three entry points, one pipeline. Each delivery is authenticated first (HubSpot's v3 signature,
Salesforce's OrganizationId, or the per-tenant HMAC of the change-event relay), then parsed
strictly. Events caused by Fieldwise's own writes are dropped and counted. Duplicates are dropped
by event key. Changed record ids join a per-tenant, per-object pending set and at most one fetch
job is scheduled for it, so a burst becomes one fetch. Only when all of that is durably queued does
the handler answer 2xx (or the SOAP Ack); if Redis cannot take the work, it answers 503 so the CRM
delivers again later. No CRM call is ever made here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from connectors.salesforce.client import CLIENT_NAME as SALESFORCE_CLIENT_NAME
from core.queue import QueueUnavailable
from core.services import Services
from core.tenants import Tenant
from handlers import context
from handlers.errors import ApiError, error_response

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

MAX_SIGNATURE_AGE_S = 300
"""HubSpot: "reject the request if the timestamp is older than 5 minutes"; the relay follows suit."""

# HubSpot's v3 signature is computed over the URI with these escapes decoded (and only these), per
# https://developers.hubspot.com/docs/apps/developer-platform/build-apps/authentication/request-validation
_HUBSPOT_URI_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip

_HUBSPOT_OBJECT_TYPE_IDS = {
    "0-1": "contacts", "0-2": "companies", "0-3": "deals", "0-46": "notes",
    "0-48": "calls", "0-49": "emails", "0-47": "meetings", "0-27": "tasks",
}  # fmt: skip
_HUBSPOT_LEGACY_OBJECTS = {"contact": "contacts", "company": "companies", "deal": "deals"}

_OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{_OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)


# --------------------------------------------------------------------------------------------------
# What every handler produces: work grouped by tenant and object


@dataclass
class Work:
    """Record ids to fetch, delete or merge, per (tenant, CRM object), plus event keys to mark."""

    fetch: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    delete: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    merges: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    refetch: set[tuple[str, str]] = field(default_factory=set)
    keys: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def accepted(self) -> int:
        """Events that became work."""
        return len(self.keys)


def _queue_work(services: Services, work: Work) -> None:
    """Queue fetches, deletes, merges and re-fetches, then mark the events seen.

    Raises:
        QueueUnavailable: Redis cannot take the work; nothing is marked seen, so redelivery works.
    """
    ledger, queue = services.events, services.queue
    for (tenant_id, object_name), ids in sorted(work.fetch.items()):
        scope = f"{tenant_id}:{object_name}"
        if ledger.add_pending(scope, sorted(ids)):
            try:
                queue.enqueue("sync.jobs.fetch_changes", tenant_id, object_name, queue="high")
            except QueueUnavailable:
                ledger.unschedule(scope)
                raise
    for (tenant_id, object_name), ids in sorted(work.delete.items()):
        ordered = sorted(ids)
        digest = hashlib.sha256(",".join(ordered).encode()).hexdigest()[:16]
        queue.enqueue(
            "sync.jobs.delete_records", tenant_id, object_name, ordered,
            job_id=f"delete:{tenant_id}:{object_name}:{digest}", queue="high",
        )  # fmt: skip
    for tenant_id, object_name, primary, merged in work.merges:
        queue.enqueue(
            "sync.jobs.merge_records", tenant_id, object_name, primary, merged,
            job_id=f"merge:{tenant_id}:{object_name}:{primary}:{','.join(merged)}", queue="high",
        )  # fmt: skip
    for tenant_id, object_name in sorted(work.refetch):
        queue.enqueue(
            "sync.jobs.refetch_object", tenant_id, object_name,
            job_id=f"refetch:{tenant_id}:{object_name}:{int(time.time() // 60)}", queue="low",
        )  # fmt: skip
    ledger.mark_seen(work.keys)
    for reason, amount in work.dropped.items():
        ledger.count(reason, amount)


def _unavailable(exc: QueueUnavailable) -> Response:
    response = error_response(
        503, "queue_unavailable", f"Fieldwise cannot queue this delivery durably right now ({exc})"
    )
    response.headers["Retry-After"] = "30"
    return response


# --------------------------------------------------------------------------------------------------
# HubSpot


class HubSpotEventSchema(Schema):
    """One event of a HubSpot webhook batch (fields HubSpot may add later are ignored)."""

    class Meta:
        """HubSpot adds fields over time; they are not ours to reject."""

        unknown = EXCLUDE

    eventId = fields.Integer(required=True)
    subscriptionId = fields.Integer(required=True)
    portalId = fields.Integer(required=True)
    appId = fields.Integer(load_default=None)
    occurredAt = fields.Integer(required=True)
    subscriptionType = fields.String(load_default=None)
    eventType = fields.String(load_default=None)  # the docs example uses this name
    objectId = fields.Integer(load_default=None)
    objectTypeId = fields.String(load_default=None)
    changeSource = fields.String(load_default=None)
    sourceId = fields.Raw(load_default=None)
    primaryObjectId = fields.Integer(load_default=None)
    mergedObjectIds = fields.List(fields.Integer(), load_default=list)
    fromObjectId = fields.Integer(load_default=None)
    toObjectId = fields.Integer(load_default=None)


_hubspot_events = HubSpotEventSchema(many=True)


def hubspot_signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature: base64 HMAC-SHA256 of method + decoded URI + body + timestamp."""
    for escaped, plain in _HUBSPOT_URI_DECODE.items():
        uri = uri.replace(escaped, plain).replace(escaped.lower(), plain)
    message = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def hubspot_signature_legacy(secret: str, version: str, method: str, uri: str, body: bytes) -> str:
    """HubSpot's v1 (secret + body) or v2 (secret + method + URI + body) SHA-256 hex digest."""
    material = (
        secret.encode() + body
        if version == "v1"
        else secret.encode() + method.encode() + uri.encode() + body
    )
    return hashlib.sha256(material).hexdigest()


def _verify_hubspot(services: Services, body: bytes) -> None:
    config = services.config
    if not config.hubspot_client_secret:
        raise ApiError(503, "not_configured", "FIELDWISE_HUBSPOT_CLIENT_SECRET is not set")
    secret = config.hubspot_client_secret.reveal()
    uri = request.url  # the full URL as HubSpot called it, query included (behind ProxyFix too)
    v3 = request.headers.get("X-HubSpot-Signature-v3")
    if v3 is not None:
        timestamp = request.headers.get("X-HubSpot-Request-Timestamp", "")
        if not timestamp.isdigit():
            raise ApiError(
                401, "bad_signature", "X-HubSpot-Request-Timestamp is missing or not a number"
            )
        if abs(time.time() * 1000 - int(timestamp)) > MAX_SIGNATURE_AGE_S * 1000:
            raise ApiError(
                401, "stale_signature", "the request timestamp is more than 5 minutes old"
            )
        expected = hubspot_signature_v3(secret, request.method, uri, body, timestamp)
        if not hmac.compare_digest(expected, v3):
            raise ApiError(
                401, "bad_signature", "X-HubSpot-Signature-v3 does not match the request"
            )
        return
    legacy = request.headers.get("X-HubSpot-Signature")
    version = request.headers.get("X-HubSpot-Signature-Version", "v1")
    if legacy is None:
        raise ApiError(
            401, "missing_signature", "the request carries no X-HubSpot-Signature-v3 header"
        )
    if not config.hubspot_legacy_signatures or version not in {"v1", "v2"}:
        raise ApiError(
            401, "unsupported_signature",
            f"{version} signatures are not accepted; set FIELDWISE_HUBSPOT_LEGACY_SIGNATURES=true "
            "for apps that still send them",
        )  # fmt: skip
    expected = hubspot_signature_legacy(secret, version, request.method, uri, body)
    if not hmac.compare_digest(expected, legacy):
        raise ApiError(401, "bad_signature", "X-HubSpot-Signature does not match the request")


def _hubspot_object(event: dict[str, Any]) -> str | None:
    kind = event["subscriptionType"] or event["eventType"] or ""
    prefix = kind.split(".", 1)[0]
    if prefix == "object":
        return _HUBSPOT_OBJECT_TYPE_IDS.get(event["objectTypeId"] or "")
    return _HUBSPOT_LEGACY_OBJECTS.get(prefix)


def hubspot_work(services: Services, events: list[dict[str, Any]]) -> Work:
    """Turn verified, parsed HubSpot events into work, dropping echoes, strangers and repeats."""
    work = Work()
    tenants: dict[int, Tenant | None] = {}
    keys = [
        f"hubspot:{e['portalId']}:{e['subscriptionId']}:{e['eventId']}:{e['occurredAt']}"
        for e in events
    ]
    fresh = set(services.events.unseen(keys))
    own_app = services.config.hubspot_app_id
    for key, event in zip(keys, events, strict=True):
        if key not in fresh or key in work.keys:
            work.dropped["hubspot.duplicate"] += 1
            continue
        portal = event["portalId"]
        if portal not in tenants:
            tenants[portal] = services.registry.find("hubspot", str(portal))
        tenant = tenants[portal]
        if tenant is None or tenant.status == "uninstalled":
            work.dropped["hubspot.unknown_portal"] += 1
            continue
        # Our writes carry changeSource INTEGRATION with sourceId = our app id; other apps' writes
        # are INTEGRATION too, so the app id must match (crm_apis.md, loop prevention).
        if event["changeSource"] == "INTEGRATION" and own_app and str(event["sourceId"]) == own_app:
            work.dropped["hubspot.echo"] += 1
            work.keys.append(key)
            continue
        object_name = _hubspot_object(event)
        if object_name is None:
            work.dropped["hubspot.unsubscribed_object"] += 1
            work.keys.append(key)
            continue
        kind = (event["subscriptionType"] or event["eventType"] or "").rsplit(".", 1)[-1]
        scope = (tenant.tenant_id, object_name)
        if kind == "deletion" or kind == "privacyDeletion":
            work.delete[scope].add(str(event["objectId"]))
        elif kind == "merge" and event["primaryObjectId"] is not None:
            merged = [str(i) for i in event["mergedObjectIds"] if i != event["primaryObjectId"]]
            work.merges.append(
                (tenant.tenant_id, object_name, str(event["primaryObjectId"]), merged)
            )
        elif kind == "associationChange":
            for object_id in (event["fromObjectId"], event["toObjectId"]):
                if object_id is not None:
                    work.fetch[scope].add(str(object_id))
        elif event["objectId"] is not None:
            work.fetch[scope].add(str(event["objectId"]))
        work.keys.append(key)
    return work


@bp.post("/hubspot")
def hubspot() -> Response | tuple[Response, int]:
    """Receive a HubSpot webhook batch."""
    services = context.services()
    body = request.get_data(cache=True)
    _verify_hubspot(services, body)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    if not isinstance(payload, list):
        raise ApiError(400, "malformed_body", "HubSpot sends a JSON array of events")
    try:
        events = _hubspot_events.load(payload)
    except ValidationError as exc:
        raise ApiError(400, "malformed_event", "invalid event(s)", fields=exc.messages) from None
    try:
        work = hubspot_work(services, events)
        _queue_work(services, work)
    except QueueUnavailable as exc:
        return _unavailable(exc)
    return jsonify({"accepted": work.accepted, "dropped": dict(work.dropped)}), 200


# --------------------------------------------------------------------------------------------------
# Salesforce outbound messages (SOAP)


def _parse_xml(body: bytes) -> ET.Element:
    # Refuse document type declarations: no external entities, no entity expansion bombs.
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ApiError(400, "malformed_xml", "XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise ApiError(400, "malformed_xml", f"the body is not well-formed XML: {exc}") from None


def outbound_work(services: Services, root: ET.Element) -> Work:
    """Turn a parsed ``notifications`` envelope into work."""
    notifications = root.find(f".//{{{_OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise ApiError(400, "malformed_soap", "no notifications element in the SOAP body")
    org_id = (notifications.findtext(f"{{{_OUTBOUND_NS}}}OrganizationId") or "").strip()
    if not org_id:
        raise ApiError(400, "malformed_soap", "the notifications element has no OrganizationId")
    work = Work()
    tenant = services.registry.find("salesforce", org_id)
    items = notifications.findall(f"{{{_OUTBOUND_NS}}}Notification")
    if tenant is None or tenant.status == "uninstalled":
        work.dropped["salesforce.unknown_org"] += max(1, len(items))
        return work
    parsed = []
    for position, item in enumerate(items):
        notification_id = (item.findtext(f"{{{_OUTBOUND_NS}}}Id") or "").strip()
        sobject = item.find(f"{{{_OUTBOUND_NS}}}sObject")
        if not notification_id or sobject is None:
            raise ApiError(
                400, "malformed_soap", f"Notification {position} lacks an Id or an sObject"
            )
        object_name = sobject.get(_XSI_TYPE, "").split(":")[-1]
        fields_by_name = {
            child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in sobject
        }
        record_id = fields_by_name.get("Id", "")
        if not object_name or not record_id:
            raise ApiError(
                400, "malformed_soap", f"Notification {position} names no sObject type or Id"
            )
        parsed.append((f"sfobm:{org_id}:{notification_id}", object_name, record_id, fields_by_name))
    fresh = set(services.events.unseen([p[0] for p in parsed]))
    for key, object_name, record_id, values in parsed:
        if key not in fresh or key in work.keys:
            work.dropped["salesforce.duplicate"] += 1
            continue
        work.keys.append(key)
        modified_by = values.get("LastModifiedById")
        if (
            modified_by
            and tenant.integration_user_id
            and modified_by[:15] == tenant.integration_user_id[:15]
        ):
            work.dropped["salesforce.echo"] += 1
            continue
        work.fetch[(tenant.tenant_id, object_name)].add(record_id)
    return work


@bp.post("/salesforce/outbound")
def salesforce_outbound() -> Response:
    """Receive a Salesforce outbound message; Ack only once its work is queued."""
    services = context.services()
    root = _parse_xml(request.get_data(cache=True))
    try:
        work = outbound_work(services, root)
        _queue_work(services, work)
    except QueueUnavailable as exc:
        return _unavailable(exc)
    return Response(_ACK, status=200, mimetype="text/xml")


# --------------------------------------------------------------------------------------------------
# Salesforce change events relayed as JSON


_DATA_CHANGES = {"CREATE", "UPDATE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_UNDELETE"}
_DELETES = {"DELETE", "GAP_DELETE"}


def relay_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The relay's signature: hex HMAC-SHA256 of ``timestamp.body`` (the timestamp stops replays)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _verify_relay(services: Services, body: bytes) -> Tenant:
    org_id = request.headers.get("X-Fieldwise-Org-Id", "")
    timestamp = request.headers.get("X-Fieldwise-Timestamp", "")
    signature = request.headers.get("X-Fieldwise-Signature", "")
    if not org_id or not timestamp.isdigit() or not signature.startswith("sha256="):
        raise ApiError(
            401, "missing_signature",
            "change events need X-Fieldwise-Org-Id, X-Fieldwise-Timestamp and "
            "X-Fieldwise-Signature: sha256=<hex>",
        )  # fmt: skip
    tenant = services.registry.find("salesforce", org_id)
    if tenant is None or tenant.status == "uninstalled":
        raise ApiError(401, "unknown_org", f"no Salesforce org {org_id} is installed")
    secret = services.registry.relay_secret(tenant.tenant_id)
    if secret is None:
        raise ApiError(
            401, "no_relay_secret", "this org has no relay secret: run `fieldwise install` again"
        )
    if abs(time.time() - int(timestamp)) > MAX_SIGNATURE_AGE_S:
        raise ApiError(401, "stale_signature", "the relay timestamp is more than 5 minutes old")
    if not hmac.compare_digest(
        relay_signature(secret, timestamp, body), signature[len("sha256=") :]
    ):
        raise ApiError(401, "bad_signature", "X-Fieldwise-Signature does not match the request")
    return tenant


def change_event_work(services: Services, tenant: Tenant, events: list[Any]) -> Work:
    """Turn relayed change events into work; gaps and overflows re-fetch the whole object."""
    work = Work()
    parsed = []
    for position, event in enumerate(events):
        header = (
            (event.get("payload") or {}).get("ChangeEventHeader")
            if isinstance(event, dict)
            else None
        )
        if not isinstance(header, dict):
            raise ApiError(
                400, "malformed_event", f"event {position} has no payload.ChangeEventHeader"
            )
        entity, change = header.get("entityName"), header.get("changeType")
        ids = header.get("recordIds")
        if not isinstance(entity, str) or not isinstance(change, str) or not isinstance(ids, list):
            raise ApiError(
                400, "malformed_event",
                f"event {position}: entityName, changeType and recordIds are required",
            )  # fmt: skip
        key = (
            f"sfcdc:{tenant.external_id}:{header.get('transactionKey')}:{header.get('sequenceNumber')}"
            f":{entity}:{change}"
        )
        parsed.append((key, entity, change, [str(i) for i in ids], header))
    fresh = set(services.events.unseen([p[0] for p in parsed]))
    for key, entity, change, ids, header in parsed:
        if key not in fresh or key in work.keys:
            work.dropped["salesforce.duplicate"] += 1
            continue
        work.keys.append(key)
        origin = str(header.get("changeOrigin") or "")
        commit_user = str(header.get("commitUser") or "")
        own_user = tenant.integration_user_id or ""
        # Every Salesforce call Fieldwise makes sends Sforce-Call-Options: client=<CLIENT_NAME>;
        # change events carry it back in changeOrigin, which Salesforce documents for exactly this.
        if f"client={SALESFORCE_CLIENT_NAME}" in origin or (
            own_user and commit_user[:15] == own_user[:15]
        ):
            work.dropped["salesforce.echo"] += 1
            continue
        scope = (tenant.tenant_id, entity)
        # A wildcard id (e.g. "001*") or an overflow means Salesforce could not list the records.
        if change == "GAP_OVERFLOW" or any(i.endswith("*") for i in ids):
            work.refetch.add(scope)
        elif change in _DELETES:
            work.delete[scope].update(ids)
        elif change in _DATA_CHANGES:
            work.fetch[scope].update(ids)
        else:
            work.dropped["salesforce.unknown_change_type"] += 1
    return work


@bp.post("/salesforce/events")
def salesforce_events() -> Response | tuple[Response, int]:
    """Receive change events relayed from a Salesforce org."""
    services = context.services()
    body = request.get_data(cache=True)
    tenant = _verify_relay(services, body)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    events = payload if isinstance(payload, list) else [payload]
    try:
        work = change_event_work(services, tenant, events)
        _queue_work(services, work)
    except QueueUnavailable as exc:
        return _unavailable(exc)
    return jsonify({"accepted": work.accepted, "dropped": dict(work.dropped)}), 200
