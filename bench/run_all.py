"""Run every ``bench/bench_*.py`` and print one table: figure, reference, ratio, target, verdict.

Run: ``python bench/run_all.py [--only NAME ...] [--skip NAME ...] [--quick]`` (``make bench``).

The convention every bench follows: it prints whatever it likes, and as its last line of standard
output ``BENCH_JSON {"bench": ..., "rows": [...]}`` (see :func:`emit`). Each row is one measured
figure beside the reference measured in the same run:

    name       what was measured ("webhook ingest events/s")
    figure     the number; unit: its unit
    reference  what it is compared with, measured in the same run (or the documented floor)
    ratio      figure / reference (null when not meaningful)
    target     the bar in words ("ratio >= 0.60"), and pass: true / false / null (informational)

A bench that exits non-zero, prints no ``BENCH_JSON`` line or runs past its time limit is one FAIL
row of its own, so nothing disappears from the table. ``--quick`` passes each bench its reduced
sizes (for development on a shared machine); the table says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARKER = "BENCH_JSON "

FULL_ARGS: dict[str, list[str]] = {}
"""Arguments each bench runs with under ``make bench`` (defaults are sized for the 15 min budget)."""
QUICK_ARGS: dict[str, list[str]] = {
    "bench_history": ["20000"],
    "bench_sandbox_load": ["2000"],
    "bench_scoring": ["--leads", "3000"],
    "bench_freshness": ["--seconds", "6", "--rate", "20"],
    "bench_writeback_cost": ["--leads", "2000"],
    "bench_webhook_ingest": ["--seconds", "4", "--rounds", "4", "--rate-seconds", "4"],
    "bench_backfill": ["--leads", "1000"],
    "bench_retrieval": ["--notes", "10000", "--queries", "50"],
    "bench_admin_pages": ["--leads", "10000", "--ledger", "10000", "--runs", "5"],
}
TIME_LIMIT_S = {"bench_backfill": 480.0, "bench_freshness": 300.0, "bench_admin_pages": 420.0}
DEFAULT_LIMIT_S = 240.0


def emit(bench: str, rows: list[dict[str, Any]]) -> None:
    """Print a bench's machine-readable result line (the last line of its standard output).

    Args:
        bench: the bench's name (its file name without ``.py``).
        rows: dicts with ``name``, ``figure``, ``unit``, ``reference``, ``ratio``, ``target`` and
            ``pass`` (see the module docstring).
    """
    print(MARKER + json.dumps({"bench": bench, "rows": rows}, default=float), flush=True)


def row(
    name: str,
    figure: float,
    unit: str,
    reference: float | None,
    ratio: float | None,
    target: str,
    passed: bool | None,
    reference_note: str = "",
) -> dict[str, Any]:
    """One row of the table; ``reference_note`` says what the reference is."""
    return {
        "name": name,
        "figure": figure,
        "unit": unit,
        "reference": reference,
        "reference_note": reference_note,
        "ratio": ratio,
        "target": target,
        "pass": passed,
    }


def machine() -> str:
    """CPU model and core count, as the table's header states them."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_one(path: Path, args: list[str], limit_s: float) -> tuple[list[dict[str, Any]], float]:
    """Run one bench in its own process; its rows, or one FAIL row saying what went wrong."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, str(path), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        sys.stdout.write(out)
        fail = row(path.stem, limit_s, "s", None, None, f"finish < {limit_s:.0f} s", False)
        return [fail | {"name": f"{path.stem}: ran past its time limit"}], limit_s
    elapsed = time.perf_counter() - started
    sys.stdout.write(done.stdout)
    lines = [x for x in done.stdout.splitlines() if x.startswith(MARKER)]
    if not lines:
        sys.stdout.write(done.stderr[-3000:])
        why = f"exit {done.returncode}, no BENCH_JSON line"
        return [row(f"{path.stem}: {why}", 0.0, "", None, None, "runs", False)], elapsed
    rows = json.loads(lines[-1][len(MARKER) :])["rows"]
    if done.returncode != 0 and all(r.get("pass") is not False for r in rows):
        sys.stdout.write(done.stderr[-3000:])
        rows.append(
            row(f"{path.stem}: exit {done.returncode}", 0.0, "", None, None, "exit 0", False)
        )
    return rows, elapsed


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(results: list[tuple[str, dict[str, Any]]]) -> str:
    """Render rows as a fixed-width text table."""
    header = ("bench", "name", "figure", "reference", "ratio", "target", "result")
    lines = [header]
    for bench, r in results:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r.get("pass")]
        ref = fmt(r.get("reference"))
        if r.get("reference_note"):
            ref = f"{ref} ({r['reference_note']})"
        figure = f"{fmt(r.get('figure'))} {r.get('unit', '')}".strip()
        lines.append(
            (bench, r["name"], figure, ref, fmt(r.get("ratio")), r.get("target", ""), verdict)
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="bench names to run")
    parser.add_argument("--skip", nargs="*", default=[], help="bench names to leave out")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, for development")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    args = parser.parse_args(argv)

    benches = sorted(HERE.glob("bench_*.py"))
    if args.only:
        benches = [b for b in benches if b.stem in args.only]
    benches = [b for b in benches if b.stem not in args.skip]
    started = time.perf_counter()
    results: list[tuple[str, dict[str, Any]]] = []
    durations = {}
    for path in benches:
        extra = (QUICK_ARGS if args.quick else FULL_ARGS).get(path.stem, [])
        print(f"== {path.name} {' '.join(extra)}".rstrip(), flush=True)
        rows, elapsed = run_one(path, extra, TIME_LIMIT_S.get(path.stem, DEFAULT_LIMIT_S))
        durations[path.stem] = elapsed
        results += [(path.stem, r) for r in rows]
    total = time.perf_counter() - started

    print()
    print(f"Fieldwise benchmarks, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average at end {os.getloadavg()[0]:.2f}")
    print(f"sizes: {'QUICK (reduced, development only)' if args.quick else 'full'}")
    print(table(results))
    print("durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()))
    print(f"total {total:.0f} s ({total / 900:.2f} of the 15 min budget)")
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps([{"bench": b, **r} for b, r in results], indent=1, default=float)
        )
    return 0 if all(r.get("pass") is not False for _, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
