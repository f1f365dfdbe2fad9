"""Time the CRM history generator at 100k leads and print the throughput.

Run: ``python bench/bench_history.py [n_leads]``. The goal is under 60 s (aim: under 30 s) for
100k leads on a 2-core machine.
"""

from __future__ import annotations

import sys
import time

from run_all import emit, row

from sandbox.history import best_achievable_auc, generate


def main() -> None:
    n_leads = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    started = time.perf_counter()
    history = generate(seed=7, n_leads=n_leads)
    elapsed = time.perf_counter() - started
    print(
        f"generated {n_leads} leads in {elapsed:.1f} s ({n_leads / elapsed:,.0f} leads/s): "
        f"{len(history.accounts)} accounts, {len(history.contacts)} contacts, "
        f"{len(history.opportunities)} opportunities, {len(history.activities)} activities, "
        f"{len(history.notes)} notes"
    )
    leads_auc = best_achievable_auc(history, "leads")
    print(
        f"best achievable AUC: leads {leads_auc:.3f}, "
        f"opportunities {best_achievable_auc(history, 'opportunities'):.3f}"
    )
    print(f"budget ratio (60 s / elapsed): {60.0 / elapsed:.1f}x")
    emit("bench_history", [
        row(f"history generation, {n_leads} leads (s)", elapsed, "s", 60.0, elapsed / 60.0,
            "< 60 s", elapsed < 60.0, "budget"),
        row("history best achievable lead AUC", leads_auc, "AUC", None, None, "0.80-0.92",
            0.80 <= leads_auc <= 0.92),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
