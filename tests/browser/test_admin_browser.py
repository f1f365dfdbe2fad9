"""The admin console in a real headless chromium: log in, open every page, try a dry run."""

from __future__ import annotations

import re

from conftest import shot


def _login(page, base, password):
    page.goto(f"{base}/admin/")
    assert "/admin/login" in page.url
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_login_then_every_console_page_renders_without_errors(page, live_console):
    console, base = live_console
    page.goto(f"{base}/admin/login")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.get_by_test_id("login-error").inner_text() == "wrong password"
    _login(page, base, console.password)
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    tenant = console.tenant_id
    pages = {
        "overview": ("/admin/", "API calls, last 24 h"),
        "writes": (f"/admin/writes?tenant={tenant}", "Write-back log"),
        "scores": (f"/admin/scores?tenant={tenant}&crossing=", "entries"),
        "models": ("/admin/models", "Model card"),
        "model-card": (f"/admin/models/{tenant}/lead", "ROC curve"),
        "tuning": (f"/admin/tuning/{tenant}", "Dry run and tuning"),
        "settings": (f"/admin/settings/{tenant}", "Risk-flag thresholds"),
    }
    for name, (path, text) in pages.items():
        answer = page.goto(base + path)
        assert answer.status == 200, path
        assert text in page.content(), path
        shot(page, f"admin-{name}")
    # The charts are real SVG the browser lays out, not empty boxes.
    page.goto(f"{base}/admin/models/{tenant}/lead")
    boxes = [svg.bounding_box() for svg in page.locator("svg.chart").all()]
    assert len(boxes) == 4 and all(b["width"] > 300 and b["height"] > 200 for b in boxes)
    assert problems == []


def test_dry_run_with_a_lower_hot_threshold_shows_more_hot_leads(page, live_console):
    console, base = live_console
    _login(page, base, console.password)
    page.goto(f"{base}/admin/tuning/{console.tenant_id}")
    page.get_by_test_id("preview").click()
    page.wait_for_selector("[data-testid=grade-counts]")
    hot_now = int(page.get_by_test_id("after-Hot").inner_text())
    warm_now = int(page.get_by_test_id("after-Warm").inner_text())
    page.get_by_test_id("grade-Hot").fill("35")
    page.get_by_test_id("grade-Warm").fill("15")
    page.get_by_test_id("preview").click()
    page.wait_for_selector("[data-testid=grade-counts]")
    assert int(page.get_by_test_id("before-Hot").inner_text()) == hot_now
    hot_after = int(page.get_by_test_id("after-Hot").inner_text())
    assert hot_after > hot_now
    assert hot_after + int(page.get_by_test_id("after-Warm").inner_text()) > hot_now + warm_now
    assert page.locator("[data-testid=after-Hot].changed").count() == 1
    assert re.search(r"Routing replay", page.content())
    shot(page, "admin-dry-run")
    # Previewing saved nothing: a fresh page still shows the tenant's own threshold.
    page.goto(f"{base}/admin/tuning/{console.tenant_id}")
    assert page.get_by_test_id("grade-Hot").input_value() == "70"
