"""Webhook receivers: verify, parse, drop Fieldwise's own echoes, dedupe, enqueue, answer.

Three entry points, one pipeline. Each delivery is authenticated first (HubSpot's v3 signature,
Salesforce's OrganizationId, or the per-tenant HMAC of the change-event relay), then parsed
strictly. Events caused by Fieldwise's own writes are dropped and counted. Duplicates are dropped
by event key. Changed record ids join a per-tenant, per-object pending set and at most one fetch
job is scheduled for it, so a burst becomes one fetch. Only when all of that is durably queued does
the handler answer 2xx (or the SOAP Ack); if Redis cannot take the work, it answers 503 so the CRM
delivers again later. No CRM call is ever made here.

Deliveries are frequent, so the common one costs one Redis round trip and no registry read: the
handler classifies the events with tenants from its process cache, and the ledger
(:meth:`core.coalesce.EventLedger.ingest`) dedupes, adds pending ids, marks and counts in one
script, which also confirms that none of those tenants changed since they were cached (if one did,
the delivery is classified again with fresh lookups). A fetch job is enqueued only when that script
says none is scheduled yet; then, or when deletes or merges must be queued too, the events are
marked seen in a second round trip after the jobs are queued.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from connectors.salesforce.client import CLIENT_NAME as SALESFORCE_CLIENT_NAME
from core.coalesce import Ingested, IngestEvent
from core.queue import QueueUnavailable
from core.services import Services
from core.tenants import CachedTenant, Tenant, generation_key
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
_HUBSPOT_URI_ESCAPES = tuple(
    (case, plain)
    for escaped, plain in _HUBSPOT_URI_DECODE.items()
    for case in (escaped, escaped.lower())
)
"""Each escape in upper, then lower case, in the order they are decoded."""

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
# What every handler produces: the delivery's events classified before dedupe, and jobs to queue


@dataclass(frozen=True)
class Job:
    """A job one event asks for besides a fetch: ``delete``, ``merge`` or ``refetch``."""

    kind: str
    tenant_id: str
    object_name: str
    record_ids: tuple[str, ...] = ()
    primary_id: str | None = None


@dataclass
class Work:
    """A delivery's events, each classified as if it were new; the ledger then says which are.

    Attributes:
        duplicate_reason: the counter for events seen before.
        events: per event, what it adds to the ledger (pending ids, a drop reason).
        jobs: per event, the job it asks for when it is new (deletes, merges, re-fetches).
        counts: drops decided before dedupe (repeats within the batch, unknown orgs).
        scopes: the tenant and object of each pending scope named by ``events``.
    """

    duplicate_reason: str
    events: list[IngestEvent] = field(default_factory=list)
    jobs: list[Job | None] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scopes: dict[str, tuple[str, str]] = field(default_factory=dict)
    _kept: set[str] = field(default_factory=set)

    def repeated(self, key: str) -> bool:
        """Count ``key`` as a duplicate when an earlier event of this batch already has it."""
        if key in self._kept:
            self.counts[self.duplicate_reason] += 1
            return True
        return False

    def add(
        self,
        key: str,
        *,
        fetch: tuple[str, str] | None = None,
        record_ids: tuple[str, ...] = (),
        drop: str | None = None,
        job: Job | None = None,
        remember: bool = True,
    ) -> None:
        """Add an event: ``fetch`` is its (tenant, object) and ``record_ids`` the ids to fetch."""
        scope = None
        if fetch is not None and record_ids:
            scope = f"{fetch[0]}:{fetch[1]}"
            self.scopes[scope] = fetch
        self.events.append(IngestEvent(key, scope, record_ids, drop, remember))
        self.jobs.append(job)
        if remember:
            self._kept.add(key)

    def outcome(self, fresh: tuple[bool, ...]) -> tuple[list[str], dict[str, int]]:
        """The keys of the new events to mark seen, and every drop by reason."""
        keys, dropped = [], dict(self.counts)
        for event, new in zip(self.events, fresh, strict=True):
            reason = event.drop_reason if new else self.duplicate_reason
            if reason:
                dropped[reason] = dropped.get(reason, 0) + 1
            if new and event.remember:
                keys.append(event.key)
        return keys, dropped


class _Tenants:
    """The tenants one delivery names: from this process's cache where it may be trusted.

    Every lookup keeps the registry generation token it was loaded under; :func:`_ingest` has the
    ledger compare those tokens in its one Redis round trip and reloads the ones that moved.
    """

    def __init__(self, services: Services) -> None:
        self._registry = services.registry
        self._events = services.events
        self._found: dict[tuple[str, str], CachedTenant] = {}
        self._loaded: set[tuple[str, str]] = set()

    def find(self, crm: str, external_id: str) -> Tenant | None:
        """The installed tenant for an org or portal id, if any."""
        found = self._found.get((crm, external_id))
        if found is None:
            found = self._registry.cache.get(crm, external_id)
            if found is None:
                found = self._load(crm, external_id)
            self._found[(crm, external_id)] = found
        return found.tenant

    def watched(self) -> dict[str, str]:
        """Each looked-up tenant's generation key and the token its lookup was loaded under."""
        return {generation_key(*name): found.token for name, found in self._found.items()}

    def reload(self, stale: dict[str, str]) -> None:
        """Load again the tenants whose token moved (``stale``: key -> token now)."""
        by_key = {generation_key(*name): name for name in self._found}
        for key, token in stale.items():
            crm, external_id = by_key[key]
            self._found[(crm, external_id)] = self._registry.cache.load(crm, external_id, token)
            self._loaded.add((crm, external_id))

    def reload_cached(self) -> bool:
        """Load again every tenant that came from the cache; False when none did."""
        cached = [name for name in self._found if name not in self._loaded]
        for crm, external_id in cached:
            self._found[(crm, external_id)] = self._load(crm, external_id)
        return bool(cached)

    def _load(self, crm: str, external_id: str) -> CachedTenant:
        self._loaded.add((crm, external_id))
        try:
            (token,) = self._events.values([generation_key(crm, external_id)])
        except QueueUnavailable:
            # Look it up anyway, so a request that fails verification still gets its 4xx; with an
            # unread token this lookup is never cached and never passes the ledger's comparison.
            return CachedTenant(self._registry.find(crm, external_id), _UNREAD_TOKEN)
        return self._registry.cache.load(crm, external_id, token)


_UNREAD_TOKEN = "\x00unread"
"""Never a token's value: a lookup made while Redis was unreachable."""


def _ingest(services: Services, build: Callable[[_Tenants], Work]) -> tuple[Work, Ingested]:
    """Classify a delivery with ``build`` and hand it to the ledger, in one round trip if cached.

    ``build`` runs again with fresh lookups when a cached tenant turns out to have changed, and
    when it refuses the delivery (ApiError) while relying on cached tenants, so that neither an
    acceptance nor a refusal rests on a stale lookup.

    Raises:
        ApiError: the delivery is refused.
        QueueUnavailable: Redis cannot take the work.
    """
    tenants = _Tenants(services)
    try:
        work = build(tenants)
    except ApiError:
        if not tenants.reload_cached():
            raise
        work = build(tenants)
    ledger = services.events
    for _ in range(2):
        done = ledger.ingest(
            work.events, duplicate_reason=work.duplicate_reason, counts=work.counts,
            watch=tenants.watched(), defer=any(work.jobs),
        )  # fmt: skip
        if not done.stale:
            return work, done
        tenants.reload(done.stale)
        work = build(tenants)
    # The tenants changed again while being reloaded: go on with what was just read, which is
    # as fresh as an uncached lookup.
    done = ledger.ingest(
        work.events, duplicate_reason=work.duplicate_reason, counts=work.counts,
        defer=any(work.jobs),
    )  # fmt: skip
    return work, done


def _queue_work(services: Services, work: Work, done: Ingested) -> tuple[int, dict[str, int]]:
    """Queue the fetches the ledger asked for and the new events' jobs, then settle the events.

    Returns:
        How many events became work, and the dropped ones by reason.

    Raises:
        QueueUnavailable: Redis cannot take the work; nothing is marked seen, so redelivery works.
    """
    ledger, queue = services.events, services.queue
    for scope in sorted(done.schedule, key=work.scopes.__getitem__):
        tenant_id, object_name = work.scopes[scope]
        try:
            queue.enqueue("sync.jobs.fetch_changes", tenant_id, object_name, queue="high")
        except QueueUnavailable:
            ledger.unschedule(scope)
            raise
    deletes: dict[tuple[str, str], set[str]] = defaultdict(set)
    merges: list[Job] = []
    refetch: set[tuple[str, str]] = set()
    for job, new in zip(work.jobs, done.fresh, strict=True):
        if job is None or not new:
            continue
        if job.kind == "delete":
            deletes[(job.tenant_id, job.object_name)].update(job.record_ids)
        elif job.kind == "merge":
            merges.append(job)
        else:
            refetch.add((job.tenant_id, job.object_name))
    for (tenant_id, object_name), ids in sorted(deletes.items()):
        ordered = sorted(ids)
        digest = hashlib.sha256(",".join(ordered).encode()).hexdigest()[:16]
        queue.enqueue(
            "sync.jobs.delete_records", tenant_id, object_name, ordered,
            job_id=f"delete:{tenant_id}:{object_name}:{digest}", queue="high",
        )  # fmt: skip
    for merge in merges:
        merged = list(merge.record_ids)
        queue.enqueue(
            "sync.jobs.merge_records", merge.tenant_id, merge.object_name, merge.primary_id, merged,
            job_id=f"merge:{merge.tenant_id}:{merge.object_name}:{merge.primary_id}:"
            f"{','.join(merged)}",
            queue="high",
        )  # fmt: skip
    for tenant_id, object_name in sorted(refetch):
        queue.enqueue(
            "sync.jobs.refetch_object", tenant_id, object_name,
            job_id=f"refetch:{tenant_id}:{object_name}:{int(time.time() // 60)}", queue="low",
        )  # fmt: skip
    keys, dropped = work.outcome(done.fresh)
    if not done.settled:
        ledger.settle(keys, dropped)
    return len(keys), dropped


def _accepted(accepted: int, dropped: dict[str, int]) -> Response:
    """The 200 answer: what ``jsonify`` writes (compact, sorted keys), built without its detours."""
    body = json.dumps(
        {"accepted": accepted, "dropped": dropped}, separators=(",", ":"), sort_keys=True
    )
    return Response(body + "\n", status=200, mimetype="application/json")


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
_REQUIRED_INTEGERS = ("eventId", "subscriptionId", "portalId", "occurredAt")
_OPTIONAL_INTEGERS = ("appId", "objectId", "primaryObjectId", "fromObjectId", "toObjectId")
_OPTIONAL_STRINGS = ("subscriptionType", "eventType", "objectTypeId", "changeSource")


def load_hubspot_events(payload: list[Any]) -> list[dict[str, Any]]:
    """Validate a batch against :class:`HubSpotEventSchema` and return the loaded events.

    HubSpot sends every field with its exact JSON type, and for such a batch the schema's result
    is known field by field: it is built here directly, at a fraction of marshmallow's cost. Any
    other batch (a number as a string, a missing or null required field, anything odd) goes
    through the schema itself, which loads it or says what is wrong, exactly as before.

    Raises:
        ApiError: 400 ``malformed_event`` with the schema's messages.
    """
    events = _typed_hubspot_events(payload)
    if events is not None:
        return events
    try:
        loaded: list[dict[str, Any]] = _hubspot_events.load(payload)
    except ValidationError as exc:
        raise ApiError(400, "malformed_event", "invalid event(s)", fields=exc.messages) from None
    return loaded


def _typed_hubspot_events(payload: list[Any]) -> list[dict[str, Any]] | None:
    """The schema's result for a batch of exactly typed events, or None for any other batch."""
    events = []
    for item in payload:
        if type(item) is not dict:
            return None
        event: dict[str, Any] = {}
        for name in _REQUIRED_INTEGERS:
            value = item.get(name)
            if type(value) is not int:  # bool is an int subclass, and the schema refuses it
                return None
            event[name] = value
        for name in _OPTIONAL_INTEGERS:
            value = item.get(name)
            if value is not None and type(value) is not int:
                return None
            event[name] = value
        for name in _OPTIONAL_STRINGS:
            value = item.get(name)
            if value is not None and type(value) is not str:
                return None
            event[name] = value
        event["sourceId"] = item.get("sourceId")
        merged = item.get("mergedObjectIds", [])
        if type(merged) is not list or any(type(i) is not int for i in merged):
            return None
        event["mergedObjectIds"] = list(merged)
        events.append(event)
    return events


def hubspot_signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature: base64 HMAC-SHA256 of method + decoded URI + body + timestamp."""
    if "%" in uri:  # without a "%" there is no escape to decode
        for escaped, plain in _HUBSPOT_URI_ESCAPES:
            uri = uri.replace(escaped, plain)
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


@functools.lru_cache(maxsize=1024)
def _hubspot_kind(
    subscription_type: str | None, event_type: str | None, object_type_id: str | None
) -> tuple[str | None, str]:
    """The object an event is about (None: not one Fieldwise syncs) and what happened to it."""
    name = subscription_type or event_type or ""
    prefix = name.split(".", 1)[0]
    if prefix == "object":
        object_name = _HUBSPOT_OBJECT_TYPE_IDS.get(object_type_id or "")
    else:
        object_name = _HUBSPOT_LEGACY_OBJECTS.get(prefix)
    return object_name, name.rsplit(".", 1)[-1]


def hubspot_work(services: Services, events: list[dict[str, Any]], tenants: _Tenants) -> Work:
    """Classify verified, parsed HubSpot events: echoes, strangers, repeats, and what to fetch."""
    work = Work("hubspot.duplicate")
    own_app = services.config.hubspot_app_id
    for event in events:
        portal = event["portalId"]
        key = f"hubspot:{portal}:{event['subscriptionId']}:{event['eventId']}:{event['occurredAt']}"
        if work.repeated(key):
            continue
        tenant = tenants.find("hubspot", str(portal))
        if tenant is None or tenant.status == "uninstalled":
            # Not remembered: the portal may be installed by the time HubSpot sends it again.
            work.add(key, drop="hubspot.unknown_portal", remember=False)
            continue
        # Our writes carry changeSource INTEGRATION with sourceId = our app id; other apps' writes
        # are INTEGRATION too, so the app id must match (crm_apis.md, loop prevention).
        if event["changeSource"] == "INTEGRATION" and own_app and str(event["sourceId"]) == own_app:
            work.add(key, drop="hubspot.echo")
            continue
        object_name, kind = _hubspot_kind(
            event["subscriptionType"], event["eventType"], event["objectTypeId"]
        )
        if object_name is None:
            work.add(key, drop="hubspot.unsubscribed_object")
            continue
        scope = (tenant.tenant_id, object_name)
        if kind == "deletion" or kind == "privacyDeletion":
            work.add(key, job=Job("delete", *scope, (str(event["objectId"]),)))
        elif kind == "merge" and event["primaryObjectId"] is not None:
            primary = event["primaryObjectId"]
            merged = tuple(str(i) for i in event["mergedObjectIds"] if i != primary)
            work.add(key, job=Job("merge", *scope, merged, primary_id=str(primary)))
        elif kind == "associationChange":
            ends = (event["fromObjectId"], event["toObjectId"])
            work.add(key, fetch=scope, record_ids=tuple(str(i) for i in ends if i is not None))
        elif event["objectId"] is not None:
            work.add(key, fetch=scope, record_ids=(str(event["objectId"]),))
        else:
            work.add(key)
    return work


@bp.post("/hubspot")
def hubspot() -> Response:
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
    events = load_hubspot_events(payload)
    try:
        work, done = _ingest(services, lambda tenants: hubspot_work(services, events, tenants))
        accepted, dropped = _queue_work(services, work, done)
    except QueueUnavailable as exc:
        return _unavailable(exc)
    return _accepted(accepted, dropped)


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


def outbound_work(root: ET.Element, tenants: _Tenants) -> Work:
    """Classify the notifications of a parsed ``notifications`` envelope."""
    notifications = root.find(f".//{{{_OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise ApiError(400, "malformed_soap", "no notifications element in the SOAP body")
    org_id = (notifications.findtext(f"{{{_OUTBOUND_NS}}}OrganizationId") or "").strip()
    if not org_id:
        raise ApiError(400, "malformed_soap", "the notifications element has no OrganizationId")
    work = Work("salesforce.duplicate")
    tenant = tenants.find("salesforce", org_id)
    items = notifications.findall(f"{{{_OUTBOUND_NS}}}Notification")
    if tenant is None or tenant.status == "uninstalled":
        work.counts["salesforce.unknown_org"] += max(1, len(items))
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
    for key, object_name, record_id, values in parsed:
        if work.repeated(key):
            continue
        modified_by = values.get("LastModifiedById")
        if (
            modified_by
            and tenant.integration_user_id
            and modified_by[:15] == tenant.integration_user_id[:15]
        ):
            work.add(key, drop="salesforce.echo")
            continue
        work.add(key, fetch=(tenant.tenant_id, object_name), record_ids=(record_id,))
    return work


@bp.post("/salesforce/outbound")
def salesforce_outbound() -> Response:
    """Receive a Salesforce outbound message; Ack only once its work is queued."""
    services = context.services()
    root = _parse_xml(request.get_data(cache=True))
    try:
        work, done = _ingest(services, lambda tenants: outbound_work(root, tenants))
        _queue_work(services, work, done)
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


def _verify_relay(services: Services, body: bytes, tenants: _Tenants) -> Tenant:
    org_id = request.headers.get("X-Fieldwise-Org-Id", "")
    timestamp = request.headers.get("X-Fieldwise-Timestamp", "")
    signature = request.headers.get("X-Fieldwise-Signature", "")
    if not org_id or not timestamp.isdigit() or not signature.startswith("sha256="):
        raise ApiError(
            401, "missing_signature",
            "change events need X-Fieldwise-Org-Id, X-Fieldwise-Timestamp and "
            "X-Fieldwise-Signature: sha256=<hex>",
        )  # fmt: skip
    tenant = tenants.find("salesforce", org_id)
    if tenant is None or tenant.status == "uninstalled":
        raise ApiError(401, "unknown_org", f"no Salesforce org {org_id} is installed")
    secret = services.registry.relay_secret_of(tenant)
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


def change_event_work(tenant: Tenant, events: list[Any]) -> Work:
    """Classify relayed change events; gaps and overflows re-fetch the whole object."""
    work = Work("salesforce.duplicate")
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
        parsed.append((key, entity, change, tuple(str(i) for i in ids), header))
    for key, entity, change, ids, header in parsed:
        if work.repeated(key):
            continue
        origin = str(header.get("changeOrigin") or "")
        commit_user = str(header.get("commitUser") or "")
        own_user = tenant.integration_user_id or ""
        # Every Salesforce call Fieldwise makes sends Sforce-Call-Options: client=<CLIENT_NAME>;
        # change events carry it back in changeOrigin, which Salesforce documents for exactly this.
        if f"client={SALESFORCE_CLIENT_NAME}" in origin or (
            own_user and commit_user[:15] == own_user[:15]
        ):
            work.add(key, drop="salesforce.echo")
            continue
        scope = (tenant.tenant_id, entity)
        # A wildcard id (e.g. "001*") or an overflow means Salesforce could not list the records.
        if change == "GAP_OVERFLOW" or any(i.endswith("*") for i in ids):
            work.add(key, job=Job("refetch", *scope))
        elif change in _DELETES:
            work.add(key, job=Job("delete", *scope, ids))
        elif change in _DATA_CHANGES:
            work.add(key, fetch=scope, record_ids=ids)
        else:
            work.add(key, drop="salesforce.unknown_change_type")
    return work


@bp.post("/salesforce/events")
def salesforce_events() -> Response:
    """Receive change events relayed from a Salesforce org."""
    services = context.services()
    body = request.get_data(cache=True)
    parsed: list[list[Any]] = []

    def build(tenants: _Tenants) -> Work:
        tenant = _verify_relay(services, body, tenants)  # before parsing: strangers learn nothing
        if not parsed:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
            parsed.append(payload if isinstance(payload, list) else [payload])
        return change_event_work(tenant, parsed[0])

    try:
        work, done = _ingest(services, build)
        accepted, dropped = _queue_work(services, work, done)
    except QueueUnavailable as exc:
        return _unavailable(exc)
    return _accepted(accepted, dropped)
