"""Fixtures for the Salesforce connector's end-to-end tests against real SalesforceSandbox servers.

Load with ``pytest_plugins = ["salesforce_fixtures", "salesforce_connector_fixtures"]`` after
putting ``tests/`` on ``sys.path``. Each environment is a sandbox plus what a Fieldwise process
has: a demo ``Config`` pointed at the sandbox (login URL, CA bundle, connected app), a LanceDB
tenant registry in a temporary folder, a request-budget counter, and a tenant installed through
the real OAuth web-server flow with PKCE.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from salesforce_fixtures import Api

from connectors.base import ConnectorContext
from connectors.salesforce import auth
from connectors.salesforce.client import SalesforceConnector
from core.config import Config, Secret
from core.crypto import TokenCipher
from core.ratelimit import LocalWindowCounter, WindowCounter
from core.store import Store
from core.tenants import Tenant, TenantRegistry
from manifests.loader import load_manifest
from sandbox.history import generate
from sandbox.salesforce import SalesforceSandbox

REDIRECT_URI = "https://fieldwise.example/oauth/salesforce/callback"


def sandbox_config(sb: SalesforceSandbox, folder: Path, **overrides: Any) -> Config:
    """A demo config whose Salesforce settings point at ``sb``."""
    return Config.for_demo(
        lancedb_uri=str(folder / "lancedb"),
        salesforce_login_url=sb.instance_url,
        ca_bundle=str(sb.ca_cert),
        salesforce_client_id=sb.client_id,
        salesforce_client_secret=Secret(sb.client_secret),
        public_url="https://fieldwise.example",
        **overrides,
    )


def oauth_install(sb: SalesforceSandbox, config: Config) -> tuple[Tenant, Any]:
    """Run the web-server flow with PKCE against the sandbox: consent, callback, code exchange."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    url = auth.authorization_url(
        config,
        redirect_uri=REDIRECT_URI,
        state=state,
        code_verifier=verifier,
        scopes=load_manifest("salesforce").scopes(),
    )
    consent = sb.session().get(url + "&auto=1", allow_redirects=False)
    assert consent.status_code == 302, consent.text
    query = parse_qs(urlparse(consent.headers["Location"]).query)
    assert query["state"] == [state]
    return auth.exchange_code(
        config, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )


@dataclass
class Env:
    """One sandbox org with Fieldwise installed in it."""

    sb: SalesforceSandbox
    config: Config
    registry: TenantRegistry
    tenant: Tenant
    api: Api
    counter: WindowCounter = field(default_factory=LocalWindowCounter)

    def connector(self, counter: WindowCounter | None = None, **config: Any) -> SalesforceConnector:
        """A fresh connector (as a new worker would build one)."""
        settings = self.config.with_overrides(**config) if config else self.config
        context = ConnectorContext(settings, self.registry, counter or self.counter)
        return SalesforceConnector(self.registry.get(self.tenant.tenant_id), context)

    def api_calls(self) -> int:
        """API calls the sandbox has served (REST and Metadata; OAuth is not an API call)."""
        return sum(1 for e in self.sb.state.log.snapshot()["requests"] if e["api_call"])

    def reset_log(self) -> None:
        self.sb.state.log.reset()

    def drop_outbound_messages(self) -> None:
        """Stop the org pushing outbound messages (to an endpoint the tests do not serve)."""
        for config in self.api.admin("outbound-messages").json()["outbound_messages"]:
            self.api.admin("outbound-messages", {"delete": config["name"]})


def make_env(sb: SalesforceSandbox, folder: Path, **config: Any) -> Env:
    """Install a tenant into ``sb`` through OAuth and register it in a fresh LanceDB registry."""
    settings = sandbox_config(sb, folder, **config)
    registry = TenantRegistry(Store.from_config(settings), TokenCipher.from_config(settings))
    tenant, tokens = oauth_install(sb, settings)
    registry.save(tenant, tokens)
    return Env(sb, settings, registry, tenant, Api(sb))


def _started(folder: Path, leads: int | None, seed: int = 7) -> SalesforceSandbox:
    sb = SalesforceSandbox(folder / "org")
    if leads:
        sb.load_history(generate(seed, leads))
    return sb.start()


@pytest.fixture(scope="module")
def sf_history_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An org holding a generated 5,000-lead history (read tests)."""
    folder = tmp_path_factory.mktemp("sf-history")
    sb = _started(folder, 5000)
    yield make_env(sb, folder)
    sb.stop()


@pytest.fixture(scope="module")
def sf_write_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An org holding 10,000 leads with Fieldwise's fields installed (write tests)."""
    folder = tmp_path_factory.mktemp("sf-write")
    sb = _started(folder, 10_000, seed=11)
    env = make_env(sb, folder)
    env.connector().install()
    env.drop_outbound_messages()
    yield env
    sb.stop()


@pytest.fixture
def sf_empty_env(tmp_path: Path) -> Iterator[Env]:
    """A fresh org with no history and nothing installed (provisioning, tokens, budgets)."""
    sb = _started(tmp_path, None)
    yield make_env(sb, tmp_path)
    sb.stop()
