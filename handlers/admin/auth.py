"""Admin console login: one password hash from the configuration, a bounded session, rate limits.

* The password is checked against ``FIELDWISE_ADMIN_PASSWORD_HASH`` (a ``werkzeug.security``
  hash; ``fieldwise admin hash-password`` makes one). Without it nobody can log in.
* Login attempts are limited per client address through the shared request counter
  (``services.counter``: Redis when configured, so every web process sees the same count).
* The session cookie is HttpOnly, SameSite=Lax, Secure when the public URL is https, and the login
  expires after ``admin_session_minutes`` whatever the cookie says (the login time is signed into
  the session and checked on every request).
* Every route under ``/admin`` except the login page and the stylesheet needs the login: pages
  redirect to the login page, POSTs and ``/admin/api/`` answer 401 JSON. Every POST must carry the
  session's CSRF token (:mod:`handlers.admin.csrf`) or is refused with 400 before it runs.
* Only requests under ``/admin`` open the session. Webhooks, widgets, install and health never
  read or set the cookie: they authenticate each request by its signature or token, and webhook
  deliveries, the most frequent requests, skip the cookie's parsing and verification.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from flask import Flask, Request, Response, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.security import check_password_hash

from core.config import Config
from core.queue import QueueUnavailable
from core.ratelimit import Window
from handlers import context
from handlers.admin import csrf, views
from handlers.admin.blueprint import bp
from handlers.errors import error_response

LOGIN_ATTEMPTS = Window(limit=5, seconds=60.0)
"""Login attempts per client address per minute."""
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
SESSION_FLAG = "admin"
SESSION_SINCE = "admin_since"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only for the admin console's paths.

    Elsewhere Flask's null session stands in: reading it finds nothing, writing to it raises.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The console's session under ``/admin``; None (a null session) on any other path."""
        if request.path != bp.url_prefix and not request.path.startswith(f"{bp.url_prefix}/"):
            return None
        return super().open_session(app, request)


def init_app(app: Flask, config: Config) -> None:
    """Open sessions under /admin only, with their cookie flags and lifetime; add the blueprint."""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=urlparse(config.public_url).scheme == "https",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=config.admin_session_minutes),
    )
    app.session_interface = ConsoleSessionInterface()
    app.jinja_env.globals["csrf_token"] = csrf.token
    app.register_blueprint(bp)


def logged_in() -> bool:
    """Whether this session holds a login that has not expired."""
    if session.get(SESSION_FLAG) is not True:
        return False
    since = session.get(SESSION_SINCE)
    lifetime = context.services().config.admin_session_minutes * 60
    return isinstance(since, int | float) and 0 <= time.time() - since < lifetime


@bp.before_request
def _guard() -> Any:
    public = request.endpoint in PUBLIC_ENDPOINTS
    if not public and not logged_in():
        if request.method != "GET" or request.path.startswith("/admin/api/"):
            return error_response(401, "login_required", "log in to the admin console first")
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    if not public:
        views.warm_console()
    if request.method == "POST" and not csrf.request_is_valid():
        return error_response(
            400, "csrf_failed", "the form's CSRF token is missing or stale; reload the page"
        )
    return None


@bp.after_request
def _no_framing(response: Response) -> Response:
    # The console shows tenant data: never cached by shared caches, never framed by other sites.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the login form; on POST check the password and start the session."""
    config = context.services().config
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if logged_in():
            return redirect(target)
        return render_template("admin/login.html", error=None, next=target,
                               configured=bool(config.admin_password_hash))  # fmt: skip
    address = request.remote_addr or "unknown"
    try:
        wait = context.services().counter.take(f"admin-login:{address}", LOGIN_ATTEMPTS, 1)
    except QueueUnavailable:
        return error_response(503, "unavailable", "the login counter is unreachable; try later")
    if wait > 0:
        response = error_response(
            429, "too_many_attempts", f"too many login attempts; try again in {wait:.0f} s"
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    password = request.form.get("password", "")
    stored = config.admin_password_hash
    if stored is None or not password or not check_password_hash(stored.reveal(), password):
        message = (
            "wrong password"
            if stored
            else "admin login is not configured: set FIELDWISE_ADMIN_PASSWORD_HASH"
        )
        page = render_template("admin/login.html", error=message, next=target,
                               configured=bool(stored))  # fmt: skip
        return page, 401
    # A fresh session on login: nothing an attacker planted before it survives.
    session.clear()
    session.permanent = True
    session[SESSION_FLAG] = True
    session[SESSION_SINCE] = int(time.time())
    csrf.rotate()
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    """End the session."""
    session.clear()
    return redirect(url_for("admin.login"))


def _safe_next(value: str | None) -> str:
    """Only a path inside the console; anything else (another host, ``//evil``) goes home."""
    if value and value.startswith("/admin") and not value.startswith("//"):
        parsed = urlparse(value)
        if not parsed.scheme and not parsed.netloc:
            return value
    return url_for("admin.overview")
