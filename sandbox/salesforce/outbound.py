"""Pushing changes out: Outbound Messages (SOAP) and a signed relay of Change Data Capture events.

**Outbound messages.** A configuration (admin hook ``outbound-messages`` with
``{name, object, fields, endpoint_url, integration_user_id?, include_session_id?}``, or
``WorkflowOutboundMessage`` metadata) fires on every create and update of its object made through
the API. Changes within ``batch_window_s`` are collected, and each record's *current* field values
are sent, up to 100 ``Notification`` elements per SOAP ``notifications`` message
(namespace ``http://soap.sforce.com/2005/09/outbound``, ``sObject xsi:type="sf:<Object>"`` with the
configured fields in ``urn:sobject.enterprise.soap.sforce.com``). A delivery counts only when the
answer is 2xx and contains ``<Ack>true</Ack>``; otherwise it is retried with exponentially growing
intervals capped at two hours for up to 24 hours, on the state's compressed clock. The common
Deliverer's faults can drop, duplicate or reorder messages, as Salesforce may.

**CDC relay.** With ``cdc-relay`` set to ``{url, secret, objects?}``, every committed change is
POSTed to ``url`` as JSON::

    POST <url>
    Content-Type: application/json
    X-Fieldwise-Org-Id: <18-char org id>
    X-Fieldwise-Timestamp: <unix seconds of this attempt>
    X-Fieldwise-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>", keyed with secret>

    [ {"schema": "<schema id>",
       "payload": {"ChangeEventHeader": {"entityName", "recordIds", "changeType", "changeOrigin",
                                         "transactionKey", "sequenceNumber", "commitTimestamp",
                                         "commitUser", "commitNumber", "changedFields",
                                         "nulledFields", "diffFields"},
                   "<Field>": <new value>, ...},
       "event": {"replayId": <n>}}, ... ]

One POST carries the events of one transaction. ``changeType`` is CREATE, UPDATE or DELETE for API
writes; a bulk history load is announced as ``GAP_CREATE`` events (recordIds in chunks), or as one
``GAP_OVERFLOW`` per object when it exceeds the overflow threshold. ``changeOrigin`` is
``com/salesforce/api/rest/<version>`` plus ``;client=<id>`` when the write carried
``Sforce-Call-Options: client=<id>``, and ``commitUser`` is the writing token's user, so a consumer
can drop its own echoes. Deliveries retry on connection errors, 429 and 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

import requests

from sandbox.common import Deliverer, Delivery, SandboxState
from sandbox.salesforce.ids import IdFactory, parse_datetime
from sandbox.salesforce.records import Change
from sandbox.salesforce.schema import Schema

OUTBOUND_KEY = "salesforce.outbound_messages"
RELAY_KEY = "salesforce.cdc_relay"
MAX_NOTIFICATIONS = 100
_ACK = re.compile(rb"<(?:[\w.-]+:)?Ack>\s*true\s*</(?:[\w.-]+:)?Ack>")
_CDC_SKIPPED = {"IsDeleted", "SystemModstamp"}


def retry_schedule(
    first_s: float = 15.0, cap_s: float = 7200.0, total_s: float = 86400.0
) -> list[float]:
    """Delays between attempts: doubling from ``first_s``, capped, until ``total_s`` is used up."""
    delays = []
    spent = 0.0
    delay = first_s
    while spent + delay <= total_s:
        delays.append(delay)
        spent += delay
        delay = min(delay * 2, cap_s)
    return delays


def _soap_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
    return escape(str(value))


def _cdc_value(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
    return value


class OutboundRelay:
    """Turns committed changes into outbound messages and CDC relay posts.

    Args:
        state: the sandbox state (store, faults, clock).
        deliverer: the shared webhook Deliverer.
        schema: the org schema.
        ids: the id factory (for ActionId and notification ids).
        org_id: the org id.
        instance_url: returns ``https://host:port``.
        session_for: ``(user_id) -> access token``, for messages configured to send a session id.
        find_record: ``(object, id) -> record or None``; messages carry the latest values.
        batch_window_s: how long changes are gathered before a message is sent.
    """

    def __init__(
        self,
        state: SandboxState,
        deliverer: Deliverer,
        schema: Schema,
        ids: IdFactory,
        org_id: str,
        instance_url: Callable[[], str],
        session_for: Callable[[str], str],
        find_record: Callable[[str, str], dict[str, Any] | None],
        batch_window_s: float = 0.05,
    ) -> None:
        self.state = state
        self.deliverer = deliverer
        self.schema = schema
        self.ids = ids
        self.org_id = org_id
        self.instance_url = instance_url
        self.session_for = session_for
        self.find_record = find_record
        self.batch_window_s = batch_window_s
        self.overflow_threshold = 100_000
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        store = state.store
        self._replay = itertools.count(int(store.get_meta("salesforce.cdc_replay", 0)) + 1)
        self._commit = itertools.count(int(time.time() * 1000))
        self._thread = threading.Thread(target=self._flush_loop, name="sf-outbound", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------------------
    # Configuration (admin hooks and metadata)

    def configs(self) -> list[dict[str, Any]]:
        """The outbound-message configurations."""
        return list(self.state.store.get_meta(OUTBOUND_KEY, []))

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``outbound-messages`` hook: add or replace one configuration, or ``{"delete": name}``.

        Raises:
            ValueError: for a missing name, unknown object or field, or a non-HTTP endpoint.
        """
        configs = self.configs()
        if "delete" in body:
            configs = [c for c in configs if c["name"] != body["delete"]]
            self.state.store.set_meta(OUTBOUND_KEY, configs)
            return {"outbound_messages": configs}
        if not body:
            return {"outbound_messages": configs}
        name = body.get("name")
        obj = self.schema.object(str(body.get("object", "")))
        url = body.get("endpoint_url")
        if not isinstance(name, str) or not name:
            raise ValueError("name is required")
        if obj is None:
            raise ValueError(f"unknown object {body.get('object')!r}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("endpoint_url must be an http(s) URL")
        fields = body.get("fields") or ["Id"]
        if not isinstance(fields, list):
            raise ValueError("fields must be a list of field names")
        canonical = []
        for field_name in fields:
            fdef = obj.field(str(field_name))
            if fdef is None:
                raise ValueError(f"no field {field_name!r} on {obj.name}")
            canonical.append(fdef.name)
        if "Id" not in canonical:
            canonical.insert(0, "Id")
        existing = next((c for c in configs if c["name"] == name), None)
        config = {
            "id": existing["id"] if existing else self.ids.make("04k")[0],
            "name": name,
            "object": obj.name,
            "fields": canonical,
            "endpoint_url": url,
            "integration_user_id": body.get("integration_user_id"),
            "include_session_id": bool(body.get("include_session_id", False)),
        }
        configs = [c for c in configs if c["name"] != name] + [config]
        self.state.store.set_meta(OUTBOUND_KEY, configs)
        return {"outbound_messages": configs}

    def configure_relay(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``cdc-relay`` hook: ``{url, secret, objects?}``; ``{"url": null}`` turns it off.

        Raises:
            ValueError: for a bad URL or a missing secret.
        """
        url = body.get("url")
        if url is None:
            self.state.store.set_meta(RELAY_KEY, None)
            return {"cdc_relay": None}
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        secret = body.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret is required")
        objects = body.get("objects")
        if objects is not None:
            resolved = [self.schema.object(str(o)) for o in objects]
            if any(o is None for o in resolved):
                raise ValueError(f"unknown object in {objects}")
            objects = [o.name for o in resolved if o]
        if "overflow_threshold" in body:
            self.overflow_threshold = int(body["overflow_threshold"])
        self.state.store.set_meta(RELAY_KEY, {"url": url, "secret": secret, "objects": objects})
        return {"cdc_relay": {"url": url, "objects": objects}}

    # ----------------------------------------------------------------------------------------------
    # Change listener

    def on_changes(self, changes: list[Change]) -> None:
        """Engine listener: queue outbound notifications and relay CDC events."""
        configs = self.configs()
        if configs:
            with self._lock:
                for change in changes:
                    if change.change_type not in {"CREATE", "UPDATE"}:
                        continue
                    for config in configs:
                        if config["object"] != change.object_name:
                            continue
                        batch = self._pending.setdefault(
                            config["name"], {"since": time.time(), "ids": []}
                        )
                        if change.record_id not in batch["ids"]:
                            batch["ids"].append(change.record_id)
        relay = self.state.store.get_meta(RELAY_KEY)
        if relay:
            events = [
                self._event(c)
                for c in changes
                if relay["objects"] is None or c.object_name in relay["objects"]
            ]
            if events:
                self._relay(relay, events)

    def _flush_loop(self) -> None:
        while not self._stop.wait(0.01):
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Send every batch whose window has passed (all of them with ``force``)."""
        due: list[tuple[str, list[str]]] = []
        now = time.time()
        with self._lock:
            for name, batch in list(self._pending.items()):
                if force or now - batch["since"] >= self.batch_window_s:
                    due.append((name, batch["ids"]))
                    del self._pending[name]
        if not due:
            return
        configs = {c["name"]: c for c in self.configs()}
        for name, ids in due:
            config = configs.get(name)
            if config is None:
                continue
            for start in range(0, len(ids), MAX_NOTIFICATIONS):
                self._send(config, ids[start : start + MAX_NOTIFICATIONS])

    def stop(self) -> None:
        """Stop the batching thread."""
        self._stop.set()
        self._thread.join(timeout=2)

    # ----------------------------------------------------------------------------------------------
    # Outbound messages

    def notification_body(self, config: dict[str, Any], record_ids: list[str]) -> bytes:
        """The SOAP ``notifications`` envelope for some records of one configuration."""
        base = self.instance_url()
        session = '<SessionId xsi:nil="true"/>'
        if config.get("include_session_id"):
            token = self.session_for(config.get("integration_user_id") or "")
            session = f"<SessionId>{escape(token)}</SessionId>"
        notification_ids = self.ids.make("04l", len(record_ids))
        parts = []
        for notification_id, record_id in zip(notification_ids, record_ids, strict=True):
            record = self.find_record(config["object"], record_id)
            if record is None:
                continue
            fields = "".join(
                f"<sf:{name}>{_soap_value(record.get(name))}</sf:{name}>"
                for name in config["fields"]
                if record.get(name) is not None
            )
            parts.append(
                f"<Notification><Id>{notification_id}</Id>"
                f'<sObject xsi:type="sf:{config["object"]}"'
                ' xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
                f"{fields}</sObject></Notification>"
            )
        org15 = self.org_id[:15]
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body>"
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f"<OrganizationId>{self.org_id}</OrganizationId>"
            f"<ActionId>{config['id']}</ActionId>"
            f"{session}"
            f"<EnterpriseUrl>{escape(base)}/services/Soap/c/62.0/{org15}</EnterpriseUrl>"
            f"<PartnerUrl>{escape(base)}/services/Soap/u/62.0/{org15}</PartnerUrl>"
            f"{''.join(parts)}"
            "</notifications></soapenv:Body></soapenv:Envelope>"
        ).encode()

    def _send(self, config: dict[str, Any], record_ids: list[str]) -> None:
        body = self.notification_body(config, record_ids)

        def headers() -> dict[str, str]:
            return {
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '""',
                "User-Agent": "Salesforce - Outbound Notification",
            }

        def accepted(response: requests.Response) -> bool:
            return 200 <= response.status_code < 300 and bool(_ACK.search(response.content))

        self.deliverer.submit(
            Delivery(
                url=config["endpoint_url"],
                render=lambda _attempt: (body, headers()),
                accepted=accepted,
                retry_on=lambda _response: True,
                schedule_s=retry_schedule(),
                label=f"outbound:{config['name']}",
            )
        )

    # ----------------------------------------------------------------------------------------------
    # CDC

    def _header(
        self,
        entity: str,
        record_ids: list[str],
        change_type: str,
        origin: str,
        tx_key: str,
        sequence: int,
        commit_ms: int,
        user: str,
        changed: list[str],
    ) -> dict[str, Any]:
        return {
            "entityName": entity,
            "recordIds": record_ids,
            "changeType": change_type,
            "changeOrigin": origin,
            "transactionKey": tx_key,
            "sequenceNumber": sequence,
            "commitTimestamp": commit_ms,
            "commitNumber": next(self._commit),
            "commitUser": user,
            "changedFields": changed,
            "nulledFields": [],
            "diffFields": [],
        }

    def _wrap(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        replay = next(self._replay)
        self.state.store.set_meta("salesforce.cdc_replay", replay)
        schema_id = hashlib.sha1(entity.encode()).hexdigest()[:22]
        return {"schema": schema_id, "payload": payload, "event": {"replayId": replay}}

    def _event(self, change: Change) -> dict[str, Any]:
        obj = self.schema.object(change.object_name)
        record = change.record
        changed = [f for f in change.changed_fields if f not in _CDC_SKIPPED]
        if change.change_type == "UPDATE":
            changed = sorted(set(changed) | {"LastModifiedDate"})
        header = self._header(
            change.object_name,
            [change.record_id],
            change.change_type,
            change.context.change_origin,
            change.transaction_key,
            change.sequence_number,
            change.commit_timestamp_ms,
            change.context.user_id,
            changed if change.change_type == "UPDATE" else [],
        )
        header["nulledFields"] = [f for f in changed if record.get(f) is None]
        payload: dict[str, Any] = {"ChangeEventHeader": header}
        if change.change_type in {"CREATE", "UPDATE"}:
            names = (
                changed
                if change.change_type == "UPDATE"
                else [
                    k for k, v in record.items() if v is not None and k not in _CDC_SKIPPED | {"Id"}
                ]
            )
            for name in names:
                payload[name] = _cdc_value(record.get(name))
            if obj is not None:
                for target, sources in obj.computed.items():
                    fdef = obj.field(target)
                    if fdef and (fdef.name in payload or any(s in payload for s in sources)):
                        payload[fdef.name] = {s: record.get(s) for s in sources}
        return self._wrap(change.object_name, payload)

    def gap_events(
        self, object_name: str, record_ids: list[str], user_id: str, chunk: int = 500
    ) -> None:
        """Announce records written outside the API (a bulk load) as GAP_CREATE or GAP_OVERFLOW."""
        relay = self.state.store.get_meta(RELAY_KEY)
        if not relay or not record_ids:
            return
        if relay["objects"] is not None and object_name not in relay["objects"]:
            return
        now_ms = int(time.time() * 1000)
        tx_key = hashlib.sha1(f"{object_name}{now_ms}".encode()).hexdigest()
        origin = "com/salesforce/api/sandbox-load"
        if len(record_ids) > self.overflow_threshold:
            header = self._header(
                object_name, [], "GAP_OVERFLOW", origin, tx_key, 1, now_ms, user_id, []
            )
            self._relay(relay, [self._wrap(object_name, {"ChangeEventHeader": header})])
            return
        events = []
        for seq, start in enumerate(range(0, len(record_ids), chunk), start=1):
            header = self._header(
                object_name,
                record_ids[start : start + chunk],
                "GAP_CREATE",
                origin,
                tx_key,
                seq,
                now_ms,
                user_id,
                [],
            )
            events.append(self._wrap(object_name, {"ChangeEventHeader": header}))
        self._relay(relay, events)

    def _relay(self, relay: dict[str, Any], events: list[dict[str, Any]]) -> None:
        body = json.dumps(events, separators=(",", ":")).encode()
        secret = relay["secret"].encode()

        def headers() -> dict[str, str]:
            # The timestamp is signed with the body, so a captured delivery cannot be replayed later.
            timestamp = str(int(time.time()))
            digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            return {
                "Content-Type": "application/json",
                "X-Fieldwise-Org-Id": self.org_id,
                "X-Fieldwise-Timestamp": timestamp,
                "X-Fieldwise-Signature": f"sha256={digest}",
            }

        def retry_on(response: requests.Response | None) -> bool:
            return response is None or response.status_code == 429 or response.status_code >= 500

        self.deliverer.submit(
            Delivery(
                url=relay["url"],
                render=lambda _attempt: (body, headers()),
                accepted=lambda response: 200 <= response.status_code < 300,
                retry_on=retry_on,
                schedule_s=retry_schedule(first_s=5.0),
                label="cdc",
            )
        )
