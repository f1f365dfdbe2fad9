from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest
import requests
from hubspot import HubSpot
from simple_salesforce import Salesforce

SALESFORCE_KEYS = {
    "instance_url",
    "ca_cert",
    "access_token",
    "org_id",
    "client_id",
    "client_secret",
}
HUBSPOT_KEYS = {"base_url", "access_token", "portal_id", "app_id", "client_id", "client_secret"}


class SandboxProcess:
    def __init__(self, data_dir, *extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDWISE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core", "sandbox", "--data", str(data_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        if not ready:
            self.process.kill()
            pytest.fail("fieldwise sandbox printed nothing within 120 s")
        self.first_line = self.process.stdout.readline()
        self.info = json.loads(self.first_line)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def salesforce_client(info):
    session = requests.Session()
    session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE would replace our CA
    session.verify = info["ca_cert"]
    return Salesforce(
        instance_url=info["instance_url"], session_id=info["access_token"], session=session
    )


def test_sandbox_prints_one_json_line_that_both_official_clients_connect_with(tmp_path):
    sandbox = SandboxProcess(tmp_path / "crm", "--seed-leads", "300")
    try:
        assert set(sandbox.info) == {"salesforce", "hubspot"}
        assert set(sandbox.info["salesforce"]) >= SALESFORCE_KEYS
        assert set(sandbox.info["hubspot"]) >= HUBSPOT_KEYS
        assert sandbox.first_line.endswith("\n") and "\n" not in sandbox.first_line[:-1]

        sf = salesforce_client(sandbox.info["salesforce"])
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 300

        hub_info = sandbox.info["hubspot"]
        hub = HubSpot(access_token=hub_info["access_token"], host=hub_info["base_url"])
        page = hub.crm.contacts.basic_api.get_page(limit=5)
        assert len(page.results) == 5

        counters = requests.get(f"{hub_info['base_url']}/__admin/counters", timeout=5).json()
        assert sum(counters.values()) >= 1
    finally:
        assert sandbox.stop() == 0


def test_restarting_with_the_same_data_folder_keeps_records_and_does_not_seed_twice(tmp_path):
    first = SandboxProcess(tmp_path / "crm", "--seed-leads", "150")
    org_id = first.info["salesforce"]["org_id"]
    sf = salesforce_client(first.info["salesforce"])
    created = sf.Lead.create({"LastName": "Kept", "Company": "Restart Ltd"})["id"]
    first.stop()

    second = SandboxProcess(tmp_path / "crm", "--seed-leads", "150")
    try:
        assert second.info["salesforce"]["org_id"] == org_id
        sf = salesforce_client(second.info["salesforce"])
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 151
        assert sf.Lead.get(created)["Company"] == "Restart Ltd"
    finally:
        second.stop()
