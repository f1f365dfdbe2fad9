"""The demo, run the way `make demo` runs it, with the summary read from the sandbox CRMs."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_once_installs_scores_writes_back_and_reports_fields_read_from_the_crms(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDWISE_")}
    done = subprocess.run(
        [sys.executable, "-m", "core", "demo", "--once", "--json", "--seed-leads", "1500",
         "--data", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.5 < summary["best_auc"] < 1 and 0.5 < summary["auc"] <= summary["best_auc"] + 0.05
    for crm in ("salesforce", "hubspot"):
        facts = summary["crms"][crm]
        assert facts["records_synced"]["lead"] == 1500
        assert facts["scored"] > 0 and facts["written"] > 0 and facts["api_calls"] > 0
        assert facts["models"]["lead"]["rule_based"] is False
        # The sample rows come from the CRM's own API: every AI field Fieldwise wrote is there.
        assert len(facts["sample_leads"]) == 5
        for row in facts["sample_leads"]:
            assert row["AI Score"] is not None and row["AI Grade"] in {"Hot", "Warm", "Cold"}
            assert row["AI Reasons"] and row["AI Next Step"] and row["AI Model Version"]
        # A rep's edits came back through the webhooks and were rescored and written.
        live = facts["live_changes"]
        assert len(live) == 3
        assert all(row["AI Score Changed At"] for row in live)
        assert all(float(row["AI Score"]) > row["score_before"] for row in live), live
        assert facts["api_calls_for_live_changes"] > 0
