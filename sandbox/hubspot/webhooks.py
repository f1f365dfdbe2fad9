"""App-level webhook settings and subscriptions (Webhooks API v3) and signed, batched delivery.

Record changes arrive from :class:`~sandbox.hubspot.objects.ObjectRepo` as event dicts. Each one that
matches an active subscription becomes a HubSpot webhook event; events are coalesced for a short
window and POSTed as JSON arrays of at most 100 to the app's ``targetUrl`` through the shared
:class:`~sandbox.common.Deliverer`, signed with the app's client secret (``X-HubSpot-Signature-v3``
always, plus the v1 or v2 ``X-HubSpot-Signature`` the settings ask for).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from typing import Any

import requests
from flask import Flask, Response, request

from sandbox.common import Deliverer, Delivery, RecordStore, SandboxState
from sandbox.hubspot.errors import HubSpotError, json_response, validation_error
from sandbox.hubspot.properties import OBJECT_TYPE_IDS, SINGULAR, now_iso

MAX_EVENTS_PER_REQUEST = 100
RETRY_SCHEDULE_S = [60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600, 36000]
"""HubSpot retries a failed delivery up to ten times spread over about 24 hours (2018 changelog);
each delay is drawn between half and all of these values."""

LEGACY_OBJECTS = ("contact", "company", "deal")
EVENT_KINDS = ("creation", "deletion", "propertyChange", "associationChange", "merge", "restore")
_CHANGE_FLAGS = {"creation": "CREATED", "deletion": "DELETED", "merge": "MERGED"}

# HubSpot's v3 signature is computed over the URI with these escapes decoded (request-validation docs).
_V3_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def v3_uri(url: str) -> str:
    """The URI as HubSpot signs it for v3: the listed percent-escapes decoded (either case)."""
    out = url
    for escaped, plain in _V3_DECODE.items():
        out = out.replace(escaped, plain).replace(escaped.lower(), plain)
    return out


def sign_v3(secret: str, method: str, url: str, body: str, timestamp_ms: str) -> str:
    """``base64(HMAC-SHA256(secret, method + uri + body + timestamp))``."""
    message = f"{method}{v3_uri(url)}{body}{timestamp_ms}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def sign_v1(secret: str, body: str) -> str:
    """``hex(sha256(secret + body))``."""
    return hashlib.sha256(f"{secret}{body}".encode()).hexdigest()


def sign_v2(secret: str, method: str, url: str, body: str) -> str:
    """``hex(sha256(secret + method + uri + body))``."""
    return hashlib.sha256(f"{secret}{method}{url}{body}".encode()).hexdigest()


class WebhookHub:
    """Subscriptions, settings and the coalescing outbox of the sandbox's app."""

    def __init__(
        self,
        state: SandboxState,
        deliverer: Deliverer,
        store: RecordStore,
        *,
        portal_id: int,
        app_id: int,
        client_secret: str,
        coalesce_s: float = 0.05,
    ) -> None:
        self._state = state
        self._deliverer = deliverer
        self._store = store
        self.portal_id = portal_id
        self.app_id = app_id
        self.client_secret = client_secret
        self.coalesce_s = coalesce_s
        """How long events gather before a batch is sent, in seconds."""
        self._lock = threading.RLock()
        self._outbox: list[dict[str, Any]] = []
        self._timer: threading.Timer | None = None
        self._event_ids = itertools.count(int(time.time() * 1000) % 10**9 * 10)
        self.sent_batches: list[list[dict[str, Any]]] = []
        """Every batch handed to the deliverer, for tests."""

    # -- settings and subscriptions ----------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any] | None:
        """The app's webhook settings, or None before they are configured."""
        return self._store.get_meta("webhook_settings")

    def configure(self, body: Any) -> dict[str, Any]:
        """Apply a ``SettingsChangeRequest``; HubSpot's 400 when targetUrl or throttling is bad."""
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: the body must be an object")
        target = body.get("targetUrl")
        throttling = body.get("throttling")
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            raise validation_error("targetUrl must be an absolute http(s) URL")
        if not isinstance(throttling, dict) or not isinstance(
            throttling.get("maxConcurrentRequests"), int
        ):
            raise validation_error("throttling.maxConcurrentRequests is required")
        if not 5 <= throttling["maxConcurrentRequests"] <= 100:
            raise validation_error("throttling.maxConcurrentRequests must be between 5 and 100")
        version = body.get("signatureVersion", (self.settings or {}).get("signatureVersion", "v1"))
        if version not in ("v1", "v2", None):
            raise validation_error("signatureVersion must be v1, v2 or null")
        current = self.settings or {}
        stamp = now_iso()
        settings = {
            "targetUrl": target,
            "throttling": {
                "maxConcurrentRequests": throttling["maxConcurrentRequests"],
                "period": str(throttling.get("period", "SECONDLY")),
            },
            "signatureVersion": version,
            "createdAt": current.get("createdAt", stamp),
            "updatedAt": stamp,
        }
        self._store.set_meta("webhook_settings", settings)
        return settings

    def clear_settings(self) -> None:
        """Remove the settings (and so stop deliveries)."""
        self._store.set_meta("webhook_settings", None)

    def subscriptions(self) -> list[dict[str, Any]]:
        """All subscriptions of the app."""
        return list(self._store.get_meta("webhook_subscriptions", []))

    def subscription(self, sub_id: str) -> dict[str, Any]:
        """One subscription, or HubSpot's 404."""
        for sub in self.subscriptions():
            if sub["id"] == str(sub_id):
                return sub
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Subscription {sub_id} not found")

    def subscribe(self, body: Any) -> dict[str, Any]:
        """Create a subscription from a ``SubscriptionCreateRequest``."""
        if not isinstance(body, dict) or not body.get("eventType"):
            raise validation_error("Invalid input JSON: eventType is required")
        event_type = str(body["eventType"])
        scope, _, kind = event_type.partition(".")
        if kind not in EVENT_KINDS or scope not in (*LEGACY_OBJECTS, "object"):
            raise validation_error(f"Unknown eventType {event_type}")
        object_type_id = body.get("objectTypeId")
        if scope == "object" and object_type_id not in OBJECT_TYPE_IDS.values():
            raise validation_error(f"eventType {event_type} needs a known objectTypeId")
        if kind == "propertyChange" and not body.get("propertyName"):
            raise validation_error("propertyChange subscriptions need a propertyName")
        with self._lock:
            subs = self.subscriptions()
            for sub in subs:
                if (sub["eventType"], sub.get("propertyName"), sub.get("objectTypeId")) == (
                    event_type,
                    body.get("propertyName"),
                    object_type_id,
                ):
                    raise HubSpotError(
                        409, "CONFLICT", f"A subscription for {event_type} already exists"
                    )
            if len(subs) >= 1000:
                raise validation_error("An app can have at most 1000 webhook subscriptions")
            next_id = int(self._store.get_meta("next_subscription_id", 1))
            self._store.set_meta("next_subscription_id", next_id + 1)
            stamp = now_iso()
            sub = {
                "id": str(next_id),
                "eventType": event_type,
                "active": bool(body.get("active", True)),
                "createdAt": stamp,
                "updatedAt": stamp,
            }
            if body.get("propertyName"):
                sub["propertyName"] = str(body["propertyName"])
            if object_type_id:
                sub["objectTypeId"] = str(object_type_id)
            subs.append(sub)
            self._store.set_meta("webhook_subscriptions", subs)
            return sub

    def set_active(self, sub_id: str, active: Any) -> dict[str, Any]:
        """Pause or resume one subscription."""
        if not isinstance(active, bool):
            raise validation_error("active must be true or false")
        with self._lock:
            subs = self.subscriptions()
            for sub in subs:
                if sub["id"] == str(sub_id):
                    sub["active"] = active
                    sub["updatedAt"] = now_iso()
                    self._store.set_meta("webhook_subscriptions", subs)
                    return sub
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Subscription {sub_id} not found")

    def unsubscribe(self, sub_id: str) -> None:
        """Delete one subscription."""
        with self._lock:
            subs = self.subscriptions()
            kept = [s for s in subs if s["id"] != str(sub_id)]
            if len(kept) == len(subs):
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Subscription {sub_id} not found")
            self._store.set_meta("webhook_subscriptions", kept)

    # -- events ------------------------------------------------------------------------------

    def on_change(self, change: dict[str, Any]) -> None:
        """Turn one record change into webhook events for every matching active subscription."""
        if self.settings is None:
            return
        kind = change["kind"]
        object_type = change["objectType"]
        singular = SINGULAR[object_type]
        type_id = OBJECT_TYPE_IDS[object_type]
        events = []
        for sub in self.subscriptions():
            if not sub["active"]:
                continue
            scope, _, sub_kind = sub["eventType"].partition(".")
            if sub_kind != kind:
                continue
            generic = scope == "object"
            if generic and sub.get("objectTypeId") != type_id:
                continue
            if not generic and scope != singular:
                continue
            if kind == "propertyChange" and sub.get("propertyName") != change["propertyName"]:
                continue
            events.append(self._event(sub, change, generic))
        if events:
            self._enqueue(events)

    def _event(self, sub: dict[str, Any], change: dict[str, Any], generic: bool) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventId": next(self._event_ids),
            "subscriptionId": int(sub["id"]),
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": change["occurredAt"],
            "subscriptionType": sub["eventType"],
            "attemptNumber": 0,
            "objectId": int(change["objectId"]),
            "changeSource": change["changeSource"],
        }
        if change.get("sourceId") is not None:
            event["sourceId"] = change["sourceId"]
        if generic:
            event["objectTypeId"] = OBJECT_TYPE_IDS[change["objectType"]]
        kind = change["kind"]
        if kind in _CHANGE_FLAGS:
            event["changeFlag"] = _CHANGE_FLAGS[kind]
        if kind == "propertyChange":
            event["propertyName"] = change["propertyName"]
            event["propertyValue"] = change["propertyValue"]
            event["isSensitive"] = False
        elif kind == "merge":
            for key in (
                "primaryObjectId",
                "mergedObjectIds",
                "newObjectId",
                "numberOfPropertiesMoved",
            ):
                event[key] = change[key]
        elif kind == "associationChange":
            keys = [
                "associationType",
                "fromObjectId",
                "toObjectId",
                "associationRemoved",
                "isPrimaryAssociation",
            ]
            if generic:
                keys += [
                    "associationTypeId",
                    "associationCategory",
                    "fromObjectTypeId",
                    "toObjectTypeId",
                ]
            for key in keys:
                event[key] = change[key]
        return event

    def _enqueue(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._outbox.extend(events)
            if len(self._outbox) >= MAX_EVENTS_PER_REQUEST:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(self.coalesce_s, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Send everything gathered so far, in batches of at most 100 events."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        settings = self.settings
        pending, self._outbox = self._outbox, []
        if settings is None:
            return
        for start in range(0, len(pending), MAX_EVENTS_PER_REQUEST):
            batch = pending[start : start + MAX_EVENTS_PER_REQUEST]
            self.sent_batches.append(batch)
            self._deliverer.submit(self._delivery(settings, batch))

    def _delivery(self, settings: dict[str, Any], batch: list[dict[str, Any]]) -> Delivery:
        url = settings["targetUrl"]
        version = settings.get("signatureVersion")
        secret = self.client_secret

        def render(attempt: int) -> tuple[bytes, dict[str, str]]:
            # HubSpot counts delivery attempts in each event, so a retry's body differs.
            body = json.dumps(
                [{**event, "attemptNumber": attempt} for event in batch], separators=(",", ":")
            )
            timestamp = str(int(time.time() * 1000))
            out = {
                "Content-Type": "application/json",
                "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksSandbox",
                "X-HubSpot-Request-Timestamp": timestamp,
                "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, timestamp),
            }
            if version == "v1":
                out["X-HubSpot-Signature"] = sign_v1(secret, body)
                out["X-HubSpot-Signature-Version"] = "v1"
            elif version == "v2":
                out["X-HubSpot-Signature"] = sign_v2(secret, "POST", url, body)
                out["X-HubSpot-Signature-Version"] = "v2"
            return body.encode(), out

        rng = self._state.rng
        return Delivery(
            url=url,
            render=render,
            accepted=lambda r: 200 <= r.status_code < 300,
            retry_on=_should_retry,
            schedule_s=[delay * rng.uniform(0.5, 1.0) for delay in RETRY_SCHEDULE_S],
            label=f"hubspot webhooks x{len(batch)}",
        )


def _should_retry(response: requests.Response | None) -> bool:
    """HubSpot retries connection failures, timeouts, 429 and 5xx; never other 4xx answers."""
    if response is None:
        return True
    return response.status_code == 429 or response.status_code >= 500


def register(app: Flask, hub: WebhookHub, developer_api_key: str) -> None:
    """Add the Webhooks API v3 routes, authenticated with the developer ``hapikey``."""

    def check(app_id: str) -> None:
        if request.args.get("hapikey") != developer_api_key:
            raise HubSpotError(
                401,
                "INVALID_AUTHENTICATION",
                "The API key provided is invalid. View or manage your API key here:"
                " https://app.hubspot.com/l/api-key/",
            )
        if str(app_id) != str(hub.app_id):
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"App {app_id} not found")

    @app.get("/webhooks/v3/<app_id>/settings")
    def webhook_settings_get(app_id: str) -> Response:
        check(app_id)
        if hub.settings is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "No webhook settings for this app")
        return json_response(hub.settings)

    @app.put("/webhooks/v3/<app_id>/settings")
    def webhook_settings_put(app_id: str) -> Response:
        check(app_id)
        return json_response(hub.configure(request.get_json(silent=True)))

    @app.delete("/webhooks/v3/<app_id>/settings")
    def webhook_settings_delete(app_id: str) -> Response:
        check(app_id)
        hub.clear_settings()
        return Response(status=204)

    @app.get("/webhooks/v3/<app_id>/subscriptions")
    def webhook_subscriptions_list(app_id: str) -> Response:
        check(app_id)
        return json_response({"results": hub.subscriptions()})

    @app.post("/webhooks/v3/<app_id>/subscriptions")
    def webhook_subscriptions_create(app_id: str) -> Response:
        check(app_id)
        return json_response(hub.subscribe(request.get_json(silent=True)), 201)

    @app.get("/webhooks/v3/<app_id>/subscriptions/<sub_id>")
    def webhook_subscription_get(app_id: str, sub_id: str) -> Response:
        check(app_id)
        return json_response(hub.subscription(sub_id))

    @app.patch("/webhooks/v3/<app_id>/subscriptions/<sub_id>")
    def webhook_subscription_patch(app_id: str, sub_id: str) -> Response:
        check(app_id)
        body = request.get_json(silent=True) or {}
        return json_response(hub.set_active(sub_id, body.get("active")))

    @app.delete("/webhooks/v3/<app_id>/subscriptions/<sub_id>")
    def webhook_subscription_delete(app_id: str, sub_id: str) -> Response:
        check(app_id)
        hub.unsubscribe(sub_id)
        return Response(status=204)

    @app.post("/webhooks/v3/<app_id>/subscriptions/batch/update")
    def webhook_subscriptions_batch(app_id: str) -> Response:
        check(app_id)
        body = request.get_json(silent=True)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise validation_error("Invalid input JSON: inputs is required")
        started = now_iso()
        results = [hub.set_active(str(item.get("id")), item.get("active")) for item in inputs]
        return json_response(
            {
                "status": "COMPLETE",
                "results": results,
                "startedAt": started,
                "completedAt": now_iso(),
            }
        )
