"""The one way a request handler reaches the services its app was built with."""

from __future__ import annotations

from flask import current_app

from core.services import Services

EXTENSION = "fieldwise.services"
"""Where ``create_app`` keeps the services in ``app.extensions``."""


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions[EXTENSION]
    return found
