from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.crypto import TokenCipher, generate_key
from core.store import Store
from core.tenants import (
    TENANT_CACHE_TTL_S,
    Tenant,
    TenantCache,
    TenantRegistry,
    Tokens,
    UnknownTenantError,
    generation_key,
    tenant_id_for,
)


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
    assert registry.relay_secret_of(registry.get(tenant_id)) == secret


# --------------------------------------------------------------------------------------------------
# The per-process lookup cache and the change announcements that keep it honest


SF_ORG = "00D000000000001AAA"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_cached_lookup_is_kept_with_the_token_it_was_loaded_under(registry):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    cache = TenantCache(registry)
    assert cache.get("salesforce", SF_ORG) is None
    loaded = cache.load("salesforce", SF_ORG, "token-1")
    assert loaded.tenant.status == "active" and loaded.token == "token-1"
    assert cache.get("salesforce", SF_ORG) == loaded
    cache.forget("salesforce", SF_ORG)
    assert cache.get("salesforce", SF_ORG) is None


def test_any_save_in_this_process_invalidates_the_cached_lookup_at_once(registry, store):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    cache = TenantCache(registry, ttl_s=3600)
    cache.load("salesforce", SF_ORG, "")
    other = TenantRegistry(store, TokenCipher(generate_key()))  # another registry, same process
    other.save(salesforce_tenant(status="uninstalled"))
    assert cache.get("salesforce", SF_ORG) is None
    assert cache.load("salesforce", SF_ORG, "").tenant.status == "uninstalled"


def test_an_unknown_tenant_is_cached_as_unknown_until_it_is_installed(registry):
    cache = TenantCache(registry, ttl_s=3600)
    assert cache.load("salesforce", SF_ORG, "").tenant is None
    assert cache.get("salesforce", SF_ORG).tenant is None
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    assert cache.get("salesforce", SF_ORG) is None
    assert cache.load("salesforce", SF_ORG, "").tenant is not None


def test_a_cached_lookup_expires_after_its_ttl(registry):
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    clock = FakeClock()
    cache = TenantCache(registry, ttl_s=5.0, clock=clock)
    cache.load("salesforce", SF_ORG, "")
    clock.now += 4.9
    assert cache.get("salesforce", SF_ORG) is not None
    clock.now += 0.2
    assert cache.get("salesforce", SF_ORG) is None


def test_the_registry_owns_a_cache_for_the_webhook_handlers(registry):
    assert isinstance(registry.cache, TenantCache)
    assert registry.cache.ttl_s == TENANT_CACHE_TTL_S


@pytest.mark.redis
def test_every_save_announces_a_fresh_generation_token_in_redis(store, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    registry = TenantRegistry(store, TokenCipher(generate_key()), redis_url=redis_url)
    key = generation_key("salesforce", SF_ORG)
    assert client.get(key) is None
    registry.save(salesforce_tenant(), Tokens("a", "r"))
    first = client.get(key)
    registry.set_status(f"salesforce-{SF_ORG}", "needs_reauth", "refresh refused")
    second = client.get(key)
    registry.save_tokens(f"salesforce-{SF_ORG}", Tokens("a2", "r2"))
    assert len({first, second, client.get(key)}) == 3 and first is not None
    assert client.get(generation_key("hubspot", SF_ORG)) is None  # keyed by CRM and id


def test_a_save_still_succeeds_when_redis_cannot_be_told(store):
    registry = TenantRegistry(store, TokenCipher(generate_key()), redis_url="redis://127.0.0.1:1/0")
    cache = TenantCache(registry, ttl_s=3600)
    cache.load("salesforce", SF_ORG, "")
    registry.save(salesforce_tenant(), Tokens("a", "r"))  # logged; other processes see it by TTL
    assert registry.find("salesforce", SF_ORG) is not None
    assert cache.get("salesforce", SF_ORG) is None  # this process noticed at once
