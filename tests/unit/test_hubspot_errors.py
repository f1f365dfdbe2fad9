"""The HubSpot error table: every row, the messages users read, and what the client acts on."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from hubspot.crm.objects import ApiException as ObjectsApiException
from hubspot.webhooks import ApiException as WebhooksApiException

from connectors.base import (
    FatalError,
    ReauthRequired,
    RetriableError,
    SkippableError,
)
from connectors.hubspot import errors


def _api_exception(
    status: int,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
    cls: type = ObjectsApiException,
) -> Exception:
    exc = cls(status=status, reason="x")
    exc.body = json.dumps(body).encode() if body is not None else None
    exc.headers = headers
    return exc


def _crm(category: str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, **extra}


def _limit(policy: str) -> dict[str, Any]:
    return {"status": "error", "message": "limit", "errorType": "RATE_LIMIT", "policyName": policy}


MISSING_SCOPES = _crm(
    "MISSING_SCOPES",
    "This app hasn't been granted all required scopes to make this call.",
    errors=[
        {
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": ["crm.objects.deals.read"]},
        }
    ],
)

ROWS = [
    # status, body, headers, class, refresh first, text in the message
    (401, _crm("EXPIRED_AUTHENTICATION"), None, ReauthRequired, True, "/install/hubspot"),
    (401, _crm("INVALID_AUTHENTICATION"), None, ReauthRequired, True, "/install/hubspot"),
    (401, None, None, ReauthRequired, True, "/install/hubspot"),
    (403, MISSING_SCOPES, None, FatalError, False, "crm.objects.deals.read"),
    (403, _crm("FORBIDDEN"), None, FatalError, False, "permission"),
    (404, _crm("OBJECT_NOT_FOUND"), None, SkippableError, False, "deleted or merged"),
    (404, None, None, SkippableError, False, "no such record"),
    (409, _crm("CONFLICT", "Contact already exists"), None, SkippableError, False, "unique"),
    (
        400,
        {"status": "BAD_REFRESH_TOKEN", "message": "gone"},
        None,
        ReauthRequired,
        False,
        "install",
    ),
    (400, {"error": "invalid_grant"}, None, ReauthRequired, False, "/install/hubspot"),
    (400, {"status": "BAD_CLIENT_ID", "message": "?"}, None, FatalError, False, "CLIENT_ID"),
    (400, {"status": "BAD_CLIENT_SECRET", "message": "?"}, None, FatalError, False, "SECRET"),
    (400, {"status": "BAD_AUTH_CODE", "message": "?"}, None, FatalError, False, "install again"),
    (400, {"status": "BAD_REDIRECT_URI", "message": "?"}, None, FatalError, False, "redirect"),
    (
        400,
        _crm("VALIDATION_ERROR", "Property values were not valid"),
        None,
        SkippableError,
        False,
        "Property values were not valid",
    ),
    (400, _crm("SOMETHING_ELSE"), None, SkippableError, False, "rejected"),
    (
        429,
        _limit("TEN_SECONDLY_ROLLING"),
        {"Retry-After": "3"},
        RetriableError,
        False,
        "ten-second",
    ),
    (429, _limit("SECONDLY"), None, RetriableError, False, "search"),
    (429, _limit("DAILY"), None, RetriableError, False, "midnight"),
    (429, {"message": "slow down"}, None, RetriableError, False, "rate limiting"),
    (500, _crm("INTERNAL_ERROR"), None, RetriableError, False, "HubSpot failed"),
    (503, None, None, RetriableError, False, "HubSpot failed"),
    (0, None, None, RetriableError, False, "could not be reached"),
    (405, _crm("METHOD_NOT_ALLOWED"), None, FatalError, False, "fixed"),
]


@pytest.mark.parametrize(("status", "body", "headers", "cls", "refresh", "text"), ROWS)
def test_given_each_table_row_when_converted_then_class_refresh_and_message_follow(
    status, body, headers, cls, refresh, text
):
    exc = _api_exception(status, body, headers)
    error = errors.from_exception(exc, "batch read of contacts")
    assert type(error) is cls
    assert errors.needs_refresh(exc) is refresh
    assert text in error.message
    assert "HubSpot batch read of contacts failed" in error.message
    assert error.status == status


def test_every_rule_of_the_table_is_exercised_by_the_rows():
    used = {
        id(errors.rule_for(errors.parse(status, json.dumps(body) if body else None, headers)))
        for status, body, headers, *_ in ROWS
    }
    developer = errors.rule_for(errors.Failure(401, None, ""), credential="developer_key")
    used.add(id(developer))
    assert used == {id(rule) for rule in errors.RULES}


def test_missing_scopes_message_names_the_scope_and_says_to_reinstall_with_it():
    error = errors.from_exception(_api_exception(403, MISSING_SCOPES), "search of deals")
    assert isinstance(error, FatalError) and not isinstance(error, ReauthRequired)
    assert error.message.count("crm.objects.deals.read") == 2
    assert "install Fieldwise again at /install/hubspot and approve crm.objects.deals.read" in (
        error.message
    )
    assert error.crm_code == "MISSING_SCOPES"


def test_retry_after_comes_from_the_header_or_the_rule():
    with_header = errors.from_exception(
        _api_exception(429, _limit("TEN_SECONDLY_ROLLING"), {"Retry-After": "3"}), "x"
    )
    without = errors.from_exception(_api_exception(429, _limit("TEN_SECONDLY_ROLLING")), "x")
    assert isinstance(with_header, RetriableError) and with_header.retry_after_s == 3.0
    assert isinstance(without, RetriableError) and without.retry_after_s == errors.TEN_SECOND_WAIT_S


def test_daily_limit_waits_until_the_reset_rather_than_stopping_the_tenant():
    error = errors.from_exception(_api_exception(429, _limit("DAILY")), "search of contacts")
    assert isinstance(error, RetriableError)
    assert 0 < error.retry_after_s <= 86_400
    hinted = errors.from_exception(
        _api_exception(429, _limit("DAILY"), {"retry-after": "7200"}), "x"
    )
    assert isinstance(hinted, RetriableError) and hinted.retry_after_s == 7200.0


def test_developer_api_key_refusal_is_fatal_and_names_the_setting():
    exc = _api_exception(401, _crm("INVALID_AUTHENTICATION"), cls=WebhooksApiException)
    error = errors.from_exception(exc, "webhook settings", credential="developer_key")
    assert type(error) is FatalError
    assert "FIELDWISE_HUBSPOT_DEVELOPER_API_KEY" in error.message


def test_connection_failures_are_retriable_and_other_exceptions_are_not_swallowed():
    refused = urllib3.exceptions.MaxRetryError(None, "/crm", "connection refused")  # type: ignore[arg-type]
    error = errors.from_exception(refused, "search of contacts")
    assert isinstance(error, RetriableError) and error.retry_after_s == errors.SERVER_WAIT_S
    with pytest.raises(TypeError):
        errors.from_exception(KeyError("bug"), "x")


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        ("OBJECT_NOT_FOUND", "skippable"),
        ("VALIDATION_ERROR", "skippable"),
        ("CONFLICT", "skippable"),
        ("RATE_LIMITS", "retriable"),
        ("MISSING_SCOPES", "fatal"),
    ],
)
def test_batch_input_errors_map_through_the_same_table(category, kind):
    assert errors.record_error_kind(errors.status_for_category(category), category) == kind


def test_messages_quote_hubspot_and_never_the_request():
    body = _crm("VALIDATION_ERROR", "Property values were not valid: grade Z.")
    error = errors.from_exception(
        _api_exception(400, body, {"Authorization": "Bearer SECRET"}), "x"
    )
    assert "grade Z" in error.message and "SECRET" not in error.message
