"""Salesforce API errors as data: one exception carrying the documented status, code and message.

REST answers them as ``[{"message", "errorCode", "fields"}]``; sObject Collections put them in each
item's ``errors`` as ``{"statusCode", "message", "fields"}``; the Metadata API puts them in a
``SaveResult``. Every handler raises :class:`SalesforceError` and the server turns it into the shape
the calling API documents.
"""

from __future__ import annotations

from typing import Any


class SalesforceError(Exception):
    """One API error in Salesforce's own vocabulary.

    Attributes:
        status: the HTTP status the REST API answers with.
        code: the ``errorCode`` / ``statusCode`` string, e.g. ``INVALID_FIELD``.
        message: the human-readable message.
        fields: the field names the error is about.
    """

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields or [])

    def rest_body(self) -> list[dict[str, Any]]:
        """The REST error array."""
        body: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            body["fields"] = self.fields
        return [body]

    def item_error(self) -> dict[str, Any]:
        """The per-record error of sObject Collections and composite results."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found() -> SalesforceError:
    """The REST API's answer for an unknown resource or record."""
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


def entity_deleted() -> SalesforceError:
    """The answer for a record that is in the recycle bin."""
    return SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted")


def json_parser_error(message: str) -> SalesforceError:
    """A body the API could not deserialize."""
    return SalesforceError(400, "JSON_PARSER_ERROR", message)


ALL_OR_NONE_ROLLED_BACK = SalesforceError(
    400,
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone"
    " header",
)
