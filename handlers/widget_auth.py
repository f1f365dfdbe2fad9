"""Who is calling from inside a CRM: authentication of every widget request.

The in-CRM widgets reach Fieldwise through the CRM platform, never straight from a browser, and
each platform vouches for its calls differently:

* **HubSpot** app cards call with ``hubspot.fetch``, which cannot set headers; HubSpot signs the
  request itself with the app's client secret (``X-HubSpot-Signature-v3`` over method, full URL
  with query, body and ``X-HubSpot-Request-Timestamp``) and appends ``portalId``, ``userId``,
  ``userEmail`` and ``appId`` to the query, so the signature covers who is asking. The portal
  names the tenant.
* **Salesforce** LWCs call through Apex and the Named Credential ``Fieldwise_API``. Its External
  Credential holds the tenant's widget secret and evaluates a custom-header formula,
  ``BASE64ENCODE(HMAC('SHA-256', BLOB(canonical), BLOB($Credential...SigningSecret)))``, so each
  call carries a signature over :func:`salesforce_canonical` (method, path, timestamp, org id,
  user id, a nonce and the body's SHA-256) instead of the secret itself. A bearer secret would
  cross the wire on every call and be replayable forever from any log that kept it; the HMAC
  proves possession, binds the org, user, record path and body, and expires with its timestamp.
  The org id header names the tenant; only that tenant's secret can have produced the signature.

Both schemes refuse timestamps more than five minutes off, and a signature is accepted once:
seen signatures are kept for that window in Redis (``SET NX EX``, shared by every web process)
or, with the embedded queue, in this process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

import redis
from flask import request

from core.services import Services
from core.tenants import Tenant
from handlers.errors import ApiError
from handlers.webhooks import MAX_SIGNATURE_AGE_S, hubspot_signature_v3

SALESFORCE_HEADERS = (
    "X-Fieldwise-Org-Id",
    "X-Fieldwise-User-Id",
    "X-Fieldwise-Timestamp",
    "X-Fieldwise-Nonce",
    "X-Fieldwise-Signature",
)
"""What the Named Credential sends with every widget call (see the Apex controller)."""
_REPLAY_PREFIX = "fieldwise:widget-signature:"


@dataclass(frozen=True)
class WidgetCaller:
    """An authenticated widget call: the tenant, and the CRM user the widget is shown to."""

    tenant: Tenant
    crm: str
    user_id: str | None
    user_email: str | None = None


# --------------------------------------------------------------------------------------------------
# Replay protection


class ReplayGuard:
    """Remembers signatures for a while; a second sighting within that time is a replay."""

    def __init__(self, redis_url: str | None) -> None:
        self._redis = (
            redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
            if redis_url
            else None
        )
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def first_use(self, signature: str, ttl_s: int = MAX_SIGNATURE_AGE_S) -> bool:
        """Record a signature; False when it was already recorded within ``ttl_s``.

        Raises:
            ApiError: 503 when Redis cannot be reached (refusing is safer than accepting replays).
        """
        key = _REPLAY_PREFIX + hashlib.sha256(signature.encode()).hexdigest()
        if self._redis is not None:
            try:
                return bool(self._redis.set(key, 1, nx=True, ex=ttl_s))
            except redis.RedisError as exc:
                raise ApiError(
                    503, "replay_store_unavailable", f"Fieldwise cannot check for replays: {exc}"
                ) from None
        now = time.time()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: until for k, until in self._seen.items() if until > now}
            if self._seen.get(key, 0.0) > now:
                return False
            self._seen[key] = now + ttl_s
            return True


_guards: dict[str | None, ReplayGuard] = {}
_guards_lock = threading.Lock()


def replay_guard(services: Services) -> ReplayGuard:
    """The guard of this process for the configured Redis (one per Redis URL)."""
    url = services.config.redis_url
    with _guards_lock:
        if url not in _guards:
            _guards[url] = ReplayGuard(url)
        return _guards[url]


def _refuse_replay(services: Services, signature: str) -> None:
    if not replay_guard(services).first_use(signature):
        raise ApiError(401, "replayed_request", "this signed request was already used once")


# --------------------------------------------------------------------------------------------------
# Salesforce: HMAC made by the Named Credential


def salesforce_canonical(
    method: str, path: str, timestamp: str, org_id: str, user_id: str, nonce: str, body: bytes
) -> str:
    """The text the Named Credential signs: fields joined by ``|``, the body as its SHA-256 hex."""
    digest = hashlib.sha256(body).hexdigest()
    return "|".join((method.upper(), path, timestamp, org_id, user_id, nonce, digest))


def salesforce_signature(secret: str, canonical: str) -> str:
    """Base64 HMAC-SHA256 of the canonical text, as the credential's header formula computes it."""
    mac = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def salesforce_headers(
    secret: str,
    method: str,
    path: str,
    org_id: str,
    user_id: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers a Salesforce org's Named Credential sends for one call (sandbox and tests)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    once = nonce or secrets.token_hex(12)
    canonical = salesforce_canonical(method, path, stamp, org_id, user_id, once, body)
    return {
        "X-Fieldwise-Org-Id": org_id,
        "X-Fieldwise-User-Id": user_id,
        "X-Fieldwise-Timestamp": stamp,
        "X-Fieldwise-Nonce": once,
        "X-Fieldwise-Signature": salesforce_signature(secret, canonical),
    }


def _salesforce_tenant(services: Services, org_id: str) -> Tenant | None:
    registry = services.registry
    found = registry.find("salesforce", org_id)
    if found is None and len(org_id) == 18:
        # Apex reports the 18-character org id; installs may have stored the 15-character form.
        found = registry.find("salesforce", org_id[:15])
    return found


def verify_salesforce(services: Services, body: bytes) -> WidgetCaller:
    """Authenticate a call made through a Salesforce org's Named Credential.

    Raises:
        ApiError: 401 for missing, stale, wrong or replayed signatures and unknown orgs.
    """
    org_id, user_id, timestamp, nonce, signature = (
        request.headers.get(name, "").strip() for name in SALESFORCE_HEADERS
    )
    if not org_id or not timestamp.isdigit() or not nonce or not signature:
        raise ApiError(
            401, "missing_signature",
            "Salesforce widget calls need " + ", ".join(SALESFORCE_HEADERS) + " headers",
        )  # fmt: skip
    if abs(time.time() - int(timestamp)) > MAX_SIGNATURE_AGE_S:
        raise ApiError(401, "stale_signature", "the request timestamp is more than 5 minutes off")
    tenant = _salesforce_tenant(services, org_id)
    if tenant is None or tenant.status == "uninstalled":
        raise ApiError(401, "unknown_org", f"no Salesforce org {org_id} is installed")
    secret = services.registry.widget_secret(tenant.tenant_id)
    if secret is None:
        raise ApiError(
            401, "no_widget_secret",
            "this org has no widget secret: run `fieldwise widgets secret` and paste it into the "
            "External Credential Fieldwise_API_Auth",
        )  # fmt: skip
    canonical = salesforce_canonical(
        request.method, request.path, timestamp, org_id, user_id, nonce, body
    )
    if not hmac.compare_digest(salesforce_signature(secret, canonical), signature):
        raise ApiError(401, "bad_signature", "X-Fieldwise-Signature does not match the request")
    _refuse_replay(services, signature)
    return WidgetCaller(tenant=tenant, crm="salesforce", user_id=user_id or None)


# --------------------------------------------------------------------------------------------------
# HubSpot: v3 signature made by hubspot.fetch


def verify_hubspot(services: Services, body: bytes) -> WidgetCaller:
    """Authenticate a ``hubspot.fetch`` call by its v3 signature; the portal names the tenant.

    Raises:
        ApiError: 401 for missing, stale, wrong or replayed signatures; 404 for an unknown portal;
            503 when the app's client secret is not configured.
    """
    config = services.config
    if not config.hubspot_client_secret:
        raise ApiError(503, "not_configured", "FIELDWISE_HUBSPOT_CLIENT_SECRET is not set")
    signature = request.headers.get("X-HubSpot-Signature-v3", "")
    timestamp = request.headers.get("X-HubSpot-Request-Timestamp", "")
    if not signature or not timestamp.isdigit():
        raise ApiError(
            401, "missing_signature",
            "widget calls need X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp",
        )  # fmt: skip
    if abs(time.time() * 1000 - int(timestamp)) > MAX_SIGNATURE_AGE_S * 1000:
        raise ApiError(401, "stale_signature", "the request timestamp is more than 5 minutes off")
    expected = hubspot_signature_v3(
        config.hubspot_client_secret.reveal(), request.method, request.url, body, timestamp
    )
    if not hmac.compare_digest(expected, signature):
        raise ApiError(401, "bad_signature", "X-HubSpot-Signature-v3 does not match the request")
    app_id = request.args.get("appId")
    if config.hubspot_app_id and app_id and app_id != config.hubspot_app_id:
        raise ApiError(401, "wrong_app", f"the request was made for app {app_id}, not this one")
    _refuse_replay(services, signature)
    portal = request.args.get("portalId", "")
    if not portal.isdigit():
        raise ApiError(400, "missing_portal", "hubspot.fetch adds portalId; it is missing")
    tenant = services.registry.find("hubspot", portal)
    if tenant is None or tenant.status == "uninstalled":
        raise ApiError(404, "unknown_portal", f"Fieldwise is not installed in portal {portal}")
    return WidgetCaller(
        tenant=tenant,
        crm="hubspot",
        user_id=request.args.get("userId") or None,
        user_email=request.args.get("userEmail") or None,
    )


def authenticate(services: Services, crm: str | None = None) -> WidgetCaller:
    """Authenticate the current widget request, by the scheme of ``crm`` or the headers sent.

    Args:
        services: the app's services.
        crm: ``hubspot`` or ``salesforce`` when the route belongs to one CRM; None accepts either.

    Raises:
        ApiError: the request is not a valid, fresh, first-time signed widget call.
    """
    body = request.get_data(cache=True)
    if crm == "hubspot" or (crm is None and "X-HubSpot-Signature-v3" in request.headers):
        return verify_hubspot(services, body)
    if crm == "salesforce" or (crm is None and "X-Fieldwise-Signature" in request.headers):
        return verify_salesforce(services, body)
    raise ApiError(
        401, "missing_signature",
        "widget calls must be signed by HubSpot (X-HubSpot-Signature-v3) or by the Salesforce "
        "Named Credential (X-Fieldwise-Signature)",
    )  # fmt: skip
