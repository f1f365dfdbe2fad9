"""``python -m core`` runs the ``fieldwise`` command line."""

from __future__ import annotations

from core.cli import main

main()
