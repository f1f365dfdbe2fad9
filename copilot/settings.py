"""Per-tenant copilot settings, kept in the tenant's settings under ``"copilot"``.

Every key is optional; what a tenant leaves out takes the default below. A partial update merges
with what is stored, and the merged whole is validated before anything is saved.

==========================  ==========================================================================
``llm_enabled``             ``true``: call the model. Off, every task is built offline from the
                            evidence and labelled as such; no request leaves Fieldwise.
``daily_token_budget``      ``200000``: input plus output tokens the tenant may spend per UTC day;
                            once spent, tasks run offline until the next day.
``competitors``             ``{}``: competitor name to a list of aliases found in notes ("Acme" ->
                            ["Acme Corp", "ACME"]). Names are also learned from the CRM's own deal
                            competitor values, so leaving this empty is fine.
``min_evidence``            ``3``: a battle card built on fewer won/lost-deal evidence items says
                            there is not enough evidence instead of guessing.
``risk_thresholds``         forecast-note risk flags, each key optional:
                            ``no_activity_days`` ``14`` (no logged activity for this long);
                            ``stalled_factor`` ``1.5`` (open in its stage this many times the
                            stage's typical age); ``close_pushes`` ``2`` (close date moved out this
                            often ...) within ``close_push_days`` ``30``; ``single_thread_contacts``
                            ``1`` (this many contacts or fewer engaged); ``score_drop_points`` ``10``
                            (deal score fell this much); ``amount_change_pct`` ``20`` (amount moved
                            this many percent).
``segment_min_accounts``    ``8``: a segment needs at least this many accounts to get a specialist.
``segment_count``           ``0``: how many segments to form; 0 chooses automatically.
``followup_language``       ``"en"``: language of follow-up drafts (ISO 639-1 code).
``auto_followup_hot``       ``true``: draft a follow-up when a lead turns Hot.
==========================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from core.tenants import SettingsError, Tenant, TenantRegistry, save_settings_section

SETTINGS_KEY = "copilot"
"""Where the settings live inside ``Tenant.settings``."""

DEFAULT_RISK_THRESHOLDS: Mapping[str, float] = {
    "no_activity_days": 14,
    "stalled_factor": 1.5,
    "close_pushes": 2,
    "close_push_days": 30,
    "single_thread_contacts": 1,
    "score_drop_points": 10,
    "amount_change_pct": 20,
}
"""Forecast-note risk thresholds; a tenant's partial ``risk_thresholds`` merges over these."""


class CopilotSettingsError(SettingsError):
    """Settings failed validation; the message names every bad key."""

    section = "copilot"


@dataclass(frozen=True)
class CopilotSettings:
    """One tenant's copilot settings (see the module docstring for each default)."""

    llm_enabled: bool = True
    daily_token_budget: int = 200_000
    competitors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    min_evidence: int = 3
    risk_thresholds: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_RISK_THRESHOLDS)
    )
    segment_min_accounts: int = 8
    segment_count: int = 0
    followup_language: str = "en"
    auto_followup_hot: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the tenant's settings."""
        return {
            "llm_enabled": self.llm_enabled,
            "daily_token_budget": self.daily_token_budget,
            "competitors": {name: list(aliases) for name, aliases in self.competitors.items()},
            "min_evidence": self.min_evidence,
            "risk_thresholds": dict(self.risk_thresholds),
            "segment_min_accounts": self.segment_min_accounts,
            "segment_count": self.segment_count,
            "followup_language": self.followup_language,
            "auto_followup_hot": self.auto_followup_hot,
        }


class _Flag(fields.Field):
    """Only JSON ``true``/``false``: ``"yes"`` or ``1`` in a settings form is a mistake to name."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


def _flag() -> _Flag:
    return _Flag()


def _whole(low: int, high: int) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=low, max=high))


class _RiskThresholdsSchema(Schema):
    class Meta:
        unknown = RAISE

    no_activity_days = _whole(1, 365)
    stalled_factor = fields.Float(validate=validate.Range(min=1.0, max=10.0))
    close_pushes = _whole(1, 50)
    close_push_days = _whole(1, 365)
    single_thread_contacts = _whole(0, 50)
    score_drop_points = fields.Float(validate=validate.Range(min=1, max=100))
    amount_change_pct = fields.Float(validate=validate.Range(min=1, max=1000))


class _SettingsSchema(Schema):
    class Meta:
        unknown = RAISE

    llm_enabled = _flag()
    daily_token_budget = _whole(0, 1_000_000_000)
    competitors = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=fields.List(fields.String(validate=validate.Length(min=1, max=100))),
    )
    min_evidence = _whole(1, 100)
    risk_thresholds = fields.Nested(_RiskThresholdsSchema)
    segment_min_accounts = _whole(2, 100_000)
    segment_count = _whole(0, 50)
    followup_language = fields.String(validate=validate.Regexp(r"^[a-z]{2}$"))
    auto_followup_hot = _flag()


_SCHEMA = _SettingsSchema()


def parse_settings(data: Mapping[str, Any] | None) -> CopilotSettings:
    """Validate a settings mapping (partial is fine) into :class:`CopilotSettings`.

    Args:
        data: stored or submitted settings; missing keys take their defaults.

    Returns:
        The settings, defaults filled in.

    Raises:
        CopilotSettingsError: naming each bad key and why.
    """
    if data is not None and not isinstance(data, Mapping):
        raise CopilotSettingsError({"_schema": "settings must be a JSON object"})
    try:
        loaded = _SCHEMA.load(dict(data or {}))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise CopilotSettingsError(messages) from None
    values: dict[str, Any] = dict(loaded)
    if "competitors" in values:
        values["competitors"] = {
            name.strip(): tuple(alias.strip() for alias in aliases)
            for name, aliases in values["competitors"].items()
        }
    if "risk_thresholds" in values:
        values["risk_thresholds"] = {**DEFAULT_RISK_THRESHOLDS, **values["risk_thresholds"]}
    return CopilotSettings(**values)


def settings_of(tenant: Tenant) -> CopilotSettings:
    """A tenant's settings, defaults filled in.

    Raises:
        CopilotSettingsError: what is stored no longer validates (edited by hand).
    """
    return parse_settings(tenant.settings.get(SETTINGS_KEY) or {})


def load_settings(registry: TenantRegistry, tenant_id: str) -> CopilotSettings:
    """The copilot settings of an installed tenant.

    Args:
        registry: the tenant registry.
        tenant_id: whose settings.

    Returns:
        The settings, defaults filled in.
    """
    return settings_of(registry.get(tenant_id))


def save_settings(
    registry: TenantRegistry, tenant_id: str, changes: Mapping[str, Any]
) -> CopilotSettings:
    """Merge ``changes`` into a tenant's settings, validate the result, and save it.

    ``risk_thresholds`` merges key by key, so changing one threshold keeps the others. Nothing is
    saved when validation fails.

    Args:
        registry: the tenant registry.
        tenant_id: whose settings.
        changes: the keys to change.

    Returns:
        The saved settings.

    Raises:
        CopilotSettingsError: a key is unknown or a value invalid (every bad key is named).
    """
    if not isinstance(changes, Mapping):
        raise CopilotSettingsError({"_schema": "settings must be a JSON object"})
    return save_settings_section(
        registry, tenant_id, SETTINGS_KEY, changes, parse_settings, merge_keys=("risk_thresholds",)
    )
