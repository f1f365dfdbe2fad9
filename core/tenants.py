"""The registry of installed tenants: one Salesforce org or one HubSpot portal each.

A tenant row holds what Fieldwise needs to call the CRM on the tenant's behalf: the instance URL,
granted scopes, OAuth tokens sealed with ``FIELDWISE_ENCRYPTION_KEY``, and a status. ``active``
tenants sync; ``needs_reauth`` tenants (refresh token revoked or refused) pause syncing until an
admin installs again, and their queued work waits rather than being dropped.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from core.crypto import TokenCipher
from core.schemas import CRMS
from core.store import Store

TenantStatus = Literal["installing", "active", "needs_reauth", "uninstalled"]
STATUSES: tuple[TenantStatus, ...] = ("installing", "active", "needs_reauth", "uninstalled")
RELAY_SECRET_KEY = "relay_secret_enc"
WIDGET_SECRET_KEY = "widget_secret_enc"


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


class TenantRegistry:
    """Reads and writes tenants, sealing and opening their tokens."""

    def __init__(self, store: Store, cipher: TokenCipher) -> None:
        self._store = store
        self._cipher = cipher

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
        return saved

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


class SettingsError(ValueError):
    """A section of a tenant's settings failed validation; the message names every bad key."""

    section = "tenant"
    """Named in the message: ``invalid <section> settings: ...``."""

    def __init__(self, messages: Mapping[str, Any]) -> None:
        self.messages = dict(messages)
        details = "; ".join(f"{key}: {_flatten(msg)}" for key, msg in sorted(self.messages.items()))
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


def _flatten(message: Any) -> str:
    if isinstance(message, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in message.items())
    if isinstance(message, list):
        return " ".join(_flatten(m) for m in message)
    return str(message).rstrip(".")


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
