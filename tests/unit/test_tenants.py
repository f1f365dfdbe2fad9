from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.crypto import TokenCipher, generate_key
from core.store import Store
from core.tenants import Tenant, TenantRegistry, Tokens, UnknownTenantError, tenant_id_for


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "db"))


@pytest.fixture
def registry(store):
    return TenantRegistry(store, TokenCipher(generate_key()))


def salesforce_tenant(**changes):
    base = dict(
        tenant_id=tenant_id_for("salesforce", "00D000000000001AAA"),
        crm="salesforce",
        external_id="00D000000000001AAA",
        instance_url="https://acme.my.salesforce.com",
        scopes=("api", "refresh_token"),
        status="active",
    )
    return Tenant(**{**base, **changes})


def test_saved_tenant_reads_back_and_tokens_are_sealed_at_rest(registry, store):
    tokens = Tokens("access-abc", "refresh-xyz", datetime(2026, 3, 1, tzinfo=UTC))
    registry.save(salesforce_tenant(), tokens)
    tenant = registry.get("salesforce-00D000000000001AAA")
    assert tenant.instance_url == "https://acme.my.salesforce.com"
    assert tenant.scopes == ("api", "refresh_token")
    assert registry.tokens(tenant.tenant_id) == tokens
    raw = store.get_tenant(tenant.tenant_id)
    assert "access-abc" not in str(raw) and "refresh-xyz" not in str(raw)
    assert "access-abc" not in repr(tokens)


def test_saving_without_tokens_keeps_the_stored_tokens(registry):
    registry.save(salesforce_tenant(), Tokens("a1", "r1"))
    registry.save(salesforce_tenant(status="needs_reauth", status_reason="refresh refused"))
    assert registry.tokens("salesforce-00D000000000001AAA").refresh_token == "r1"
    assert registry.get("salesforce-00D000000000001AAA").status == "needs_reauth"


def test_rotated_tokens_replace_the_old_ones(registry):
    registry.save(salesforce_tenant(), Tokens("a1", "r1"))
    registry.save_tokens("salesforce-00D000000000001AAA", Tokens("a2", "r2"))
    assert registry.tokens("salesforce-00D000000000001AAA") == Tokens("a2", "r2")


def test_tenants_are_found_by_org_or_portal_id_and_listed(registry):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    hub = Tenant(
        tenant_id=tenant_id_for("hubspot", "4455"),
        crm="hubspot",
        external_id="4455",
        instance_url=None,
        status="active",
    )
    registry.save(hub, Tokens("h", "hr"))
    assert registry.find("hubspot", "4455").tenant_id == "hubspot-4455"
    assert registry.find("hubspot", "9999") is None
    assert registry.find("salesforce", "4455") is None
    assert [t.tenant_id for t in registry.all()] == [
        "hubspot-4455",
        "salesforce-00D000000000001AAA",
    ]


def test_status_changes_carry_a_reason_and_reject_unknown_statuses(registry):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    tenant = registry.set_status("salesforce-00D000000000001AAA", "needs_reauth", "invalid_grant")
    assert (tenant.status, tenant.status_reason) == ("needs_reauth", "invalid_grant")
    with pytest.raises(ValueError, match="unknown tenant status"):
        registry.set_status("salesforce-00D000000000001AAA", "sleeping")


def test_unknown_tenants_are_a_clear_error(registry):
    with pytest.raises(UnknownTenantError, match="no tenant 'hubspot-1' is installed"):
        registry.get("hubspot-1")
    with pytest.raises(ValueError, match="unknown CRM"):
        tenant_id_for("pipedrive", "1")


def test_tokens_know_when_to_refresh_ahead_of_expiry():
    now = datetime(2026, 3, 1, tzinfo=UTC)
    tokens = Tokens("a", "r", now + timedelta(seconds=200))
    assert tokens.expires_within(300, now=now)
    assert not tokens.expires_within(100, now=now)
    assert not Tokens("a").expires_within(300)


def test_relay_secret_is_created_once_sealed_and_then_reused(registry, store):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    tenant_id = "salesforce-00D000000000001AAA"
    assert registry.relay_secret(tenant_id) is None
    secret = registry.relay_secret(tenant_id, create=True)
    assert len(secret) >= 32
    assert registry.relay_secret(tenant_id) == secret
    assert registry.relay_secret(tenant_id, create=True) == secret
    assert secret not in str(store.get_tenant(tenant_id))
