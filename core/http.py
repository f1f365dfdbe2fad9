"""The one HTTP retry layer every CRM call goes through.

Both CRM libraries sit on urllib3: ``simple-salesforce`` through a ``requests.Session`` and
``hubspot-api-client`` through its own pool manager, which takes a urllib3 ``Retry`` as
``HubSpot(retry=...)``. :func:`retry_policy` builds that one policy for both, so 429 and 5xx answers
are retried the same way everywhere: exponential backoff with jitter, ``Retry-After`` honoured,
a bounded number of tries. Job-level retries (rq) are a separate concern and layer.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth another try: rate limited or the server failed. 4xx otherwise means fix the request."""
MAX_TRIES = 5
"""Attempts per request, the first included."""
BACKOFF_S = 0.5
"""Base of the exponential backoff: 0.5, 1, 2, 4 seconds (plus jitter) between tries."""
BACKOFF_MAX_S = 30.0
"""Upper bound of one backoff sleep."""
RETRY_AFTER_MAX_S = 30
"""Longest sleep a ``Retry-After`` can ask for inside one request. A longer wait (HubSpot's daily
cap, say) is not slept through in a worker: once tries run out, the 429 reaches the connector's error
table, which defers the job."""


def retry_policy(
    tries: int = MAX_TRIES, backoff_s: float = BACKOFF_S, backoff_max_s: float = BACKOFF_MAX_S
) -> Retry:
    """The urllib3 retry policy for CRM APIs.

    POST is retried too: urllib3 leaves it out by default, but HubSpot batch read, batch update and
    search, and Salesforce ``composite/sobjects`` updates, are POSTs (or PATCHes) that are safe to
    repeat: they set fields to values rather than add to them.

    Args:
        tries: attempts in all, the first included.
        backoff_s: base of the exponential backoff.
        backoff_max_s: longest single sleep.

    Returns:
        A ``Retry`` that gives back the last response (instead of raising) once tries run out, so
        the library maps it to its own error and our error table classifies it.
    """
    return Retry(
        total=tries - 1,
        connect=tries - 1,
        read=tries - 1,
        status=tries - 1,
        other=0,
        allowed_methods=None,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_s,
        backoff_max=backoff_max_s,
        backoff_jitter=backoff_s,
        respect_retry_after_header=True,
        retry_after_max=RETRY_AFTER_MAX_S,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def session(retry: Retry | None = None, ca_bundle: str | None = None) -> requests.Session:
    """A ``requests.Session`` with the retry policy mounted for http and https.

    Args:
        retry: the policy; :func:`retry_policy` when None.
        ca_bundle: a PEM file of extra trusted certificates (the sandbox's self-signed one).
    """
    http = requests.Session()
    adapter = HTTPAdapter(max_retries=retry or retry_policy(), pool_maxsize=16)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    if ca_bundle:
        http.verify = ca_bundle
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ``verify`` when trust_env is on,
        # which would silently drop the bundle named here.
        http.trust_env = False
    return http
