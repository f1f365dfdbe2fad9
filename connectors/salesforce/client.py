"""The Salesforce connector: one tenant's org through simple-salesforce, tokens, budget and errors.

Every API call goes through :meth:`SalesforceConnector._call` (REST) or
:meth:`SalesforceConnector.metadata` (Metadata SOAP), which, in order:

1. refreshes the access token when it is within :data:`REFRESH_AHEAD_S` of its assumed expiry;
2. takes one unit from the org's daily budget: Fieldwise may spend at most
   ``config.salesforce_api_share`` of the org's ``DailyApiRequests`` allocation in any rolling
   24 hours, counted in ``context.counter`` (Redis when configured) so every worker sees the same
   count; the allocation is learned from the ``Sforce-Limit-Info`` header of each answer
   (``sf.api_usage``). A spent budget raises :class:`RetriableError` with ``retry_after_s``;
3. makes the call on a ``core.http`` session (the one retry layer for 429 and 5xx) that sends
   ``Sforce-Call-Options: client=Fieldwise`` on every request, so change events carry
   ``changeOrigin ...;client=Fieldwise`` and event consumers can drop Fieldwise's own writes
   (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_calloptions.htm);
4. on 401 INVALID_SESSION_ID refreshes once (under the tenant's refresh lock, adopting a token
   another worker already refreshed) and retries the call once;
5. maps failures through ``errors.py``.

The org's allocation is remembered per process (:data:`_allocations`). Until a process has seen one
answer from an org it cannot know the ceiling, so its first call to that org is counted but not
capped; from the first answer on, the ceiling holds for every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession
from simple_salesforce.metadata import SfdcMetadataApi
from zeep.exceptions import Fault
from zeep.transports import Transport

from connectors.base import (
    ConnectorContext,
    ConnectorError,
    InstallPlan,
    Page,
    ReauthRequired,
    RetriableError,
    WriteResult,
)
from connectors.salesforce import auth, errors
from connectors.salesforce.mappers import to_salesforce_values
from connectors.salesforce.provision import Provisioner
from connectors.salesforce.streams import STREAMS, Opportunity, SalesforceStream
from core import http as core_http
from core.config import Config
from core.locks import named_lock
from core.ratelimit import Budget, BudgetExhausted, Window
from core.tenants import Tenant, Tokens
from manifests.loader import load_manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_NAME = "Fieldwise"
CALL_OPTIONS = f"client={CLIENT_NAME}"
"""The ``Sforce-Call-Options`` value on every request; Salesforce copies it into changeOrigin."""
REFRESH_AHEAD_S = 300.0
"""Refresh this long before the access token's assumed expiry."""
WRITE_BATCH = 200
"""Records per sObject Collections update, Salesforce's maximum per request."""
DAY_S = 86_400.0
"""Salesforce's daily allocation is a rolling 24 hours."""
UNKNOWN_ALLOCATION = 10**12
"""The ceiling used for the one call a process makes before it has seen the org's allocation."""
METADATA_TIMEOUT_S = 120
"""Metadata calls can take a while on large orgs (createMetadata compiles the object)."""
KEY_PREFIXES: Mapping[str, str] = {
    "00Q": "Lead",
    "003": "Contact",
    "001": "Account",
    "006": "Opportunity",
    "00T": "Task",
    "00U": "Event",
    "002": "Note",
    "005": "User",
}
"""Standard objects' id key prefixes, to route ids of an entity that spans several objects."""

_allocations: dict[str, int] = {}
"""Org id -> its DailyApiRequests maximum, as the last ``Sforce-Limit-Info`` in this process said."""
_BUDGET_NAME = "salesforce:{tenant_id}"


def daily_budget(tenant_id: str, org_id: str, share: float) -> tuple[str, int | None, int | None]:
    """Fieldwise's share of one org's daily API allocation, for reading how much of it is used.

    Returns:
        The shared counter's key of the rolling 24-hour window, the calls Fieldwise may make in
        it, and the org's allocation; both None until this process has seen the allocation.
    """
    allocation = _allocations.get(org_id)
    allowed = max(1, int(allocation * share)) if allocation else None
    return f"{_BUDGET_NAME.format(tenant_id=tenant_id)}:daily", allowed, allocation


def http_session(config: Config, *, soap: bool = False) -> requests.Session:
    """The session every Salesforce call of a connector uses.

    It is ``core.http.session`` (the one retry layer, trusting ``config.ca_bundle``) with
    ``Sforce-Call-Options: client=Fieldwise`` as a session header, so REST calls, SFType calls and
    the Metadata API's zeep transport all carry it.

    Args:
        config: supplies the CA bundle.
        soap: for the Metadata API: a SOAP fault is always HTTP 500 (SOAP 1.1 section 6.2) and
            replaying it gives the same fault, so 500 is left out of the retried statuses there.
    """
    retry = core_http.retry_policy()
    if soap:
        retry = retry.new(status_forcelist=core_http.RETRY_STATUSES - {500})
    http = core_http.session(retry, ca_bundle=config.ca_bundle)
    http.headers["Sforce-Call-Options"] = CALL_OPTIONS
    return http


class MetadataApi(SfdcMetadataApi):
    """simple-salesforce's Metadata API client (``sf.mdapi``) on Fieldwise's own session.

    ``SfdcMetadataApi`` hands its ``session`` argument to nobody: zeep builds its own
    ``requests.Session``, so neither the retry policy, the CA bundle nor the call options would
    apply. The zeep client's transport is replaced with one on the connector's session after the
    bundled WSDL has been loaded from disk.
    """

    def __init__(self, http: requests.Session, sf: Salesforce) -> None:
        super().__init__(
            session=http,
            session_id=sf.session_id,
            instance=sf.sf_instance,
            metadata_url=sf.metadata_url,
            headers={},
            api_version=sf.sf_version,
        )
        self._client.transport = Transport(session=http, operation_timeout=METADATA_TIMEOUT_S)

    def use_session(self, session_id: str) -> None:
        """Send ``session_id`` in the SessionHeader from now on (after a token refresh)."""
        self._session_id = session_id
        self._session_header = self._client.get_element("ns0:SessionHeader")(sessionId=session_id)


class SalesforceConnector:
    """One Salesforce org, read and written through canonical records and manifest field names.

    Args:
        tenant: the installed org.
        context: configuration, tenant registry and the shared request-budget counter.
    """

    crm = "salesforce"

    def __init__(self, tenant: Tenant, context: ConnectorContext) -> None:
        self.tenant = tenant
        self.tenant_id = tenant.tenant_id
        self.context = context
        self.config = context.config
        self.manifest = load_manifest("salesforce")
        self._http = http_session(self.config)
        self._http.hooks["response"].append(self._note_response)
        self._soap_http = http_session(self.config, soap=True)
        self._tokens: Tokens = context.registry.tokens(tenant.tenant_id)
        self._sf: Salesforce | None = None
        self._mdapi: MetadataApi | None = None
        self._describes: dict[str, dict[str, Any]] = {}
        self._retry_after: float | None = None
        self._lock = threading.RLock()
        self._owned = frozenset(
            name for obj in self.manifest.objects for name in self.manifest.owned_field_names(obj)
        )
        excluded: Mapping[str, Sequence[str]] = tenant.settings.get("excluded_fields") or {}
        self.streams: dict[str, SalesforceStream] = {
            name: STREAMS[name](self, self.tenant_id, excluded.get(name, ()))
            for name in self.manifest.objects
        }

    # ----------------------------------------------------------------------------------------------
    # Calls

    def _note_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Keep the last ``Retry-After``: simple-salesforce's exceptions drop the headers."""
        value = response.headers.get("Retry-After")
        self._retry_after = float(value) if value and value.isdigit() else None

    def _client(self) -> Salesforce:
        with self._lock:
            if self._sf is None:
                if not self.tenant.instance_url:
                    raise ReauthRequired("this Salesforce tenant has no instance URL; reinstall it")
                self._sf = Salesforce(
                    instance_url=self.tenant.instance_url,
                    session_id=self._tokens.access_token,
                    session=self._http,
                    version=self.config.salesforce_api_version,
                )
            return self._sf

    def _metadata_api(self) -> MetadataApi:
        with self._lock:
            if self._mdapi is None:
                self._mdapi = MetadataApi(self._soap_http, self._client())
            return self._mdapi

    def _learn(self, usage: Mapping[str, Any]) -> None:
        current = usage.get("api-usage")
        total = getattr(current, "total", None)
        if isinstance(total, int) and total > 0:
            _allocations[self.tenant.external_id] = total

    def _spend(self) -> None:
        """Take one call from Fieldwise's share of the org's daily allocation, or defer."""
        share = self.config.salesforce_api_share
        allocation = _allocations.get(self.tenant.external_id)
        limit = max(1, int(allocation * share)) if allocation else UNKNOWN_ALLOCATION
        budget = Budget(
            self.context.counter,
            _BUDGET_NAME.format(tenant_id=self.tenant_id),
            {"daily": Window(limit=limit, seconds=DAY_S)},
        )
        try:
            budget.acquire(1, max_wait_s=0)
        except BudgetExhausted as exc:
            raise RetriableError(
                f"Fieldwise has used its share ({share:.0%}, {limit} calls) of this Salesforce "
                f"org's daily API allocation of {allocation}; it resumes in "
                f"{exc.retry_after_s / 60:.0f} minutes, as the rolling 24-hour window frees up.",
                retry_after_s=exc.retry_after_s,
                crm_code="FIELDWISE_API_SHARE",
            ) from exc

    def _call(self, fn: Callable[[Salesforce], T]) -> T:
        """Run one REST call with refresh, budget and error mapping (see the module docstring)."""
        self._refresh_if_due()
        for attempt in range(2):
            self._spend()
            sf = self._client()
            try:
                return fn(sf)
            except SalesforceExpiredSession as exc:
                if attempt == 0:
                    self._refresh(stale=sf.session_id)
                    continue
                raise errors.from_exception(exc) from exc
            except SalesforceError as exc:
                raise errors.from_exception(
                    exc, owned_fields=self._owned, retry_after_s=self._retry_after
                ) from exc
            except requests.RequestException as exc:
                raise RetriableError(f"Salesforce could not be reached: {exc}") from exc
            finally:
                self._learn(sf.api_usage)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def metadata(self, what: str, op: Callable[[MetadataApi], T]) -> T:
        """Run one Metadata API call with refresh, budget and error mapping.

        Args:
            what: names the call in error messages, e.g. ``create CustomField``.
            op: the call, given the metadata client.
        """
        self._refresh_if_due()
        for attempt in range(2):
            self._spend()
            api = self._metadata_api()
            try:
                return op(api)
            except Fault as exc:
                error = errors.from_soap_fault(exc.code, str(exc.message))
                if isinstance(error, errors.SessionExpired) and attempt == 0:
                    self._refresh(stale=self._tokens.access_token)
                    continue
                raise error from exc
            except requests.RequestException as exc:
                raise RetriableError(f"Salesforce could not be reached: {exc}") from exc
            except Exception as exc:
                # simple-salesforce folds failed SaveResults into a bare Exception; anything more
                # specific is a bug and goes up as it is.
                if type(exc) is not Exception:
                    raise
                raise errors.from_metadata_failure(str(exc), what) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    # ----------------------------------------------------------------------------------------------
    # Tokens

    def _refresh_if_due(self) -> None:
        if self._tokens.expires_within(REFRESH_AHEAD_S):
            self._refresh(stale=self._tokens.access_token)

    def _refresh(self, stale: str) -> None:
        """Replace the access token ``stale``, once across every worker of this tenant.

        Under the tenant's refresh lock the stored tokens are read again: when another worker
        already replaced ``stale``, its tokens are adopted instead of spending the refresh token
        a second time (under rotation that second spend would fail).

        Raises:
            ReauthRequired: Salesforce refused the refresh token; the tenant is marked
                ``needs_reauth`` with the reason first.
        """
        registry = self.context.registry
        with named_lock(self.config.redis_url, f"refresh:{self.tenant_id}"):
            stored = registry.tokens(self.tenant_id)
            if stored.access_token != stale and not stored.expires_within(REFRESH_AHEAD_S):
                self._adopt(stored)
                return
            try:
                fresh = auth.refresh(self.config, self.tenant, stored)
            except ReauthRequired as exc:
                registry.set_status(self.tenant_id, "needs_reauth", exc.message)
                raise
            registry.save_tokens(self.tenant_id, fresh)
            self._adopt(fresh)
            log.info("refreshed the Salesforce access token of %s", self.tenant_id)

    def _adopt(self, tokens: Tokens) -> None:
        with self._lock:
            self._tokens = tokens
            self._sf = None
            if self._mdapi is not None:
                self._mdapi.use_session(tokens.access_token)

    # ----------------------------------------------------------------------------------------------
    # What streams call (streams.SalesforceApi)

    def _rest(self, path: str, **kwargs: Any) -> Any:
        """``sf.restful(path, **kwargs)`` through :meth:`_call`."""

        def call(sf: Salesforce) -> Any:
            return sf.restful(path, **kwargs)

        return self._call(call)

    def query(self, soql: str) -> dict[str, Any]:
        """Run one SOQL query; its first page (streams page by keyset, not by cursor)."""

        def call(sf: Salesforce) -> dict[str, Any]:
            result: dict[str, Any] = sf.query(soql)
            return result

        return self._call(call)

    def describe(self, object_name: str) -> dict[str, Any]:
        """The object's describe, fetched once per connector."""
        if object_name not in self._describes:
            self._describes[object_name] = self._rest(f"sobjects/{object_name}/describe")
        return self._describes[object_name]

    def get_deleted(self, object_name: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The getDeleted resource for the window (``sobjects/<X>/deleted/?start=&end=``).

        This is what ``sf.<X>.deleted(start, end)`` requests; it goes through ``restful`` so that
        the usage header lands in ``sf.api_usage`` (an SFType keeps its own copy).
        """

        def iso(moment: datetime) -> str:
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).isoformat(timespec="seconds")

        result: dict[str, Any] = self._rest(
            f"sobjects/{object_name}/deleted/", params={"start": iso(start), "end": iso(end)}
        )
        return result

    # ----------------------------------------------------------------------------------------------
    # Connector protocol

    def _objects(self, entity: str) -> list[str]:
        objects = self.manifest.objects_for_entity(entity)
        if not objects:
            raise KeyError(f"the Salesforce manifest maps no object to {entity!r}")
        return objects

    def _by_object(self, entity: str, crm_ids: Sequence[str]) -> dict[str, list[str]]:
        objects = self._objects(entity)
        if len(objects) == 1:
            return {objects[0]: list(crm_ids)}
        grouped: dict[str, list[str]] = {name: [] for name in objects}
        for crm_id in crm_ids:
            name = KEY_PREFIXES.get(crm_id[:3])
            if name not in grouped:
                raise ValueError(f"{crm_id!r} is not the id of a {' or '.join(objects)} record")
            grouped[name].append(crm_id)
        return grouped

    def fetch(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical records by id, 200 ids per query; ids Salesforce does not have are left out."""
        out: list[dict[str, Any]] = []
        for object_name, ids in self._by_object(entity, crm_ids).items():
            if ids:
                out.extend(self.streams[object_name].fetch(ids))
        return out

    def field_history(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical field-history rows (stage, close date, amount) of deals; [] for others."""
        if entity != "opportunity" or not crm_ids:
            return []
        stream = self.streams["Opportunity"]
        assert isinstance(stream, Opportunity)
        return stream.field_history(crm_ids)

    def changed(
        self, entity: str, since: datetime | None, checkpoint: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Pages of records changed at or after ``since``, oldest first, object by object.

        The checkpoint is ``{"object", "stamp", "id"}``: the object being read and the last
        record passed. An entity spanning several objects (Task and Event for activities) is read
        one object after the other; only the last page of the last object is ``done``.
        """
        objects = self._objects(entity)
        start = objects.index(checkpoint["object"]) if checkpoint and "object" in checkpoint else 0
        for index in range(start, len(objects)):
            name = objects[index]
            position = checkpoint if checkpoint and index == start else None
            last = index == len(objects) - 1
            for page in self.streams[name].changed(since, position):
                if page.done and not last:
                    yield Page(page.records, {"object": objects[index + 1]}, done=False)
                else:
                    yield Page(page.records, {"object": name, **page.checkpoint}, page.done)

    def deleted(self, entity: str, since: datetime, until: datetime) -> list[str]:
        """Ids of the entity's records deleted in the window (the last 15 days at most)."""
        out: list[str] = []
        for name in self._objects(entity):
            out.extend(self.streams[name].deleted(since, until))
        return out

    def write(self, entity: str, updates: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        """Write Fieldwise's field values, 200 records per sObject Collections PATCH.

        ``allOrNone`` is false, so a record the org refuses (validation rule, restricted
        picklist, deleted) fails alone and is reported in its WriteResult with Salesforce's
        message; the others are saved.

        Returns:
            One result per record, in the order of ``updates``.

        Raises:
            KeyError: a value for a field the manifest does not give Fieldwise on that object.
            ValueError: an id that is not of the entity's objects; an object Fieldwise writes
                nothing to.
            FatalError: the org refused the whole request (permissions, missing install).
            RetriableError: the first batch could not be sent (budget, limits, outage); once a
                batch has been saved, later records that could not be sent are reported as
                retriable results instead, so the saved ones are not written twice.
        """
        batches: list[list[dict[str, Any]]] = []
        for object_name, ids in self._by_object(entity, list(updates)).items():
            specs = {spec.api_name: spec for spec in self.manifest.writable_fields(object_name)}
            if ids and not specs:
                raise ValueError(f"Fieldwise writes no fields to {object_name}")
            records = [
                {
                    "attributes": {"type": object_name},
                    "Id": crm_id,
                    **to_salesforce_values(updates[crm_id], specs),
                }
                for crm_id in ids
            ]
            batches += [records[i : i + WRITE_BATCH] for i in range(0, len(records), WRITE_BATCH)]
        results: dict[str, WriteResult] = {}
        for batch in batches:
            try:
                answer = self._rest(
                    "composite/sobjects",
                    method="PATCH",
                    json={"allOrNone": False, "records": batch},
                )
            except RetriableError as exc:
                if not results:
                    raise
                for record in batch:
                    if record["Id"] not in results:
                        results[record["Id"]] = WriteResult(
                            record["Id"], False, exc.message, "retriable"
                        )
                continue
            for record, outcome in zip(batch, answer or [], strict=False):
                results[record["Id"]] = self._result(record["Id"], outcome)
        return [results[crm_id] for crm_id in updates if crm_id in results]

    def _result(self, crm_id: str, outcome: Mapping[str, Any]) -> WriteResult:
        if outcome.get("success"):
            return WriteResult(crm_id, True)
        error: ConnectorError = errors.from_item(
            list(outcome.get("errors") or []), owned_fields=self._owned
        )
        kind: Literal["skippable", "retriable", "fatal"] = (
            "retriable"
            if isinstance(error, RetriableError)
            else "skippable"
            if isinstance(error, errors.SkippableError)
            else "fatal"
        )
        return WriteResult(crm_id, False, error.message, kind)

    def plan_install(self) -> InstallPlan:
        """What :meth:`install` would do now, changing nothing."""
        return Provisioner(self).plan()

    def install(self) -> InstallPlan:
        """Create or complete the manifest's fields, permission sets and outbound messages."""
        return Provisioner(self).install()

    def uninstall(self, keep_data_fields: bool = False) -> InstallPlan:
        """Remove what Fieldwise created; with ``keep_data_fields`` the fields (and data) stay."""
        return Provisioner(self).uninstall(keep_data_fields)
