"""Write-back cost: CRM API calls per 10,000 rescored leads at 0%, 5% and 100% changed, per CRM.

Run: ``python bench/bench_writeback_cost.py [--leads 10000]``.

Both sandbox CRMs are loaded with the same generated history and installed as tenants (tokens
handed over directly, as ``tests/e2e/test_writeback_cost.py`` does), then every lead is written
once so the write-back ledger knows what each CRM holds. Each scenario rescores every lead and
runs ``sync.writeback.write_values`` on the results; the calls are counted by the sandbox's own
request log. Printed per CRM and scenario: the calls, the naive count (one call per changed
record) and the floor the API's batch limit sets (``ceil(changed / 200)`` for Salesforce's
composite/sobjects, ``ceil(changed / 100)`` for HubSpot's batch update); target <= 1.05x the floor.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from run_all import emit, row

from core.config import Config
from core.services import configure
from sandbox.history import generate
from sandbox.hubspot import HubSpotSandbox
from sandbox.runner import crm_settings, register_tenants
from sandbox.salesforce import SalesforceSandbox
from sync.writeback import write_values

BATCH_LIMIT = {"salesforce": 200, "hubspot": 100}
"""Records per call: Salesforce composite/sobjects takes 200, HubSpot batch update 100."""
LEAD_OBJECT = {"salesforce": "Lead", "hubspot": "contacts"}
TARGET = 1.05
GRADES = ("Cold", "Warm", "Hot")


def api_calls(sandbox) -> int:
    return sum(1 for e in sandbox.state.log.snapshot()["requests"] if e.get("api_call"))


def results(ids, generation, changed):
    """Scores for every lead; the ``changed`` ones get a new score and grade this generation."""
    out = {}
    for i, crm_id in enumerate(ids):
        moved = crm_id in changed
        score = 30 + (i + (7 * generation if moved else 0)) % 60
        out[crm_id] = {
            "score": score,
            "grade": GRADES[generation % 3] if moved else "Cold",
            "reasons": "Opened 4 emails in the last 30 days",
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        history = generate(seed=5, n_leads=args.leads)
        salesforce = SalesforceSandbox(folder / "sf").start()
        hubspot = HubSpotSandbox(folder / "hs").start()
        sandboxes = {"salesforce": salesforce, "hubspot": hubspot}
        try:
            for sandbox in sandboxes.values():
                sandbox.load_history(history)
            services = configure(
                Config.for_demo(lancedb_uri=str(folder / "db"), **crm_settings(salesforce, hubspot))
            )
            tenants = register_tenants(services, salesforce, hubspot)
            print(
                f"set up {args.leads} leads in both CRMs in {time.perf_counter() - started:.0f} s"
            )
            for crm, sandbox in sandboxes.items():
                tenant_id = tenants[crm].tenant_id
                ids = [rid for rid, _ in sandbox.state.store.iter(LEAD_OBJECT[crm])][: args.leads]
                n = len(ids)
                write_values(tenant_id, "lead", results(ids, 0, set()))  # the ledger learns all
                for generation, share in enumerate((0.0, 0.05, 1.0), start=1):
                    count = round(n * share)
                    changed = set(ids[:: max(1, n // count)][:count]) if count else set()
                    sandbox.state.log.reset()
                    t0 = time.perf_counter()
                    _, summary = write_values(tenant_id, "lead", results(ids, generation, changed))
                    elapsed = time.perf_counter() - t0
                    calls = api_calls(sandbox)
                    written = summary.records if summary is not None else 0
                    if summary is not None and summary.failed:
                        print(f"  {len(summary.failed)} refused, first: {summary.failed[0]}")
                    floor = math.ceil(count / BATCH_LIMIT[crm])
                    per_10k = calls * 10_000 / n
                    ratio = calls / floor if floor else (0.0 if calls == 0 else math.inf)
                    passed = calls == 0 if floor == 0 else ratio <= TARGET
                    print(
                        f"{crm}: {n} leads rescored, {share:.0%} changed ({count}): {calls} calls "
                        f"({per_10k:.1f} per 10k), {written} records written in {elapsed:.1f} s; "
                        f"naive {count}, batch floor {floor}, ratio {ratio:.3f}"
                    )
                    rows.append(
                        row(f"writeback {crm} {share:.0%} changed: API calls per 10k", per_10k,
                            "calls", floor * 10_000 / n, ratio if floor else None,
                            f"<= {TARGET}x floor" if floor else "0 calls", passed,
                            f"batch floor; naive {count * 10_000 // n}")
                    )  # fmt: skip
                    if count and written != count:
                        rows.append(
                            row(f"writeback {crm} {share:.0%}: records written", written,
                                "records", count, written / count, "all changed written", False)
                        )  # fmt: skip
            services.queue.stop()
        finally:
            salesforce.stop()
            hubspot.stop()
    emit("bench_writeback_cost", rows)


if __name__ == "__main__":
    main()
