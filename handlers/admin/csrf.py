"""CSRF protection for the admin console: one random token per session, checked on every POST.

Forms carry the token in a hidden ``csrf_token`` field (scripts may send ``X-CSRF-Token``). The
comparison is constant-time. A POST without the session's token is refused before its handler runs,
so nothing changes.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

SESSION_KEY = "admin_csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


def token() -> str:
    """This session's CSRF token, created on first use."""
    value = session.get(SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = secrets.token_urlsafe(32)
        session[SESSION_KEY] = value
    return value


def rotate() -> str:
    """Replace the session's token (after login, so a token seen before login is useless)."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)
    return str(session[SESSION_KEY])


def request_is_valid() -> bool:
    """Whether the current request carries this session's token."""
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FORM_FIELD) or request.headers.get(HEADER)
    if not isinstance(expected, str) or not expected or not sent:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())
