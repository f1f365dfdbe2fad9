"""What the copilot spent: one row per model request in the ``llm_calls`` feature table.

Each request (and each offline generation a tenant's settings or budget forced) is recorded with
its tenant, task, model, tokens, cost, latency and status (``ok``, ``invalid``, ``failed``,
``offline``). The daily token budget is read back from the same rows, so every process sharing
the store sees one count. Costs come from the price table below (US dollars per million tokens,
Anthropic's list prices); a model outside it keeps its tokens and gets no cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import pyarrow as pa

from core.store import Store

TABLE = "llm_calls"
SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("called_at", pa.timestamp("us", tz="UTC")),
    ]
)
STATUSES = ("ok", "invalid", "failed", "offline")

# (model id prefix, input $/M tokens, output $/M tokens); the first matching prefix wins, so the
# older, dearer Opus generations are listed before the family default.
PRICES: tuple[tuple[str, float, float], ...] = (
    ("claude-opus-4-0", 15.0, 75.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus-4-2025", 15.0, 75.0),
    ("claude-opus", 5.0, 25.0),
    ("claude-sonnet", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
)


def cost_usd(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """What a request cost in US dollars, or None for a model the price table does not know.

    Args:
        model: the model id the API reported (dated ids match their family's prefix).
        input_tokens: prompt tokens.
        output_tokens: answer tokens.
    """
    if not model:
        return None
    for prefix, per_input, per_output in PRICES:
        if model.startswith(prefix):
            return (input_tokens * per_input + output_tokens * per_output) / 1_000_000
    return None


@dataclass(frozen=True)
class CallRecord:
    """One row of ``llm_calls``."""

    task: str
    model: str | None
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    reason: str | None = None


def record_call(
    store: Store, tenant_id: str, call: CallRecord, when: datetime | None = None
) -> None:
    """Append one request to the tenant's ``llm_calls``.

    Raises:
        ValueError: the status is not one of :data:`STATUSES`.
    """
    if call.status not in STATUSES:
        raise ValueError(
            f"llm call status must be one of {', '.join(STATUSES)}, not {call.status!r}"
        )
    row = {
        "tenant_id": tenant_id,
        "task": call.task,
        "model": call.model,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": call.cost_usd,
        "latency_ms": call.latency_ms,
        "status": call.status,
        "reason": call.reason,
        "called_at": when or datetime.now(UTC),
    }
    store.append_rows(tenant_id, TABLE, SCHEMA, [row])


def calls_since(store: Store, tenant_id: str, since: datetime) -> list[dict[str, Any]]:
    """A tenant's recorded requests at or after ``since``."""
    return store.read_rows(tenant_id, TABLE, SCHEMA, since=("called_at", since))


def tokens_today(store: Store, tenant_id: str, now: datetime | None = None) -> int:
    """Input plus output tokens the tenant spent since UTC midnight (what the budget counts)."""
    rows = store.read_rows(
        tenant_id,
        TABLE,
        SCHEMA,
        since=("called_at", _midnight(now)),
        columns=["input_tokens", "output_tokens"],
    )
    return sum(int(r["input_tokens"] or 0) + int(r["output_tokens"] or 0) for r in rows)


def usage_today(
    store: Store, tenant_id: str, *, budget: int | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Today's (UTC) model usage of a tenant, for the admin console.

    Args:
        store: the store.
        tenant_id: whose usage.
        budget: the tenant's daily token budget, to report what is left (omitted when None).
        now: the current time (tests).

    Returns:
        ``date``, ``calls``, ``by_status`` (count per status), ``input_tokens``,
        ``output_tokens``, ``tokens``, ``cost_usd`` (known costs only), ``uncosted_calls``
        (requests to models without a price), ``by_task`` (calls, tokens and cost per task),
        and with a budget ``budget`` and ``remaining``.
    """
    start = _midnight(now)
    rows = calls_since(store, tenant_id, start)
    by_status = dict.fromkeys(STATUSES, 0)
    by_task: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        task = by_task.setdefault(row["task"], {"calls": 0, "tokens": 0, "cost_usd": 0.0})
        task["calls"] += 1
        task["tokens"] += int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
        task["cost_usd"] += float(row["cost_usd"] or 0.0)
    input_tokens = sum(int(r["input_tokens"] or 0) for r in rows)
    output_tokens = sum(int(r["output_tokens"] or 0) for r in rows)
    summary: dict[str, Any] = {
        "date": start.date().isoformat(),
        "calls": len(rows),
        "by_status": by_status,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
        "cost_usd": round(sum(float(r["cost_usd"] or 0.0) for r in rows), 6),
        "uncosted_calls": sum(
            1 for r in rows if r["cost_usd"] is None and r["status"] in {"ok", "invalid"}
        ),
        "by_task": by_task,
    }
    if budget is not None:
        summary["budget"] = budget
        summary["remaining"] = max(0, budget - summary["tokens"])
    return summary


def _midnight(now: datetime | None) -> datetime:
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today, time.min, tzinfo=UTC)
