"""OAuth for the sandbox portal, and the bearer-token check every API call goes through.

Serves the authorize page (auto-consent), ``/oauth/v1/token``, token info and refresh-token
revocation.

Tokens, codes and refresh tokens are kept in the store's side table, so a restart keeps an install.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from sandbox.common import RecordStore
from sandbox.hubspot.errors import (
    HubSpotError,
    expired_authentication,
    invalid_authentication,
    json_response,
    oauth_error,
)

DEFAULT_SCOPES = [
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.objects.owners.read",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
    "crm.schemas.deals.read",
    "crm.schemas.deals.write",
]
"""Scopes of the token the sandbox installs for its own app."""

CODE_TTL_S = 600


class TokenStore:
    """Authorization codes, access tokens and refresh tokens of the sandbox's app."""

    def __init__(
        self,
        store: RecordStore,
        *,
        portal_id: int,
        app_id: int,
        client_id: str,
        client_secret: str,
        user_email: str,
        lifetime_s: int = 1800,
    ) -> None:
        self._store = store
        self._lock = threading.RLock()
        self.portal_id = portal_id
        self.app_id = app_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_email = user_email
        self.user_id = 2_000_000 + portal_id % 1_000_000
        self.lifetime_s = lifetime_s
        self._data: dict[str, dict[str, Any]] = store.get_meta(
            "oauth", {"access": {}, "refresh": {}, "codes": {}}
        )

    def _save(self) -> None:
        self._store.set_meta("oauth", self._data)

    # -- issuing -----------------------------------------------------------------------------

    def issue_code(
        self, redirect_uri: str, scopes: list[str], challenge: str | None, method: str | None
    ) -> str:
        """An authorization code bound to its redirect URI (and PKCE challenge when given)."""
        code = str(uuid.uuid4())
        with self._lock:
            self._data["codes"][code] = {
                "redirect_uri": redirect_uri,
                "scopes": scopes,
                "expires_at": time.time() + CODE_TTL_S,
                "challenge": challenge,
                "method": method or "plain",
            }
            self._save()
        return code

    def issue_refresh(self, scopes: list[str]) -> str:
        """A new refresh token for the app's install in the portal."""
        token = str(uuid.uuid4())
        with self._lock:
            self._data["refresh"][token] = {"scopes": scopes, "revoked": False}
            self._save()
        return token

    def issue_access(self, refresh_token: str, scopes: list[str]) -> dict[str, Any]:
        """A new access token; returns the ``/oauth/v1/token`` response body."""
        raw = secrets.token_urlsafe(96).replace("-", "A").replace("_", "B")
        token = "C" + raw[:240]
        with self._lock:
            self._data["access"][token] = {
                "scopes": scopes,
                "expires_at": time.time() + self.lifetime_s,
                "refresh_token": refresh_token,
            }
            self._save()
        return {
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "access_token": token,
            "expires_in": self.lifetime_s,
        }

    def default_install(self) -> dict[str, Any]:
        """The token pair the sandbox keeps for its own installed app, renewed when expired."""
        with self._lock:
            current = self._store.get_meta("default_install")
            if current is not None:
                info = self._data["access"].get(current["access_token"])
                refresh = self._data["refresh"].get(current["refresh_token"])
                if info and refresh and not refresh["revoked"] and info["expires_at"] > time.time():
                    return current
                if refresh and not refresh["revoked"]:
                    current = self.issue_access(current["refresh_token"], refresh["scopes"])
                    self._store.set_meta("default_install", current)
                    return current
            refresh_token = self.issue_refresh(list(DEFAULT_SCOPES))
            current = self.issue_access(refresh_token, list(DEFAULT_SCOPES))
            self._store.set_meta("default_install", current)
            return current

    # -- checks ------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> dict[str, Any]:
        """The token info for an ``Authorization: Bearer`` header, or HubSpot's 401."""
        if not header or not header.lower().startswith("bearer "):
            raise invalid_authentication()
        token = header.split(" ", 1)[1].strip()
        with self._lock:
            info = self._data["access"].get(token)
        if info is None:
            raise invalid_authentication()
        left = info["expires_at"] - time.time()
        if left <= 0:
            raise expired_authentication(-left)
        return info

    def access_info(self, token: str) -> dict[str, Any] | None:
        """``/oauth/v1/access-tokens/{token}`` metadata, or None when unknown or expired."""
        with self._lock:
            info = self._data["access"].get(token)
        if info is None or info["expires_at"] <= time.time():
            return None
        return {
            "token": token,
            "user": self.user_email,
            "hub_domain": f"portal-{self.portal_id}.sandbox.hubspot.local",
            "scopes": info["scopes"],
            "hub_id": self.portal_id,
            "app_id": self.app_id,
            "expires_in": int(info["expires_at"] - time.time()),
            "user_id": self.user_id,
            "token_type": "access",
        }

    def refresh_info(self, token: str) -> dict[str, Any] | None:
        """``/oauth/v1/refresh-tokens/{token}`` metadata, or None when unknown or revoked."""
        with self._lock:
            info = self._data["refresh"].get(token)
        if info is None or info["revoked"]:
            return None
        return {
            "token": token,
            "user": self.user_email,
            "hub_domain": f"portal-{self.portal_id}.sandbox.hubspot.local",
            "scopes": info["scopes"],
            "hub_id": self.portal_id,
            "client_id": self.client_id,
            "user_id": self.user_id,
            "token_type": "refresh",
        }

    # -- admin -------------------------------------------------------------------------------

    def expire_all(self) -> int:
        """Make every access token expired now (admin hook ``expire-tokens``)."""
        with self._lock:
            for info in self._data["access"].values():
                info["expires_at"] = min(info["expires_at"], time.time() - 1)
            self._save()
            return len(self._data["access"])

    def revoke_refresh(self, token: str | None = None) -> int:
        """Revoke one refresh token, or all of them (admin hook ``revoke-refresh-tokens``)."""
        with self._lock:
            targets = [token] if token else list(self._data["refresh"])
            count = 0
            for key in targets:
                info = self._data["refresh"].get(key)
                if info is not None and not info["revoked"]:
                    info["revoked"] = True
                    count += 1
            for info in self._data["access"].values():
                if info["refresh_token"] in targets:
                    info["expires_at"] = min(info["expires_at"], time.time() - 1)
            self._save()
            return count

    # -- token endpoint ----------------------------------------------------------------------

    def exchange(self, form: dict[str, str]) -> Response:
        """Answer ``POST /oauth/v1/token`` for the authorization-code and refresh grants."""
        grant = form.get("grant_type", "")
        if grant not in ("authorization_code", "refresh_token"):
            return oauth_error("BAD_GRANT_TYPE", f"unsupported grant type: {grant or 'missing'}")
        if form.get("client_id") != self.client_id:
            return oauth_error("BAD_CLIENT_ID", "missing or unknown client id")
        if not secrets.compare_digest(form.get("client_secret", ""), self.client_secret):
            return oauth_error("BAD_CLIENT_SECRET", "missing or invalid client secret")
        with self._lock:
            if grant == "refresh_token":
                refresh_token = form.get("refresh_token", "")
                info = self._data["refresh"].get(refresh_token)
                if info is None or info["revoked"]:
                    return oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
                return json_response(self.issue_access(refresh_token, info["scopes"]))
            code = form.get("code", "")
            pending = self._data["codes"].get(code)
            if pending is None or pending["expires_at"] < time.time():
                return oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
            if form.get("redirect_uri") != pending["redirect_uri"]:
                return oauth_error(
                    "BAD_REDIRECT_URI", "redirect_uri does not match initial auth code URL"
                )
            if pending["challenge"] and not _pkce_ok(
                form.get("code_verifier", ""), pending["challenge"], pending["method"]
            ):
                return oauth_error(
                    "BAD_AUTH_CODE", "code_verifier does not match the code challenge"
                )
            del self._data["codes"][code]
            self._save()
            refresh_token = self.issue_refresh(pending["scopes"])
            return json_response(self.issue_access(refresh_token, pending["scopes"]))


def _pkce_ok(verifier: str, challenge: str, method: str) -> bool:
    if method.upper() == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    else:
        expected = verifier
    return bool(verifier) and secrets.compare_digest(expected, challenge)


def _error_page(message: str, status: int = 400) -> Response:
    body = (
        "<!doctype html><html><head><title>Authorization error</title></head><body>"
        f"<h1>Authorization error</h1><p>{html.escape(message)}</p></body></html>"
    )
    return Response(body, status=status, mimetype="text/html")


def register(app: Flask, tokens: TokenStore) -> None:
    """Add the OAuth routes to the sandbox app."""

    @app.get("/oauth/authorize")
    def oauth_authorize() -> BaseResponse:
        args = request.args
        if args.get("client_id") != tokens.client_id:
            return _error_page("Unknown client_id: this app is not registered with the portal.")
        redirect_uri = args.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return _error_page("redirect_uri must be an absolute http(s) URL.")
        scope_text = " ".join(filter(None, [args.get("scope", ""), args.get("optional_scope", "")]))
        scopes = list(dict.fromkeys(s for s in scope_text.replace("+", " ").split() if s))
        if not args.get("scope"):
            return _error_page("The scope parameter is required.")
        code = tokens.issue_code(
            redirect_uri, scopes, args.get("code_challenge"), args.get("code_challenge_method")
        )
        query = {"code": code}
        if args.get("state") is not None:
            query["state"] = args["state"]
        joiner = "&" if parts.query else "?"
        return redirect(f"{redirect_uri}{joiner}{urlencode(query)}", code=302)

    @app.post("/oauth/v1/token")
    def oauth_token() -> Response:
        form = {k: v for k, v in request.form.items()}
        if not form and request.is_json:
            body = request.get_json(silent=True)
            form = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        return tokens.exchange(form)

    @app.get("/oauth/v1/access-tokens/<token>")
    def oauth_access_token_info(token: str) -> Response:
        info = tokens.access_info(token)
        if info is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "Token not found or expired")
        return json_response(info)

    @app.get("/oauth/v1/refresh-tokens/<token>")
    def oauth_refresh_token_info(token: str) -> Response:
        info = tokens.refresh_info(token)
        if info is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "Refresh token not found")
        return json_response(info)

    @app.delete("/oauth/v1/refresh-tokens/<token>")
    def oauth_refresh_token_revoke(token: str) -> Response:
        if not tokens.revoke_refresh(token):
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "Refresh token not found")
        return Response(status=204)
