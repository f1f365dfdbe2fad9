from __future__ import annotations

import pytest

from core.config import Config, ConfigError
from handlers.app import create_app


@pytest.fixture
def client(demo_config):
    return create_app(demo_config).test_client()


def test_healthz_reports_queue_store_model_and_tenants_as_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["redis"] == {
        "ok": True,
        "backend": "embedded",
        "jobs": {},
        "latency_ms": body["redis"]["latency_ms"],
    }
    assert body["store"]["ok"] is True
    assert body["model"]["trained"] is False
    assert body["tenants"]["installed"] == []


def test_given_unreachable_redis_healthz_answers_503_and_says_why(tmp_path):
    config = Config.for_demo(lancedb_uri=str(tmp_path / "db"), redis_url="redis://127.0.0.1:1/0")
    response = create_app(config).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["redis"]["ok"] is False
    assert "Redis is unreachable" in body["redis"]["error"]


@pytest.mark.redis
def test_healthz_with_real_redis_reports_queue_depths(tmp_path, redis_url):
    config = Config.for_demo(lancedb_uri=str(tmp_path / "db"), redis_url=redis_url)
    body = create_app(config).test_client().get("/healthz").get_json()
    assert body["redis"]["ok"] is True
    assert body["redis"]["queues"] == {"high": 0, "default": 0, "low": 0}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/no/such/page", 404, "not_found"), ("POST", "/healthz", 405, "method_not_allowed")],
)
def test_every_error_uses_the_one_json_shape(client, method, path, status, code):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    error = response.get_json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]


def test_an_unexpected_error_answers_500_json_without_a_traceback(demo_config):
    app = create_app(demo_config)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "secret internals" not in body
    assert "incident" in response.get_json()["error"]["message"]


def test_a_configuration_without_secrets_cannot_build_the_app(tmp_path):
    with pytest.raises(ConfigError, match="FIELDWISE_SECRET_KEY is not set"):
        create_app(Config(lancedb_uri=str(tmp_path)))


def test_proxy_hops_make_the_app_see_the_url_the_crm_called(tmp_path):
    config = Config.for_demo(lancedb_uri=str(tmp_path / "db"), proxy_hops=1)
    app = create_app(config)

    @app.get("/echo-url")
    def echo_url():
        from flask import request

        return {"url": request.url}

    response = app.test_client().get(
        "/echo-url?x=1",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fieldwise.example.com"},
    )
    assert response.get_json()["url"] == "https://fieldwise.example.com/echo-url?x=1"


def test_healthz_names_a_tenant_that_needs_reauthorisation_with_its_reinstall_link(demo_config):
    from core.crypto import TokenCipher
    from core.store import Store
    from core.tenants import Tenant, TenantRegistry, Tokens

    registry = TenantRegistry(Store.from_config(demo_config), TokenCipher.from_config(demo_config))
    registry.save(
        Tenant(
            "hubspot-77",
            "hubspot",
            "77",
            None,
            status="needs_reauth",
            status_reason="refresh token revoked",
        ),
        Tokens("a", "r"),
    )
    body = create_app(demo_config).test_client().get("/healthz").get_json()
    assert body["tenants"]["ok"] is False
    assert body["tenants"]["installed"] == [
        {
            "tenant_id": "hubspot-77",
            "crm": "hubspot",
            "status": "needs_reauth",
            "backfill": {},
            "notes_to_embed_again": 0,
            "reason": "refresh token revoked",
            "reinstall": "/install/hubspot",
        }
    ]
