"""Headless Debian chromium driven by Playwright, against a live admin console on loopback.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (the Debian package,
which ``make test`` installs). When that is missing the tests skip with the reason, unless
``FIELDWISE_REQUIRE_BROWSER=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_fixtures import Console, scored_console
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("FIELDWISE_CHROMIUM", "/usr/bin/chromium")
BROWSER_REQUIRED = os.environ.get("FIELDWISE_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "screenshots"


def _missing(reason: str) -> None:
    if BROWSER_REQUIRED:
        pytest.fail(f"{reason} (FIELDWISE_REQUIRE_BROWSER=1 makes the browser tests required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        _missing(f"no chromium at {CHROMIUM}: apt-get install -y --no-install-recommends chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Console, str]]:
    """The scored console served on a free loopback port, and its base URL."""
    with scored_console(tmp_path_factory.mktemp("browser-console")) as console:
        server = make_server("127.0.0.1", 0, console.app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield console, f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(timeout=5)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; a screenshot of its last state is kept as an artefact.

    The Salesforce sandbox serves HTTPS with a certificate of its own CA, which chromium does not
    know; the pages under test are all on loopback.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        opened.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-final.png"), full_page=True)
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    """Keep a screenshot of the page as it is now."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
