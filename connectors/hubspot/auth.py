"""HubSpot OAuth for the install handlers and the connector: consent URL, code exchange, refresh.

The install flow is authorization code + PKCE (S256) + state: :func:`authorization_url` sends the
admin to HubSpot's consent page, :func:`exchange_code` turns the returned code into tokens and the
portal's identity, and :func:`refresh` renews an access token (HubSpot's live 30 minutes).

The code exchange uses authlib (it owns PKCE and the token request); token metadata and refreshes go
through hubspot-api-client's OAuth API (``/oauth/v1/access-tokens/{token}`` and ``/oauth/v1/token``),
with the shared HTTP retry policy. Token calls are not CRM calls: HubSpot does not count them
against the portal's API limits, so they take no request budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from hubspot import HubSpot
from requests import RequestException

from connectors.base import ConnectorError, FatalError
from connectors.hubspot import errors
from core.config import Config
from core.http import retry_policy, session
from core.tenants import Tenant, Tokens, tenant_id_for

TOKEN_PATH = "/oauth/v1/token"
REQUEST_TIMEOUT_S = (5.0, 30.0)
"""Connect and read timeouts of a token request, in seconds."""


def authorization_url(
    config: Config, *, redirect_uri: str, state: str, code_verifier: str, scopes: Sequence[str]
) -> str:
    """The HubSpot consent page URL the admin is sent to.

    Args:
        config: supplies the client id and the authorize URL.
        redirect_uri: Fieldwise's OAuth callback, exactly as registered with the app.
        state: the anti-forgery value the callback must see again.
        code_verifier: the PKCE secret; only its S256 challenge goes into the URL.
        scopes: the scopes to request (the manifest's ``scopes()``).

    Raises:
        FatalError: ``FIELDWISE_HUBSPOT_CLIENT_ID`` is not set.
    """
    client = _oauth_session(config, redirect_uri=redirect_uri, scope=" ".join(scopes))
    url, _ = client.create_authorization_url(
        config.hubspot_authorize_url, state=state, code_verifier=code_verifier
    )
    return str(url)


def exchange_code(
    config: Config, *, code: str, redirect_uri: str, code_verifier: str
) -> tuple[Tenant, Tokens]:
    """Turn the callback's authorization code into tokens and the installing portal's tenant.

    Args:
        config: supplies the client credentials, the API URL and the app id.
        code: the ``code`` query parameter HubSpot redirected back with.
        redirect_uri: the same redirect URI the consent URL carried.
        code_verifier: the PKCE secret the consent URL's challenge came from.

    Returns:
        The tenant (status ``installing``, scopes as granted, the app id as integration user, so
        webhook events with ``sourceId`` equal to it are Fieldwise's own writes) and its tokens.

    Raises:
        FatalError: HubSpot refused the code, or the token belongs to a different app than
            ``FIELDWISE_HUBSPOT_APP_ID``.
        RetriableError: HubSpot could not be reached or failed on its side.
    """
    client = _oauth_session(config, redirect_uri=redirect_uri)
    started = datetime.now(UTC)
    try:
        token = client.fetch_token(
            config.hubspot_api_url + TOKEN_PATH,
            grant_type="authorization_code",
            code=code,
            code_verifier=code_verifier,
            timeout=REQUEST_TIMEOUT_S,
        )
    except OAuth2Error as exc:
        failure = errors.Failure(400, exc.error, exc.description or str(exc.error))
        raise errors.to_error(failure, "authorization code exchange") from exc
    except RequestException as exc:
        raise _request_failure(exc, "authorization code exchange") from exc
    data = dict(token)
    if not data.get("access_token"):
        # HubSpot's v1 token errors are {"status": "BAD_AUTH_CODE", "message": ...}, which authlib
        # does not recognise as an OAuth error (no "error" key) and hands back as a token.
        failure = errors.Failure(400, str(data.get("status") or "error"), str(data.get("message")))
        raise errors.to_error(failure, "authorization code exchange")
    tokens = _tokens(data, started)
    info = _token_info(config, tokens.access_token)
    hub_id = str(info["hub_id"])
    app_id = str(info.get("app_id") or config.hubspot_app_id or "")
    if config.hubspot_app_id and app_id != str(config.hubspot_app_id):
        raise FatalError(
            f"HubSpot issued this token to app {app_id}, but FIELDWISE_HUBSPOT_APP_ID is "
            f"{config.hubspot_app_id}: set it to the app the client id belongs to, or Fieldwise "
            "cannot tell its own writes from users' edits."
        )
    tenant = Tenant(
        tenant_id=tenant_id_for("hubspot", hub_id),
        crm="hubspot",
        external_id=hub_id,
        instance_url=config.hubspot_api_url,
        scopes=tuple(str(s) for s in info.get("scopes") or ()),
        status="installing",
        integration_user_id=app_id or None,
    )
    return tenant, tokens


def refresh(config: Config, tenant: Tenant, tokens: Tokens) -> Tokens:
    """New tokens for a tenant from its refresh token.

    HubSpot keeps the same refresh token across refreshes; the new access token lives
    ``expires_in`` seconds (30 minutes).

    Raises:
        ReauthRequired: HubSpot refused the refresh token (``BAD_REFRESH_TOKEN``/``invalid_grant``:
            the app was uninstalled or its access revoked); the message tells the admin to install
            again at /install/hubspot.
        FatalError: the client id or secret is wrong.
        RetriableError: HubSpot could not be reached or failed on its side.
    """
    if not tokens.refresh_token:
        raise errors.to_error(
            errors.Failure(400, "BAD_REFRESH_TOKEN", f"portal {tenant.external_id} has none"),
            "token refresh",
        )
    client_id, client_secret = _client_credentials(config)
    started = datetime.now(UTC)
    api = HubSpot(host=config.hubspot_api_url, retry=retry_policy()).oauth.tokens_api
    try:
        answer = api.create(
            grant_type="refresh_token",
            refresh_token=tokens.refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except errors.API_ERRORS as exc:
        raise errors.from_exception(exc, f"token refresh for portal {tenant.external_id}") from exc
    data = {
        "access_token": answer.access_token,
        "refresh_token": answer.refresh_token or tokens.refresh_token,
        "expires_in": answer.expires_in,
    }
    return _tokens(data, started)


def _oauth_session(config: Config, **kwargs: Any) -> OAuth2Session:
    client_id, client_secret = _client_credentials(config)
    client = OAuth2Session(
        client_id=client_id,
        client_secret=client_secret,
        # HubSpot reads the client credentials from the form body, not from Basic auth.
        token_endpoint_auth_method="client_secret_post",
        code_challenge_method="S256",
        **kwargs,
    )
    # The same retry policy as every other CRM call; CA bundle for the sandbox's certificate.
    http = session(ca_bundle=config.ca_bundle)
    client.mount("https://", http.get_adapter("https://"))
    client.mount("http://", http.get_adapter("http://"))
    if config.ca_bundle:
        client.verify = config.ca_bundle
    return client


def _client_credentials(config: Config) -> tuple[str, str]:
    if not config.hubspot_client_id or not config.hubspot_client_secret:
        raise FatalError(
            "HubSpot OAuth is not configured: set FIELDWISE_HUBSPOT_CLIENT_ID and "
            "FIELDWISE_HUBSPOT_CLIENT_SECRET from the app's Auth settings."
        )
    return config.hubspot_client_id, config.hubspot_client_secret.reveal()


def _token_info(config: Config, access_token: str) -> dict[str, Any]:
    api = HubSpot(host=config.hubspot_api_url, retry=retry_policy()).oauth.access_tokens_api
    try:
        answer = api.get(access_token, _request_timeout=REQUEST_TIMEOUT_S)
    except errors.API_ERRORS as exc:
        raise errors.from_exception(exc, "access token lookup") from exc
    return {
        "hub_id": answer.hub_id,
        "app_id": answer.app_id,
        "scopes": list(answer.scopes or []),
    }


def _tokens(data: dict[str, Any], issued_at: datetime) -> Tokens:
    expires_in = int(data.get("expires_in") or 0)
    return Tokens(
        access_token=str(data["access_token"]),
        refresh_token=data.get("refresh_token"),
        # Counted from before the request was sent, so the expiry errs early, never late.
        expires_at=issued_at + timedelta(seconds=expires_in) if expires_in else None,
    )


def _request_failure(exc: RequestException, operation: str) -> ConnectorError:
    response = exc.response
    if response is None:
        return errors.to_error(errors.Failure(0, None, f"{type(exc).__name__}: {exc}"), operation)
    return errors.to_error(
        errors.parse(response.status_code, response.content, dict(response.headers)), operation
    )
