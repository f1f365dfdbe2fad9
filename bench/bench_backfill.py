"""Backfill: leads with notes synced, scored and written back, against the CRM rate limit's floor.

Run: ``python bench/bench_backfill.py [--leads 5000] [--workers 2]``. Needs Redis (``--redis``,
default ``redis://127.0.0.1:6379/11``; the database is flushed).

A live deployment (``tests/e2e/live_harness.py``: the HubSpot sandbox with a generated history,
the Fieldwise web app, ``fieldwise worker`` processes) installs the portal through OAuth; the clock
runs from the install until provisioning, the backfill of every entity (notes embedded), training,
batch scoring and write-back have all finished and the queues are idle. The sandbox's request log
counts the API calls made; the floor is the time HubSpot's configured rate limit (calls per rolling
ten seconds per app per portal) needs for that many calls. Target: wall time within 1.5x the
floor.

100,000 leads do not fit the suite's time budget on a 2-core machine (embedding the notes alone
takes longer), so the default is the largest size that runs in a few minutes; the output prints
the linear extrapolation to 100,000 leads and says it is one.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from live_harness import LiveSync

from sync.jobs import BACKFILL_ENTITIES

TARGET = 1.5
FULL_SIZE = 100_000


class TimedLiveSync(LiveSync):
    """A LiveSync that notes when the first install begins."""

    install_started: float = 0.0

    def install(self, crm: str) -> str:
        if not self.install_started:
            self.install_started = time.perf_counter()
        return super().install(crm)


def main() -> None:
    from run_all import emit, row

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--timeout", type=float, default=420.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        live = TimedLiveSync(
            Path(folder), args.redis, workers=args.workers, crms=("hubspot",),
            hubspot_leads=args.leads, backfill_timeout=args.timeout, wait_for_backfill=False,
        )  # fmt: skip
        with live:
            assert live.hubspot is not None and live.store is not None
            live.wait_backfilled(timeout=args.timeout, idle=False)
            synced = time.perf_counter() - live.install_started
            live.wait_idle(timeout=args.timeout)
            wall = time.perf_counter() - live.install_started
            tenant_id = live.tenants["hubspot"]
            log = live.hubspot.state.log.snapshot()
            api = [e for e in log["requests"] if e.get("api_call")]
            by_endpoint = collections.Counter(e["endpoint"] for e in api)
            refused = sum(1 for e in api if e["status"] == 429)
            limit = live.hubspot.limiter.ten_second_limit
            stored = {e: live.store.count(tenant_id, e) for e in BACKFILL_ENTITIES}
            writes = sum(n for name, n in by_endpoint.items() if "batch/update" in name)
            failed = live.failed_count()
    calls = len(api)
    rate = limit / 10.0
    floor = calls / rate
    ratio = wall / floor
    print(f"{args.leads} leads, {args.workers} worker(s): install -> synced, scored and written "
          f"back in {wall:.1f} s (backfill done at {synced:.1f} s, then training, scoring and write-back); "
          f"stored {stored}")  # fmt: skip
    print(
        f"API calls {calls} ({refused} answered 429), {writes} batch updates; rate limit "
        f"{limit} per 10 s -> floor {floor:.1f} s; wall / floor {ratio:.2f}; failed jobs {failed}"
    )
    print("calls by endpoint: " + ", ".join(f"{k} {v}" for k, v in by_endpoint.most_common(8)))
    scale = FULL_SIZE / args.leads
    print(f"EXTRAPOLATION (linear, not measured) to {FULL_SIZE:,} leads: about {wall * scale:,.0f} s "
          f"wall against a floor of about {floor * scale:,.0f} s")  # fmt: skip
    emit("bench_backfill", [
        row(f"backfill {args.leads} leads+notes, wall (s)", wall, "s", floor, ratio,
            f"<= {TARGET}x rate-limit floor", ratio <= TARGET and failed == 0,
            f"{calls} calls / {rate:.0f} per s"),
        row(f"backfill extrapolated to {FULL_SIZE // 1000}k leads (s)", wall * scale, "s",
            floor * scale, ratio, "info (linear extrapolation)", None, "floor, extrapolated"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
