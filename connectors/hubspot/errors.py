"""HubSpot's failures, mapped in one table onto the error classes callers act on.

Every HubSpot answer that is not a success reaches :func:`from_exception` (a whole call failed) or
:func:`record_error_kind` (one input of a batch failed, inside a 207 Multi-Status). Both read the
same :data:`RULES`: the first rule whose status and code match decides the error class, whether the
client should refresh the access token and try once more, and the advice the user reads. HubSpot's
own message is always quoted, so an admin can search HubSpot's docs for it.

Error bodies come in three shapes (all handled by :func:`parse`):

* CRM APIs: ``{"status": "error", "message", "category", "errors": [...], "context": {...}}``
  (https://developers.hubspot.com/docs/api/error-handling);
* the rate limiter: ``{"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"|"DAILY"...}``;
* OAuth v1: ``{"status": "BAD_REFRESH_TOKEN", "message"}`` (newer endpoints: ``{"error": "invalid_grant"}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import hubspot.crm.associations.v4
import hubspot.crm.objects
import hubspot.crm.owners
import hubspot.crm.properties
import hubspot.oauth
import hubspot.webhooks
import urllib3

from connectors.base import (
    ConnectorError,
    FatalError,
    ReauthRequired,
    RetriableError,
    SkippableError,
)

Kind = Literal["retriable", "fatal", "reauth", "skippable"]
"""What the caller should do: try later, stop the tenant, reinstall, or skip the one record."""
Credential = Literal["oauth", "developer_key"]
"""How the failed call authenticated: the portal's OAuth token, or the app's developer API key
(HubSpot's webhooks settings and subscriptions API accepts only the latter)."""

REINSTALL = "An admin must install Fieldwise again at /install/hubspot."

TEN_SECOND_WAIT_S = 10.0
"""Wait after a ten-second-window 429 that came without ``Retry-After``: one whole window."""
SEARCH_WAIT_S = 1.0
"""Wait after a search 429 without ``Retry-After``: search is limited per second."""
SERVER_WAIT_S = 30.0
"""Wait after a 5xx or a connection failure that survived the HTTP retry layer."""

API_ERRORS: tuple[type[BaseException], ...] = (
    hubspot.crm.objects.ApiException,
    hubspot.crm.properties.ApiException,
    hubspot.crm.owners.ApiException,
    hubspot.crm.associations.v4.ApiException,
    hubspot.webhooks.ApiException,
    hubspot.oauth.ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)
"""What a hubspot-api-client call can raise for a failed answer or an unreachable HubSpot: each API
area of the library has its own ``ApiException``; connection failures surface from urllib3."""

_CLASSES: dict[Kind, type[ConnectorError]] = {
    "retriable": RetriableError,
    "fatal": FatalError,
    "reauth": ReauthRequired,
    "skippable": SkippableError,
}


@dataclass(frozen=True)
class Rule:
    """One row of the error table.

    Attributes:
        status: the HTTP status, or a ``(low, high)`` inclusive range of them.
        code: HubSpot's ``category``, ``policyName`` or OAuth ``status``/``error``; None matches any.
        kind: the error class the failure becomes.
        advice: what the user should do, appended to HubSpot's message.
        refresh_first: refresh the access token and repeat the call once before giving up.
        wait_s: ``retry_after_s`` when HubSpot sent no ``Retry-After`` (retriable rows only).
        credential: the row applies only to calls made with this credential; None: any.
    """

    status: int | tuple[int, int]
    code: str | None
    kind: Kind
    advice: str
    refresh_first: bool = False
    wait_s: float | None = None
    credential: Credential | None = None

    def matches(self, status: int, code: str | None, credential: Credential = "oauth") -> bool:
        """Whether this row applies to a failure of a call made with ``credential``."""
        if self.credential is not None and self.credential != credential:
            return False
        if isinstance(self.status, tuple):
            in_status = self.status[0] <= status <= self.status[1]
        else:
            in_status = status == self.status
        return in_status and (self.code is None or self.code == code)


RULES: tuple[Rule, ...] = (
    # The developer API key is the app's, not the portal's: refreshing OAuth tokens cannot help.
    Rule(
        401,
        None,
        "fatal",
        "HubSpot refused the developer API key; set FIELDWISE_HUBSPOT_DEVELOPER_API_KEY to the key "
        "of the developer account that owns the app.",
        credential="developer_key",
    ),
    # HubSpot says a 401 alone is "not a valid indicator that a new access token must be
    # retrieved" (https://developers.hubspot.com/docs/api/usage-details): the client refreshes
    # ahead of expiry, and on a 401 refreshes once and repeats the call; a second 401 is final.
    Rule(
        401,
        "EXPIRED_AUTHENTICATION",
        "reauth",
        f"The access token was refreshed and still refused. {REINSTALL}",
        refresh_first=True,
    ),
    Rule(
        401,
        "INVALID_AUTHENTICATION",
        "reauth",
        f"The access token was refreshed and still refused. {REINSTALL}",
        refresh_first=True,
    ),
    Rule(401, None, "reauth", REINSTALL, refresh_first=True),
    Rule(
        403,
        "MISSING_SCOPES",
        "fatal",
        "The app was not granted {scopes}. An admin must install Fieldwise again at "
        "/install/hubspot and approve {scopes}.",
    ),
    Rule(
        403,
        None,
        "fatal",
        "The user who installed Fieldwise may lack the permission; an admin with it must install "
        "Fieldwise again at /install/hubspot.",
    ),
    Rule(404, "OBJECT_NOT_FOUND", "skippable", "The record was deleted or merged; it is skipped."),
    Rule(404, None, "skippable", "HubSpot has no such record; it is skipped."),
    # 409 on a record write is a unique-value clash (email, domain); provisioning reads 409 on a
    # create as "already exists" before this table is consulted.
    Rule(
        409,
        None,
        "skippable",
        "Another HubSpot record already holds that unique value; the record is skipped.",
    ),
    # OAuth v1 token endpoint: a refresh token HubSpot no longer honours means the app was
    # uninstalled or the portal revoked it; nothing but a new install brings it back.
    Rule(400, "BAD_REFRESH_TOKEN", "reauth", REINSTALL),
    Rule(400, "invalid_grant", "reauth", REINSTALL),
    Rule(
        400,
        "BAD_CLIENT_ID",
        "fatal",
        "Check FIELDWISE_HUBSPOT_CLIENT_ID against the app's Auth settings in HubSpot.",
    ),
    Rule(
        400,
        "BAD_CLIENT_SECRET",
        "fatal",
        "Check FIELDWISE_HUBSPOT_CLIENT_SECRET against the app's Auth settings in HubSpot.",
    ),
    Rule(400, "BAD_AUTH_CODE", "fatal", "The sign-in expired or was used twice; install again."),
    Rule(400, "BAD_REDIRECT_URI", "fatal", "The redirect URL must match the one in app settings."),
    Rule(
        400,
        "VALIDATION_ERROR",
        "skippable",
        "HubSpot rejected the values; the record is skipped and the rest go on.",
    ),
    Rule(400, None, "skippable", "HubSpot rejected the request for this record; it is skipped."),
    # HubSpot's 429 body names the limit hit in policyName
    # (https://developers.hubspot.com/docs/api/usage-details#rate-limits).
    Rule(
        429,
        "TEN_SECONDLY_ROLLING",
        "retriable",
        "The portal's ten-second API limit is spent; the work waits and goes on.",
        wait_s=TEN_SECOND_WAIT_S,
    ),
    Rule(
        429,
        "SECONDLY",
        "retriable",
        "The portal's search limit (a few requests per second) is spent; the work waits.",
        wait_s=SEARCH_WAIT_S,
    ),
    # The daily cap resets by itself at midnight in the portal's time zone, so no person has to
    # act: retriable (the job is deferred until then), not fatal (which would pause the tenant).
    # wait_s None: computed until the next UTC midnight when HubSpot sends no Retry-After.
    Rule(
        429,
        "DAILY",
        "retriable",
        "The portal's daily API limit is spent; Fieldwise resumes when HubSpot resets it at "
        "midnight (portal time). Raise the limit with HubSpot's API add-on if this recurs.",
    ),
    Rule(
        429,
        None,
        "retriable",
        "HubSpot is rate limiting; the work waits.",
        wait_s=TEN_SECOND_WAIT_S,
    ),
    Rule(
        (500, 599),
        None,
        "retriable",
        "HubSpot failed on its side; the work is tried again later.",
        wait_s=SERVER_WAIT_S,
    ),
    Rule(
        0,
        None,
        "retriable",
        "HubSpot could not be reached; the work is tried again later.",
        wait_s=SERVER_WAIT_S,
    ),
    Rule(
        (400, 499),
        None,
        "fatal",
        "Fieldwise cannot go on for this portal until this is fixed.",
    ),
)
"""The error table, most specific rows first; :func:`rule_for` takes the first match."""


@dataclass(frozen=True)
class Failure:
    """One failed HubSpot answer, parsed."""

    status: int
    code: str | None
    """HubSpot's ``category`` (CRM), ``policyName`` (429) or OAuth ``status``/``error``."""
    message: str
    scopes: tuple[str, ...] = ()
    """Scopes a 403 ``MISSING_SCOPES`` names as required."""
    retry_after_s: float | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


def parse(status: int, body: bytes | str | None, headers: Mapping[str, str] | None) -> Failure:
    """Read a failed answer's status, code, message, scopes and ``Retry-After``."""
    data: Any = {}
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
    if not isinstance(data, dict):
        data = {}
    if status == 429:
        code = data.get("policyName")
    else:
        code = data.get("category") or data.get("error")
        # OAuth v1 errors carry their code in "status"; CRM errors put the word "error" there.
        if code is None and data.get("status") not in (None, "error"):
            code = str(data["status"])
    message = str(data.get("message") or data.get("error_description") or f"HTTP {status}").strip()
    return Failure(
        status=status,
        code=None if code is None else str(code),
        message=message,
        scopes=_required_scopes(data),
        retry_after_s=_retry_after(headers),
        body=data,
    )


def rule_for(failure: Failure, credential: Credential = "oauth") -> Rule:
    """The first row of :data:`RULES` that matches ``failure`` of a call made with ``credential``."""
    for rule in RULES:
        if rule.matches(failure.status, failure.code, credential):
            return rule
    # Statuses outside every row (3xx after redirects ran out): nobody can fix them by waiting.
    return Rule(failure.status, None, "fatal", "Fieldwise cannot go on until this is fixed.")


def to_error(failure: Failure, operation: str, credential: Credential = "oauth") -> ConnectorError:
    """The connector error for a failure, its message naming what failed and what to do."""
    rule = rule_for(failure, credential)
    scopes = ", ".join(failure.scopes) or "the scopes the manifest lists"
    advice = rule.advice.format(scopes=scopes)
    text = f"HubSpot {operation} failed ({failure.status} {failure.code or 'error'}): "
    text += f"{failure.message.rstrip('.')}. {advice}"
    kwargs: dict[str, Any] = {"crm_code": failure.code, "status": failure.status}
    if rule.kind == "retriable":
        wait = failure.retry_after_s if failure.retry_after_s is not None else rule.wait_s
        if wait is None:
            wait = _seconds_to_utc_midnight()
        return RetriableError(text, retry_after_s=wait, **kwargs)
    return _CLASSES[rule.kind](text, **kwargs)


def failure_of(exc: BaseException) -> Failure | None:
    """The parsed failure inside a hubspot-api-client ``ApiException``; None for other errors.

    Each API area of the library (``hubspot.crm.objects``, ``hubspot.webhooks``, ...) has its own
    ``ApiException`` class, all with ``status``, ``body`` and ``headers``, so this reads them by
    shape rather than by class.
    """
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or not hasattr(exc, "body"):
        return None
    body = exc.body
    headers = getattr(exc, "headers", None)
    return parse(status, body, dict(headers) if headers else None)


def from_exception(
    exc: BaseException, operation: str, credential: Credential = "oauth"
) -> ConnectorError:
    """Convert a library or urllib3 exception into a connector error.

    Args:
        exc: an ``ApiException`` of any hubspot-api-client package, a urllib3 error (connection
            refused, timeout, retries exhausted) or a connector error (returned unchanged).
        operation: what was being done, in words (``"batch update of contacts"``).
        credential: how the call authenticated (decides the advice on a 401).

    Returns:
        The error to raise; the original exception should be chained to it.
    """
    if isinstance(exc, ConnectorError):
        return exc
    failure = failure_of(exc)
    if failure is None:
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            failure = Failure(0, None, f"{type(exc).__name__}: {exc}")
        else:
            raise TypeError(f"not a HubSpot or HTTP error: {exc!r}") from exc
    return to_error(failure, operation, credential)


def needs_refresh(exc: BaseException) -> bool:
    """Whether the table says: refresh the access token and repeat the call once."""
    failure = failure_of(exc)
    return failure is not None and rule_for(failure).refresh_first


def record_error_kind(
    status: int, category: str | None
) -> Literal["skippable", "retriable", "fatal"]:
    """The kind of one input's failure inside a batch answer (its ``errors[].category``).

    A batch input can fail for its own reasons (not found, bad value, unique clash): those rows of
    the table are skippable. The status is the batch's (207) or the one HubSpot gives the input.
    """
    kind = rule_for(Failure(status, category, "")).kind
    if kind == "reauth":
        return "fatal"
    return kind


_STATUS_FOR_CATEGORY = {
    "OBJECT_NOT_FOUND": 404,
    "VALIDATION_ERROR": 400,
    "CONFLICT": 409,
    "OBJECT_ALREADY_EXISTS": 409,
    "RATE_LIMITS": 429,
    "MISSING_SCOPES": 403,
}


def status_for_category(category: str | None) -> int:
    """The HTTP status HubSpot uses for a batch error category (400 when it is not one we know)."""
    return _STATUS_FOR_CATEGORY.get(category or "", 400)


def _required_scopes(data: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    details = data.get("errors")
    for item in details if isinstance(details, list) else []:
        context = item.get("context") if isinstance(item, dict) else None
        if not isinstance(context, dict):
            continue
        for key in ("requiredGranularScopes", "requiredScopes", "requiredScope"):
            value = context.get(key)
            if isinstance(value, list):
                found.extend(str(v) for v in value)
            elif isinstance(value, str):
                found.append(value)
    return tuple(dict.fromkeys(found))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def _seconds_to_utc_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
