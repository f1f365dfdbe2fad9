"""What the copilot concluded per record, kept until write-back and the widgets read it.

One row per (record, result): the value written to the CRM field, the structured detail behind it
(sections, flags, citations) for the widgets, and how it was made (model or offline). A new
generation replaces the row; write-back diffs the value against its own ledger, so an unchanged
card costs no API call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from core.store import Store

TABLE = "copilot_results"
SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("entity", pa.string()),
        ("crm_id", pa.string()),
        ("result", pa.string()),
        ("value", pa.string()),
        ("detail_json", pa.string()),
        ("offline", pa.bool_()),
        ("model", pa.string()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)
RESULTS = ("battle_card", "forecast_note", "risk_flags", "next_step", "segment", "followup_draft")
"""Manifest result names the copilot fills."""


@dataclass(frozen=True)
class CopilotResult:
    """One stored result of one record."""

    entity: str
    crm_id: str
    result: str
    value: str | None
    detail: dict[str, Any]
    offline: bool
    model: str | None
    generated_at: datetime


def save_results(store: Store, tenant_id: str, results: Sequence[CopilotResult]) -> int:
    """Insert or replace results (keyed by entity, record and result name); returns how many.

    Raises:
        ValueError: a result name the copilot does not produce.
    """
    unknown = sorted({r.result for r in results} - set(RESULTS))
    if unknown:
        raise ValueError(f"unknown copilot result {unknown[0]!r}; expected one of {RESULTS}")
    rows = [
        {
            "tenant_id": tenant_id,
            "entity": r.entity,
            "crm_id": r.crm_id,
            "result": r.result,
            "value": r.value,
            "detail_json": json.dumps(r.detail, sort_keys=True, default=str),
            "offline": r.offline,
            "model": r.model,
            "generated_at": r.generated_at.astimezone(UTC),
        }
        for r in results
    ]
    return store.put_rows(tenant_id, TABLE, SCHEMA, rows, keys=["entity", "crm_id", "result"])


def load_results(
    store: Store,
    tenant_id: str,
    entity: str,
    crm_ids: Sequence[str] | None = None,
    results: Sequence[str] | None = None,
) -> dict[str, dict[str, CopilotResult]]:
    """Stored results of one entity: record id -> result name -> result."""
    filters: dict[str, Any] = {"entity": entity}
    if crm_ids is not None:
        filters["crm_id"] = list(crm_ids)
    if results is not None:
        filters["result"] = list(results)
    found: dict[str, dict[str, CopilotResult]] = {}
    for row in store.read_rows(tenant_id, TABLE, SCHEMA, filters):
        found.setdefault(row["crm_id"], {})[row["result"]] = _result(row)
    return found


def values(found: Mapping[str, CopilotResult]) -> dict[str, str]:
    """Result name -> field value of one record (results without a value left out)."""
    return {name: r.value for name, r in found.items() if r.value is not None}


def _result(row: Mapping[str, Any]) -> CopilotResult:
    return CopilotResult(
        entity=row["entity"],
        crm_id=row["crm_id"],
        result=row["result"],
        value=row["value"],
        detail=json.loads(row["detail_json"] or "{}"),
        offline=bool(row["offline"]),
        model=row["model"],
        generated_at=row["generated_at"],
    )
