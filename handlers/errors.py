"""The one JSON error shape every 4xx and 5xx answer uses.

``{"error": {"status": 404, "code": "not_found", "message": "..."}}``: ``code`` is stable for
programs, ``message`` tells a person what went wrong and what to do. No traceback ever leaves the
process; server errors are logged with an id the answer repeats.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a handler raises to answer with a specific status, code and message."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, **details: Any) -> Response:
    """Build the JSON error answer."""
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every error through :func:`error_response`."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, **exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        response = error_response(status, code, exc.description or exc.name or "error")
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error, incident %s", incident)
        return error_response(
            500,
            "internal_error",
            f"Fieldwise hit an unexpected error; it is logged as incident {incident}",
        )
