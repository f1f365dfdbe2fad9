"""The Salesforce sandbox: one Flask app over HTTPS, backed by the shared RecordStore.

It serves OAuth, REST, SOQL, composite, Metadata (SOAP) and Tooling calls, pushes outbound
messages and CDC events, and renders record pages.

Usage::

    sb = SalesforceSandbox(tmp_path)
    sb.start()
    sf = Salesforce(instance_url=sb.instance_url, session_id=sb.access_token, session=sb.session())

Admin hooks (``POST /__admin/<name>``, JSON body), beside the common ``faults``/``requests``/
``counters``: ``expire-tokens``, ``revoke-refresh-tokens``, ``oauth-settings``, ``jwt-certificate``,
``api-limit`` (``{limit?, used?, reset?}``), ``outbound-messages``, ``cdc-relay``.

A sandbox instance is started and stopped once; to simulate a restart, build a new instance on the
same ``data_dir``.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import secrets
import threading
import time
from typing import Any

import requests
from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.common import Deliverer, RecordStore, SandboxState, install_admin
from sandbox.history_model import History
from sandbox.salesforce import tls
from sandbox.salesforce.metadata import MetadataApi, SoapFault, fault
from sandbox.salesforce.oauth import OAuthService
from sandbox.salesforce.outbound import OutboundRelay
from sandbox.salesforce.records import CallContext, RecordEngine
from sandbox.salesforce.rest import VERSIONS, ApiRequest, RestApi
from sandbox.salesforce.schema import Schema
from sandbox.salesforce.ui import register_ui

ORG_KEY = "salesforce.org"
INTEGRATION_USERNAME = "integration@fieldwise-sandbox.example"
_DATA_PATH = re.compile(r"^/services/data/v(\d{2}\.\d)(?:/(.*))?$")
_SOAP_PATH = re.compile(r"^/services/Soap/m/(\d{2}\.\d)(?:/.*)?$")
_CLIENT_OPTION = re.compile(r"client\s*=\s*([^,;\s]+)")
_METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"]


def _endpoint_for(method: str, path: str, body: bytes) -> str:
    """A stable counter name for a request, e.g. ``PATCH sobjects/Lead`` or ``GET query``."""
    match = _DATA_PATH.match(path)
    if match:
        parts = [p for p in (match.group(2) or "").split("/") if p]
        if not parts:
            return f"{method} data"
        head = parts[0]
        if head in {"query", "queryAll", "limits"}:
            return f"{method} {head}"
        if head == "sobjects":
            if len(parts) == 1:
                return f"{method} sobjects"
            if len(parts) >= 3 and parts[2] in {"describe", "deleted", "updated"}:
                return f"{method} sobjects/{parts[1]}/{parts[2]}"
            return f"{method} sobjects/{parts[1]}"
        if head == "composite":
            return f"{method} composite/sobjects" if len(parts) > 1 else f"{method} composite"
        if head == "tooling":
            return f"{method} tooling/" + "/".join(parts[1:3])
        return f"{method} {head}"
    if _SOAP_PATH.match(path):
        op = re.search(rb"<(?:[\w-]+:)?(\w+Metadata)[\s>/]", body or b"")
        return f"{method} Soap/m/{op.group(1).decode() if op else 'unknown'}"
    if path.startswith("/services/oauth2/"):
        return f"{method} oauth2/{path.rsplit('/', 1)[-1]}"
    if path.startswith("/id/"):
        return f"{method} id"
    if path.startswith("/ui/"):
        return f"{method} ui"
    return f"{method} {path}"


class _QuietHandler(WSGIRequestHandler):
    """Request handler that keeps werkzeug's per-request access log off stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip the access log; the RequestLog keeps every call."""


class SalesforceSandbox:
    """A local Salesforce org that simple-salesforce talks to over HTTPS.

    Args:
        data_dir: where ``salesforce.sqlite3`` and the certificate live.
        host: the address to bind.
        port: the port; 0 picks a free one.
        clock_scale: multiplier for vendor retry schedules (outbound messages, CDC relay).
        daily_api_limit: the DailyApiRequests allocation.
        widget_base_url: Fieldwise's base URL; record pages embed ``/cards/salesforce/<id>``.
        access_token_lifetime_s: lifetime of new access tokens (default two hours).
        outbound_batch_window_s: how long changes gather before an outbound message is sent.
    """

    def __init__(
        self,
        data_dir: pathlib.Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock_scale: float = 0.01,
        daily_api_limit: int = 100_000,
        widget_base_url: str | None = None,
        access_token_lifetime_s: float | None = None,
        outbound_batch_window_s: float = 0.05,
    ) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.widget_base_url = widget_base_url.rstrip("/") if widget_base_url else None
        store = RecordStore(str(self.data_dir / "salesforce.sqlite3"))
        self.state = SandboxState(store, clock_scale=clock_scale)
        self.schema = Schema(store)
        self.engine = RecordEngine(store, self.schema)
        org = store.get_meta(ORG_KEY)
        if org is None:
            org = {
                "org_id": self.engine.ids.make("00D")[0],
                "client_id": "3MVG9"
                + secrets.token_urlsafe(60).replace("-", "A").replace("_", "z"),
                "client_secret": str(secrets.randbelow(10**19 - 10**18) + 10**18),
            }
            store.set_meta(ORG_KEY, org)
        self.org_id: str = org["org_id"]
        self.client_id: str = org["client_id"]
        self.client_secret: str = org["client_secret"]
        self.user_id = self._ensure_integration_user()
        self.api_limit = int(daily_api_limit)
        self.api_used = 0
        self._usage_lock = threading.Lock()
        self.oauth = OAuthService(
            store,
            self.org_id,
            self.client_id,
            self.client_secret,
            lambda: self.instance_url,
            lambda uid: store.get("User", uid),
            self.find_username,
        )
        if access_token_lifetime_s is not None:
            self.oauth.update_settings({"access_token_lifetime_s": access_token_lifetime_s})
        self.deliverer = Deliverer(self.state)
        self.relay = OutboundRelay(
            self.state,
            self.deliverer,
            self.schema,
            self.engine.ids,
            self.org_id,
            lambda: self.instance_url,
            lambda uid: self.oauth.issue(uid or self.user_id),
            lambda obj, rid: store.get(obj, rid),
            batch_window_s=outbound_batch_window_s,
        )
        self.engine.listeners.append(self.relay.on_changes)
        self.metadata_api = MetadataApi(
            self.schema,
            store.get_meta,
            store.set_meta,
            lambda config: self.relay.configure(config),
            self.find_username,
        )
        self.rest = RestApi(self.engine, self.schema, self.limits)
        self.app = self._build_app()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_cert: pathlib.Path = self.data_dir / "salesforce-cert.pem"

    # ----------------------------------------------------------------------------------------------
    # Public interface

    @property
    def instance_url(self) -> str:
        """``https://host:port`` of the running server."""
        return f"https://{self.host}:{self.port}"

    @property
    def access_token(self) -> str:
        """A valid access token for the integration user (re-minted when expired or revoked)."""
        store = self.state.store
        token = store.get_meta("salesforce.default_token")
        if not token or self.oauth.user_for(token) is None:
            token = self.oauth.issue(self.user_id)
            store.set_meta("salesforce.default_token", token)
        return str(token)

    def connection_info(self) -> dict[str, Any]:
        """What a client needs to connect without the OAuth dance."""
        return {
            "instance_url": self.instance_url,
            "ca_cert": str(self.ca_cert),
            "access_token": self.access_token,
            "org_id": self.org_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    def session(self) -> requests.Session:
        """A requests session that trusts the sandbox's certificate."""
        session = requests.Session()
        session.verify = str(self.ca_cert)
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify when trust_env
        # is on; the sandbox is loopback-only, so the environment has nothing else to offer.
        session.trust_env = False
        return session

    def start(self) -> SalesforceSandbox:
        """Serve HTTPS in a daemon thread (creates the certificate on first start)."""
        cert, key = tls.ensure_certificate(self.data_dir, self.host)
        self.ca_cert = cert
        self._server = make_server(
            self.host,
            self.port,
            self.app,
            threaded=True,
            ssl_context=tls.server_context(cert, key),
            request_handler=_QuietHandler,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="salesforce-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and stop the delivery threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.relay.stop()
        self.deliverer.stop()

    def load_history(self, history: History) -> dict[str, str]:
        """Write a generated history straight into the store; returns generator key -> id."""
        from sandbox.salesforce.loader import load_history

        return load_history(self, history)

    def find_username(self, username: str) -> dict[str, Any] | None:
        """The User with this username (case-insensitive), or None."""
        wanted = username.lower()
        for _, user in self.state.store.iter("User"):
            if str(user.get("Username", "")).lower() == wanted:
                return user
        return None

    def limits(self) -> dict[str, Any]:
        """The ``limits`` resource body."""
        with self._usage_lock:
            used = self.api_used

        def pair(maximum: int, remaining: int) -> dict[str, int]:
            return {"Max": maximum, "Remaining": max(0, remaining)}

        return {
            "ConcurrentAsyncGetReportInstances": pair(200, 200),
            "ConcurrentSyncReportRuns": pair(20, 20),
            "DailyApiRequests": pair(self.api_limit, self.api_limit - used),
            "DailyAsyncApexExecutions": pair(250000, 250000),
            "DailyBulkApiBatches": pair(15000, 15000),
            "DailyBulkV2QueryFileStorageMB": pair(976562, 976562),
            "DailyBulkV2QueryJobs": pair(10000, 10000),
            "DailyStreamingApiEvents": pair(1000000, 1000000),
            "DataStorageMB": pair(1024, 1024),
            "FileStorageMB": pair(1024, 1024),
            "HourlyPublishedPlatformEvents": pair(250000, 250000),
            "MonthlyPlatformEventsUsageEntitlement": pair(1500000, 1500000),
        }

    # ----------------------------------------------------------------------------------------------
    # Internals

    def _ensure_integration_user(self) -> str:
        store = self.state.store
        existing = store.get_meta("salesforce.integration_user")
        if existing and store.get("User", existing):
            return str(existing)
        user_id = self.engine.ids.make("005")[0]
        from sandbox.salesforce.ids import now_string

        now = now_string()
        record = self.engine.blank_record(self.schema.objects["user"])
        record.update(
            {
                "Id": user_id,
                "Username": INTEGRATION_USERNAME,
                "FirstName": "Fieldwise",
                "LastName": "Integration",
                "Name": "Fieldwise Integration",
                "Email": INTEGRATION_USERNAME,
                "Alias": "fwint",
                "Title": "Integration User",
                "IsActive": True,
                "UserType": "Standard",
                "TimeZoneSidKey": "GMT",
                "IsDeleted": False,
                "CreatedDate": now,
                "CreatedById": user_id,
                "LastModifiedDate": now,
                "LastModifiedById": user_id,
                "SystemModstamp": now,
            }
        )
        store.put("User", user_id, record)
        store.set_meta("salesforce.integration_user", user_id)
        return user_id

    def _limit_header(self) -> str:
        with self._usage_lock:
            return f"api-usage={self.api_used}/{self.api_limit}"

    def _set_limit(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._usage_lock:
            if body.get("reset"):
                self.api_used = 0
            if "limit" in body:
                self.api_limit = int(body["limit"])
            if "used" in body:
                self.api_used = int(body["used"])
            return {"limit": self.api_limit, "used": self.api_used}

    @staticmethod
    def _sf_error(status: int, code: str, message: str) -> Response:
        response = jsonify([{"message": message, "errorCode": code}])
        response.status_code = status
        return response

    def _injected_error(self, status: int) -> Response:
        if _SOAP_PATH.match(request.path):
            return Response(
                fault("sf:UNKNOWN_EXCEPTION", "UNKNOWN_EXCEPTION: injected fault"),
                status=500,
                mimetype="text/xml",
            )
        codes = {
            500: (
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId"
                " if you contact support: 1234567890-12345 (-1234567890)",
            ),
            502: ("SERVER_UNAVAILABLE", "Bad gateway: the Salesforce server is unavailable"),
            503: (
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records",
            ),
            504: (
                "REQUEST_RUNNING_TOO_LONG",
                "Your request was running for too long, and has been stopped.",
            ),
        }
        code, message = codes.get(status, ("UNKNOWN_EXCEPTION", f"HTTP {status}"))
        return self._sf_error(status, code, message)

    def _storm_response(self) -> Response:
        # Salesforce's REST API answers quota exhaustion with 403 REQUEST_LIMIT_EXCEEDED (see
        # _check_quota); a burst throttle answered with HTTP 429 is what Salesforce's edge and some
        # APIs (Connect, concurrent Apex REST) send. The "429 storm" fault therefore answers 429,
        # keeps Salesforce's error-array body, and says when to come back in Retry-After.
        response = self._sf_error(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            "Too many requests. Please retry after the Retry-After interval.",
        )
        remaining = max(1, math.ceil(self.state.faults.storm_429_until - time.time()))
        response.headers["Retry-After"] = str(remaining)
        return response

    def _build_app(self) -> Flask:
        app = Flask("sandbox.salesforce")
        app.config["JSON_SORT_KEYS"] = False
        app.json.sort_keys = False  # type: ignore[attr-defined]

        def is_api_call() -> bool:
            path = request.path
            return bool(_DATA_PATH.match(path) or _SOAP_PATH.match(path))

        install_admin(
            app,
            self.state,
            endpoint_name=lambda: _endpoint_for(
                request.method,
                request.path,
                request.get_data(cache=True) if _SOAP_PATH.match(request.path) else b"",
            ),
            is_api_call=is_api_call,
            error_response=self._injected_error,
            rate_limited_response=self._storm_response,
        )
        hooks = self.state.hooks
        hooks["expire-tokens"] = self.oauth.expire_all
        hooks["revoke-refresh-tokens"] = self.oauth.revoke_all_refresh
        hooks["oauth-settings"] = self.oauth.update_settings
        hooks["jwt-certificate"] = self.oauth.upload_certificate
        hooks["api-limit"] = self._set_limit
        hooks["outbound-messages"] = self.relay.configure
        hooks["cdc-relay"] = self.relay.configure_relay

        @app.before_request
        def _authenticate() -> Response | None:
            match = _DATA_PATH.match(request.path)
            if match is None:
                if _SOAP_PATH.match(request.path):
                    return self._check_quota()
                return None
            version = match.group(1)
            if version not in VERSIONS and not 20.0 <= float(version) <= 70.0:
                return self._sf_error(404, "NOT_FOUND", "The requested resource does not exist")
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            user_id = self.oauth.user_for(token.strip()) if scheme in {"Bearer", "OAuth"} else None
            if user_id is None:
                return self._sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            options = request.headers.get("Sforce-Call-Options", "")
            client = _CLIENT_OPTION.search(options)
            g.context = CallContext(user_id, version, client.group(1) if client else None)
            return self._check_quota()

        @app.after_request
        def _limit_info(response: Response) -> Response:
            if _DATA_PATH.match(request.path):
                response.headers["Sforce-Limit-Info"] = self._limit_header()
            return response

        @app.get("/services/data/")
        @app.get("/services/data")
        def versions() -> Response:
            return jsonify(
                [{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v} for v in VERSIONS]
            )

        @app.route("/services/data/v<version>/", defaults={"rest": ""}, methods=_METHODS)
        @app.route("/services/data/v<version>", defaults={"rest": ""}, methods=_METHODS)
        @app.route("/services/data/v<version>/<path:rest>", methods=_METHODS)
        def data(version: str, rest: str) -> Response:
            raw = request.get_data(cache=True)
            body: Any = None
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    return self._sf_error(
                        400, "JSON_PARSER_ERROR", f"Unexpected character in the request body: {exc}"
                    )
            req = ApiRequest(
                request.method,
                rest.strip("/"),
                request.args.to_dict(),
                body,
                g.context,
                dict(request.headers),
            )
            result = self.rest.handle(req)
            if result.body is None and result.status in {204, 200}:
                response = Response(status=result.status)
            else:
                response = jsonify(result.body)
                response.status_code = result.status
            response.headers.update(result.headers)
            return response

        @app.post("/services/Soap/m/<version>")
        @app.post("/services/Soap/m/<version>/")
        @app.post("/services/Soap/m/<version>/<org>")
        def soap(version: str, org: str | None = None) -> Response:
            try:
                session, operation, element = self.metadata_api.parse(request.get_data())
                if self.oauth.user_for(session) is None:
                    raise SoapFault(
                        "sf:INVALID_SESSION_ID",
                        "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader:"
                        " Illegal Session",
                    )
                body = self.metadata_api.handle(operation, element)
            except SoapFault as exc:
                return Response(fault(exc.code, exc.message), status=500, mimetype="text/xml")
            return Response(body, status=200, content_type="text/xml; charset=utf-8")

        @app.errorhandler(Exception)
        def _unexpected(exc: Exception) -> Response:
            # A bug in the sandbox must still answer in Salesforce's shape, never a bare 500 page.
            from werkzeug.exceptions import HTTPException

            if isinstance(exc, HTTPException):
                if _DATA_PATH.match(request.path):
                    return self._sf_error(
                        exc.code or 500,
                        "NOT_FOUND" if exc.code == 404 else "INVALID_REQUEST",
                        exc.description or exc.name,
                    )
                return exc  # type: ignore[return-value]
            app.logger.exception("sandbox error on %s %s", request.method, request.path)
            return self._injected_error(500)

        app.register_blueprint(self.oauth.blueprint(lambda: self.user_id))
        register_ui(app, self)
        return app

    def _check_quota(self) -> Response | None:
        with self._usage_lock:
            if self.api_used >= self.api_limit:
                exceeded = True
            else:
                self.api_used += 1
                exceeded = False
        if exceeded:
            if _SOAP_PATH.match(request.path):
                return Response(
                    fault(
                        "sf:REQUEST_LIMIT_EXCEEDED",
                        "REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.",
                    ),
                    status=500,
                    mimetype="text/xml",
                )
            return self._sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return None
