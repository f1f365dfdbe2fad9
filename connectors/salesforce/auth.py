"""Salesforce OAuth: the web-server flow with PKCE, refresh, and the JWT bearer flow.

Salesforce specifics that shape this module
(https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_web_server_flow.htm):

* Every token answer names the org's ``instance_url`` (the API host to use from then on) and an
  identity URL ``.../id/<orgId>/<userId>``: the 18-character org id keys the tenant, the user id is
  the integration user whose writes are Fieldwise's own echoes.
* There is no ``expires_in``: an access token lives as long as the org's session timeout (two hours
  unless the admin changed it). :data:`DEFAULT_SESSION_S` is assumed unless the tenant's settings
  carry ``session_timeout_s``; the client refreshes a few minutes before that and, because an admin
  can shorten the timeout or revoke sessions at any time, also once on any 401 INVALID_SESSION_ID.
* A refresh may or may not return a new refresh token (rotation is a connected-app policy; the old
  one then stops working), so a returned refresh token always replaces the stored one.
* The JWT bearer flow issues no refresh token; a new assertion is minted instead.

Token requests are not retried at the HTTP layer: a replayed refresh under rotation would spend a
token twice. A failed exchange is classified by ``errors.from_oauth`` and retried by the job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from connectors.base import ConnectorError, FatalError, ReauthRequired, RetriableError
from connectors.salesforce import errors
from core.config import Config
from core.tenants import Tenant, Tokens, tenant_id_for

AUTHORIZE_PATH = "/services/oauth2/authorize"
TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_SESSION_S = 7200
"""Salesforce's default session timeout; the access token's assumed lifetime."""
JWT_LIFETIME_S = 180
"""Assertion lifetime: Salesforce accepts up to three minutes from now (clock skew included)."""
TOKEN_TIMEOUT_S = 30


def _login_url(config: Config) -> str:
    return config.salesforce_login_url.rstrip("/")


def _secret(config: Config) -> str | None:
    return config.salesforce_client_secret.reveal() if config.salesforce_client_secret else None


def _trust(http: requests.Session, config: Config) -> None:
    """Trust ``config.ca_bundle``; requests would let REQUESTS_CA_BUNDLE override it otherwise."""
    if config.ca_bundle:
        http.verify = config.ca_bundle
        http.trust_env = False


def _oauth(config: Config, **kwargs: Any) -> OAuth2Session:
    session = OAuth2Session(
        config.salesforce_client_id,
        _secret(config),
        # Salesforce documents the client secret in the form body.
        token_endpoint_auth_method="client_secret_post",
        default_timeout=TOKEN_TIMEOUT_S,
        **kwargs,
    )
    _trust(session, config)
    return session


def authorization_url(
    config: Config, *, redirect_uri: str, state: str, code_verifier: str, scopes: Sequence[str]
) -> str:
    """The consent URL an admin is sent to (web-server flow, S256 PKCE challenge).

    Args:
        config: supplies the connected app's consumer key and the login URL.
        redirect_uri: Fieldwise's callback; must equal the connected app's callback URL.
        state: the anti-forgery value the callback checks.
        code_verifier: the PKCE secret kept server-side; only its SHA-256 challenge is sent.
        scopes: OAuth scopes, e.g. ``load_manifest("salesforce").scopes()``.
    """
    session = _oauth(
        config,
        code_challenge_method="S256",
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
    )
    url, _ = session.create_authorization_url(
        _login_url(config) + AUTHORIZE_PATH, state=state, code_verifier=code_verifier
    )
    return str(url)


def _expires_at(token: Mapping[str, Any], lifetime_s: float) -> datetime:
    issued_ms = str(token.get("issued_at") or "")
    issued = (
        datetime.fromtimestamp(int(issued_ms) / 1000, UTC)
        if issued_ms.isdigit()
        else datetime.now(UTC)
    )
    return issued + timedelta(seconds=lifetime_s)


def _identity(token: Mapping[str, Any]) -> tuple[str, str]:
    """``(org id, user id)`` from the identity URL ``https://.../id/<orgId>/<userId>``."""
    parts = str(token.get("id", "")).rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        raise FatalError(f"Salesforce's token answer has no identity URL: {token.get('id')!r}")
    return parts[-2], parts[-1]


def _tenant(token: Mapping[str, Any]) -> Tenant:
    org_id, user_id = _identity(token)
    return Tenant(
        tenant_id=tenant_id_for("salesforce", org_id),
        crm="salesforce",
        external_id=org_id,
        instance_url=str(token["instance_url"]).rstrip("/"),
        scopes=tuple(str(token.get("scope", "")).split()),
        status="installing",
        integration_user_id=user_id,
    )


def _failure(exc: Exception) -> ConnectorError:
    if isinstance(exc, OAuthError):
        return errors.from_oauth(exc.error, exc.description, None)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return errors.from_oauth(None, exc.response.text[:200], exc.response.status_code)
    if isinstance(exc, ValueError):  # authlib could not read the body: an HTML error page
        return RetriableError(f"Salesforce's token endpoint answered something unreadable: {exc}")
    return RetriableError(f"Salesforce's token endpoint is unreachable: {exc}")


def exchange_code(
    config: Config, *, code: str, redirect_uri: str, code_verifier: str
) -> tuple[Tenant, Tokens]:
    """Trade the callback's authorization code for tokens and the tenant they belong to.

    Returns:
        The tenant (``installing``; its integration user is the consenting user) and its tokens.

    Raises:
        ReauthRequired: Salesforce refused the code (expired, reused, wrong verifier).
        FatalError: the connected app's credentials are wrong.
        RetriableError: Salesforce could not be reached or failed.
    """
    session = _oauth(config, redirect_uri=redirect_uri)
    try:
        token = session.fetch_token(
            _login_url(config) + TOKEN_PATH,
            grant_type="authorization_code",
            code=code,
            code_verifier=code_verifier,
        )
    except (OAuthError, requests.RequestException, ValueError) as exc:
        raise _failure(exc) from exc
    tokens = Tokens(
        access_token=token["access_token"],
        refresh_token=token.get("refresh_token"),
        expires_at=_expires_at(token, DEFAULT_SESSION_S),
    )
    return _tenant(token), tokens


def refresh(config: Config, tenant: Tenant, tokens: Tokens) -> Tokens:
    """New tokens from the refresh token; the old refresh token is kept unless a new one came.

    Raises:
        ReauthRequired: the refresh token was refused (``invalid_grant``) or there is none; the
            message tells the admin to reinstall at /install/salesforce.
        FatalError: the connected app's credentials are wrong.
        RetriableError: Salesforce could not be reached or failed.
    """
    if not tokens.refresh_token:
        raise ReauthRequired(
            "Fieldwise holds no Salesforce refresh token for this org (installed without the "
            "refresh_token scope, or through the JWT bearer flow); reinstall Fieldwise at "
            "/install/salesforce."
        )
    lifetime = float(tenant.settings.get("session_timeout_s") or DEFAULT_SESSION_S)
    login_url = (tenant.instance_url or _login_url(config)).rstrip("/")
    session = _oauth(config)
    try:
        token = session.refresh_token(
            login_url + TOKEN_PATH,
            refresh_token=tokens.refresh_token,
            client_id=config.salesforce_client_id,
        )
    except (OAuthError, requests.RequestException, ValueError) as exc:
        raise _failure(exc) from exc
    return Tokens(
        access_token=token["access_token"],
        refresh_token=token.get("refresh_token") or tokens.refresh_token,
        expires_at=_expires_at(token, lifetime),
    )


def jwt_bearer(config: Config, *, username: str, private_key_pem: str) -> tuple[Tenant, Tokens]:
    """Server-to-server install: an RS256 assertion for ``username`` traded for an access token.

    The connected app must have the certificate of ``private_key_pem`` uploaded and the user
    pre-authorized (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).
    No refresh token is issued; run this again for a new access token.

    Raises:
        ReauthRequired: Salesforce refused the assertion (user not approved, bad signature).
        FatalError: the consumer key is unknown.
        RetriableError: Salesforce could not be reached or failed.
    """
    login_url = _login_url(config)
    assertion = jwt.encode(
        {
            "iss": config.salesforce_client_id,
            "sub": username,
            "aud": login_url,
            "exp": int(time.time()) + JWT_LIFETIME_S,
        },
        private_key_pem,
        algorithm="RS256",
    )
    http = requests.Session()
    _trust(http, config)
    try:
        response = http.post(
            login_url + TOKEN_PATH,
            data={"grant_type": JWT_GRANT, "assertion": assertion},
            timeout=TOKEN_TIMEOUT_S,
        )
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise _failure(exc) from exc
    finally:
        http.close()
    if response.status_code != 200 or "access_token" not in body:
        raise errors.from_oauth(
            body.get("error"), body.get("error_description"), response.status_code
        )
    tokens = Tokens(
        access_token=body["access_token"],
        refresh_token=None,
        expires_at=_expires_at(body, DEFAULT_SESSION_S),
    )
    return _tenant(body), tokens
