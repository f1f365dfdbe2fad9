"""Installing through Fieldwise's own /install and /oauth/<crm>/callback routes, end to end."""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import requests

from connectors.base import connector_for
from core.config import Config
from handlers.app import create_app
from sandbox.history import generate
from sandbox.runner import crm_settings
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
        lancedb_uri=str(tmp_path / "db"), public_url=PUBLIC_URL, **crm_settings(salesforce)
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
        lancedb_uri=str(tmp_path / "db"), public_url=PUBLIC_URL, **crm_settings(salesforce)
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


@pytest.fixture
def hubspot(tmp_path):
    from sandbox.hubspot import HubSpotSandbox

    sb = HubSpotSandbox(tmp_path / "hs")
    sb.start()
    sb.load_history(generate(seed=12, n_leads=60))
    yield sb
    sb.stop()


def hubspot_config(sb, folder, **overrides):
    return Config.for_demo(
        lancedb_uri=str(folder / "db"),
        public_url=PUBLIC_URL,
        **crm_settings(hubspot=sb),
        **overrides,
    )


def install_hubspot_through_routes(client, sb):
    start = client.get("/install/hubspot")
    assert start.status_code == 302
    consent = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    parsed = urlparse(consent.headers["Location"])
    assert (
        f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == f"{PUBLIC_URL}/oauth/hubspot/callback"
    )
    finished = client.get(f"{parsed.path}?{parsed.query}")
    assert finished.status_code == 200, finished.get_json()
    return finished.get_json()


def property_names(sb):
    listed = requests.get(
        f"{sb.base_url}/crm/v3/properties/contacts",
        headers={"Authorization": f"Bearer {sb.access_token}"},
        timeout=10,
    ).json()["results"]
    return {p["name"] for p in listed}


def test_hubspot_installs_through_the_oauth_redirects_and_queued_work_resumes_after_reinstall(
    hubspot, tmp_path
):
    app = create_app(hubspot_config(hubspot, tmp_path))
    client = app.test_client()
    services = app.extensions["fieldwise.services"]
    first = install_hubspot_through_routes(client, hubspot)
    tenant_id = first["tenant_id"]
    assert tenant_id == f"hubspot-{hubspot.portal_id}"
    assert first["reinstall"] is False
    assert services.queue.drain(timeout_s=240)
    assert services.registry.get(tenant_id).status == "active"
    assert "fieldwise_ai_score" in property_names(hubspot)
    assert services.store.count(tenant_id, "lead") > 0

    # The admin revokes access: the next job finds the refresh refused and parks itself.
    requests.post(f"{hubspot.base_url}/__admin/revoke-refresh-tokens", json={}, timeout=10)
    requests.post(f"{hubspot.base_url}/__admin/expire-tokens", json={}, timeout=10)
    changed = requests.post(
        f"{hubspot.base_url}/__admin/ui-edit",
        json={
            "objectType": "contacts",
            "id": services.store.query(tenant_id, "lead", limit=1)[0]["crm_id"],
            "properties": {"jobtitle": "Head of Revenue Operations"},
        },
        timeout=10,
    ).json()
    lead_id = str(
        changed.get("id") or services.store.query(tenant_id, "lead", limit=1)[0]["crm_id"]
    )
    services.events.add_pending(f"{tenant_id}:contacts", [lead_id])
    services.queue.enqueue("sync.jobs.fetch_changes", tenant_id, "contacts")
    assert services.queue.drain(timeout_s=60)
    tenant = services.registry.get(tenant_id)
    assert tenant.status == "needs_reauth"
    assert [p["func"] for p in services.store.parked_jobs(tenant_id)] == ["sync.jobs.fetch_changes"]
    health = client.get("/healthz").get_json()
    assert health["tenants"]["installed"][0]["reinstall"] == "/install/hubspot"

    # Installing again resumes the parked work: the edit reaches the store.
    again = install_hubspot_through_routes(client, hubspot)
    assert again["reinstall"] is True
    assert services.queue.drain(timeout_s=120)
    assert services.registry.get(tenant_id).status == "active"
    assert services.store.parked_jobs(tenant_id) == []
    assert services.store.get(tenant_id, "lead", lead_id)["title"] == "Head of Revenue Operations"
    services.queue.stop()


def test_the_command_line_installs_headlessly_and_a_dry_run_then_shows_nothing_to_change(
    hubspot, tmp_path
):
    port = free_port()
    config = hubspot_config(hubspot, tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FIELDWISE_")},
        "FIELDWISE_SECRET_KEY": config.secret_key.reveal(),
        "FIELDWISE_ENCRYPTION_KEY": config.encryption_key.reveal(),
        "FIELDWISE_LANCEDB_URI": config.lancedb_uri,
        "FIELDWISE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "FIELDWISE_HUBSPOT_CLIENT_ID": hubspot.client_id,
        "FIELDWISE_HUBSPOT_CLIENT_SECRET": hubspot.client_secret,
        "FIELDWISE_HUBSPOT_APP_ID": str(hubspot.app_id),
        "FIELDWISE_HUBSPOT_DEVELOPER_API_KEY": hubspot.developer_api_key,
        "FIELDWISE_HUBSPOT_API_URL": hubspot.base_url,
        "FIELDWISE_HUBSPOT_AUTHORIZE_URL": f"{hubspot.base_url}/oauth/authorize",
    }
    installed = subprocess.run(
        [sys.executable, "-m", "core", "install", "hubspot", "--auto-consent"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "create field" in installed.stdout and "fieldwise_ai_score" in installed.stdout
    assert "fieldwise_ai_score" in property_names(hubspot)
    tenant_id = f"hubspot-{hubspot.portal_id}"
    dry = subprocess.run(
        [sys.executable, "-m", "core", "install", "hubspot", "--tenant", tenant_id, "--dry-run"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "0 change(s) would apply" in dry.stdout
    removed = subprocess.run(
        [sys.executable, "-m", "core", "uninstall", tenant_id],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert "fieldwise_ai_score" not in property_names(hubspot)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
