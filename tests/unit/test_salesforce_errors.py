"""Unit: the Salesforce error table turns every status and errorCode into what the caller does."""

from __future__ import annotations

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceRefusedRequest

from connectors.base import FatalError, ReauthRequired, RetriableError, SkippableError
from connectors.salesforce import errors

EXPECTED = {
    "INVALID_SESSION_ID": errors.SessionExpired,
    "REQUEST_LIMIT_EXCEEDED": RetriableError,
    "INSUFFICIENT_ACCESS_OR_READONLY": FatalError,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": FatalError,
    "INVALID_FIELD_FOR_INSERT_UPDATE": FatalError,
    "API_DISABLED_FOR_ORG": FatalError,
    "API_CURRENTLY_DISABLED": FatalError,
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": SkippableError,
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": SkippableError,
    "STRING_TOO_LONG": SkippableError,
    "NUMBER_OUTSIDE_VALID_RANGE": SkippableError,
    "FIELD_INTEGRITY_EXCEPTION": SkippableError,
    "REQUIRED_FIELD_MISSING": SkippableError,
    "ENTITY_IS_DELETED": SkippableError,
    "NOT_FOUND": SkippableError,
    "MALFORMED_ID": SkippableError,
    "ENTITY_IS_LOCKED": SkippableError,
    "UNABLE_TO_LOCK_ROW": RetriableError,
    "SERVER_UNAVAILABLE": RetriableError,
    "UNKNOWN_EXCEPTION": RetriableError,
    "REQUEST_RUNNING_TOO_LONG": RetriableError,
    "INVALID_FIELD": FatalError,
    "INVALID_REPLICATION_DATE": FatalError,
    "INVALID_TYPE": FatalError,
}


def test_every_row_of_the_table_is_covered_here():
    assert set(EXPECTED) == set(errors.RULES)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_error_code_maps_to_its_class_with_the_crm_message(code):
    error = errors.classify(400, code, "the message Salesforce wrote")
    assert type(error) is EXPECTED[code]
    assert error.crm_code == code and error.status == 400
    assert "the message Salesforce wrote" in error.message


@pytest.mark.parametrize(
    "code",
    [
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
    ],
)
def test_access_errors_name_the_permission_set_to_assign(code):
    error = errors.classify(400, code, "insufficient access rights on object id")
    assert "Fieldwise_AI_Integration" in error.message and "Permission Set" in error.message


def test_daily_limit_waits_long_and_says_fieldwise_resumes():
    error = errors.classify(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    assert isinstance(error, RetriableError)
    assert error.retry_after_s == errors.DAILY_LIMIT_RETRY_S
    assert "resume" in error.message and "allocation frees up" in error.message


def test_api_disabled_says_the_edition_lacks_the_api():
    error = errors.classify(403, "API_DISABLED_FOR_ORG", "API is not enabled for this Organization")
    assert isinstance(error, FatalError) and "edition" in error.message


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_server_errors_without_a_known_code_are_retriable(status):
    assert isinstance(errors.classify(status, None, "boom"), RetriableError)


def test_429_keeps_the_retry_after_salesforce_sent():
    error = errors.classify(429, None, "slow down", retry_after_s=17.0)
    assert isinstance(error, RetriableError) and error.retry_after_s == 17.0
    assert errors.classify(429, None, "slow down").retry_after_s == 30.0


def test_lock_contention_retries_soon():
    error = errors.classify(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
    assert isinstance(error, RetriableError) and error.retry_after_s == errors.LOCK_RETRY_S


def test_invalid_field_on_a_fieldwise_field_says_run_install_again():
    owned = {"Fieldwise_AI_Score__c"}
    ours = errors.classify(
        400,
        "INVALID_FIELD",
        "No such column 'Fieldwise_AI_Score__c' on sobject of type Lead",
        owned_fields=owned,
    )
    assert isinstance(ours, FatalError) and "install" in ours.message
    theirs = errors.classify(
        400, "INVALID_FIELD", "No such column 'Legacy__c' on entity 'Lead'", owned_fields=owned
    )
    assert isinstance(theirs, FatalError) and "install" not in theirs.message
    named = errors.classify(
        400, "INVALID_FIELD", "bad", fields=["Fieldwise_AI_Score__c"], owned_fields=owned
    )
    assert "install" in named.message


def test_unknown_codes_fall_back_to_the_status_then_to_fatal():
    assert isinstance(errors.classify(401, "SOMETHING_NEW", "x"), errors.SessionExpired)
    assert isinstance(errors.classify(404, None, "x"), SkippableError)
    assert isinstance(errors.classify(400, "SOMETHING_NEW", "x"), FatalError)


def test_simple_salesforce_exceptions_are_classified_by_their_content():
    refused = SalesforceRefusedRequest(
        "https://x/services/data/v62.0/query",
        403,
        "query",
        [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )
    error = errors.from_exception(refused)
    assert isinstance(error, RetriableError) and error.crm_code == "REQUEST_LIMIT_EXCEEDED"
    assert "TotalRequests Limit exceeded." in error.message
    malformed = SalesforceMalformedRequest(
        "https://x", 400, "sobjects", [{"message": "m", "errorCode": "STRING_TOO_LONG"}]
    )
    assert isinstance(errors.from_exception(malformed), SkippableError)


def test_collection_item_errors_use_status_code():
    error = errors.from_item(
        [
            {
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Score must be set",
                "fields": [],
            }
        ]
    )
    assert isinstance(error, SkippableError) and error.message == "Score must be set"


def test_metadata_failures_are_fatal_unless_retriable():
    text = "\nLead.X__c: (DUPLICATE_DEVELOPER_NAME, There is already a field named X__c), "
    error = errors.from_metadata_failure(text, "create CustomField")
    assert type(error) is FatalError and error.crm_code == "DUPLICATE_DEVELOPER_NAME"
    assert "create CustomField" in error.message
    busy = errors.from_metadata_failure("\nA: (UNABLE_TO_LOCK_ROW, busy), ", "update")
    assert isinstance(busy, RetriableError)


@pytest.mark.parametrize(
    "code", ["sf:INVALID_SESSION_ID", "{http://soap.sforce.com/2006/04/metadata}INVALID_SESSION_ID"]
)
def test_soap_faults_are_classified_by_their_fault_code(code):
    error = errors.from_soap_fault(code, "INVALID_SESSION_ID: Invalid Session ID found")
    assert isinstance(error, errors.SessionExpired)
    assert error.message.endswith("Invalid Session ID found")


def test_refused_refresh_token_requires_reinstall():
    error = errors.from_oauth("invalid_grant", "expired access/refresh token", 400)
    assert isinstance(error, ReauthRequired) and "/install/salesforce" in error.message
    bad_client = errors.from_oauth("invalid_client_id", "client identifier invalid", 400)
    assert type(bad_client) is FatalError and "CLIENT_ID" in bad_client.message
    assert isinstance(errors.from_oauth(None, "<html>", 503), RetriableError)
