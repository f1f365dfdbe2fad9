"""OAuth 2.0 as a Salesforce org serves it.

The web-server flow with PKCE, refresh tokens, JWT bearer, revocation, the identity URL, and
bearer-token checks for the API.

Endpoints (relative to the instance URL, which doubles as the login URL):

- ``GET /services/oauth2/authorize``: a small consent page; ``auto=1`` (or pressing Allow) redirects
  to ``redirect_uri`` with ``code`` and ``state``. ``login_hint`` picks the approving user by
  username; the default is the integration user.
- ``POST /services/oauth2/token``: ``authorization_code`` (``client_id``/``client_secret`` in the
  body or HTTP Basic, ``redirect_uri`` equal to the one authorized, ``code_verifier`` checked
  against an S256 ``code_challenge``), ``refresh_token`` (rotation optional), and
  ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RS256 assertion verified with the certificate
  uploaded through the ``jwt-certificate`` admin hook; ``iss`` = consumer key, ``sub`` = username,
  ``aud`` = the login URL, ``exp`` in the future).
- ``POST /services/oauth2/revoke``: revokes an access or refresh token (a refresh token takes its
  access tokens with it).
- ``GET /id/<orgId>/<userId>`` and ``GET /services/oauth2/userinfo``: identity for a bearer token.

Access tokens live for ``access_token_lifetime_s`` (``oauth-settings`` admin hook); afterwards, or
after the ``expire-tokens`` hook, the API answers 401 ``INVALID_SESSION_ID``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Blueprint, Response, jsonify, redirect, request

from sandbox.common import RecordStore
from sandbox.salesforce.ids import now_string

ACCESS = "__OAuthAccessToken"
REFRESH = "__OAuthRefreshToken"
CODE = "__OAuthCode"
SETTINGS_KEY = "salesforce.oauth.settings"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_SETTINGS: dict[str, Any] = {
    "access_token_lifetime_s": 7200,
    "rotate_refresh_tokens": False,
    "callback_urls": [],
    "require_pkce": False,
    "jwt_certificate_pem": None,
    "jwt_preauthorized_usernames": None,
}
SCOPES = "api refresh_token web id openid"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class OAuthError(Exception):
    """A token-endpoint error, answered as ``{"error", "error_description"}`` with status 400."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class OAuthService:
    """Issues and checks tokens for one sandbox org.

    Args:
        store: the sandbox's RecordStore (tokens and settings persist there).
        org_id: the org's 18-character id.
        client_id: the connected app's consumer key.
        client_secret: the connected app's consumer secret.
        instance_url: returns the current ``https://host:port``.
        find_user: ``(user_id) -> User record or None``.
        find_username: ``(username) -> User record or None``.
    """

    def __init__(
        self,
        store: RecordStore,
        org_id: str,
        client_id: str,
        client_secret: str,
        instance_url: Callable[[], str],
        find_user: Callable[[str], dict[str, Any] | None],
        find_username: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self.store = store
        self.org_id = org_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.instance_url = instance_url
        self.find_user = find_user
        self.find_username = find_username
        self._cache: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------------------------------------
    # Settings and admin hooks

    @property
    def settings(self) -> dict[str, Any]:
        """The connected app's OAuth policy (lifetime, rotation, callbacks, JWT certificate)."""
        return {**DEFAULT_SETTINGS, **self.store.get_meta(SETTINGS_KEY, {})}

    def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply the ``oauth-settings`` admin hook; unknown keys are rejected."""
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown OAuth settings {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}"
            )
        if changes.get("jwt_certificate_pem"):
            self._load_certificate(changes["jwt_certificate_pem"])
        merged = {**self.store.get_meta(SETTINGS_KEY, {}), **changes}
        self.store.set_meta(SETTINGS_KEY, merged)
        shown = dict(self.settings)
        shown["jwt_certificate_pem"] = bool(shown["jwt_certificate_pem"])
        return shown

    def upload_certificate(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``jwt-certificate`` admin hook: ``{certificate_pem, preauthorized_usernames?}``."""
        pem = body.get("certificate_pem")
        if not isinstance(pem, str):
            raise ValueError("certificate_pem (a PEM X.509 certificate) is required")
        changes: dict[str, Any] = {"jwt_certificate_pem": pem}
        if "preauthorized_usernames" in body:
            changes["jwt_preauthorized_usernames"] = body["preauthorized_usernames"]
        self.update_settings(changes)
        cert = self._load_certificate(pem)
        return {"ok": True, "subject": cert.subject.rfc4514_string()}

    @staticmethod
    def _load_certificate(pem: str) -> x509.Certificate:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise ValueError(f"not a PEM certificate: {exc}") from None
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise ValueError("the certificate must carry an RSA key (RS256)")
        return cert

    def expire_all(self, _body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``expire-tokens`` hook: every access token stops working now."""
        now = time.time()
        count = 0
        for key, record in list(self.store.iter(ACCESS)):
            if record["expires_at"] > now:
                record["expires_at"] = now - 1
                self.store.put(ACCESS, key, record)
                count += 1
        self._cache.clear()
        return {"expired": count}

    def revoke_all_refresh(self, _body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``revoke-refresh-tokens`` hook: every refresh token (and its access tokens) dies."""
        count = 0
        for key, _ in list(self.store.iter(REFRESH)):
            self._revoke_refresh(key)
            count += 1
        return {"revoked": count}

    # ----------------------------------------------------------------------------------------------
    # Tokens

    def issue(self, user_id: str, scope: str = SCOPES, refresh_key: str | None = None) -> str:
        """Mint an access token for a user and return it."""
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(72)}"
        record = {
            "user_id": user_id,
            "scope": scope,
            "issued_at": time.time(),
            "expires_at": time.time() + float(self.settings["access_token_lifetime_s"]),
            "refresh": refresh_key,
        }
        self.store.put(ACCESS, _hash(token), record)
        return token

    def _issue_refresh(self, user_id: str, scope: str) -> tuple[str, str]:
        token = f"5Aep{secrets.token_urlsafe(64)}"
        key = _hash(token)
        self.store.put(REFRESH, key, {"user_id": user_id, "scope": scope, "issued_at": time.time()})
        return token, key

    def user_for(self, token: str | None) -> str | None:
        """The user id a live access token belongs to; None when unknown, expired or revoked."""
        if not token:
            return None
        key = _hash(token)
        record = self._cache.get(key) or self.store.get(ACCESS, key)
        if record is None or record["expires_at"] <= time.time():
            self._cache.pop(key, None)
            return None
        self._cache[key] = record
        return str(record["user_id"])

    def _revoke_access(self, key: str) -> None:
        self.store.delete(ACCESS, key)
        self._cache.pop(key, None)

    def _revoke_refresh(self, key: str) -> None:
        self.store.delete(REFRESH, key)
        for access_key, record in list(self.store.iter(ACCESS)):
            if record.get("refresh") == key:
                self._revoke_access(access_key)

    def token_response(
        self, user_id: str, scope: str, access: str, refresh: str | None
    ) -> dict[str, Any]:
        """The token endpoint's success body, signed as Salesforce signs it."""
        issued_at = str(int(time.time() * 1000))
        identity = f"{self.instance_url()}/id/{self.org_id}/{user_id}"
        signature = base64.b64encode(
            hmac.new(
                self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        body = {
            "access_token": access,
            "signature": signature,
            "scope": scope,
            "instance_url": self.instance_url(),
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        if refresh:
            body["refresh_token"] = refresh
        return body

    # ----------------------------------------------------------------------------------------------
    # Grants

    def _client_credentials(self, form: dict[str, str]) -> tuple[str | None, str | None]:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            return auth.username, auth.password
        return form.get("client_id"), form.get("client_secret")

    def _check_client(
        self, client_id: str | None, client_secret: str | None, secret_required: bool
    ) -> None:
        if client_id != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if client_secret is None and not secret_required:
            return
        if not hmac.compare_digest(client_secret or "", self.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Run the token endpoint for one form-encoded request.

        Raises:
            OAuthError: with Salesforce's ``error`` code and description.
        """
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._grant_code(form)
        if grant_type == "refresh_token":
            return self._grant_refresh(form)
        if grant_type == JWT_GRANT:
            return self._grant_jwt(form)
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    def _grant_code(self, form: dict[str, str]) -> dict[str, Any]:
        client_id, client_secret = self._client_credentials(form)
        code = form.get("code") or ""
        record = self.store.get(CODE, _hash(code)) if code else None
        verifier = form.get("code_verifier")
        self._check_client(client_id, client_secret, secret_required=not verifier)
        if record is None or record["expires_at"] < time.time():
            raise OAuthError("invalid_grant", "invalid authorization code")
        self.store.delete(CODE, _hash(code))  # single use, even when the exchange fails below
        if form.get("redirect_uri") != record["redirect_uri"]:
            raise OAuthError("redirect_uri_mismatch", "redirect_uri must match configuration")
        challenge = record.get("code_challenge")
        if challenge:
            if not verifier:
                raise OAuthError("invalid_grant", "invalid code verifier")
            computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not hmac.compare_digest(computed.decode().rstrip("="), challenge.rstrip("=")):
                raise OAuthError("invalid_grant", "invalid code verifier")
        elif verifier:
            raise OAuthError("invalid_grant", "invalid code verifier")
        scope = record["scope"]
        refresh = None
        refresh_key = None
        if {"refresh_token", "offline_access", "full"} & set(scope.split()):
            refresh, refresh_key = self._issue_refresh(record["user_id"], scope)
        access = self.issue(record["user_id"], scope, refresh_key)
        return self.token_response(record["user_id"], scope, access, refresh)

    def _grant_refresh(self, form: dict[str, str]) -> dict[str, Any]:
        client_id, client_secret = self._client_credentials(form)
        self._check_client(client_id, client_secret, secret_required=False)
        token = form.get("refresh_token") or ""
        key = _hash(token)
        record = self.store.get(REFRESH, key) if token else None
        if record is None:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        refresh = None
        if self.settings["rotate_refresh_tokens"]:
            self._revoke_refresh(key)
            refresh, key = self._issue_refresh(record["user_id"], record["scope"])
        access = self.issue(record["user_id"], record["scope"], key)
        return self.token_response(record["user_id"], record["scope"], access, refresh)

    def _grant_jwt(self, form: dict[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion") or ""
        parts = assertion.split(".")
        if len(parts) != 3:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion: alg must be RS256")
        pem = self.settings["jwt_certificate_pem"]
        if not pem:
            raise OAuthError("invalid_client", "no certificate uploaded for this connected app")
        public_key = self._load_certificate(pem).public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise OAuthError("invalid_grant", "invalid assertion: signature invalid") from None
        if not isinstance(claims, dict) or claims.get("iss") != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        allowed = {
            self.instance_url(),
            "https://login.salesforce.com",
            "https://test.salesforce.com",
        }
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < time.time():
            raise OAuthError("invalid_grant", "expired authorization code")
        user = self.find_username(str(claims.get("sub", "")))
        allowed_users = self.settings["jwt_preauthorized_usernames"]
        if (
            user is None
            or not user.get("IsActive", True)
            or (allowed_users is not None and user["Username"] not in allowed_users)
        ):
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        access = self.issue(user["Id"], "api web id")
        return self.token_response(user["Id"], "api web id", access, None)

    # ----------------------------------------------------------------------------------------------
    # Authorization codes

    def authorize_check(self, args: dict[str, str]) -> str | None:
        """Validate an authorize request; return an error description, or None when fine."""
        if args.get("response_type") != "code":
            return "unsupported_response_type: response type not supported"
        if args.get("client_id") != self.client_id:
            return "invalid_client_id: client identifier invalid"
        redirect_uri = args.get("redirect_uri") or ""
        if urlsplit(redirect_uri).scheme not in {"http", "https"}:
            return "redirect_uri_mismatch: redirect_uri must match configuration"
        callbacks = self.settings["callback_urls"]
        if callbacks and redirect_uri not in callbacks:
            return "redirect_uri_mismatch: redirect_uri must match configuration"
        method = args.get("code_challenge_method", "S256" if args.get("code_challenge") else None)
        if args.get("code_challenge") and method != "S256":
            return "invalid_request: code_challenge_method must be S256"
        if self.settings["require_pkce"] and not args.get("code_challenge"):
            return "invalid_request: missing required code challenge"
        return None

    def make_code(self, args: dict[str, str], user_id: str) -> str:
        """Issue a single-use authorization code valid for 15 minutes."""
        code = "aPrx" + secrets.token_urlsafe(48)
        self.store.put(
            CODE,
            _hash(code),
            {
                "user_id": user_id,
                "redirect_uri": args.get("redirect_uri"),
                "code_challenge": args.get("code_challenge"),
                "scope": args.get("scope") or SCOPES,
                "expires_at": time.time() + 900,
            },
        )
        return code

    # ----------------------------------------------------------------------------------------------
    # Flask routes

    def blueprint(self, default_user: Callable[[], str]) -> Blueprint:
        """Routes for authorize, token, revoke and identity."""
        bp = Blueprint("salesforce_oauth", __name__)
        fields = (
            "response_type",
            "client_id",
            "redirect_uri",
            "state",
            "scope",
            "code_challenge",
            "code_challenge_method",
            "login_hint",
        )

        @bp.route("/services/oauth2/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            args = {k: v for k, v in (request.values.items()) if k in fields}
            problem = self.authorize_check(args)
            if problem:
                return Response(
                    f"<!doctype html><title>Error</title><h1>OAuth error</h1><p>{html.escape(problem)}</p>",
                    status=400,
                    mimetype="text/html",
                )
            user_id = default_user()
            hint = args.get("login_hint")
            if hint:
                user = self.find_username(hint)
                if user is None:
                    return Response("<!doctype html><p>unknown user</p>", 400, mimetype="text/html")
                user_id = user["Id"]
            approved = request.values.get("auto") == "1" or (
                request.method == "POST" and request.form.get("decision") == "allow"
            )
            denied = request.method == "POST" and request.form.get("decision") == "deny"
            if approved or denied:
                params = (
                    {"code": self.make_code(args, user_id)}
                    if approved
                    else {
                        "error": "access_denied",
                        "error_description": "end-user denied authorization",
                    }
                )
                if args.get("state") is not None:
                    params["state"] = args["state"]
                sep = "&" if "?" in args["redirect_uri"] else "?"
                return redirect(args["redirect_uri"] + sep + urlencode(params), code=302)
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in args.items()
            )
            user = self.find_user(user_id) or {}
            page = (
                "<!doctype html><html><head><title>Allow Access?</title></head><body>"
                "<h1>Allow Access?</h1>"
                f"<p>The app <b>{html.escape(self.client_id[:12])}…</b> is asking to access your"
                f" Salesforce data as <b>{html.escape(str(user.get('Username', user_id)))}</b>"
                f" with scopes <code>{html.escape(args.get('scope') or SCOPES)}</code>.</p>"
                f'<form method="post">{hidden}'
                '<button name="decision" value="allow">Allow</button> '
                '<button name="decision" value="deny">Deny</button></form></body></html>'
            )
            return Response(page, mimetype="text/html")

        @bp.post("/services/oauth2/token")
        def token() -> Any:
            try:
                return jsonify(self.grant(request.form.to_dict()))
            except OAuthError as exc:
                return jsonify(
                    {"error": exc.error, "error_description": exc.description}
                ), exc.status

        @bp.route("/services/oauth2/revoke", methods=["GET", "POST"])
        def revoke() -> Any:
            token_value = request.values.get("token") or ""
            key = _hash(token_value)
            if token_value and self.store.get(ACCESS, key) is not None:
                self._revoke_access(key)
                return Response(status=200)
            if token_value and self.store.get(REFRESH, key) is not None:
                self._revoke_refresh(key)
                return Response(status=200)
            return jsonify({"error": "invalid_token", "error_description": "invalid token"}), 400

        def identity(org_id: str, user_id: str) -> Any:
            header = request.headers.get("Authorization", "")
            token_value = (
                header.split(" ", 1)[1] if " " in header else request.args.get("oauth_token")
            )
            owner = self.user_for(token_value)
            if owner is None:
                return Response("Bad_OAuth_Token", status=403, mimetype="text/plain")
            if org_id != self.org_id or user_id != owner:
                return Response("Bad_Id", status=403, mimetype="text/plain")
            return jsonify(self.identity(owner))

        @bp.get("/id/<org_id>/<user_id>")
        def identity_url(org_id: str, user_id: str) -> Any:
            return identity(org_id, user_id)

        @bp.get("/services/oauth2/userinfo")
        def userinfo() -> Any:
            header = request.headers.get("Authorization", "")
            owner = self.user_for(header.split(" ", 1)[1] if " " in header else None)
            if owner is None:
                return Response("Bad_OAuth_Token", status=403, mimetype="text/plain")
            info = self.identity(owner)
            return jsonify(
                {
                    "sub": info["id"],
                    "user_id": owner,
                    "organization_id": self.org_id,
                    "preferred_username": info["username"],
                    "name": info["display_name"],
                    "email": info["email"],
                    "email_verified": True,
                    "active": info["active"],
                    "urls": info["urls"],
                }
            )

        return bp

    def identity(self, user_id: str) -> dict[str, Any]:
        """The identity-URL body for a user."""
        user = self.find_user(user_id) or {}
        base = self.instance_url()
        version = "62.0"
        return {
            "id": f"{base}/id/{self.org_id}/{user_id}",
            "asserted_user": True,
            "user_id": user_id,
            "organization_id": self.org_id,
            "username": user.get("Username"),
            "nick_name": (user.get("Username") or "").split("@")[0],
            "display_name": user.get("Name"),
            "email": user.get("Email"),
            "email_verified": True,
            "first_name": user.get("FirstName"),
            "last_name": user.get("LastName"),
            "timezone": user.get("TimeZoneSidKey") or "GMT",
            "active": bool(user.get("IsActive", True)),
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            "last_modified_date": user.get("LastModifiedDate") or now_string(),
            "is_app_installed": True,
            "urls": {
                "enterprise": f"{base}/services/Soap/c/{version}/{self.org_id[:15]}",
                "metadata": f"{base}/services/Soap/m/{version}/{self.org_id[:15]}",
                "partner": f"{base}/services/Soap/u/{version}/{self.org_id[:15]}",
                "rest": f"{base}/services/data/v{version}/",
                "sobjects": f"{base}/services/data/v{version}/sobjects/",
                "search": f"{base}/services/data/v{version}/search/",
                "query": f"{base}/services/data/v{version}/query/",
                "recent": f"{base}/services/data/v{version}/recent/",
                "tooling_soap": f"{base}/services/Soap/T/{version}/{self.org_id[:15]}",
                "tooling_rest": f"{base}/services/data/v{version}/tooling/",
                "profile": f"{base}/{user_id}",
                "users": f"{base}/services/data/v{version}/chatter/users",
                "custom_domain": base,
            },
        }
