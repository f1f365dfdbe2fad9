"""OAuth install: ``GET /install/<crm>`` and ``GET /oauth/<crm>/callback``.

The admin starts at ``/install/<crm>``, consents on the CRM's own page and comes back to the
callback with a code. The flow is authorization code with PKCE (S256). The ``state`` parameter is
sealed with ``FIELDWISE_ENCRYPTION_KEY``: it carries the CRM, the PKCE verifier and a timestamp,
so any web process can finish an install another one started, nothing sits in server memory, the
verifier is never visible in the browser, and a forged, altered, replayed-after-10-minutes or
cross-CRM state is refused.

The callback stores the tenant with its tokens sealed and queues provisioning, which then queues the
first backfill. ``fieldwise install`` drives the same two functions for headless setups.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, Response, jsonify, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from connectors.base import ConnectorError
from core.config import Config
from core.crypto import DecryptionError
from core.schemas import CRMS
from core.services import Services
from core.tenants import Tenant
from handlers import context
from handlers.errors import ApiError
from manifests.loader import load_manifest

bp = Blueprint("install", __name__)

STATE_TTL_S = 600
"""An install must finish within ten minutes of starting."""


@dataclass(frozen=True)
class InstallStart:
    """Where to send the admin, and the state that will come back."""

    authorization_url: str
    state: str
    redirect_uri: str


def redirect_uri_for(config: Config, crm: str) -> str:
    """The callback URL registered with the CRM's app."""
    return f"{config.public_url}/oauth/{crm}/callback"


def begin_install(services: Services, crm: str) -> InstallStart:
    """Build the CRM consent URL with PKCE and a sealed state.

    Raises:
        ApiError: unknown CRM (404) or the CRM's app credentials are not configured (503).
    """
    auth = _auth_module(services.config, crm)
    verifier = secrets.token_urlsafe(64)
    state = services.cipher.encrypt(
        json.dumps(
            {"crm": crm, "verifier": verifier, "nonce": secrets.token_hex(8), "t": time.time()}
        )
    )
    redirect_uri = redirect_uri_for(services.config, crm)
    url = auth.authorization_url(
        services.config,
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=verifier,
        scopes=load_manifest(crm).scopes(),
    )
    return InstallStart(url, state, redirect_uri)


def accept_callback(services: Services, crm: str, code: str, state: str) -> tuple[Tenant, bool]:
    """Check the state, exchange the code and store the tenant with its tokens sealed.

    Returns:
        The stored tenant (status ``installing``) and whether it was installed before.

    Raises:
        ApiError: a bad or expired state (400), or the CRM refused the code (400).
    """
    auth = _auth_module(services.config, crm)
    try:
        sealed = json.loads(services.cipher.decrypt(state, ttl_s=STATE_TTL_S))
    except (DecryptionError, ValueError):
        raise ApiError(
            400,
            "invalid_state",
            "the install link is invalid or older than 10 minutes; start again",
        ) from None
    if sealed.get("crm") != crm:
        raise ApiError(
            400, "invalid_state", f"this install was started for {sealed.get('crm')}, not {crm}"
        )
    try:
        tenant, tokens = auth.exchange_code(
            services.config,
            code=code,
            redirect_uri=redirect_uri_for(services.config, crm),
            code_verifier=sealed["verifier"],
        )
    except ConnectorError as exc:
        raise ApiError(400, "oauth_refused", f"{crm} refused the install: {exc.message}") from None
    previous = services.store.get_tenant(tenant.tenant_id)
    return services.registry.save(tenant, tokens), previous is not None


def complete_install(services: Services, crm: str, code: str, state: str) -> dict[str, Any]:
    """Accept the callback and queue provisioning (which then queues the first backfill).

    A Salesforce tenant's first install also creates its widget secret, returned once for the
    admin to paste into the org's External Credential.

    Returns:
        The tenant id, its status, the queued job id and, at a Salesforce tenant's first install,
        ``widget_secret`` with ``widget_secret_instruction``.
    """
    tenant, reinstall = accept_callback(services, crm, code, state)
    # Before provisioning is queued: both save the tenant, and the later save must see the secret.
    handover = widget_secret_handover(services, tenant)
    job_id = services.queue.enqueue(
        "sync.jobs.provision_tenant",
        tenant.tenant_id,
        job_id=f"provision:{tenant.tenant_id}:{secrets.token_hex(6)}",
        queue="high",
    )
    return {
        "tenant_id": tenant.tenant_id,
        "crm": crm,
        "status": tenant.status,
        "reinstall": reinstall,
        "provisioning_job": job_id,
        **handover,
    }


WIDGET_SECRET_INSTRUCTION = (
    "Paste widget_secret into Setup > Named Credentials > External Credentials > "
    "Fieldwise_API_Auth > Principals > SigningSecret; it is shown this once "
    "(`fieldwise widgets secret {tenant_id}` prints it again)."
)


def widget_secret_handover(services: Services, tenant: Tenant) -> dict[str, Any]:
    """Create a Salesforce tenant's widget secret at its first install and hand it over once.

    The record-page component signs its calls with this secret through the org's External
    Credential, which only the admin can fill in; until then the widget answers 401. A reinstall
    keeps the secret the org already holds, so it is not shown again. HubSpot signs its app card
    calls with the app's client secret and needs nothing.

    Returns:
        ``{"widget_secret", "widget_secret_instruction"}`` when a secret was created, else ``{}``.
    """
    if tenant.crm != "salesforce" or services.registry.widget_secret(tenant.tenant_id):
        return {}
    return {
        "widget_secret": services.registry.widget_secret(tenant.tenant_id, create=True),
        "widget_secret_instruction": WIDGET_SECRET_INSTRUCTION.format(tenant_id=tenant.tenant_id),
    }


def _auth_module(config: Config, crm: str) -> Any:
    if crm not in CRMS:
        raise ApiError(
            404, "unknown_crm", f"Fieldwise installs into {' and '.join(CRMS)}, not {crm!r}"
        )
    missing = [
        f"FIELDWISE_{crm.upper()}_{name.upper()}"
        for name in ("client_id", "client_secret")
        if not getattr(config, f"{crm}_{name}")
    ]
    if missing:
        raise ApiError(
            503,
            "not_configured",
            f"the {crm} app is not configured on this server: set {' and '.join(missing)}",
        )
    if crm == "salesforce":
        from connectors.salesforce import auth as salesforce_auth

        return salesforce_auth
    from connectors.hubspot import auth as hubspot_auth

    return hubspot_auth


@bp.get("/install/<crm>")
def install(crm: str) -> BaseResponse:
    """Send the admin to the CRM's consent page."""
    start = begin_install(context.services(), crm)
    return redirect(start.authorization_url, code=302)


@bp.get("/oauth/<crm>/callback")
def callback(crm: str) -> tuple[Response, int]:
    """Finish the install the CRM redirected back from."""
    if crm not in CRMS:
        raise ApiError(
            404, "unknown_crm", f"Fieldwise installs into {' and '.join(CRMS)}, not {crm!r}"
        )
    if "error" in request.args:
        # The admin declined, or the CRM refused the request (RFC 6749 section 4.1.2.1).
        description = request.args.get("error_description") or request.args["error"]
        raise ApiError(400, "consent_declined", f"{crm} did not grant access: {description}")
    code, state = request.args.get("code"), request.args.get("state")
    if not code or not state:
        raise ApiError(400, "missing_parameter", "the callback needs both `code` and `state`")
    return jsonify(complete_install(context.services(), crm, code, state)), 200


def is_local_url(url: str) -> bool:
    """Whether a URL points at this machine (the CLI can then serve the callback itself)."""
    return urlparse(url).hostname in {"127.0.0.1", "localhost", "::1"}
