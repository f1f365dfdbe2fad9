"""What every connector offers the rest of Fieldwise, and the error classes callers act on.

Each CRM package (``connectors/salesforce``, ``connectors/hubspot``) has the same six files and
exposes one :class:`Connector` built by :func:`connector_for`. Everything outside ``connectors/``
works through this interface with canonical records (``core.schemas``) and manifest field names;
raw CRM payloads never leave the package.

Errors are grouped by what the caller should do, and each connector's ``errors.py`` maps the CRM's
status codes and error codes onto them in one table:

* :class:`RetriableError`: try again later (rate limited, server error, lock contention); carries
  ``retry_after_s`` when the CRM said how long.
* :class:`FatalError`: this tenant cannot proceed until a person acts (missing scope or
  permission, revoked consent, quota exhausted for the day); the message says what to do.
* :class:`SkippableError`: this one record cannot be processed (validation rule, deleted, bad
  value); the rest of the batch goes on and the record's failure is reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from core.config import Config
from core.ratelimit import WindowCounter
from core.tenants import TenantRegistry


class ConnectorError(Exception):
    """Base of every error a connector raises; ``message`` is written for the user."""

    def __init__(
        self, message: str, *, crm_code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.crm_code = crm_code
        self.status = status


class RetriableError(ConnectorError):
    """Worth another try later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class FatalError(ConnectorError):
    """A person must act before this tenant can go on; the message names the fix."""


class ReauthRequired(FatalError):
    """The CRM refused the refresh token: the tenant must be installed again."""


class SkippableError(ConnectorError):
    """One record cannot be processed; the batch goes on."""


@dataclass(frozen=True)
class ConnectorContext:
    """The shared services a connector needs, built once per process."""

    config: Config
    registry: TenantRegistry
    counter: WindowCounter


@dataclass
class Page:
    """One page of canonical records from a stream, with the checkpoint to resume after it."""

    records: list[dict[str, Any]]
    checkpoint: dict[str, Any]
    """Opaque to callers; save it only once ``records`` are written to the store."""
    done: bool = False


@dataclass(frozen=True)
class WriteResult:
    """The outcome of writing one record's fields."""

    crm_id: str
    ok: bool
    error: str | None = None
    """The CRM's own message when ``ok`` is False (validation rule, restricted picklist...)."""
    error_kind: Literal["skippable", "retriable", "fatal"] | None = None


@dataclass
class PlanItem:
    """One thing provisioning creates, changes or removes in the CRM."""

    kind: Literal[
        "field",
        "property_group",
        "permission_set",
        "subscription",
        "outbound_message",
        "widget",
        "setting",
    ]
    target: str
    """What it is, e.g. ``Lead.Fieldwise_AI_Score__c`` or ``contact.propertyChange:email``."""
    action: Literal["create", "update", "delete", "keep"]
    detail: str = ""


@dataclass
class InstallPlan:
    """Everything an install (or uninstall) does, or would do in a dry run."""

    crm: str
    tenant_id: str
    manifest_version: str
    items: list[PlanItem] = field(default_factory=list)
    applied: bool = False

    @property
    def changes(self) -> list[PlanItem]:
        """Items that change something (not ``keep``)."""
        return [item for item in self.items if item.action != "keep"]


class Connector(Protocol):
    """One tenant's CRM, seen through canonical records and manifest field names."""

    crm: str
    tenant_id: str

    def fetch(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Read records by id in the API's largest batches; missing ids are left out."""
        ...

    def changed(
        self, entity: str, since: datetime | None, checkpoint: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Pages of records modified at or after ``since`` (all records when None), oldest first."""
        ...

    def deleted(self, entity: str, since: datetime, until: datetime) -> list[str]:
        """Ids of records deleted in the window."""
        ...

    def field_history(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Field-history rows of records (deals: stage, close date, amount), oldest first.

        Rows are ``{crm_id, field, old_value, new_value, changed_at, changed_by}`` with canonical
        field names; entities without tracked history give [].
        """
        ...

    def write(self, entity: str, updates: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        """Write field values (keyed by manifest API name) to records (keyed by CRM id) in batches."""
        ...

    def plan_install(self) -> InstallPlan:
        """What installing the manifest would create or change, without changing anything."""
        ...

    def install(self) -> InstallPlan:
        """Create or complete everything in the manifest; re-running changes nothing."""
        ...

    def uninstall(self, keep_data_fields: bool = False) -> InstallPlan:
        """Remove what Fieldwise created, and only that."""
        ...


def connector_for(tenant_id: str, context: ConnectorContext) -> Connector:
    """The connector for an installed tenant.

    Raises:
        UnknownTenantError: nothing is installed under that id.
    """
    tenant = context.registry.get(tenant_id)
    if tenant.crm == "salesforce":
        from connectors.salesforce.client import SalesforceConnector

        return SalesforceConnector(tenant, context)
    from connectors.hubspot.client import HubSpotConnector

    return HubSpotConnector(tenant, context)
