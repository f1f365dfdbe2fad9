"""Per-tenant copilot settings: defaults, merging updates, and refusing bad ones whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from copilot.settings import (
    DEFAULT_RISK_THRESHOLDS,
    SETTINGS_KEY,
    CopilotSettings,
    CopilotSettingsError,
    load_settings,
    save_settings,
)
from core.config import Config
from core.crypto import TokenCipher
from core.store import Store
from core.tenants import Tenant, TenantRegistry, UnknownTenantError

TENANT = "salesforce-00DSET"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[TenantRegistry]:
    config = Config.for_demo(lancedb_uri=str(tmp_path / "lancedb"))
    registry = TenantRegistry(Store.from_config(config), TokenCipher.from_config(config))
    registry.save(
        Tenant(TENANT, "salesforce", "00DSET", None, status="active", settings={"scoring": {}})
    )
    yield registry


def test_a_tenant_without_settings_gets_every_default(registry: TenantRegistry) -> None:
    settings = load_settings(registry, TENANT)

    assert settings == CopilotSettings()
    assert settings.llm_enabled is True
    assert settings.daily_token_budget == 200_000
    assert settings.competitors == {}
    assert settings.min_evidence == 3
    assert settings.risk_thresholds == {
        "no_activity_days": 14,
        "stalled_factor": 1.5,
        "close_pushes": 2,
        "close_push_days": 30,
        "single_thread_contacts": 1,
        "score_drop_points": 10,
        "amount_change_pct": 20,
    }
    assert (settings.segment_min_accounts, settings.segment_count) == (8, 0)
    assert settings.followup_language == "en"
    assert settings.auto_followup_hot is True


def test_partial_updates_merge_with_what_is_stored(registry: TenantRegistry) -> None:
    save_settings(
        registry,
        TENANT,
        {"llm_enabled": False, "competitors": {"Acme": ["Acme Corp", "ACME"]}},
    )
    save_settings(registry, TENANT, {"min_evidence": 5, "risk_thresholds": {"close_pushes": 3}})
    saved = save_settings(registry, TENANT, {"risk_thresholds": {"no_activity_days": 21}})

    assert saved == load_settings(registry, TENANT)
    assert saved.llm_enabled is False
    assert saved.competitors == {"Acme": ("Acme Corp", "ACME")}
    assert saved.min_evidence == 5
    assert saved.risk_thresholds == {
        **DEFAULT_RISK_THRESHOLDS,
        "close_pushes": 3,
        "no_activity_days": 21,
    }
    tenant = registry.get(TENANT)
    assert tenant.settings["scoring"] == {}
    assert set(tenant.settings[SETTINGS_KEY]) == {
        "llm_enabled",
        "competitors",
        "min_evidence",
        "risk_thresholds",
    }


def test_every_bad_key_is_named_and_nothing_is_saved(registry: TenantRegistry) -> None:
    save_settings(registry, TENANT, {"daily_token_budget": 5000})
    before = registry.get(TENANT).settings

    with pytest.raises(CopilotSettingsError) as raised:
        save_settings(
            registry,
            TENANT,
            {
                "llm_enabled": "yes",
                "daily_token_budget": -1,
                "competitors": {"Acme": "Acme Corp"},
                "min_evidence": 0,
                "risk_thresholds": {"stalled_factor": 0.5, "close_push_days": "30"},
                "segment_min_accounts": 1,
                "segment_count": 99,
                "followup_language": "english",
                "auto_followup_hot": 1,
            },
        )

    assert set(raised.value.messages) == {
        "llm_enabled",
        "daily_token_budget",
        "competitors",
        "min_evidence",
        "risk_thresholds",
        "segment_min_accounts",
        "segment_count",
        "followup_language",
        "auto_followup_hot",
    }
    assert set(raised.value.messages["risk_thresholds"]) == {"stalled_factor", "close_push_days"}
    message = str(raised.value)
    assert message.startswith("invalid copilot settings: ")
    for key in ("llm_enabled", "followup_language", "stalled_factor", "close_push_days"):
        assert key in message
    assert registry.get(TENANT).settings == before
    assert load_settings(registry, TENANT).daily_token_budget == 5000


def test_unknown_keys_are_refused_at_both_levels(registry: TenantRegistry) -> None:
    with pytest.raises(CopilotSettingsError, match="llm_model: Unknown field"):
        save_settings(registry, TENANT, {"llm_model": "claude-opus-4-6"})
    with pytest.raises(CopilotSettingsError, match="no_reply_days: Unknown field"):
        save_settings(registry, TENANT, {"risk_thresholds": {"no_reply_days": 3}})

    assert SETTINGS_KEY not in registry.get(TENANT).settings


def test_settings_that_are_not_an_object_are_refused(registry: TenantRegistry) -> None:
    with pytest.raises(CopilotSettingsError, match="must be a JSON object"):
        save_settings(registry, TENANT, ["llm_enabled", False])  # type: ignore[arg-type]


def test_an_unknown_tenant_is_named(registry: TenantRegistry) -> None:
    with pytest.raises(UnknownTenantError):
        load_settings(registry, "salesforce-00DNOPE")
