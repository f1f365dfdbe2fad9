"""Starting both sandbox CRMs together, seeded with a generated history when asked.

``fieldwise sandbox`` and ``fieldwise demo`` use :func:`start_sandboxes`; tests and benchmarks use it
too. Like ``sf org display``, :func:`connection_info` gives everything a client needs to connect
without going through OAuth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.base import connector_for
from core.config import Secret
from core.services import Services
from core.tenants import Tenant, Tokens, tenant_id_for
from sandbox.history import generate
from sandbox.history_model import History
from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox

log = logging.getLogger(__name__)

SEED_META_KEY = "fieldwise.seeded_history"


@dataclass
class Sandboxes:
    """Both running sandbox CRMs."""

    salesforce: SalesforceSandbox
    hubspot: HubSpotSandbox
    history: History | None = None
    """The history loaded by this start, if it loaded one."""

    def connection_info(self) -> dict[str, Any]:
        """The one JSON object ``fieldwise sandbox`` prints on start."""
        return {
            "salesforce": self.salesforce.connection_info(),
            "hubspot": self.hubspot.connection_info(),
        }

    def stop(self) -> None:
        """Stop both servers."""
        self.salesforce.stop()
        self.hubspot.stop()


def crm_settings(
    salesforce: SalesforceSandbox | None = None, hubspot: HubSpotSandbox | None = None
) -> dict[str, Any]:
    """The ``Config`` settings that point Fieldwise at running sandboxes (either or both)."""
    settings: dict[str, Any] = {}
    if salesforce is not None:
        settings.update(
            salesforce_client_id=salesforce.client_id,
            salesforce_client_secret=Secret(salesforce.client_secret),
            salesforce_login_url=salesforce.instance_url,
            ca_bundle=str(salesforce.ca_cert),
        )
    if hubspot is not None:
        settings.update(
            hubspot_client_id=hubspot.client_id,
            hubspot_client_secret=Secret(hubspot.client_secret),
            hubspot_app_id=str(hubspot.app_id),
            hubspot_developer_api_key=Secret(hubspot.developer_api_key),
            hubspot_api_url=hubspot.base_url,
            hubspot_authorize_url=f"{hubspot.base_url}/oauth/authorize",
        )
    return settings


def start_sandboxes(
    data_dir: Path,
    *,
    salesforce_port: int = 0,
    hubspot_port: int = 0,
    seed_leads: int = 0,
    seed: int = 7,
    widget_base_url: str | None = None,
) -> Sandboxes:
    """Start both sandboxes on loopback, loading a generated history once per data folder.

    Args:
        data_dir: where both keep their state; a restart with the same folder keeps records.
        salesforce_port: HTTPS port for Salesforce (0 picks a free one).
        hubspot_port: HTTP port for HubSpot (0 picks a free one).
        seed_leads: generate and load a history of this many leads, unless this folder already
            holds one.
        seed: the generator seed.
        widget_base_url: where record pages embed the Fieldwise widget from.

    Returns:
        The running sandboxes.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    salesforce = SalesforceSandbox(data_dir, port=salesforce_port, widget_base_url=widget_base_url)
    hubspot = HubSpotSandbox(data_dir, port=hubspot_port, widget_base_url=widget_base_url)
    salesforce.start()
    hubspot.start()
    sandboxes = Sandboxes(salesforce, hubspot)
    if seed_leads > 0:
        seeded = salesforce.state.store.get_meta(SEED_META_KEY)
        if seeded:
            log.info("sandbox data in %s already holds a history: %s", data_dir, seeded)
        else:
            started = time.perf_counter()
            history = generate(seed=seed, n_leads=seed_leads)
            salesforce.load_history(history)
            hubspot.load_history(history)
            sandboxes.history = history
            marker = {"seed": seed, "n_leads": seed_leads}
            salesforce.state.store.set_meta(SEED_META_KEY, marker)
            hubspot.state.store.set_meta(SEED_META_KEY, marker)
            log.info(
                "loaded %d generated leads in %.1f s", seed_leads, time.perf_counter() - started
            )
    return sandboxes


def register_tenants(
    services: Services, salesforce: SalesforceSandbox, hubspot: HubSpotSandbox
) -> dict[str, Tenant]:
    """Install Fieldwise into both sandboxes with their own tokens, skipping the OAuth consent.

    For benchmarks and tests that measure what comes after an install: the tenants are saved as
    active, with the sandboxes' integration users, and provisioned (fields and subscriptions).

    Returns:
        ``"salesforce"`` and ``"hubspot"`` to the saved tenant.
    """
    tenants = {
        "salesforce": services.registry.save(
            Tenant(tenant_id_for("salesforce", salesforce.org_id), "salesforce",
                   salesforce.org_id, salesforce.instance_url, status="active",
                   integration_user_id=salesforce.user_id),
            Tokens(salesforce.access_token),
        ),
        "hubspot": services.registry.save(
            Tenant(tenant_id_for("hubspot", str(hubspot.portal_id)), "hubspot",
                   str(hubspot.portal_id), hubspot.base_url, status="active",
                   integration_user_id=str(hubspot.app_id)),
            Tokens(hubspot.access_token, hubspot.refresh_token),
        ),
    }  # fmt: skip
    for tenant in tenants.values():
        connector_for(tenant.tenant_id, services.connector_context).install()
    return tenants
