"""Load a generated 5k-lead history into each sandbox CRM and compare with the one-minute target.

Run: ``python bench/bench_sandbox_load.py [n_leads]``. Prints generation and load times, each load
as a ratio of the 60-second target measured in the same run, and the history's best achievable AUC
(the acceptance band is 0.80-0.92).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from run_all import emit, row

from sandbox.history import best_achievable_auc, generate
from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox

TARGET_S = 60.0


def main() -> None:
    n_leads = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    started = time.perf_counter()
    history = generate(seed=7, n_leads=n_leads)
    generated_s = time.perf_counter() - started
    print(f"generated {n_leads} leads in {generated_s:.2f} s")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, sandbox_class in (("salesforce", SalesforceSandbox), ("hubspot", HubSpotSandbox)):
            sandbox = sandbox_class(Path(folder) / name)
            started = time.perf_counter()
            ids = sandbox.load_history(history)
            loaded_s = time.perf_counter() - started
            sandbox.stop()
            print(
                f"{name}: loaded {len(ids)} records in {loaded_s:.2f} s, "
                f"{loaded_s / TARGET_S:.3f} of the {TARGET_S:.0f} s target"
            )
            rows.append(row(f"sandbox load {name}, {n_leads} leads (s)", loaded_s, "s", TARGET_S,
                            loaded_s / TARGET_S, f"< {TARGET_S:.0f} s", loaded_s < TARGET_S,
                            "target"))  # fmt: skip
    print(
        f"best achievable AUC: lead conversion {best_achievable_auc(history, 'leads'):.3f}, "
        f"opportunity win {best_achievable_auc(history, 'opportunities'):.3f}"
    )
    emit("bench_sandbox_load", rows)


if __name__ == "__main__":
    main()
