"""The demo, run the way `make demo` runs it, with the summary read from the sandbox CRMs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from copilot.battle_cards import card_refs
from copilot.intel import read_chunk
from copilot.results import load_results
from copilot.segments import list_segments
from core.store import Store


def _resolves(store: Store, tenant_id: str, ref: str) -> bool:
    """Whether a citation names a record, document chunk or segment of this tenant."""
    kind, _, key = ref.partition(":")
    if kind in ("note", "activity", "opportunity"):
        return store.get(tenant_id, kind, key) is not None
    if kind == "segment":
        return key in {s["segment_id"] for s in list_segments(store, tenant_id)}
    if kind == "intel":
        doc_id, _, chunk = key.partition("#")
        return read_chunk(store, tenant_id, doc_id, int(chunk)) is not None
    return False


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
        # Deals with a competitor in play carry the copilot's fields, read back from the CRM.
        contested = facts["contested_deals"]
        assert contested, f"no deal with an AI Battle Card in {crm}"
        for deal in contested:
            assert deal["AI Battle Card"].startswith("<p><b>Battle card: ")
            assert "generated offline" in deal["AI Battle Card"]
            assert deal["AI Forecast Note"].endswith("(generated offline)")
            assert "Competitor in play: " in deal["AI Risk Flags"]
            assert deal["record_page"].endswith(deal["crm_id"])
        # Every citation behind those cards is a record of the same tenant.
        store = Store(str(tmp_path / "demo" / "lancedb"))
        ids = [deal["crm_id"] for deal in contested]
        cards = load_results(store, facts["tenant_id"], "opportunity", ids, ["battle_card"])
        assert sorted(cards) == sorted(ids)
        refs = {ref for card in cards.values() for ref in card_refs(card["battle_card"].detail)}
        assert refs and all(_resolves(store, facts["tenant_id"], ref) for ref in refs), refs
    assert summary["admin_console"].startswith("http://127.0.0.1:")
