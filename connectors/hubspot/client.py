"""The HubSpot connector: one portal, seen through canonical records and manifest property names.

:class:`HubSpotApi` is the only way a HubSpot call is made. Around each call it

1. refreshes the access token ahead of expiry (under a lock shared by every process, so one
   refresh token is spent once) and persists the new tokens;
2. takes one unit from the portal's request budget (:mod:`core.ratelimit`): HubSpot's rolling
   ten-second window per app per portal and the daily cap, or, for search, HubSpot's separate
   per-second search limit; each with a safety margin, so every worker of every process together
   stays under the limit and 429s stay rare;
3. lets hubspot-api-client make the request with the shared urllib3 retry policy
   (:func:`core.http.retry_policy`: 429/5xx with ``Retry-After``), the one HTTP retry layer;
4. on a 401 refreshes once and repeats the call; every other failure goes through the error table
   (:mod:`connectors.hubspot.errors`).

Answers are read as HubSpot's JSON (``_preload_content=False``) rather than the library's generated
models: the mappers document and consume the wire shape, and 207 Multi-Status bodies keep their
per-input errors.

:class:`HubSpotConnector` implements :class:`connectors.base.Connector` on top of it: reads through
:mod:`connectors.hubspot.streams`, write-back in batches of 100, provisioning through
:mod:`connectors.hubspot.provision`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from hubspot import HubSpot
from hubspot.crm.objects import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectBatchInput
from hubspot.discovery.discovery_base import DiscoveryBase

from connectors.base import (
    ConnectorContext,
    ConnectorError,
    FatalError,
    InstallPlan,
    Page,
    ReauthRequired,
    RetriableError,
    SkippableError,
    WriteResult,
)
from connectors.hubspot import auth, errors, mappers, provision
from connectors.hubspot.streams import Deals, PropertyCatalog, SearchCursor, streams_for
from core.config import Config
from core.http import retry_policy
from core.locks import named_lock
from core.ratelimit import Budget, BudgetExhausted, Window
from core.tenants import Tenant, Tokens
from manifests.loader import Manifest, load_manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

REFRESH_AHEAD_S = 300.0
"""Refresh the access token when it has less than this many seconds left (HubSpot's live 30 minutes)."""
TEN_SECOND_LIMIT = 110
"""HubSpot's requests per rolling ten seconds for a public OAuth app, per installed account
(Fieldwise installs as one; crm_apis.md section 2.4). A portal with a higher limit, such as the
190 of a private app on Professional or Enterprise, sets the tenant's
``settings["hubspot_ten_second_limit"]``, which overrides it."""
DAILY_LIMIT = 1_000_000
"""HubSpot's requests per day per portal (Enterprise); ``settings["hubspot_daily_limit"]`` overrides."""
SEARCH_PER_SECOND = 5
"""HubSpot's CRM search requests per second per portal; ``settings["hubspot_search_per_second"]``."""
SAFETY_MARGIN = 0.9
"""Share of each HubSpot limit Fieldwise lets itself use, leaving room for the portal's other
integrations."""
WINDOW_SLACK_S = 1.0
"""Our ten-second window is this much longer than HubSpot's. A unit is taken before the request
is sent and HubSpot counts the request when it arrives, later; several workers sending together
make the gap add up. Counting each call for a little longer than HubSpot does keeps a call that
arrives late inside the window we reserved it in."""
SEARCH_WINDOW_SLACK_S = 0.25
"""The same slack for the one-second search window (kept short: it costs search throughput)."""
BUDGET_WAIT_S = 30.0
"""Longest wait for room in a budget inside one call; longer, and the job is deferred."""
WRITE_BATCH_SIZE = 100
"""Inputs per batch update (HubSpot's limit)."""
REQUEST_TIMEOUT_S = (5.0, 60.0)
"""Connect and read timeouts of one HubSpot request, in seconds."""


class HubSpotApi:
    """One portal's HubSpot API, with tokens, budgets, retries and the error table applied.

    Args:
        tenant: the installed portal.
        context: shared services (configuration, tenant registry, request counter).
    """

    def __init__(self, tenant: Tenant, context: ConnectorContext) -> None:
        self.tenant = tenant
        self.tenant_id = tenant.tenant_id
        self._context = context
        self._config = context.config
        self._tokens: Tokens = context.registry.tokens(tenant.tenant_id)
        self._client = self._oauth_client(self._tokens.access_token)
        self._developer: HubSpot | None = None
        self._refresh_guard = threading.Lock()
        settings = tenant.settings
        ten = int(settings.get("hubspot_ten_second_limit", TEN_SECOND_LIMIT))
        search = int(settings.get("hubspot_search_per_second", SEARCH_PER_SECOND))
        app = _budget_app(tenant.integration_user_id, context.config)
        day = Window(_margin(_daily_limit(settings)), 86_400.0)
        # HubSpot counts the ten-second window and the day per app per portal, and search per
        # portal; searches count against the day too. The budgets share the "day" window's key.
        name = f"hubspot:{tenant.external_id}"
        self._budget = Budget(
            context.counter,
            name,
            {f"{app}:10s": ten_second_window(ten), f"{app}:day": day},
        )
        self._search_budget = Budget(
            context.counter,
            name,
            {"search:1s": search_window(search), f"{app}:day": day},
        )
        # The developer API key's calls (webhook settings) count against the developer account.
        self._developer_budget = Budget(
            context.counter,
            f"hubspot:app:{app}",
            {"10s": ten_second_window(ten)},
        )

    # -- calls -------------------------------------------------------------------------------

    def call(self, operation: str, request: Callable[[HubSpot], T], *, search: bool = False) -> T:
        """Make one HubSpot call with the portal's OAuth token.

        Args:
            operation: what the call does, in words, for error messages.
            request: makes the call on the library client it is given (the client changes when
                the token is refreshed, so it must not be captured ahead).
            search: the call is a CRM search (its own per-second budget).

        Raises:
            RetriableError: rate limited, HubSpot failed or unreachable, or no budget in time.
            ReauthRequired: the tokens were refused; the tenant is marked ``needs_reauth``.
            FatalError: missing scope or another failure a person must fix.
            SkippableError: the call failed for the one record it concerned (404, 400, 409).
        """
        self._refresh_if_expiring()
        retried = False
        while True:
            self._acquire(self._search_budget if search else self._budget)
            client, token = self._client, self._tokens.access_token
            try:
                return request(client)
            except errors.API_ERRORS as exc:
                if not retried and errors.needs_refresh(exc):
                    retried = True
                    self._refresh(rejected=token)
                    continue
                error = errors.from_exception(exc, operation)
                if isinstance(error, ReauthRequired):
                    self._needs_reauth(error)
                raise error from exc

    def call_json(
        self, operation: str, request: Callable[[HubSpot], Any], *, search: bool = False
    ) -> dict[str, Any]:
        """:meth:`call` for a request made with ``_preload_content=False``; returns its JSON."""
        return _json(self.call(operation, request, search=search))

    def developer_call_json(
        self, operation: str, request: Callable[[HubSpot], Any]
    ) -> dict[str, Any]:
        """A call authenticated with the app's developer API key (the webhooks API), as JSON.

        Raises:
            FatalError: no developer API key is configured, or HubSpot refused it.
            RetriableError: as :meth:`call`.
        """
        client = self._developer_client()
        self._acquire(self._developer_budget)
        try:
            response = request(client)
        except errors.API_ERRORS as exc:
            raise errors.from_exception(exc, operation, credential="developer_key") from exc
        return _json(response)

    @property
    def app_id(self) -> str:
        """The app's id (the tenant's integration user, else the configured one).

        Raises:
            FatalError: neither is known.
        """
        app = self.tenant.integration_user_id or self._config.hubspot_app_id
        if not app:
            raise FatalError(
                "The HubSpot app id is unknown: set FIELDWISE_HUBSPOT_APP_ID to the app's id."
            )
        return str(app)

    # -- tokens ------------------------------------------------------------------------------

    def _refresh_if_expiring(self) -> None:
        if self._tokens.expires_within(REFRESH_AHEAD_S):
            self._refresh(rejected=None)

    def _refresh(self, rejected: str | None) -> None:
        """Renew the access token, or adopt one another process renewed meanwhile.

        Args:
            rejected: the access token HubSpot just refused (None: refreshing ahead of expiry).
        """
        config, registry = self._config, self._context.registry
        with self._refresh_guard:
            try:
                with named_lock(config.redis_url, f"refresh:{self.tenant_id}"):
                    stored = registry.tokens(self.tenant_id)
                    taken_elsewhere = stored.access_token not in (
                        rejected,
                        self._tokens.access_token,
                    )
                    if taken_elsewhere and not stored.expires_within(REFRESH_AHEAD_S):
                        self._adopt(stored)
                        return
                    fresh = auth.refresh(config, self.tenant, stored)
                    registry.save_tokens(self.tenant_id, fresh)
                    self._adopt(fresh)
            except ReauthRequired as error:
                self._needs_reauth(error)
                raise
            except TimeoutError as exc:
                raise RetriableError(
                    f"Another worker has held the token refresh lock of {self.tenant_id} too long",
                    retry_after_s=5.0,
                ) from exc

    def _adopt(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._client = self._oauth_client(tokens.access_token)

    def _needs_reauth(self, error: ConnectorError) -> None:
        log.warning("HubSpot tenant %s needs to be installed again: %s", self.tenant_id, error)
        self._context.registry.set_status(self.tenant_id, "needs_reauth", error.message)

    # -- plumbing ----------------------------------------------------------------------------

    def _acquire(self, budget: Budget) -> None:
        try:
            budget.acquire(1, max_wait_s=BUDGET_WAIT_S)
        except BudgetExhausted as exc:
            raise RetriableError(
                f"HubSpot request budget for portal {self.tenant.external_id} is spent "
                f"({exc.name}); the work waits {exc.retry_after_s:.0f} s.",
                retry_after_s=exc.retry_after_s,
            ) from exc

    def _oauth_client(self, access_token: str) -> HubSpot:
        return HubSpot(
            access_token=access_token,
            host=self._config.hubspot_api_url,
            retry=retry_policy(),
            api_factory=_ApiCache(),
            ssl_ca_cert=self._config.ca_bundle,
        )

    def _developer_client(self) -> HubSpot:
        if self._developer is None:
            key = self._config.hubspot_developer_api_key
            if not key:
                raise FatalError(
                    "HubSpot webhook subscriptions are managed with the app's developer API key: "
                    "set FIELDWISE_HUBSPOT_DEVELOPER_API_KEY."
                )
            self._developer = HubSpot(
                api_key=key.reveal(),
                host=self._config.hubspot_api_url,
                retry=retry_policy(),
                api_factory=_ApiCache(),
                ssl_ca_cert=self._config.ca_bundle,
            )
        return self._developer


class _ApiCache:
    """Builds each library API object once per client, so its connection pool is reused.

    hubspot-api-client builds a new ``ApiClient`` (and urllib3 pool) on every attribute access
    such as ``client.crm.objects.batch_api``; the default factory does the building.
    """

    def __init__(self) -> None:
        self._apis: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, package: Any, api_name: str, config: dict[str, Any]) -> Any:
        key = (package.__name__, api_name)
        with self._lock:
            if key not in self._apis:
                api = DiscoveryBase._default_api_factory(package, api_name, config)
                self._apis[key] = api
            return self._apis[key]


class HubSpotConnector:
    """One HubSpot portal as a :class:`connectors.base.Connector`.

    Args:
        tenant: the installed portal.
        context: shared services (configuration, tenant registry, request counter).
    """

    crm = "hubspot"

    def __init__(self, tenant: Tenant, context: ConnectorContext) -> None:
        self.tenant = tenant
        self.tenant_id = tenant.tenant_id
        self.context = context
        self.manifest: Manifest = load_manifest("hubspot")
        self.api = HubSpotApi(tenant, context)
        self.catalog = PropertyCatalog(self.api, self.manifest)

    # -- reads -------------------------------------------------------------------------------

    def fetch(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by id: batch reads of 100; missing ids, and ids of another entity, are left out.

        ``entity`` is a canonical entity or a stream name: ``fetch("calls", ids)`` reads only
        calls, where ``fetch("activity", ids)`` tries each engagement type in turn for the ids not
        found yet. A HubSpot contact can be both a ``lead`` and a ``contact`` (see
        :mod:`connectors.hubspot.mappers`).
        """
        out: list[dict[str, Any]] = []
        pending = [str(i) for i in crm_ids]
        for stream in self._streams(entity):
            if not pending:
                break
            records = stream.fetch(pending)
            out.extend(records)
            found = {r["crm_id"] for r in records}
            if stream.entity == "activity":
                pending = [i for i in pending if i not in found]
        return out

    def field_history(self, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Canonical field-history rows (stage, close date, amount) of deals; [] for others."""
        if entity != "opportunity" or not crm_ids:
            return []
        return Deals(self.api, self.catalog, self.manifest).field_history(crm_ids)

    def changed(
        self, entity: str, since: datetime | None, checkpoint: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """Pages of records modified at or after ``since``, oldest first, each with its checkpoint.

        The checkpoint names the stream and its cursor; passing it back resumes after the last
        page it came with (``since`` is then ignored). Streams of one entity (the four activity
        types) are read one after the other.
        """
        streams = self._streams(entity)
        names = [s.name for s in streams]
        start, cursor = 0, None
        if checkpoint:
            if checkpoint.get("entity") != entity or checkpoint.get("stream") not in names:
                raise ValueError(f"checkpoint {dict(checkpoint)!r} is not one of {entity!r}")
            start = names.index(str(checkpoint["stream"]))
            cursor = SearchCursor.from_json(checkpoint["cursor"])
        for index in range(start, len(streams)):
            stream = streams[index]
            last = index == len(streams) - 1
            for page in stream.changed(since, cursor if index == start else None):
                done = last and not page.more
                position = {
                    "entity": entity,
                    "stream": stream.name,
                    "cursor": page.cursor.to_json(),
                }
                if not page.more and not last:
                    # This stream is finished: resuming starts the next one from ``since``.
                    position = {
                        "entity": entity,
                        "stream": streams[index + 1].name,
                        "cursor": SearchCursor.starting(since).to_json(),
                    }
                yield Page(page.records, {"v": 1, **position}, done=done)

    def deleted(self, entity: str, since: datetime, until: datetime) -> list[str]:
        """Ids of records deleted in the window, from HubSpot's recycle bin (see streams)."""
        ids: list[str] = []
        for stream in self._streams(entity):
            ids.extend(stream.deleted(since, until))
        return list(dict.fromkeys(ids))

    # -- write-back --------------------------------------------------------------------------

    def write(self, entity: str, updates: Mapping[str, Mapping[str, Any]]) -> list[WriteResult]:
        """Write Fieldwise's properties to records, 100 per batch update.

        Values are keyed by the manifest's API names and formatted for each property's HubSpot
        type. The app's own token makes the write, so HubSpot reports its events with
        ``changeSource: INTEGRATION`` and ``sourceId`` = the app id: how webhooks drop echoes.
        One record's bad value never fails the others: HubSpot rejects a batch with any invalid
        input as a whole (one 400), so such a batch is split until the bad record stands alone.

        Raises:
            ValueError: a property the manifest does not let Fieldwise write on this object.
            RetriableError, FatalError: a whole batch could not be written (rate limit, outage,
                missing scope, refused tokens); batches before it were written.
        """
        object_type = self._writable_object(entity)
        specs = {spec.api_name: spec for spec in self.manifest.writable_fields(object_type)}
        unknown = sorted({name for values in updates.values() for name in values} - set(specs))
        if unknown:
            raise ValueError(
                f"Fieldwise does not own {', '.join(unknown)} on HubSpot {object_type}; it may "
                f"write only {', '.join(sorted(specs))}"
            )
        types = {name: spec.type for name, spec in specs.items()}
        results: dict[str, WriteResult] = {}
        inputs: list[tuple[str, dict[str, str]]] = []
        for crm_id, values in updates.items():
            try:
                inputs.append((str(crm_id), mappers.to_hubspot_properties(values, types)))
            except (TypeError, ValueError) as exc:
                results[str(crm_id)] = WriteResult(str(crm_id), False, str(exc), "skippable")
        for start in range(0, len(inputs), WRITE_BATCH_SIZE):
            for result in self._write_batch(object_type, inputs[start : start + WRITE_BATCH_SIZE]):
                results[result.crm_id] = result
        return [results[str(crm_id)] for crm_id in updates]

    def _write_batch(
        self, object_type: str, inputs: list[tuple[str, dict[str, str]]]
    ) -> list[WriteResult]:
        body = BatchInputSimplePublicObjectBatchInput(
            inputs=[SimplePublicObjectBatchInput(id=i, properties=p) for i, p in inputs]
        )
        try:
            data = self.api.call_json(
                f"batch update of {object_type}",
                lambda hs: hs.crm.objects.batch_api.update(
                    object_type, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                ),
            )
        except SkippableError as exc:
            if len(inputs) == 1:
                failure = errors.failure_of(exc.__cause__) if exc.__cause__ else None
                message = failure.message if failure else exc.message
                return [WriteResult(inputs[0][0], False, message, "skippable")]
            middle = len(inputs) // 2
            return self._write_batch(object_type, inputs[:middle]) + self._write_batch(
                object_type, inputs[middle:]
            )
        return _write_results([i for i, _ in inputs], data)

    # -- provisioning ------------------------------------------------------------------------

    def plan_install(self) -> InstallPlan:
        """What :meth:`install` would create, change or keep; changes nothing."""
        return self._provisioner().plan()

    def install(self) -> InstallPlan:
        """Create or complete everything in the manifest; re-running it changes nothing."""
        plan = self._provisioner().install()
        self.catalog.forget()
        return plan

    def uninstall(self, keep_data_fields: bool = False) -> InstallPlan:
        """Remove what Fieldwise created (properties unless kept, group, webhooks), only that.

        The app's webhook subscriptions serve every portal, so they stay while another HubSpot
        portal still has Fieldwise installed.
        """
        plan = self._provisioner().uninstall(keep_data_fields)
        self.catalog.forget()
        return plan

    def _provisioner(self) -> provision.Provisioner:
        def other_installs() -> bool:
            return any(
                t.crm == "hubspot" and t.tenant_id != self.tenant_id and t.status != "uninstalled"
                for t in self.context.registry.all()
            )

        return provision.Provisioner(self.api, self.manifest, self.context.config, other_installs)

    # -- helpers -----------------------------------------------------------------------------

    def _streams(self, entity: str) -> list[Any]:
        return [cls(self.api, self.catalog, self.manifest) for cls in streams_for(entity)]

    def _writable_object(self, entity: str) -> str:
        """The HubSpot object written for an entity (``lead`` and ``contact``: contacts)."""
        if entity in self.manifest.object_specs:
            return entity
        objects = dict.fromkeys(cls.object_type for cls in streams_for(entity))
        owned = [
            o for o in objects if o in self.manifest.object_specs and self.manifest.owned_fields(o)
        ]
        if len(owned) != 1:
            raise ValueError(f"Fieldwise writes no HubSpot properties for {entity!r}")
        return owned[0]


def _write_results(ids: list[str], data: Mapping[str, Any]) -> list[WriteResult]:
    """Per-input results of a batch update answer (200, or 207 with ``errors``)."""
    results: dict[str, WriteResult] = {}
    for item in data.get("results", []):
        results[str(item["id"])] = WriteResult(str(item["id"]), True)
    for error in data.get("errors", []):
        category = error.get("category")
        kind = errors.record_error_kind(errors.status_for_category(category), category)
        context = error.get("context") or {}
        for crm_id in context.get("ids") or context.get("id") or []:
            results[str(crm_id)] = WriteResult(str(crm_id), False, str(error.get("message")), kind)
    return [
        results.get(
            crm_id,
            WriteResult(crm_id, False, "HubSpot did not confirm this record's update", "retriable"),
        )
        for crm_id in ids
    ]


def _json(response: Any) -> dict[str, Any]:
    """The JSON object of a urllib3 response read with ``_preload_content=False``."""
    try:
        data = response.data
    finally:
        response.release_conn()
    if not data:
        return {}
    value = json.loads(data)
    return value if isinstance(value, dict) else {"results": value}


def daily_budget(
    config: Config, portal_id: str, integration_user_id: str | None, settings: Mapping[str, Any]
) -> tuple[str, int, int]:
    """Fieldwise's daily HubSpot budget in one portal, for reading how much of it is used.

    Returns:
        The shared counter's key of the app's day window in that portal, the calls per day
        Fieldwise allows itself, and HubSpot's daily limit it is derived from.
    """
    daily = _daily_limit(settings)
    key = f"hubspot:{portal_id}:{_budget_app(integration_user_id, config)}:day"
    return key, _margin(daily), daily


def _daily_limit(settings: Mapping[str, Any]) -> int:
    return int(settings.get("hubspot_daily_limit", DAILY_LIMIT))


def _budget_app(integration_user_id: str | None, config: Config) -> str:
    # HubSpot counts per app per portal; the tenant's app id, else the configured one.
    return integration_user_id or config.hubspot_app_id or "app"


def ten_second_window(limit: int) -> Window:
    """The budget window for a ten-second limit: :data:`SAFETY_MARGIN` of it, over 10 s plus slack."""
    return Window(_margin(limit), 10.0 + WINDOW_SLACK_S)


def search_window(limit: int) -> Window:
    """The budget window for a per-second search limit, as :func:`ten_second_window` is built."""
    return Window(_margin(limit), 1.0 + SEARCH_WINDOW_SLACK_S)


def _margin(limit: int) -> int:
    return max(1, int(limit * SAFETY_MARGIN))
