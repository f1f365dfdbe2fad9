"""Per-tenant scoring and routing settings, kept in the tenant's settings under ``"scoring"``.

Every key is optional; what a tenant leaves out takes the default below. Saved settings are
validated as a whole, so a tenant can never hold thresholds that overlap or a margin wider than a
band. The defaults:

============================  =========================================================================
``grades``                    ``[["Hot", 70], ["Warm", 40], ["Cold", 0]]``: label and lowest score, best
                              first; the last band must start at 0.
``hysteresis_margin``         ``5``: score points a record must fall *below* a band's lower edge before
                              it drops out of the band (rising needs only the edge itself).
``material_change_points``    ``5``: a score move this large is a material change even without a grade
                              crossing (it goes to the ledger and refreshes ``score_changed_at``).
``capacity_default``          ``60``: open leads a rep can hold when no capacity is known for them.
``capacity_per_rep``          ``{}``: rep user id to open-lead capacity; beats the CRM's own value.
``fairness_band``             ``0.25``: no rep's share of routed leads may drift more than 25 % from an
                              equal share of the available reps.
``fairness_window_days``      ``30``: the window over which shares are counted in real time.
``auto_assign``               ``false``: write the suggested owner into the owner field too. Off, the
                              suggestion is only written to its own field.
``unavailable_reps``          ``[]``: rep user ids that get no new leads (leave, full calendar).
``new_lead_hours``            ``24``: a lead this young is routed even if the CRM already gave it an
                              owner (assignment rules usually hand new leads to a default owner).
``lead_open_days``            ``45``: how long a lead counts against capacity in a replay, where only
                              today's statuses are known.
``overwrite_policy``          ``"keep_rep_edits"``: how write-back treats a value someone changed in the
                              CRM: ``always`` overwrite, ``only_if_empty``, or ``keep_rep_edits`` younger
                              than ``rep_edit_days``.
``rep_edit_days``             ``14``.
``excluded_fields``           ``[]``: canonical or custom field names never used as model features.
============================  =========================================================================
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from core.tenants import SettingsError, Tenant, TenantRegistry, save_settings_section

SETTINGS_KEY = "scoring"
"""Where the settings live inside ``Tenant.settings``."""
OVERWRITE_POLICIES = ("always", "only_if_empty", "keep_rep_edits")

DEFAULT_GRADES: tuple[tuple[str, float], ...] = (("Hot", 70.0), ("Warm", 40.0), ("Cold", 0.0))


class ScoringSettingsError(SettingsError):
    """Settings failed validation; the message names every bad key."""

    section = "scoring"


@dataclass(frozen=True)
class ScoringSettings:
    """One tenant's scoring and routing settings (see the module docstring for each default)."""

    grades: tuple[tuple[str, float], ...] = DEFAULT_GRADES
    hysteresis_margin: float = 5.0
    material_change_points: float = 5.0
    capacity_default: int = 60
    capacity_per_rep: Mapping[str, int] = field(default_factory=dict)
    fairness_band: float = 0.25
    fairness_window_days: int = 30
    auto_assign: bool = False
    unavailable_reps: tuple[str, ...] = ()
    new_lead_hours: float = 24.0
    lead_open_days: int = 45
    overwrite_policy: str = "keep_rep_edits"
    rep_edit_days: int = 14
    excluded_fields: tuple[str, ...] = ()

    @property
    def grade_labels(self) -> tuple[str, ...]:
        """Grade labels, best first."""
        return tuple(label for label, _ in self.grades)

    def capacity_for(self, rep_id: str, crm_capacity: int | None = None) -> int:
        """Open leads ``rep_id`` may hold: this tenant's setting, else the CRM's, else the default."""
        if rep_id in self.capacity_per_rep:
            return int(self.capacity_per_rep[rep_id])
        if crm_capacity is not None and crm_capacity > 0:
            return int(crm_capacity)
        return self.capacity_default

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the tenant's settings."""
        data = asdict(self)
        data["grades"] = [[label, low] for label, low in self.grades]
        data["capacity_per_rep"] = dict(self.capacity_per_rep)
        data["unavailable_reps"] = list(self.unavailable_reps)
        data["excluded_fields"] = list(self.excluded_fields)
        return data


class _GradeBand(fields.Field):
    """``[label, lowest score]``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValidationError("each band must be [label, lowest score]")
        label, low = value
        if not isinstance(label, str) or not label.strip():
            raise ValidationError("a band's label must be a non-empty string")
        if isinstance(low, bool) or not isinstance(low, int | float) or not 0 <= low <= 100:
            raise ValidationError(f"band {label!r}: lowest score must be a number from 0 to 100")
        return (label.strip(), float(low))


class _SettingsSchema(Schema):
    class Meta:
        unknown = RAISE

    grades = fields.List(_GradeBand(), validate=validate.Length(min=2, max=6))
    hysteresis_margin = fields.Float(validate=validate.Range(min=0, max=30))
    material_change_points = fields.Float(validate=validate.Range(min=1, max=100))
    capacity_default = fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000))
    capacity_per_rep = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Integer(strict=True, validate=validate.Range(min=0, max=100_000)),
    )
    fairness_band = fields.Float(validate=validate.Range(min=0.01, max=1.0))
    fairness_window_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=365))
    auto_assign = fields.Boolean()
    unavailable_reps = fields.List(fields.String(validate=validate.Length(min=1)))
    new_lead_hours = fields.Float(validate=validate.Range(min=0, max=24 * 90))
    lead_open_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=365))
    overwrite_policy = fields.String(validate=validate.OneOf(OVERWRITE_POLICIES))
    rep_edit_days = fields.Integer(strict=True, validate=validate.Range(min=0, max=365))
    excluded_fields = fields.List(fields.String(validate=validate.Length(min=1)))

    @validates_schema
    def _bands_are_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        grades = data.get("grades")
        if grades is None:
            return
        labels = [label for label, _ in grades]
        if len(set(labels)) != len(labels):
            raise ValidationError("band labels must be unique", "grades")
        lows = [low for _, low in grades]
        if any(a <= b for a, b in itertools.pairwise(lows)):
            raise ValidationError(
                "bands must be listed best first with strictly falling lowest scores", "grades"
            )
        if lows[-1] != 0:
            raise ValidationError(
                "the last band must start at 0 so every score has a grade", "grades"
            )
        margin = data.get("hysteresis_margin", ScoringSettings.hysteresis_margin)
        narrowest = min(a - b for a, b in itertools.pairwise(lows))
        inner = [low for low in lows[:-1] if low - margin <= 0]
        if margin >= narrowest or inner:
            raise ValidationError(
                f"hysteresis_margin ({margin:g}) must be smaller than the narrowest band "
                f"({narrowest:g} points) and than the lowest band edge",
                "hysteresis_margin",
            )


_SCHEMA = _SettingsSchema()


def parse_settings(data: Mapping[str, Any] | None) -> ScoringSettings:
    """Validate a settings mapping (partial is fine) into :class:`ScoringSettings`.

    Raises:
        ScoringSettingsError: naming each bad key and why.
    """
    try:
        loaded = _SCHEMA.load(dict(data or {}))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ScoringSettingsError(messages) from None
    values: dict[str, Any] = dict(loaded)
    for name in ("grades", "unavailable_reps", "excluded_fields"):
        if name in values:
            values[name] = tuple(values[name])
    if "capacity_per_rep" in values:
        values["capacity_per_rep"] = dict(values["capacity_per_rep"])
    return ScoringSettings(**values)


def settings_of(tenant: Tenant) -> ScoringSettings:
    """A tenant's settings, defaults filled in.

    Raises:
        ScoringSettingsError: what is stored no longer validates (edited by hand).
    """
    return parse_settings(tenant.settings.get(SETTINGS_KEY) or {})


def load_settings(registry: TenantRegistry, tenant_id: str) -> ScoringSettings:
    """The settings of an installed tenant."""
    return settings_of(registry.get(tenant_id))


def save_settings(
    registry: TenantRegistry, tenant_id: str, changes: Mapping[str, Any]
) -> ScoringSettings:
    """Merge ``changes`` into a tenant's settings, validate the result, and save it.

    Nothing is saved when validation fails.

    Raises:
        ScoringSettingsError: the merged settings are invalid.
    """
    return save_settings_section(registry, tenant_id, SETTINGS_KEY, changes, parse_settings)
