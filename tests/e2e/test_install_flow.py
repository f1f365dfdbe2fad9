"""Installing through Fieldwise's own /install and /oauth/<crm>/callback routes, end to end."""

from __future__ import annotations

import html
import re
from urllib.parse import urlparse

import pytest

from connectors.base import connector_for
from core.config import Config, Secret
from handlers.app import create_app
from sandbox.history import generate
from sandbox.salesforce import SalesforceSandbox

PUBLIC_URL = "http://fieldwise.test"


@pytest.fixture
def salesforce(tmp_path):
    sb = SalesforceSandbox(tmp_path / "sf")
    sb.start()
    sb.load_history(generate(seed=11, n_leads=60))
    yield sb
    sb.stop()


def follow_consent(sandbox_session, location):
    """Act as the admin's browser on the consent page: open it, press Allow, return the redirect."""
    page = sandbox_session.get(location, allow_redirects=False)
    assert page.status_code == 200 and "Allow Access?" in page.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    form = {k: html.unescape(v) for k, v in hidden.items()} | {"decision": "allow"}
    answer = sandbox_session.post(location.split("?")[0], data=form, allow_redirects=False)
    assert answer.status_code == 302
    return answer.headers["Location"]


def custom_fields(sb, object_name):
    described = (
        sb.session()
        .get(
            f"{sb.instance_url}/services/data/v62.0/sobjects/{object_name}/describe/",
            headers={"Authorization": f"Bearer {sb.access_token}"},
        )
        .json()
    )
    return {f["name"] for f in described["fields"] if f["name"].endswith("__c")}


def test_salesforce_installs_through_the_oauth_redirects_then_provisions_and_backfills(
    salesforce, tmp_path
):
    before = custom_fields(salesforce, "Lead")
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        public_url=PUBLIC_URL,
        salesforce_login_url=salesforce.instance_url,
        ca_bundle=str(salesforce.ca_cert),
        salesforce_client_id=salesforce.client_id,
        salesforce_client_secret=Secret(salesforce.client_secret),
    )
    app = create_app(config)
    client = app.test_client()
    services = app.extensions["fieldwise.services"]

    start = client.get("/install/salesforce")
    assert start.status_code == 302
    callback = follow_consent(salesforce.session(), start.headers["Location"])
    assert callback.startswith(f"{PUBLIC_URL}/oauth/salesforce/callback?")
    parsed = urlparse(callback)
    finished = client.get(f"{parsed.path}?{parsed.query}")
    assert finished.status_code == 200, finished.get_json()
    tenant_id = finished.get_json()["tenant_id"]
    assert tenant_id == f"salesforce-{salesforce.org_id}"

    assert services.queue.drain(timeout_s=240)
    failed = [j for j in services.queue.jobs() if j["status"] == "failed"]
    assert failed == [], [services.queue.error(j["id"]) for j in failed]
    tenant = services.registry.get(tenant_id)
    assert tenant.status == "active"
    assert "Fieldwise_AI_Score__c" in custom_fields(salesforce, "Lead")
    assert services.store.count(tenant_id, "lead") == salesforce.state.store.count("Lead")

    connector = connector_for(tenant_id, services.connector_context)
    again = connector.plan_install()
    assert again.changes == []
    connector.uninstall()
    assert custom_fields(salesforce, "Lead") == before
    services.queue.stop()


def test_a_forged_or_replayed_state_is_refused(salesforce, tmp_path):
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        public_url=PUBLIC_URL,
        salesforce_login_url=salesforce.instance_url,
        ca_bundle=str(salesforce.ca_cert),
        salesforce_client_id=salesforce.client_id,
        salesforce_client_secret=Secret(salesforce.client_secret),
    )
    client = create_app(config).test_client()
    forged = client.get("/oauth/salesforce/callback?code=abc&state=not-a-sealed-state")
    assert forged.status_code == 400
    assert forged.get_json()["error"]["code"] == "invalid_state"
    start = client.get("/install/salesforce")
    state = re.search(r"state=([^&]+)", start.headers["Location"]).group(1)
    crossed = client.get(f"/oauth/hubspot/callback?code=abc&state={state}")
    assert crossed.status_code in (400, 503)
    declined = client.get("/oauth/salesforce/callback?error=access_denied&error_description=no")
    assert declined.status_code == 400
    assert declined.get_json()["error"]["code"] == "consent_declined"
    unknown = client.get("/install/pipedrive")
    assert unknown.status_code == 404
