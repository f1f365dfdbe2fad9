"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``."""

from __future__ import annotations

from handlers.app import create_app

app = create_app()
