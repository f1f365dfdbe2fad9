"""The registry of installed tenants: one Salesforce org or one HubSpot portal each.

A tenant row holds what Fieldwise needs to call the CRM on the tenant's behalf: the instance URL,
granted scopes, OAuth tokens sealed with ``FIELDWISE_ENCRYPTION_KEY``, and a status. ``active``
tenants sync; ``needs_reauth`` tenants (refresh token revoked or refused) pause syncing until an
admin installs again, and their queued work waits rather than being dropped.

Webhook handlers look tenants up on every delivery, and a registry read costs milliseconds, so each
process keeps recent lookups in a :class:`TenantCache`. Every save announces itself: it bumps a
per-tenant counter in this process and, when the registry has Redis, sets the tenant's registry
generation key to a fresh random token. A cached lookup is used only while this process saw no save
of that tenant, it is younger than :data:`TENANT_CACHE_TTL_S`, and (checked by the webhook's own
Redis round trip, see ``core.coalesce``) the token it was loaded under is still the current one.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import redis

from core.crypto import TokenCipher
from core.schemas import CRMS, flatten_messages
from core.store import Store

TenantStatus = Literal["installing", "active", "needs_reauth", "uninstalled"]
STATUSES: tuple[TenantStatus, ...] = ("installing", "active", "needs_reauth", "uninstalled")
RELAY_SECRET_KEY = "relay_secret_enc"
WIDGET_SECRET_KEY = "widget_secret_enc"
TENANT_CACHE_TTL_S = 5.0
"""Longest a process trusts a cached lookup without seeing a change: the bound on staleness when a
save could not be announced in Redis (Redis down, or a registry built without it)."""
TENANT_CACHE_ENTRIES = 10_000
"""Lookups a process keeps; the oldest goes first."""
_GENERATION_PREFIX = "fieldwise:registry-generation:"

log = logging.getLogger(__name__)


class UnknownTenantError(LookupError):
    """No tenant is installed under that id."""


@dataclass(frozen=True)
class Tokens:
    """OAuth tokens, in the clear only in memory."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"Tokens(access_token='********', refresh_token='********', expires_at={self.expires_at!r})"

    def expires_within(self, seconds: float, now: datetime | None = None) -> bool:
        """Whether the access token expires in less than ``seconds`` (refresh ahead of expiry)."""
        if self.expires_at is None:
            return False
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds() < seconds


@dataclass(frozen=True)
class Tenant:
    """One installed org or portal."""

    tenant_id: str
    crm: str
    external_id: str
    """Salesforce org id or HubSpot portal id."""
    instance_url: str | None
    scopes: tuple[str, ...] = ()
    status: TenantStatus = "installing"
    status_reason: str | None = None
    integration_user_id: str | None = None
    """The CRM user (Salesforce) or app (HubSpot) Fieldwise writes as; its writes are echoes."""
    settings: dict[str, Any] = field(default_factory=dict)
    installed_at: datetime | None = None
    updated_at: datetime | None = None


def tenant_id_for(crm: str, external_id: str) -> str:
    """The tenant id for an org or portal: ``salesforce-00D...`` or ``hubspot-12345``."""
    if crm not in CRMS:
        raise ValueError(f"unknown CRM {crm!r}; expected one of {', '.join(CRMS)}")
    return f"{crm}-{external_id}"


def generation_key(crm: str, external_id: str) -> str:
    """The Redis key holding an org's or portal's registry generation token.

    Keyed by CRM and external id, not tenant id, because webhooks look tenants up by those and a
    portal nobody installed yet has a key too (an install sets it, so a cached "unknown" expires).
    """
    return f"{_GENERATION_PREFIX}{crm}:{external_id}"


# Saves seen by this process, per (crm, external id): a cached lookup older than the last one is
# stale even when Redis could not be told.
_local_saves: dict[tuple[str, str], int] = {}
_local_saves_lock = threading.Lock()


def _saves_here(crm: str, external_id: str) -> int:
    return _local_saves.get((crm, external_id), 0)


class TenantRegistry:
    """Reads and writes tenants, sealing and opening their tokens."""

    def __init__(self, store: Store, cipher: TokenCipher, redis_url: str | None = None) -> None:
        """Open the registry.

        Args:
            store: where tenant rows live.
            cipher: seals and opens tokens and secrets.
            redis_url: where saves are announced to other processes' caches; without it only
                this process notices at once, others within :data:`TENANT_CACHE_TTL_S`.
        """
        self._store = store
        self._cipher = cipher
        self._redis = (
            redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
            if redis_url
            else None
        )
        self.cache = TenantCache(self)
        """Recent lookups by org or portal id, for the webhook handlers."""

    def save(self, tenant: Tenant, tokens: Tokens | None = None) -> Tenant:
        """Create or replace a tenant; tokens are kept when ``tokens`` is None."""
        now = datetime.now(UTC)
        previous = self._store.get_tenant(tenant.tenant_id)
        saved = replace(
            tenant,
            installed_at=tenant.installed_at or (previous or {}).get("installed_at") or now,
            updated_at=now,
        )
        row: dict[str, Any] = {
            "tenant_id": saved.tenant_id,
            "crm": saved.crm,
            "external_id": saved.external_id,
            "instance_url": saved.instance_url,
            "scopes": list(saved.scopes),
            "status": saved.status,
            "status_reason": saved.status_reason,
            "integration_user_id": saved.integration_user_id,
            "settings_json": json.dumps(saved.settings, sort_keys=True),
            "installed_at": saved.installed_at,
            "updated_at": now,
        }
        if tokens is not None:
            row.update(self._sealed(tokens))
        elif previous is not None:
            for name in ("access_token_enc", "refresh_token_enc", "token_expires_at"):
                row[name] = previous[name]
        self._store.put_tenant(row)
        # Announce after the write: a reader that loads after reading the announced token sees
        # this row, and one that read the token before sees the token change.
        self._announce(saved.crm, saved.external_id)
        if previous is not None and (previous["crm"], previous["external_id"]) != (
            saved.crm,
            saved.external_id,
        ):
            self._announce(previous["crm"], previous["external_id"])
        return saved

    def _announce(self, crm: str, external_id: str) -> None:
        with _local_saves_lock:
            _local_saves[(crm, external_id)] = _saves_here(crm, external_id) + 1
        if self._redis is None:
            return
        try:
            self._redis.set(generation_key(crm, external_id), uuid.uuid4().hex)
        except redis.RedisError as exc:
            # The row is saved; only other processes' caches learn of it late, by their TTL.
            log.warning(
                "tenant %s:%s saved, but Redis could not be told (%s); other processes see the "
                "change within %.0f s",
                crm, external_id, exc, TENANT_CACHE_TTL_S,
            )  # fmt: skip

    def get(self, tenant_id: str) -> Tenant:
        """A tenant by id.

        Raises:
            UnknownTenantError: nothing is installed under that id.
        """
        row = self._store.get_tenant(tenant_id)
        if row is None:
            raise UnknownTenantError(f"no tenant {tenant_id!r} is installed")
        return _tenant(row)

    def find(self, crm: str, external_id: str) -> Tenant | None:
        """The tenant for an org id or portal id, if installed."""
        row = self._store.find_tenant(crm, external_id)
        return None if row is None else _tenant(row)

    def all(self) -> list[Tenant]:
        """Every tenant, in id order."""
        return sorted((_tenant(r) for r in self._store.list_tenants()), key=lambda t: t.tenant_id)

    def tokens(self, tenant_id: str) -> Tokens:
        """A tenant's tokens, opened."""
        row = self._store.get_tenant(tenant_id)
        if row is None:
            raise UnknownTenantError(f"no tenant {tenant_id!r} is installed")
        if not row["access_token_enc"]:
            raise UnknownTenantError(f"tenant {tenant_id!r} has no tokens; install it again")
        return Tokens(
            access_token=self._cipher.decrypt(row["access_token_enc"]),
            refresh_token=(
                self._cipher.decrypt(row["refresh_token_enc"]) if row["refresh_token_enc"] else None
            ),
            expires_at=row["token_expires_at"],
        )

    def save_tokens(self, tenant_id: str, tokens: Tokens) -> None:
        """Persist refreshed tokens (Salesforce may rotate the refresh token too)."""
        self.save(self.get(tenant_id), tokens)

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str | None = None) -> Tenant:
        """Change a tenant's status, with the reason an admin will read."""
        if status not in STATUSES:
            raise ValueError(f"unknown tenant status {status!r}")
        return self.save(replace(self.get(tenant_id), status=status, status_reason=reason))

    def relay_secret(self, tenant_id: str, *, create: bool = False) -> str | None:
        """The secret that signs change events relayed from this tenant's org.

        Provisioning creates it (``create=True``) and hands it to the relay; the events handler
        reads it to verify each delivery. It is kept sealed in the tenant's settings.
        """
        return self._sealed_secret(tenant_id, RELAY_SECRET_KEY, create)

    def relay_secret_of(self, tenant: Tenant) -> str | None:
        """The relay secret sealed in ``tenant``'s settings as read, without reading the store.

        For a tenant just looked up (the webhook handler's cached lookup), so verifying a relayed
        delivery costs no second registry read.
        """
        sealed = tenant.settings.get(RELAY_SECRET_KEY)
        return self._cipher.decrypt(sealed) if sealed else None

    def widget_secret(self, tenant_id: str, *, create: bool = False) -> str | None:
        """The secret a Salesforce org's Named Credential signs widget calls with.

        ``fieldwise install`` creates it (``create=True``) and prints it once for the admin to
        paste into the External Credential; ``handlers.widget_auth`` reads it to verify each call.
        It is kept sealed in the tenant's settings.
        """
        return self._sealed_secret(tenant_id, WIDGET_SECRET_KEY, create)

    def _sealed_secret(self, tenant_id: str, key: str, create: bool) -> str | None:
        tenant = self.get(tenant_id)
        sealed = tenant.settings.get(key)
        if sealed:
            return self._cipher.decrypt(sealed)
        if not create:
            return None
        secret = secrets.token_urlsafe(32)
        settings = {**tenant.settings, key: self._cipher.encrypt(secret)}
        self.save(replace(tenant, settings=settings))
        return secret

    def _sealed(self, tokens: Tokens) -> dict[str, Any]:
        return {
            "access_token_enc": self._cipher.encrypt(tokens.access_token),
            "refresh_token_enc": (
                self._cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None
            ),
            "token_expires_at": tokens.expires_at,
        }


class CachedTenant(NamedTuple):
    """A cached lookup: the tenant (None: nothing installed) and the token it was loaded under."""

    tenant: Tenant | None
    token: str


class _Entry(NamedTuple):
    found: CachedTenant
    saves_here: int
    loaded_at: float


class TenantCache:
    """One process's recent tenant lookups by org or portal id (see the module docstring).

    The cache only answers what it may trust locally (TTL, saves in this process); the caller
    confirms the token against Redis in the same round trip as the rest of its work, and calls
    :meth:`forget` when it moved.
    """

    def __init__(
        self,
        registry: TenantRegistry,
        ttl_s: float = TENANT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.ttl_s = ttl_s
        """Seconds a lookup is trusted without a sign of change."""
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def get(self, crm: str, external_id: str) -> CachedTenant | None:
        """The cached lookup, or None when there is none this process may still trust."""
        entry = self._entries.get((crm, external_id))
        if (
            entry is None
            or self._clock() - entry.loaded_at > self.ttl_s
            or entry.saves_here != _saves_here(crm, external_id)
        ):
            return None
        return entry.found

    def load(self, crm: str, external_id: str, token: str) -> CachedTenant:
        """Read the registry and keep the result under ``token``.

        Args:
            crm: ``salesforce`` or ``hubspot``.
            external_id: the org or portal id.
            token: the tenant's registry generation token, read *before* this call, so a save
                racing with the read leaves a token that no longer matches.
        """
        saves_here, loaded_at = _saves_here(crm, external_id), self._clock()
        found = CachedTenant(self._registry.find(crm, external_id), token)
        with self._lock:
            self._entries.pop((crm, external_id), None)
            while len(self._entries) >= TENANT_CACHE_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[(crm, external_id)] = _Entry(found, saves_here, loaded_at)
        return found

    def forget(self, crm: str, external_id: str) -> None:
        """Drop a lookup whose token moved."""
        with self._lock:
            self._entries.pop((crm, external_id), None)


class SettingsError(ValueError):
    """A section of a tenant's settings failed validation; the message names every bad key."""

    section = "tenant"
    """Named in the message: ``invalid <section> settings: ...``."""

    def __init__(self, messages: Mapping[str, Any]) -> None:
        self.messages = dict(messages)
        details = "; ".join(
            f"{key}: {flatten_messages(msg)}" for key, msg in sorted(self.messages.items())
        )
        super().__init__(f"invalid {self.section} settings: {details}")


class _SettingsSection(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


SectionT = TypeVar("SectionT", bound=_SettingsSection)


def save_settings_section(
    registry: TenantRegistry,
    tenant_id: str,
    key: str,
    changes: Mapping[str, Any],
    parse: Callable[[Mapping[str, Any]], SectionT],
    *,
    merge_keys: Sequence[str] = (),
) -> SectionT:
    """Merge ``changes`` into one section of a tenant's settings, validate it whole, and save it.

    Only the keys the tenant has set are stored, so a later change of a default reaches every
    tenant that never chose otherwise. Nothing is saved when ``parse`` raises.

    Args:
        registry: the tenant registry.
        tenant_id: whose settings.
        key: the section inside ``Tenant.settings`` (``"scoring"``, ``"copilot"``).
        changes: the keys to change.
        parse: validates the merged section and fills in defaults.
        merge_keys: keys whose mapping values merge key by key instead of being replaced.

    Returns:
        What ``parse`` made of the merged section.
    """
    tenant = registry.get(tenant_id)
    stored = dict(tenant.settings.get(key) or {})
    merged = {**stored, **dict(changes)}
    for name in merge_keys:
        old, new = stored.get(name), changes.get(name)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            merged[name] = {**old, **new}
    parsed = parse(merged)
    kept = {name: value for name, value in parsed.to_dict().items() if name in merged}
    registry.save(replace(tenant, settings={**tenant.settings, key: kept}))
    return parsed


def _tenant(row: dict[str, Any]) -> Tenant:
    return Tenant(
        tenant_id=row["tenant_id"],
        crm=row["crm"],
        external_id=row["external_id"],
        instance_url=row["instance_url"],
        scopes=tuple(row["scopes"] or ()),
        status=row["status"],
        status_reason=row["status_reason"],
        integration_user_id=row["integration_user_id"],
        settings=json.loads(row["settings_json"] or "{}"),
        installed_at=row["installed_at"],
        updated_at=row["updated_at"],
    )
