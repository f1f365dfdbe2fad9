"""Shared set-up for the webhook endpoint tests: an app with installed tenants and a held queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import Config, Secret
from core.tenants import Tenant, Tokens, tenant_id_for
from handlers.app import create_app

HUBSPOT_SECRET = "hs-app-client-secret-0001"
HUBSPOT_APP_ID = "4242"
PORTAL_ID = 62515
ORG_ID = "00D5g000004ABCDEA2"
INTEGRATION_USER = "0055g00000AbCdEAAZ"


@dataclass
class WebhookApp:
    app: Any
    client: Any
    services: Any

    def queued(self, func=None):
        jobs = self.services.queue.jobs()
        return [j for j in jobs if func is None or j["func"] == func]


def build_webhook_app(tmp_path, **overrides) -> WebhookApp:
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        hubspot_client_id="hs-client",
        hubspot_client_secret=Secret(HUBSPOT_SECRET),
        hubspot_app_id=HUBSPOT_APP_ID,
        max_webhook_bytes=64 * 1024,
        **overrides,
    )
    app = create_app(config)
    services = app.extensions["fieldwise.services"]
    if not config.redis_url:
        services.queue.pause()  # keep jobs queued so tests can read them
    services.registry.save(
        Tenant(
            tenant_id_for("hubspot", str(PORTAL_ID)),
            "hubspot",
            str(PORTAL_ID),
            None,
            status="active",
            integration_user_id=HUBSPOT_APP_ID,
        ),
        Tokens("a", "r"),
    )
    services.registry.save(
        Tenant(
            tenant_id_for("salesforce", ORG_ID),
            "salesforce",
            ORG_ID,
            "https://acme.my.salesforce.com",
            status="active",
            integration_user_id=INTEGRATION_USER,
        ),
        Tokens("a", "r"),
    )
    return WebhookApp(app, app.test_client(), services)
