"""``fieldwise demo``: the whole product on one machine, against the sandbox CRMs.

Everything runs embedded: both sandbox CRMs seeded with a generated company history, the Fieldwise
web app with the in-process queue, LanceDB in a local folder. Secrets are generated for this run.
The demo prints what a person can open (the CRM record pages that embed Fieldwise's widget, the
health report) and what happened, then exits, or keeps serving with ``--serve``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, make_server

from core.config import Config
from handlers.app import create_app
from sandbox.runner import Sandboxes, start_sandboxes

log = logging.getLogger(__name__)


@dataclass
class DemoRun:
    """A running demo: the sandboxes, the app server and what the demo reports."""

    sandboxes: Sandboxes
    app_server: BaseWSGIServer
    app_url: str
    report: dict[str, Any]

    def stop(self) -> None:
        """Stop the app server and the sandboxes."""
        self.app_server.shutdown()
        self.sandboxes.stop()


def run_demo(data_dir: Path, *, seed_leads: int = 2000, seed: int = 7, port: int = 0) -> DemoRun:
    """Start the sandboxes and the app, check them end to end, and build the report.

    Args:
        data_dir: the demo's folder (sandbox state and the LanceDB store live under it).
        seed_leads: size of the generated history loaded into both sandbox CRMs.
        seed: seed of the generated history.
        port: the app's port (0 picks a free one).

    Returns:
        The running demo; call ``stop()`` when done.
    """
    started = time.perf_counter()
    config = Config.for_demo(lancedb_uri=str(data_dir / "lancedb"))
    app = create_app(config)
    app_server = make_server("127.0.0.1", port, app, threaded=True)
    app_url = f"http://127.0.0.1:{app_server.server_port}"
    threading.Thread(target=app_server.serve_forever, name="fieldwise-app", daemon=True).start()

    sandboxes = start_sandboxes(
        data_dir / "sandbox", seed_leads=seed_leads, seed=seed, widget_base_url=app_url
    )
    health = requests.get(f"{app_url}/healthz", timeout=10).json()
    salesforce, hubspot = sandboxes.salesforce, sandboxes.hubspot
    report = {
        "fieldwise": {"url": app_url, "health": health["status"], "healthz": f"{app_url}/healthz"},
        "salesforce": {
            "instance_url": salesforce.instance_url,
            "org_id": salesforce.org_id,
            "records": _salesforce_counts(sandboxes),
            "lead_pages": f"{salesforce.instance_url}/ui/Lead",
        },
        "hubspot": {
            "base_url": hubspot.base_url,
            "portal_id": hubspot.portal_id,
            "records": _hubspot_counts(sandboxes),
            "contact_pages": f"{hubspot.base_url}/ui/contacts",
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    return DemoRun(sandboxes, app_server, app_url, report)


def _salesforce_counts(sandboxes: Sandboxes) -> dict[str, int]:
    store = sandboxes.salesforce.state.store
    return {
        name: store.count(name) for name in ("User", "Account", "Lead", "Contact", "Opportunity")
    }


def _hubspot_counts(sandboxes: Sandboxes) -> dict[str, int]:
    store = sandboxes.hubspot.state.store
    return {
        name: store.count(name) for name in ("owners", "companies", "contacts", "deals", "notes")
    }


def print_report(report: dict[str, Any]) -> None:
    """Print the demo report as indented JSON."""
    print(json.dumps(report, indent=2))
