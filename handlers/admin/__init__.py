"""The admin console under ``/admin``: server-rendered pages behind a password login.

``init_app`` (called by ``create_app``) sets the session cookie's flags and registers the blueprint
with its routes: :mod:`handlers.admin.auth` (login, the guard every request passes), and
:mod:`handlers.admin.views` (the pages).
"""

from __future__ import annotations

from handlers.admin import views as views
from handlers.admin.auth import init_app as init_app
from handlers.admin.blueprint import bp as bp

__all__ = ["bp", "init_app", "views"]
