"""Contract: OAuth authorize/token/token-info endpoints and bearer-token errors."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["hubspot_fixtures"]

REDIRECT = "http://fieldwise.test/oauth/hubspot/callback"


@pytest.fixture(scope="module")
def sb(make_sandbox):
    return make_sandbox()


def authorize(sb, **params):
    query = {
        "client_id": sb.client_id,
        "redirect_uri": REDIRECT,
        "scope": "oauth crm.objects.contacts.read",
        "state": "xyz",
        **params,
    }
    return requests.get(f"{sb.base_url}/oauth/authorize", params=query, allow_redirects=False)


def code_from(response) -> str:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["xyz"]
    return query["code"][0]


def token(sb, **form):
    return requests.post(
        f"{sb.base_url}/oauth/v1/token",
        data={"client_id": sb.client_id, "client_secret": sb.client_secret, **form},
    )


def test_authorize_auto_consents_and_redirects_with_code_and_state(sb):
    assert code_from(authorize(sb))


def test_authorize_with_unknown_client_id_is_refused(sb):
    response = authorize(sb, client_id="not-our-app")
    assert response.status_code == 400 and "client_id" in response.text


def test_authorization_code_exchange_answers_documented_token_shape(sb):
    code = code_from(authorize(sb))
    response = token(sb, grant_type="authorization_code", redirect_uri=REDIRECT, code=code)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 1800
    info = requests.get(f"{sb.base_url}/oauth/v1/access-tokens/{body['access_token']}").json()
    assert info["hub_id"] == sb.portal_id and info["app_id"] == sb.app_id
    assert info["scopes"] == ["oauth", "crm.objects.contacts.read"]
    assert 0 < info["expires_in"] <= 1800 and info["user"] and info["token_type"] == "access"


def test_code_is_single_use(sb):
    code = code_from(authorize(sb))
    assert (
        token(sb, grant_type="authorization_code", redirect_uri=REDIRECT, code=code).status_code
        == 200
    )
    again = token(sb, grant_type="authorization_code", redirect_uri=REDIRECT, code=code)
    assert again.status_code == 400 and again.json()["status"] == "BAD_AUTH_CODE"


def test_redirect_uri_mismatch_answers_bad_redirect_uri(sb):
    code = code_from(authorize(sb))
    response = token(
        sb, grant_type="authorization_code", redirect_uri="http://evil.test/cb", code=code
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "BAD_REDIRECT_URI" and body["message"] and body["correlationId"]


def test_wrong_client_secret_is_refused(sb):
    response = requests.post(
        f"{sb.base_url}/oauth/v1/token",
        data={
            "grant_type": "refresh_token",
            "client_id": sb.client_id,
            "client_secret": "nope",
            "refresh_token": sb.refresh_token,
        },
    )
    assert response.status_code == 400 and response.json()["status"] == "BAD_CLIENT_SECRET"


def test_pkce_code_verifier_is_checked(sb):
    verifier = "v" * 50
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    code = code_from(authorize(sb, code_challenge=challenge, code_challenge_method="S256"))
    bad = token(
        sb,
        grant_type="authorization_code",
        redirect_uri=REDIRECT,
        code=code,
        code_verifier="x" * 50,
    )
    assert bad.status_code == 400
    good = token(
        sb,
        grant_type="authorization_code",
        redirect_uri=REDIRECT,
        code=code,
        code_verifier=verifier,
    )
    assert good.status_code == 200


def test_refresh_grant_returns_new_access_token_for_same_refresh_token(sb):
    response = token(sb, grant_type="refresh_token", refresh_token=sb.refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] == sb.refresh_token and body["access_token"] != sb.access_token


def test_unknown_refresh_token_answers_bad_refresh_token(sb):
    response = token(
        sb, grant_type="refresh_token", refresh_token="00000000-0000-0000-0000-000000000000"
    )
    assert response.status_code == 400
    assert response.json()["status"] == "BAD_REFRESH_TOKEN"


def test_missing_token_answers_401_invalid_authentication(sb):
    response = requests.get(f"{sb.base_url}/crm/v3/objects/contacts")
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["correlationId"]


def test_expire_tokens_hook_makes_calls_answer_401_expired_then_refresh_works(sb):
    old = sb.access_token
    assert requests.post(f"{sb.base_url}/__admin/expire-tokens", json={}).status_code == 200
    response = requests.get(
        f"{sb.base_url}/crm/v3/objects/contacts", headers={"Authorization": f"Bearer {old}"}
    )
    assert response.status_code == 401 and response.json()["category"] == "EXPIRED_AUTHENTICATION"
    fresh = token(sb, grant_type="refresh_token", refresh_token=sb.refresh_token).json()[
        "access_token"
    ]
    ok = requests.get(
        f"{sb.base_url}/crm/v3/objects/contacts", headers={"Authorization": f"Bearer {fresh}"}
    )
    assert ok.status_code == 200


def test_token_scopes_are_enforced_with_missing_scopes_403(sb):
    code = code_from(authorize(sb))
    access = token(sb, grant_type="authorization_code", redirect_uri=REDIRECT, code=code).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {access}"}
    assert (
        requests.get(f"{sb.base_url}/crm/v3/objects/contacts", headers=headers).status_code == 200
    )
    denied = requests.get(f"{sb.base_url}/crm/v3/objects/deals", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["category"] == "MISSING_SCOPES"


def test_revoke_refresh_tokens_hook_invalidates_refresh_and_access(sb, make_sandbox):
    other = make_sandbox()
    refresh, access = other.refresh_token, other.access_token
    assert requests.post(f"{other.base_url}/__admin/revoke-refresh-tokens", json={}).json() == {
        "revoked": 1
    }
    response = token(other, grant_type="refresh_token", refresh_token=refresh)
    assert response.json()["status"] == "BAD_REFRESH_TOKEN"
    info = requests.get(f"{other.base_url}/oauth/v1/refresh-tokens/{refresh}")
    assert info.status_code == 404
    assert (
        requests.get(
            f"{other.base_url}/crm/v3/objects/contacts",
            headers={"Authorization": f"Bearer {access}"},
        ).status_code
        == 401
    )


def test_access_tokens_expire_after_configured_lifetime(make_sandbox):
    import time

    short = make_sandbox(token_lifetime_s=1)
    access = token(short, grant_type="refresh_token", refresh_token=short.refresh_token).json()
    assert access["expires_in"] == 1
    time.sleep(1.2)
    response = requests.get(
        f"{short.base_url}/crm/v3/objects/contacts",
        headers={"Authorization": f"Bearer {access['access_token']}"},
    )
    assert response.status_code == 401 and response.json()["category"] == "EXPIRED_AUTHENTICATION"
