"""Redis stops: webhooks are answered 503 so the CRM keeps them; Redis returns: they are processed.

The deployment runs on a private ``redis-server`` this test starts on a free loopback port, so
stopping it touches nothing else.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis
import requests
from live_harness import LiveSync, live_redis_url, wait_until

from sandbox.hubspot.webhooks import sign_v3

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, with no persistence, stoppable and restartable."""

    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_until(client.ping, 10, interval=0.05, what="the private redis-server to answer")
        client.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path):
    live_redis_url()  # skipped (or failed, when required) like every live test without Redis
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def signed_post(live, events):
    assert live.hubspot is not None
    url = f"{live.public_url}/webhooks/hubspot"
    body = json.dumps(events, separators=(",", ":"))
    timestamp = str(int(time.time() * 1000))
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": sign_v3(live.hubspot.client_secret, "POST", url, body, timestamp),
    }
    return requests.post(url, data=body, headers=headers, timeout=10)


def property_change(live, contact_id, event_id):
    assert live.hubspot is not None
    return {
        "eventId": event_id, "subscriptionId": 1, "portalId": live.hubspot.portal_id,
        "appId": live.hubspot.app_id, "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": int(contact_id), "propertyName": "jobtitle", "propertyValue": "x",
        "changeSource": "CRM_UI", "sourceId": "userId:1",
    }  # fmt: skip


def test_webhooks_get_503_while_redis_is_down_and_the_crm_retries_are_processed_after(
    tmp_path, private_redis
):
    with LiveSync(
        tmp_path / "live", private_redis.url, crms=("hubspot",), hubspot_leads=20
    ) as live:
        first, second = live.hubspot_contact_ids(2)

        # Redis up: a signed delivery is accepted (200) and its change is processed.
        title = f"Before outage {uuid.uuid4().hex[:6]}"
        live.hubspot_ui_edit("contacts", first, {"jobtitle": title})
        assert signed_post(live, [property_change(live, first, 7001)]).status_code == 200
        live.wait_stored("hubspot", "lead", first, lambda r: r and r["title"] == title)

        private_redis.stop()
        down = signed_post(live, [property_change(live, second, 7002)])
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "queue_unavailable"
        assert down.headers["Retry-After"]

        # The CRM's own delivery of a change made during the outage is refused, and retried.
        since = time.time()
        outage_title = f"During outage {uuid.uuid4().hex[:6]}"
        live.hubspot_ui_edit("contacts", second, {"jobtitle": outage_title})

        def refused():
            return [
                a for a in live.deliverer_attempts("hubspot")
                if a["t"] >= since and a["outcome"] == "rejected 503"
            ]  # fmt: skip

        wait_until(lambda: len(refused()) >= 2, 20, what="HubSpot to retry the refused delivery")
        assert live.stored("hubspot", "lead", second)["title"] != outage_title

        private_redis.start()  # same port, empty: nothing queued survived, nothing was needed
        # rq's worker either gives up when Redis goes away ("found an unhandled exception,
        # quitting"), when the loss hits it outside its dequeue, or keeps retrying the connection
        # ("retrying in N seconds") when it was waiting for a job; which one depends on timing.
        # Either way it lost Redis; a supervisor replaces it, as this does.
        lost = live.worker_procs[0].log()
        assert "quitting" in lost or "could not connect to Redis instance" in lost, lost
        live.kill_worker(0)
        live.start_worker()
        live.wait_stored(
            "hubspot", "lead", second, lambda r: r and r["title"] == outage_title, timeout=60
        )
        label = refused()[0]["label"]
        outcomes = [
            a["outcome"] for a in live.deliverer_attempts("hubspot")
            if a["t"] >= since and a["label"] == label
        ]  # fmt: skip
        assert "rejected 503" in outcomes and outcomes[-1] == "accepted", outcomes
        assert live.failed_count() == 0, live.failures()
