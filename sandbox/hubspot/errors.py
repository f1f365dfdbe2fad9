"""HubSpot's error bodies, built in one place so every endpoint answers with the same shapes.

HubSpot's CRM APIs answer errors as ``{"status": "error", "message", "correlationId", "category"}``
with optional ``errors``/``context``; the OAuth v1 endpoints use their own shape
(``{"status": "BAD_REFRESH_TOKEN", "message", ...}``) and the rate limiter another
(``errorType: RATE_LIMIT`` plus ``policyName``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Response

DOCS_AUTH = "https://developers.hubspot.com/docs/methods/auth/oauth-overview"


def correlation_id() -> str:
    """A fresh correlation id, as HubSpot puts on every error."""
    return str(uuid.uuid4())


class HubSpotError(Exception):
    """An API error that a route raises and the app turns into HubSpot's JSON error body.

    Args:
        status: the HTTP status.
        category: HubSpot's error category (``VALIDATION_ERROR``, ``OBJECT_NOT_FOUND`` ...).
        message: the human-readable message.
        extra: further top-level keys (``errors``, ``context``, ``subCategory``).
    """

    def __init__(
        self, status: int, category: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON body HubSpot sends for this error."""
        return {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id(),
            "category": self.category,
            **self.extra,
        }

    def response(self) -> Response:
        """The Flask response for this error."""
        return json_response(self.body(), self.status)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with HubSpot's content type."""
    response = Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json"
    )
    response.headers["Content-Type"] = "application/json;charset=utf-8"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def validation_error(message: str, **extra: Any) -> HubSpotError:
    """A 400 ``VALIDATION_ERROR``."""
    return HubSpotError(400, "VALIDATION_ERROR", message, extra)


def not_found(message: str = "resource not found") -> HubSpotError:
    """A 404 ``OBJECT_NOT_FOUND``."""
    return HubSpotError(404, "OBJECT_NOT_FOUND", message)


def invalid_authentication() -> HubSpotError:
    """The 401 HubSpot answers for a missing or unknown token."""
    return HubSpotError(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and"
        f" you can find more details at {DOCS_AUTH}",
    )


def expired_authentication(seconds_ago: float) -> HubSpotError:
    """The 401 HubSpot answers for an expired OAuth access token."""
    minutes = max(0, int(seconds_ago // 60))
    return HubSpotError(
        401,
        "EXPIRED_AUTHENTICATION",
        f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
    )


def missing_scopes(required: list[str]) -> HubSpotError:
    """The 403 HubSpot answers when the token lacks a scope the endpoint needs."""
    return HubSpotError(
        403,
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about"
        " required scopes here: https://developers.hubspot.com/scopes.",
        {
            "errors": [
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": required},
                }
            ],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
        },
    )


def oauth_error(status_code: str, message: str, http_status: int = 400) -> Response:
    """An error from the OAuth v1 endpoints, e.g. ``{"status": "BAD_REFRESH_TOKEN", ...}``."""
    return json_response(
        {"status": status_code, "message": message, "correlationId": correlation_id()},
        http_status,
    )


def rate_limit_body(policy: str, group_name: str) -> dict[str, Any]:
    """The documented 429 body; ``policy`` is ``TEN_SECONDLY_ROLLING``, ``SECONDLY`` or ``DAILY``."""
    message = {
        "DAILY": "You have reached your daily limit.",
        "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
        "SECONDLY": "You have reached your secondly limit.",
    }[policy]
    return {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "groupName": group_name,
        "requestId": correlation_id(),
    }


def status_category(status: int) -> str:
    """HubSpot's category for an injected fault status."""
    return {
        400: "VALIDATION_ERROR",
        401: "INVALID_AUTHENTICATION",
        403: "MISSING_SCOPES",
        404: "OBJECT_NOT_FOUND",
        409: "CONFLICT",
        429: "RATE_LIMITS",
        502: "BAD_GATEWAY",
        503: "SERVICE_UNAVAILABLE",
        504: "GATEWAY_TIMEOUT",
    }.get(status, "INTERNAL_ERROR")
