"""Reliability tests run the live deployment of ``tests/e2e/live_harness.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
