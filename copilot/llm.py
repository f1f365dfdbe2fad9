"""The one door to Anthropic's models: redaction, structured output, budgets and offline mode.

Every copilot task (battle card, forecast note, follow-up draft, segment context) describes itself
as a :class:`Task` and hands :meth:`Copilot.generate` the evidence it retrieved. This module then

* replaces personal data in the evidence with placeholders (``copilot.redaction``) and restores
  them in the answer, so names, emails and phone numbers never reach the model;
* puts the CRM text, delimited, into the user turn only: the system prompt is the task's fixed
  instructions, and the model's one tool is the forced output tool, which changes nothing;
* validates the tool input with the task's marshmallow schema and checks that every ``cites``
  list names only evidence it was given; an invalid answer is retried once, then
  :class:`GenerationFailed` is raised and the caller writes nothing;
* keeps the per-tenant concurrency cap and daily token budget, and records tokens and cost;
* builds the same structure offline (no API key, LLM switched off for the tenant, or budget spent)
  with the task's own extractive builder, labelled as generated offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema

OFFLINE_LABEL = "generated offline"
"""Shown beside any text built without a model."""


@dataclass(frozen=True)
class Evidence:
    """One piece of retrieved CRM text a task may cite.

    Attributes:
        ref: the citation id, unique within one generation: ``"<entity>:<crm_id>"`` for a record
            (``"note:00T..."``, ``"opportunity:006..."``, ``"activity:00U..."``) or
            ``"intel:<doc_id>#<chunk>"`` for a competitor document.
        kind: ``note``, ``activity``, ``opportunity``, ``account``, ``intel``, ``segment`` or ``flag``.
        date: ISO date the evidence is from (None when unknown).
        text: the untrusted text itself.
        facets: labels retrieval filtered on (``outcome``, ``competitor``, ``stage``, ...).
    """

    ref: str
    kind: str
    date: str | None
    text: str
    facets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A structured-output task.

    Attributes:
        name: short id (``battle_card``, ``forecast_note``, ``followup_draft``, ``segment_context``);
            also the forced tool's name prefix and the usage log's task column.
        instructions: the system prompt; fixed text, never CRM text.
        output_schema: JSON Schema of the tool input (``additionalProperties: false`` throughout).
            Any property named ``cites`` must be an array of evidence refs.
        validator: validates the tool input; its errors make the answer invalid.
        max_tokens: the answer's token cap.
    """

    name: str
    instructions: str
    output_schema: Mapping[str, Any]
    validator: Schema
    max_tokens: int = 1500


@dataclass
class Generated:
    """A task's validated output, with placeholders restored."""

    data: dict[str, Any]
    offline: bool
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class GenerationFailed(RuntimeError):
    """The model's answer stayed invalid after one retry, or the call kept failing; write nothing."""


OfflineBuilder = Callable[[], dict[str, Any]]
"""Builds the task's output from the evidence alone (extract and rank, cite what it used)."""


class Copilot:
    """Runs tasks for tenants. Build one per process with :func:`copilot_for`."""

    def generate(
        self,
        tenant_id: str,
        task: Task,
        evidence: Sequence[Evidence],
        *,
        facts: Mapping[str, Any] | None = None,
        offline: OfflineBuilder,
    ) -> Generated:
        """Run ``task`` over ``evidence`` for a tenant.

        Args:
            tenant_id: whose budget, settings and people the call uses.
            task: what to produce.
            evidence: the retrieved, citable text (untrusted).
            facts: computed, trusted facts for the user turn (stage, amount, flags); redacted too.
            offline: the extractive builder used when no model may be called.

        Returns:
            The validated output; ``offline`` tells which path built it.

        Raises:
            GenerationFailed: the model's output was invalid twice or the call failed for good.
        """
        raise NotImplementedError
