"""The HubSpot sandbox: one portal with one installed app, served over HTTP by a Flask app.

:class:`HubSpotSandbox` owns the persisted identity (portal, app, client credentials, developer API
key), the records, properties, tokens and webhook subscriptions, and runs the app on a werkzeug
server in a daemon thread. Every ``/crm/`` call is authenticated with a bearer token, checked
against the rate limits and counted in the shared request log; faults come from
:func:`sandbox.common.install_admin`.
"""

from __future__ import annotations

import re
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.common import Deliverer, RecordStore, SandboxState, install_admin
from sandbox.history_model import History
from sandbox.hubspot import api, oauth, ui, webhooks
from sandbox.hubspot.errors import HubSpotError, json_response, status_category
from sandbox.hubspot.limits import RateLimiter
from sandbox.hubspot.objects import ChangeSource, ObjectRepo
from sandbox.hubspot.properties import PropertyRegistry, canonical_type

_API_PREFIXES = ("/crm/", "/webhooks/v3/", "/oauth/v1/")
_SEARCH_PATH = re.compile(r"^/crm/v3/objects/[^/]+/search$")


class HubSpotSandbox:
    """A local HubSpot portal that the unmodified ``hubspot-api-client`` can talk to.

    Args:
        data_dir: where ``hubspot.sqlite3`` keeps records, properties, tokens and subscriptions.
        host: interface to listen on.
        port: TCP port; 0 picks a free one.
        clock_scale: multiplier on HubSpot's webhook retry delays (0.01: a minute becomes 0.6 s).
        ten_second_limit: requests per rolling ten seconds per app per portal.
        daily_limit: requests per day per app per portal.
        search_per_second: search requests per second per portal.
        widget_base_url: Fieldwise's base URL; the record page embeds its card when set.
        token_lifetime_s: lifetime of issued access tokens (HubSpot: 30 minutes).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock_scale: float = 0.01,
        ten_second_limit: int = 190,
        daily_limit: int = 1_000_000,
        search_per_second: int = 5,
        widget_base_url: str | None = None,
        token_lifetime_s: int = 1800,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.widget_base_url = widget_base_url.rstrip("/") if widget_base_url else None
        store = RecordStore(str(self.data_dir / "hubspot.sqlite3"))
        self.state = SandboxState(store, clock_scale=clock_scale)
        self.store = store
        identity = store.get_meta("identity")
        if identity is None:
            identity = {
                "portal_id": 40_000_000 + secrets.randbelow(9_000_000),
                "app_id": 3_000_000 + secrets.randbelow(900_000),
                "client_id": str(uuid.uuid4()),
                "client_secret": str(uuid.uuid4()),
                "developer_api_key": str(uuid.uuid4()),
                "user_email": "admin@sandbox-portal.example",
            }
            store.set_meta("identity", identity)
        self.portal_id: int = identity["portal_id"]
        self.app_id: int = identity["app_id"]
        self.client_id: str = identity["client_id"]
        self.client_secret: str = identity["client_secret"]
        self.developer_api_key: str = identity["developer_api_key"]
        self.registry = PropertyRegistry(store)
        self.repo = ObjectRepo(store, self.registry, self.portal_id)
        self.tokens = oauth.TokenStore(
            store,
            portal_id=self.portal_id,
            app_id=self.app_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            user_email=identity["user_email"],
            lifetime_s=token_lifetime_s,
        )
        self.limiter = RateLimiter(ten_second_limit, daily_limit, search_per_second)
        self.deliverer = Deliverer(self.state)
        self.webhooks = webhooks.WebhookHub(
            self.state,
            self.deliverer,
            store,
            portal_id=self.portal_id,
            app_id=self.app_id,
            client_secret=self.client_secret,
        )
        self.repo.listeners.append(self.webhooks.on_change)
        self._owners: list[dict[str, Any]] = [owner for _, owner in store.iter("owners")]
        self._owners_lock = threading.Lock()
        self.app = self._build_app()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._register_hooks()

    # -- public interface --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def access_token(self) -> str:
        """A currently valid access token of the app installed in the portal."""
        return self.tokens.default_install()["access_token"]

    @property
    def refresh_token(self) -> str:
        """The refresh token of the app's install."""
        return self.tokens.default_install()["refresh_token"]

    def connection_info(self) -> dict[str, Any]:
        """What a Fieldwise tenant needs to connect to this portal."""
        return {
            "base_url": self.base_url,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "portal_id": self.portal_id,
            "app_id": self.app_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    def start(self) -> HubSpotSandbox:
        """Serve on a daemon thread; returns self."""
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hubspot-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delivering, and close the database."""
        self.webhooks.flush()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.deliverer.stop()
        self.store.close()

    def load_history(self, history: History) -> dict[str, str]:
        """Load a generated history straight into the store; returns generator key -> HubSpot id."""
        from sandbox.hubspot.loader import load_history

        return load_history(self, history)

    def owners(self, archived: bool = False) -> list[dict[str, Any]]:
        """Owners of the portal as ``/crm/v3/owners`` returns them."""
        with self._owners_lock:
            return [o for o in self._owners if bool(o.get("archived")) == archived]

    def add_owners(self, owners: list[dict[str, Any]]) -> None:
        """Add owners (already in HubSpot's ``PublicOwner`` shape)."""
        with self._owners_lock:
            self._owners.extend(owners)
            self.store.put_many("owners", [(o["id"], o) for o in owners])

    @property
    def ui_source(self) -> ChangeSource:
        """The change source of an edit made by the portal's user in the record page."""
        return ChangeSource("CRM_UI", f"userId:{self.tokens.user_id}")

    # -- app ---------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("sandbox.hubspot")
        app.config["JSON_SORT_KEYS"] = False
        install_admin(
            app,
            self.state,
            endpoint_name=_endpoint_name,
            is_api_call=lambda: request.path.startswith(_API_PREFIXES),
            error_response=self._fault_response,
            rate_limited_response=self._storm_response,
        )
        app.before_request(self._authenticate_and_limit)
        app.after_request(self._add_limit_headers)

        @app.errorhandler(HubSpotError)
        def _hubspot_error(exc: HubSpotError) -> Response:
            return exc.response()

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:
            status = exc.code or 500
            return HubSpotError(
                status, status_category(status), exc.description or exc.name
            ).response()

        @app.errorhandler(Exception)
        def _unexpected(exc: Exception) -> Response:
            app.logger.exception("unexpected sandbox error")
            return HubSpotError(
                500, "INTERNAL_ERROR", f"Internal error: {type(exc).__name__}"
            ).response()

        oauth.register(app, self.tokens)
        webhooks.register(app, self.webhooks, self.developer_api_key)
        api.register(app, self)
        ui.register(app, self)
        return app

    def _authenticate_and_limit(self) -> Response | None:
        if not request.path.startswith("/crm/"):
            return None
        g.token = self.tokens.authenticate(request.headers.get("Authorization"))
        g.change_source = ChangeSource("INTEGRATION", str(self.app_id))
        search = request.method == "POST" and bool(_SEARCH_PATH.match(request.path))
        verdict = self.limiter.charge(self.app_id, self.portal_id, search=search)
        g.limit_headers = verdict.headers
        if not verdict.allowed:
            group = (
                f"publicapi-crm-search:{self.portal_id}"
                if verdict.policy == "SECONDLY"
                else f"publicapi-oauth:{self.app_id}:{self.portal_id}"
            )
            headers = {**verdict.headers, "Retry-After": str(max(1, round(verdict.retry_after_s)))}
            return json_response(verdict.body(group), 429, headers)
        return None

    def _add_limit_headers(self, response: Response) -> Response:
        for key, value in (getattr(g, "limit_headers", None) or {}).items():
            response.headers.setdefault(key, value)
        return response

    def _fault_response(self, status: int) -> Response:
        if status == 429:
            return self._storm_response()
        return HubSpotError(
            status, status_category(status), f"Injected fault: the server answered {status}"
        ).response()

    def _storm_response(self) -> Response:
        limiter = self.limiter
        headers = {
            "X-HubSpot-RateLimit-Daily": str(limiter.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(limiter.daily_limit),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(limiter.ten_second_limit),
            "X-HubSpot-RateLimit-Remaining": "0",
            "X-HubSpot-RateLimit-Secondly": str(max(1, limiter.ten_second_limit // 10)),
            "X-HubSpot-RateLimit-Secondly-Remaining": "0",
            "Retry-After": "1",
        }
        body = webhooks_group_body(self.app_id, self.portal_id)
        return json_response(body, 429, headers)

    # -- admin hooks -------------------------------------------------------------------------

    def _register_hooks(self) -> None:
        hooks = self.state.hooks
        hooks["expire-tokens"] = lambda body: {"expired": self.tokens.expire_all()}
        hooks["revoke-refresh-tokens"] = lambda body: {
            "revoked": self.tokens.revoke_refresh(body.get("refresh_token"))
        }
        hooks["reset-rate-limits"] = self._reset_rate_limits
        hooks["ui-edit"] = self._ui_edit
        hooks["merge"] = self._ui_merge
        hooks["flush-webhooks"] = self._flush_webhooks
        hooks["connection-info"] = lambda body: self.connection_info()

    def _reset_rate_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        self.limiter.reset()
        return {"ok": True}

    def _flush_webhooks(self, body: dict[str, Any]) -> dict[str, Any]:
        self.webhooks.flush()
        return {"ok": True}

    def _ui_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        object_type = canonical_type(str(body.get("objectType", "")))
        if object_type is None:
            raise ValueError(f"unknown objectType {body.get('objectType')!r}")
        properties = body.get("properties")
        if not isinstance(properties, dict):
            raise ValueError("properties must be an object of property names to values")
        try:
            rec = self.repo.update(object_type, str(body["id"]), properties, self.ui_source)
        except HubSpotError as exc:
            raise ValueError(exc.message) from None
        return self.repo.to_wire(object_type, rec, properties=list(properties))

    def _ui_merge(self, body: dict[str, Any]) -> dict[str, Any]:
        object_type = canonical_type(str(body.get("objectType", "contacts")))
        if object_type is None:
            raise ValueError("unknown objectType")
        try:
            rec = self.repo.merge(
                object_type,
                str(body["primaryObjectId"]),
                str(body["objectIdToMerge"]),
                self.ui_source,
            )
        except HubSpotError as exc:
            raise ValueError(exc.message) from None
        return self.repo.to_wire(object_type, rec)


def webhooks_group_body(app_id: int, portal_id: int) -> dict[str, Any]:
    """HubSpot's ten-second 429 body for the app's group (used for injected 429 storms)."""
    from sandbox.hubspot.errors import rate_limit_body

    return rate_limit_body("TEN_SECONDLY_ROLLING", f"publicapi-oauth:{app_id}:{portal_id}")


class _QuietHandler(WSGIRequestHandler):
    """Serves requests without writing an access-log line per call (the request log has them)."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Drop werkzeug's per-request log lines."""


_OBJECT_PARAMS = {"object_type", "from_type", "to_type"}


def _endpoint_name() -> str:
    """``METHOD path`` with object types spelled out and ids as ``{name}``, for the counters."""
    rule = request.url_rule
    if rule is None:
        return f"{request.method} {request.path.lstrip('/')}"
    path = rule.rule
    for name, value in (request.view_args or {}).items():
        if name in _OBJECT_PARAMS:
            path = path.replace(f"<{name}>", canonical_type(str(value)) or str(value))
        else:
            path = path.replace(f"<{name}>", "{" + name + "}")
    return f"{request.method} {path.lstrip('/')}"
