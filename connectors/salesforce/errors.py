"""Salesforce failures as data: one table from status and ``errorCode`` to what the caller does.

Salesforce reports errors three ways, all carrying the same ``errorCode`` vocabulary:

* REST answers a non-2xx status with ``[{"errorCode", "message", "fields"}]``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm);
  simple-salesforce raises it as a ``SalesforceError`` subclass with that list in ``content``.
* sObject Collections answer 200 and put a ``{"statusCode", "message", "fields"}`` list in each
  record's result (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/
  resources_composite_sobjects_collections_update.htm).
* The Metadata API answers a SOAP fault (``sf:CODE``) or a ``SaveResult`` with ``statusCode``.

:data:`RULES` is the one place a code becomes a retriable, fatal or skippable error with a message a
person can act on; :data:`STATUS_RULES` covers answers without a known code. Everything else in this
package goes through :func:`classify`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from simple_salesforce.exceptions import SalesforceError

from connectors.base import (
    ConnectorError,
    FatalError,
    ReauthRequired,
    RetriableError,
    SkippableError,
)

Kind = Literal["refresh", "retriable", "fatal", "skippable"]

PERMISSION_SET = "Fieldwise_AI_Integration"
"""The permission set that gives Fieldwise's integration user edit access to its fields."""
REINSTALL_HINT = "run `fieldwise install salesforce` again (or reinstall from /install/salesforce)"
DAILY_LIMIT_RETRY_S = 3600.0
"""How long to wait after the org's daily allocation is spent. Salesforce sends no Retry-After;
the allocation is a rolling 24 hours, so an hour later some of it has usually freed up."""
LOCK_RETRY_S = 5.0
"""Row-lock contention clears within seconds (another transaction holds the record)."""


class SessionExpired(RetriableError):
    """The access token expired or was revoked; the client refreshes once and retries the call."""


@dataclass(frozen=True)
class Rule:
    """What to do about one Salesforce error.

    Attributes:
        kind: ``refresh`` (new access token, then retry once), ``retriable``, ``fatal`` or
            ``skippable``.
        message: for the user; ``{crm}`` is replaced by Salesforce's own message.
        retry_after_s: how long a retriable error should wait when Salesforce does not say.
    """

    kind: Kind
    message: str
    retry_after_s: float | None = None


_NEEDS_PERMISSION = (
    "Salesforce refused the change for lack of access: {crm}. Assign the permission set "
    f"{PERMISSION_SET} to Fieldwise's integration user (Setup > Users > Permission Set "
    "Assignments) and make sure that user can edit the record."
)

RULES: Mapping[str, Rule] = {
    # 401 when the session timed out, was revoked, or the token belongs to another org.
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
    "INVALID_SESSION_ID": Rule("refresh", "Salesforce session expired or invalid: {crm}"),
    # 403 once the org's rolling 24-hour allocation is spent; calls are blocked "until usage for
    # the preceding 24 hours drops below the limit" (Help: API Request Limits and Allocations).
    "REQUEST_LIMIT_EXCEEDED": Rule(
        "retriable",
        "The Salesforce org has used up its daily API allocation ({crm}). Fieldwise pauses and "
        "will resume on its own when the org's rolling 24-hour allocation frees up.",
        DAILY_LIMIT_RETRY_S,
    ),
    "INSUFFICIENT_ACCESS_OR_READONLY": Rule("fatal", _NEEDS_PERMISSION),
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": Rule("fatal", _NEEDS_PERMISSION),
    # Field-level security: the field exists but is read-only for the integration user.
    "INVALID_FIELD_FOR_INSERT_UPDATE": Rule("fatal", _NEEDS_PERMISSION),
    # Editions without API access (Professional without the add-on, Essentials) answer this.
    # https://developer.salesforce.com/docs/platform/api-rest/guide/intro-rest-compatible-editions.md
    "API_DISABLED_FOR_ORG": Rule(
        "fatal",
        "This Salesforce org's edition does not include API access ({crm}); Fieldwise needs "
        "Enterprise, Unlimited, Performance or Developer Edition, or Professional with the API "
        "add-on.",
    ),
    "API_CURRENTLY_DISABLED": Rule(
        "fatal",
        "API access is turned off for Fieldwise's integration user ({crm}); enable the "
        "'API Enabled' permission on its profile or permission set.",
    ),
    # A record the org's own rules refuse: report it on that record, keep the batch going.
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": Rule("skippable", "{crm}"),
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": Rule("skippable", "{crm}"),
    "STRING_TOO_LONG": Rule("skippable", "{crm}"),
    "NUMBER_OUTSIDE_VALID_RANGE": Rule("skippable", "{crm}"),
    "FIELD_INTEGRITY_EXCEPTION": Rule("skippable", "{crm}"),
    "REQUIRED_FIELD_MISSING": Rule("skippable", "{crm}"),
    "ENTITY_IS_DELETED": Rule("skippable", "The record was deleted in Salesforce: {crm}"),
    "NOT_FOUND": Rule("skippable", "Not found in Salesforce: {crm}"),
    "MALFORMED_ID": Rule("skippable", "{crm}"),
    "ENTITY_IS_LOCKED": Rule("skippable", "The record is locked (approval process): {crm}"),
    # Two transactions wanted the same row; Salesforce's advice is to retry.
    # https://help.salesforce.com/s/articleView?id=000387385
    "UNABLE_TO_LOCK_ROW": Rule("retriable", "Salesforce record busy: {crm}", LOCK_RETRY_S),
    "SERVER_UNAVAILABLE": Rule("retriable", "Salesforce is unavailable: {crm}"),
    "UNKNOWN_EXCEPTION": Rule("retriable", "Salesforce failed unexpectedly: {crm}"),
    "REQUEST_RUNNING_TOO_LONG": Rule("retriable", "Salesforce stopped a slow request: {crm}"),
    # A field Fieldwise created is gone (deleted by an admin); see classify() for other fields.
    "INVALID_FIELD": Rule(
        "fatal",
        "A Fieldwise field is missing from this Salesforce org ({crm}); " + REINSTALL_HINT + ".",
    ),
    # getDeleted only covers the last 15 days (resources-getdeleted.md); older gaps need a full
    # reconcile of the object instead of a delete feed.
    "INVALID_REPLICATION_DATE": Rule(
        "fatal",
        "Salesforce keeps deletions for 15 days only ({crm}); run a full reconcile of this object.",
    ),
    "INVALID_TYPE": Rule("fatal", "Salesforce does not offer this object to Fieldwise: {crm}"),
}
"""``errorCode`` -> rule. Codes not listed fall back to :data:`STATUS_RULES`."""

STATUS_RULES: Mapping[int, Rule] = {
    401: RULES["INVALID_SESSION_ID"],
    # Salesforce's edge answers bursts with 429 and a Retry-After; core.http already retried it.
    429: Rule("retriable", "Salesforce is rate limiting Fieldwise: {crm}", 30.0),
    500: Rule("retriable", "Salesforce failed: {crm}"),
    502: Rule("retriable", "Salesforce is unavailable: {crm}"),
    503: Rule("retriable", "Salesforce is unavailable: {crm}"),
    504: Rule("retriable", "Salesforce timed out: {crm}"),
    403: Rule("fatal", _NEEDS_PERMISSION),
    404: RULES["NOT_FOUND"],
}
"""HTTP status -> rule, for answers whose code is unknown or missing."""

_UNKNOWN = Rule("fatal", "Salesforce refused the request: {crm}")
_METADATA_ITEM = re.compile(r"\((?P<code>[A-Z_]+), (?P<message>.*?)\), ")


def rule_for(status: int | None, code: str | None) -> Rule:
    """The rule for a status and error code: the code's row first, then the status's."""
    if code and code in RULES:
        return RULES[code]
    if status is not None and status in STATUS_RULES:
        return STATUS_RULES[status]
    if status is not None and status >= 500:
        return STATUS_RULES[500]
    return _UNKNOWN


def classify(
    status: int | None,
    code: str | None,
    crm_message: str,
    *,
    fields: Collection[str] = (),
    owned_fields: Collection[str] = (),
    retry_after_s: float | None = None,
) -> ConnectorError:
    """Build the error a caller acts on (not raised).

    Args:
        status: the HTTP status, when there was one.
        code: Salesforce's ``errorCode`` / ``statusCode``.
        crm_message: Salesforce's own message.
        fields: the fields Salesforce named in the error.
        owned_fields: Fieldwise's field API names on the object; an ``INVALID_FIELD`` naming one
            of them means the install is incomplete, any other means a stale describe.
        retry_after_s: a ``Retry-After`` Salesforce sent, which wins over the table's default.

    Returns:
        A :class:`SessionExpired`, :class:`RetriableError`, :class:`FatalError` or
        :class:`SkippableError` with ``crm_code`` and ``status`` set.
    """
    rule = rule_for(status, code)
    if code == "INVALID_FIELD":
        named = set(fields) | set(re.findall(r"\b\w+__c\b", crm_message))
        if not named & set(owned_fields):
            rule = Rule(
                "fatal",
                "Salesforce does not know a field Fieldwise reads ({crm}); the object's layout "
                "changed, so Fieldwise will describe it again on the next run.",
            )
    message = rule.message.format(crm=crm_message.strip() or code or f"HTTP {status}")
    extra: dict[str, Any] = {"crm_code": code, "status": status}
    if rule.kind == "refresh":
        return SessionExpired(message, **extra)
    if rule.kind == "retriable":
        wait = retry_after_s if retry_after_s is not None else rule.retry_after_s
        return RetriableError(message, retry_after_s=wait, **extra)
    if rule.kind == "skippable":
        return SkippableError(message, **extra)
    return FatalError(message, **extra)


def from_exception(
    exc: SalesforceError,
    *,
    owned_fields: Collection[str] = (),
    retry_after_s: float | None = None,
) -> ConnectorError:
    """Classify a simple-salesforce exception by its status and its first error entry."""
    code: str | None = None
    message = str(exc)
    fields: list[str] = []
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        code = first.get("errorCode")
        message = str(first.get("message") or message)
        fields = list(first.get("fields") or [])
    elif isinstance(content, dict):
        code = content.get("errorCode") or content.get("error")
        message = str(content.get("message") or content.get("error_description") or message)
    return classify(
        exc.status,
        code,
        message,
        fields=fields,
        owned_fields=owned_fields,
        retry_after_s=retry_after_s,
    )


def from_item(
    errors: list[dict[str, Any]], *, owned_fields: Collection[str] = ()
) -> ConnectorError:
    """Classify one record's ``errors`` from an sObject Collections result."""
    first = errors[0] if errors else {}
    return classify(
        None,
        first.get("statusCode"),
        str(first.get("message") or "the record was not saved"),
        fields=list(first.get("fields") or []),
        owned_fields=owned_fields,
    )


def from_metadata_failure(text: str, what: str) -> ConnectorError:
    """Classify a Metadata API failure raised by simple-salesforce's ``MetadataType`` calls.

    simple-salesforce folds every failed ``SaveResult`` into one exception whose text lists
    ``(statusCode, message), `` pairs; the first pair decides. A failed provisioning step always
    stops the install, so anything that is not retriable is fatal here.
    """
    match = _METADATA_ITEM.search(text)
    code, message = (match.group("code"), match.group("message")) if match else (None, text)
    error = classify(None, code, f"{what}: {message}")
    if isinstance(error, RetriableError):
        return error
    return FatalError(error.message, crm_code=code)


def from_soap_fault(code: str | None, message: str) -> ConnectorError:
    """Classify a Metadata API SOAP fault (``sf:INVALID_SESSION_ID``, ``sf:REQUEST_LIMIT_...``)."""
    # zeep reports the faultcode as ``sf:CODE`` or as a ``{namespace}CODE`` QName.
    bare = re.split(r"[:}]", code or "")[-1] or None
    text = message.partition(": ")[2] if bare and message.startswith(bare) else message
    return classify(None, bare, text)


def from_oauth(error: str | None, description: str | None, status: int | None) -> ConnectorError:
    """Classify a token-endpoint answer (``{"error", "error_description"}``).

    ``invalid_grant`` means the refresh token (or JWT assertion) was refused: revoked by an admin,
    expired by the connected app's policy, or already spent under rotation. Only a new install
    helps (https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_refresh_token_flow.htm).
    """
    text = description or error or f"HTTP {status}"
    if error == "invalid_grant":
        return ReauthRequired(
            f"Salesforce no longer accepts Fieldwise's authorization ({text}). An admin must "
            "reinstall Fieldwise at /install/salesforce.",
            crm_code=error,
            status=status,
        )
    if error in {"invalid_client_id", "invalid_client", "unauthorized_client"}:
        return FatalError(
            f"Salesforce rejected Fieldwise's connected app credentials ({text}); check "
            "FIELDWISE_SALESFORCE_CLIENT_ID and FIELDWISE_SALESFORCE_CLIENT_SECRET.",
            crm_code=error,
            status=status,
        )
    if status is not None and (status >= 500 or status == 429):
        return RetriableError(
            f"Salesforce's token endpoint failed ({text})", crm_code=error, status=status
        )
    return FatalError(
        f"Salesforce refused the token request ({text})", crm_code=error, status=status
    )
