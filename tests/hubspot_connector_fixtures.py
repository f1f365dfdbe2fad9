"""Builders for HubSpot connector tests: a Fieldwise config and tenant pointed at a sandbox portal.

Kept apart from ``tests/hubspot_fixtures.py`` (the sandbox author's file).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from connectors.base import ConnectorContext
from connectors.hubspot.client import HubSpotConnector
from core.config import Config, Secret
from core.crypto import TokenCipher
from core.ratelimit import LocalWindowCounter, WindowCounter, counter_for
from core.store import Store
from core.tenants import Tenant, TenantRegistry, Tokens, tenant_id_for
from sandbox.hubspot import HubSpotSandbox

PUBLIC_URL = "http://fieldwise.test"


@dataclass
class Env:
    """One Fieldwise installation pointed at one sandbox portal."""

    sb: HubSpotSandbox
    config: Config
    registry: TenantRegistry
    counter: WindowCounter
    tenant_id: str

    @property
    def context(self) -> ConnectorContext:
        return ConnectorContext(self.config, self.registry, self.counter)

    def connector(self) -> HubSpotConnector:
        """A fresh connector (its own HubSpot client and token copy), as a new worker would build."""
        return HubSpotConnector(self.registry.get(self.tenant_id), self.context)

    def admin(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(f"{self.sb.base_url}/__admin/{name}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def counters(self) -> Counter[str]:
        return Counter(self.sb.state.log.snapshot()["counters"])

    def statuses(self) -> Counter[int]:
        return Counter(e["status"] for e in self.sb.state.log.snapshot()["requests"])

    def reset_log(self) -> None:
        self.sb.state.log.reset()


def config_for(sb: HubSpotSandbox, tmp_path: Path, redis_url: str | None = None) -> Config:
    """A demo config whose HubSpot URLs and app credentials are the sandbox's."""
    return Config.for_demo(
        lancedb_uri=str(tmp_path / "lancedb"),
        redis_url=redis_url,
        hubspot_client_id=sb.client_id,
        hubspot_client_secret=Secret(sb.client_secret),
        hubspot_app_id=str(sb.app_id),
        hubspot_developer_api_key=Secret(sb.developer_api_key),
        hubspot_api_url=sb.base_url,
        hubspot_authorize_url=sb.base_url + "/oauth/authorize",
        public_url=PUBLIC_URL,
    )


def make_env(
    sb: HubSpotSandbox,
    tmp_path: Path,
    *,
    redis_url: str | None = None,
    settings: dict[str, Any] | None = None,
    expires_in_s: float = 1800,
) -> Env:
    """Register the sandbox's installed app as an active tenant with its current tokens.

    The tenant's request budget is the portal's own burst limit, as an admin sets it, unless
    ``settings`` names another.
    """
    settings = {"hubspot_ten_second_limit": sb.limiter.ten_second_limit, **(settings or {})}
    config = config_for(sb, tmp_path, redis_url)
    registry = TenantRegistry(Store.from_config(config), TokenCipher.from_config(config))
    tenant = Tenant(
        tenant_id=tenant_id_for("hubspot", str(sb.portal_id)),
        crm="hubspot",
        external_id=str(sb.portal_id),
        instance_url=sb.base_url,
        scopes=("oauth", "crm.objects.contacts.read", "crm.objects.contacts.write"),
        status="active",
        integration_user_id=str(sb.app_id),
        settings=settings,
    )
    tokens = Tokens(
        sb.access_token, sb.refresh_token, datetime.now(UTC) + timedelta(seconds=expires_in_s)
    )
    registry.save(tenant, tokens)
    counter = counter_for(redis_url) if redis_url else LocalWindowCounter()
    return Env(sb, config, registry, counter, tenant.tenant_id)


def insert_contacts(sb: HubSpotSandbox, count: int, stamp: str) -> list[str]:
    """Put ``count`` plain lead-stage contacts straight into the sandbox store (no HTTP, no events)."""
    ids = sb.repo.allocate_ids(count)
    records = []
    for n, record_id in enumerate(ids):
        props = {
            "hs_object_id": record_id,
            "email": f"bulk{record_id}@example.com",
            "firstname": f"Bulk{n}",
            "lifecyclestage": "lead",
            "createdate": stamp,
            "lastmodifieddate": stamp,
            "hs_lastmodifieddate": stamp,
        }
        history = {
            k: [{"value": v, "timestamp": stamp, "sourceType": "IMPORT"}] for k, v in props.items()
        }
        records.append(
            {
                "id": record_id,
                "properties": props,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "history": history,
                "associations": {},
            }
        )
    sb.repo.bulk_insert("contacts", records)
    return ids
