"""Contract: OAuth web-server flow with PKCE, refresh, JWT bearer, revoke, identity and expiry."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["salesforce_fixtures"]

REDIRECT = "https://fieldwise.example/oauth/salesforce/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).decode().rstrip("=")
)


def authorize(sf_api, sb, **extra):
    params = {
        "response_type": "code",
        "client_id": sb.client_id,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "scope": "api refresh_token",
        "auto": "1",
        **extra,
    }
    response = sf_api.http.get(
        sf_api.url("/services/oauth2/authorize"), params=params, allow_redirects=False
    )
    return response


def code_from(response):
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def token(sf_api, **form):
    return sf_api.http.post(sf_api.url("/services/oauth2/token"), data=form)


def exchange(sf_api, sb, code, **overrides):
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    form.update(overrides)
    return token(sf_api, **form)


def test_consent_page_renders_without_auto(sf_api, sf_sandbox):
    response = authorize(sf_api, sf_sandbox, auto="0")
    assert response.status_code == 200 and "Allow Access?" in response.text
    assert 'name="decision" value="allow"' in response.text


def test_authorization_code_with_pkce_returns_documented_token_shape(sf_api, sf_sandbox):
    code = code_from(authorize(sf_api, sf_sandbox))
    response = exchange(sf_api, sf_sandbox, code)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["token_type"] == "Bearer" and body["instance_url"] == sf_sandbox.instance_url
    assert body["id"] == f"{sf_sandbox.instance_url}/id/{sf_sandbox.org_id}/{sf_sandbox.user_id}"
    expected = base64.b64encode(
        hmac.new(
            sf_sandbox.client_secret.encode(),
            (body["id"] + body["issued_at"]).encode(),
            hashlib.sha256,
        ).digest()
    ).decode()
    assert body["signature"] == expected
    assert sf_api.get("limits/", token=body["access_token"]).status_code == 200
    identity = sf_api.http.get(
        body["id"], headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert identity.json()["organization_id"] == sf_sandbox.org_id
    assert identity.json()["user_id"] == sf_sandbox.user_id
    reused = exchange(sf_api, sf_sandbox, code)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"code_verifier": "wrong-verifier-wrong-verifier-wrong-verifier"}, "invalid_grant"),
        ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri_mismatch"),
        ({"client_secret": "nope"}, "invalid_client"),
        ({"client_id": "nope"}, "invalid_client_id"),
    ],
)
def test_code_exchange_errors(sf_api, sf_sandbox, override, error):
    code = code_from(authorize(sf_api, sf_sandbox))
    response = exchange(sf_api, sf_sandbox, code, **override)
    assert response.status_code == 400
    assert response.json()["error"] == error and response.json()["error_description"]


def test_authorize_rejects_unknown_client(sf_api, sf_sandbox):
    response = authorize(sf_api, sf_sandbox, client_id="bogus")
    assert response.status_code == 400 and "invalid_client_id" in response.text


def test_refresh_token_flow_with_and_without_rotation(sf_api, sf_sandbox):
    body = exchange(sf_api, sf_sandbox, code_from(authorize(sf_api, sf_sandbox))).json()
    refreshed = token(
        sf_api,
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=sf_sandbox.client_id,
        client_secret=sf_sandbox.client_secret,
    ).json()
    assert "refresh_token" not in refreshed and refreshed["access_token"] != body["access_token"]
    sf_api.admin("oauth-settings", {"rotate_refresh_tokens": True})
    try:
        rotated = token(
            sf_api,
            grant_type="refresh_token",
            refresh_token=body["refresh_token"],
            client_id=sf_sandbox.client_id,
        ).json()
        assert rotated["refresh_token"] != body["refresh_token"]
        old = token(
            sf_api,
            grant_type="refresh_token",
            refresh_token=body["refresh_token"],
            client_id=sf_sandbox.client_id,
        )
        assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
    finally:
        sf_api.admin("oauth-settings", {"rotate_refresh_tokens": False})


def test_revoke_refresh_token_kills_its_access_tokens(sf_api, sf_sandbox):
    body = exchange(sf_api, sf_sandbox, code_from(authorize(sf_api, sf_sandbox))).json()
    revoke = sf_api.http.post(
        sf_api.url("/services/oauth2/revoke"), data={"token": body["refresh_token"]}
    )
    assert revoke.status_code == 200
    assert sf_api.get("limits/", token=body["access_token"]).status_code == 401
    again = sf_api.http.post(sf_api.url("/services/oauth2/revoke"), data={"token": "nope"})
    assert again.status_code == 400


def test_expire_tokens_hook_makes_api_answer_invalid_session_id(sf_api, sf_sandbox):
    old = sf_sandbox.access_token
    assert sf_api.admin("expire-tokens").json()["expired"] >= 1
    response = sf_api.get("limits/", token=old)
    assert response.status_code == 401
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert sf_sandbox.access_token != old


def test_revoke_refresh_tokens_hook(sf_api, sf_sandbox):
    body = exchange(sf_api, sf_sandbox, code_from(authorize(sf_api, sf_sandbox))).json()
    assert sf_api.admin("revoke-refresh-tokens").json()["revoked"] >= 1
    response = token(
        sf_api,
        grant_type="refresh_token",
        refresh_token=body["refresh_token"],
        client_id=sf_sandbox.client_id,
    )
    assert response.json()["error"] == "invalid_grant"


def _key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldwise-jwt")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_key, cert.public_bytes(serialization.Encoding.PEM).decode()


def test_jwt_bearer_flow_verifies_signature_and_claims(sf_api, sf_sandbox):
    pem_key, cert = _key_and_cert()
    other_key, _ = _key_and_cert()
    assert sf_api.admin("jwt-certificate", {"certificate_pem": cert}).status_code == 200
    claims = {
        "iss": sf_sandbox.client_id,
        "sub": "integration@fieldwise-sandbox.example",
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
    }
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ok = token(sf_api, grant_type=grant, assertion=jwt.encode(claims, pem_key, algorithm="RS256"))
    assert ok.status_code == 200, ok.text
    assert "refresh_token" not in ok.json()
    assert sf_api.get("limits/", token=ok.json()["access_token"]).status_code == 200
    cases = [
        (jwt.encode(claims, other_key, algorithm="RS256"), "invalid_grant"),
        (
            jwt.encode({**claims, "exp": int(time.time()) - 10}, pem_key, algorithm="RS256"),
            "invalid_grant",
        ),
        (
            jwt.encode({**claims, "iss": "someone-else"}, pem_key, algorithm="RS256"),
            "invalid_client_id",
        ),
        (
            jwt.encode({**claims, "sub": "nobody@example.com"}, pem_key, algorithm="RS256"),
            "invalid_grant",
        ),
        (
            jwt.encode({**claims, "aud": "https://evil.example"}, pem_key, algorithm="RS256"),
            "invalid_grant",
        ),
    ]
    for assertion, error in cases:
        response = token(sf_api, grant_type=grant, assertion=assertion)
        assert response.status_code == 400 and response.json()["error"] == error


def test_unsupported_grant_type(sf_api):
    response = token(sf_api, grant_type="password", username="x", password="y")
    assert response.json() == {
        "error": "unsupported_grant_type",
        "error_description": "grant type not supported",
    }
