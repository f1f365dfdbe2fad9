"""The admin console's blueprint: every route under ``/admin``, templates and its stylesheet."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint

STATIC_FOLDER = Path(__file__).resolve().parent.parent / "static"

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder=str(STATIC_FOLDER),
    static_url_path="/static",
)
