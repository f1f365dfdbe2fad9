"""The admin console through the Flask test client, on one small trained and scored tenant."""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from admin_fixtures import scored_console
from flask import session
from werkzeug.security import generate_password_hash

from core.config import Config, Secret
from core.queue import EmbeddedQueue, RedisQueue
from handlers.app import create_app
from handlers.context import EXTENSION
from scoring.calibration import roc_auc
from scoring.curves import curve_points
from scoring.settings import load_settings

_addresses = itertools.count(10)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    with scored_console(tmp_path_factory.mktemp("admin")) as built:
        yield built


def _client(console):
    # Each client comes from its own address, so the per-address login limit never couples tests.
    client = console.app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"127.0.1.{next(_addresses)}"
    return client


def _token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _logged_in(console):
    client = _client(console)
    token = _token(client.get("/admin/login").text)
    answer = client.post("/admin/login", data={"password": console.password, "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"
    return client, _token(client.get("/admin/").text)


def _admin_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/admin") and rule.endpoint not in {"admin.login", "admin.static"}:
            yield rule


def _url(rule, tenant_id):
    values = {"tenant_id": tenant_id, "kind": "lead", "job_id": "some-job"}
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], rule.rule)


def test_every_admin_route_needs_login_pages_redirect_and_posts_get_401_json(console):
    client = _client(console)
    rules = list(_admin_rules(console.app))
    assert len(rules) >= 9
    for rule in rules:
        url = _url(rule, console.tenant_id)
        if "GET" in rule.methods:
            answer = client.get(url)
            if url.startswith("/admin/api/"):
                assert (
                    answer.status_code == 401 and answer.json["error"]["code"] == "login_required"
                )
            else:
                assert answer.status_code == 302, url
                assert answer.headers["Location"].startswith("/admin/login?next=")
        if "POST" in rule.methods:
            answer = client.post(url, data={"action": "save", "grade_0": "10"})
            assert answer.status_code == 401, url
            assert answer.json["error"]["code"] == "login_required"


def test_login_refuses_a_wrong_password_and_limits_attempts_per_address(console):
    client = _client(console)
    token = _token(client.get("/admin/login").text)
    statuses = [
        client.post("/admin/login", data={"password": "wrong", "csrf_token": token}).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    # Even the right password waits once the address is over its limit.
    late = client.post("/admin/login", data={"password": console.password, "csrf_token": token})
    assert late.status_code == 429 and int(late.headers["Retry-After"]) > 0
    assert client.get("/admin/").status_code == 302


def test_login_without_the_csrf_token_is_refused_with_400(console):
    client = _client(console)
    client.get("/admin/login")
    answer = client.post("/admin/login", data={"password": console.password})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "csrf_failed"
    assert client.get("/admin/").status_code == 302


def test_session_cookie_is_httponly_lax_and_secure_behind_https(tmp_path):
    password = "correct horse battery"
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        public_url="https://fieldwise.example.com",
        admin_password_hash=Secret(generate_password_hash(password)),
    )
    app = create_app(config)
    try:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = "127.0.2.1"
        token = _token(client.get("/admin/login").text)
        answer = client.post("/admin/login", data={"password": password, "csrf_token": token})
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
        assert "Expires=" in cookie  # a bounded, permanent session
        assert app.permanent_session_lifetime == timedelta(minutes=60)
    finally:
        app.extensions[EXTENSION].queue.stop()


def test_only_console_paths_open_the_session_cookie(tmp_path):
    password = "correct horse battery"
    config = Config.for_demo(
        lancedb_uri=str(tmp_path / "db"),
        admin_password_hash=Secret(generate_password_hash(password)),
    )
    app = create_app(config)

    @app.get("/administrator/probe")  # shares the console's prefix as text, not as a path
    @app.get("/probe")
    def probe():
        return {"login": session.get("admin"), "null": session.__class__.__name__}

    try:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = "127.0.2.2"
        token = _token(client.get("/admin/login").text)
        answer = client.post("/admin/login", data={"password": password, "csrf_token": token})
        assert answer.status_code == 302
        assert client.get("/admin/").status_code == 200  # the cookie still logs the console in
        for path in ("/probe", "/administrator/probe"):
            seen = client.get(path)  # the test client sends the console's cookie here too
            assert seen.json == {"login": None, "null": "NullSession"}
            assert "Set-Cookie" not in seen.headers
        assert "Set-Cookie" not in client.get("/healthz").headers
    finally:
        app.extensions[EXTENSION].queue.stop()


def test_an_expired_login_is_sent_back_to_the_login_page(console):
    client, _ = _logged_in(console)
    with client.session_transaction("/admin/") as session:
        session["admin_since"] = int(time.time()) - 61 * 60
    assert client.get("/admin/").status_code == 302


def test_open_redirects_after_login_are_refused(console):
    client = _client(console)
    token = _token(client.get("/admin/login?next=//evil.example/x").text)
    answer = client.post(
        "/admin/login",
        data={"password": console.password, "csrf_token": token, "next": "https://evil.example"},
    )
    assert answer.headers["Location"] == "/admin/"


def test_overview_shows_the_tenant_its_budget_sync_state_and_the_queue(console):
    client, _ = _logged_in(console)
    html = client.get("/admin/").text
    assert console.tenant_id in html and "API calls, last 24 h" in html
    assert 'data-testid="queue-depth"' in html and "lead" in html
    data = client.get("/admin/api/overview").json
    (tenant,) = data["tenants"]
    assert tenant["status"] == "active" and tenant["budget"]["used"] == 0
    assert data["queue"]["depth"]["high"] + data["queue"]["depth"]["default"] > 0


def test_a_failed_job_is_listed_with_its_error_and_retried_only_with_csrf(console):
    client, token = _logged_in(console)
    queue = EmbeddedQueue()
    services = console.app.extensions[EXTENSION]
    console.app.extensions[EXTENSION] = replace(services, queue=queue)
    try:
        job = queue.enqueue("json.loads", "{not json", job_id="broken-job", retry=None)
        assert queue.drain(10)
        queue.pause()
        html = client.get("/admin/").text
        assert "broken-job" in html and "JSONDecodeError" in html
        refused = client.post(f"/admin/jobs/{job}/retry")
        assert refused.status_code == 400 and queue.status(job) == "failed"
        answer = client.post(f"/admin/jobs/{job}/retry", data={"csrf_token": token})
        assert answer.status_code == 302 and queue.status(job) == "queued"
        missing = client.post("/admin/jobs/nope/retry", data={"csrf_token": token})
        assert missing.status_code == 404
    finally:
        queue.stop()
        console.app.extensions[EXTENSION] = services


def test_redis_queue_reports_depth_failed_jobs_and_requeues_them(redis_url):
    from rq import SimpleWorker

    queue = RedisQueue(redis_url)
    job = queue.enqueue("json.loads", "{not json", job_id="admin:broken", retry=None)
    queue.enqueue("json.dumps", [1], queue="low")
    assert queue.depth() == {"high": 0, "default": 1, "low": 1}
    SimpleWorker([queue.queues()[1]], connection=queue.connection).work(burst=True)
    (failed,) = queue.failed()
    assert failed["id"] == job and "JSONDecodeError" in failed["error"]
    assert queue.requeue(job) is True and queue.status(job) == "queued"
    assert queue.failed() == [] and queue.requeue("no-such-job") is False


def test_score_ledger_filters_by_grade_change_and_paginates_newest_first(console):
    client, _ = _logged_in(console)
    store = console.services.store
    base = datetime.now(UTC) - timedelta(days=2)
    store.append_score_entries(console.tenant_id, [
        {"tenant_id": console.tenant_id, "kind": "lead", "crm_id": f"00Qpage{i:03d}",
         "scored_at": base + timedelta(minutes=i), "old_score": 30, "new_score": 75,
         "old_grade": "Warm", "new_grade": "Hot", "crossing": "Warm->Hot",
         "model_version": "lead-v1", "reasons": "test", "stale": False}
        for i in range(120)
    ])  # fmt: skip
    first = client.get(f"/admin/scores?tenant={console.tenant_id}&crossing=Warm-%3EHot").text
    assert "120 entries · page 1 of 3" in first
    ids = re.findall(r"<td>(00Qpage\d+)</td>", first)
    assert ids[:2] == ["00Qpage119", "00Qpage118"] and len(ids) == 50
    third = client.get(f"/admin/scores?tenant={console.tenant_id}&crossing=any&page=3").text
    assert "00Qpage000" in third
    bad = client.get("/admin/scores?since=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.text


def test_write_log_filters_by_field_and_time(console):
    client, _ = _logged_in(console)
    now = datetime.now(UTC)
    console.services.store.append_audit(console.tenant_id, [
        {"object_name": "Lead", "crm_id": "00Qaudit1", "field": "AI_Grade__c", "old_json": '"Warm"',
         "new_json": '"Hot"', "model_version": "lead-v1", "reason": "score", "outcome": "written",
         "at": now},
        {"object_name": "Lead", "crm_id": "00Qaudit2", "field": "AI_Score__c", "old_json": "40",
         "new_json": "75", "model_version": "lead-v1", "reason": "score", "outcome": "written",
         "at": now - timedelta(days=10)},
    ])  # fmt: skip
    html = client.get(f"/admin/writes?tenant={console.tenant_id}&field=AI_Grade__c").text
    assert "00Qaudit1" in html and "00Qaudit2" not in html
    since = (now - timedelta(days=1)).date().isoformat()
    recent = client.get(f"/admin/writes?since={since}").text
    assert "00Qaudit1" in recent and "00Qaudit2" not in recent


def test_model_card_draws_roc_calibration_lift_and_weekly_grades_as_svg(console):
    client, _ = _logged_in(console)
    html = client.get(f"/admin/models/{console.tenant_id}/lead").text
    assert html.count('<svg class="chart"') == 4
    for title in ("ROC curve, AUC", "Calibration", "Lift by decile", "Grades held"):
        assert title in html
    assert 'data-testid="sufficiency"' in html and 'data-testid="top-features"' in html
    assert "<script" not in html
    listing = client.get("/admin/models").text
    assert "Model card" in listing


def test_model_card_of_an_old_report_asks_for_a_retrain(console):
    import json

    client, _ = _logged_in(console)
    store = console.services.store
    (row,) = store.get_models(console.tenant_id, "lead", artifacts=True)
    report = json.loads(row["report_json"])
    report.pop("curves")
    store.put_model(console.tenant_id, {**row, "report_json": json.dumps(report)})
    try:
        html = client.get(f"/admin/models/{console.tenant_id}/lead").text
        assert "retrain to see curves" in html and "ROC curve" not in html
    finally:
        store.put_model(console.tenant_id, row)
    assert client.get(f"/admin/models/{console.tenant_id}/nonsense").status_code == 404


def _tuning_form(token, hot, warm, **extra):
    return {"csrf_token": token, "grade_0": str(hot), "grade_1": str(warm), "grade_2": "0",
            "hysteresis_margin": "5", "capacity_default": "60", "fairness_band": "0.25",
            "days": "30", "capacity_per_rep": "", **extra}  # fmt: skip


def _counts(html, side):
    return {g: int(n) for g, n in re.findall(rf'data-testid="{side}-(\w+)">(\d+)<', html)}


def test_dry_run_shows_before_and_after_and_saves_only_valid_settings(console):
    client, token = _logged_in(console)
    url = f"/admin/tuning/{console.tenant_id}"
    preview = client.post(url, data=_tuning_form(token, 40, 15, action="preview"))
    assert preview.status_code == 200
    before, after = _counts(preview.text, "before"), _counts(preview.text, "after")
    assert sum(before.values()) == sum(after.values()) > 0
    assert after["Hot"] + after["Warm"] > before["Hot"] + before["Warm"]
    assert 'data-testid="routing-reps"' in preview.text
    assert load_settings(console.services.registry, console.tenant_id).grades[0][1] == 70

    overlapping = client.post(url, data=_tuning_form(token, 40, 38, action="save"))
    assert overlapping.status_code == 400 and "hysteresis_margin" in overlapping.text
    no_token = client.post(url, data={**_tuning_form(token, 60, 30, action="save"),
                                      "csrf_token": "forged"})  # fmt: skip
    assert no_token.status_code == 400
    assert load_settings(console.services.registry, console.tenant_id).grades[0][1] == 70

    saved = client.post(url, data=_tuning_form(token, 65, 35, action="save"))
    assert saved.status_code == 200 and "Settings saved." in saved.text
    grades = load_settings(console.services.registry, console.tenant_id).grades
    assert grades == (("Hot", 65.0), ("Warm", 35.0), ("Cold", 0.0))
    client.post(url, data=_tuning_form(token, 70, 40, action="save"))


def test_settings_page_saves_scoring_and_copilot_settings_and_refuses_bad_values(console):
    client, token = _logged_in(console)
    url = f"/admin/settings/{console.tenant_id}"
    page = client.get(url).text
    assert "Overwrite policy" in page and "Risk-flag thresholds" in page
    bad = client.post(url, data={"csrf_token": token, "section": "scoring",
                                 "overwrite_policy": "sometimes"})  # fmt: skip
    assert bad.status_code == 400 and "overwrite_policy" in bad.text
    registry = console.services.registry
    assert load_settings(registry, console.tenant_id).overwrite_policy == "keep_rep_edits"
    good = client.post(url, data={"csrf_token": token, "section": "scoring",
                                  "overwrite_policy": "only_if_empty", "auto_assign": "on",
                                  "excluded_fields": "lead_source, industry"})  # fmt: skip
    assert good.status_code == 200
    saved = load_settings(registry, console.tenant_id)
    assert saved.overwrite_policy == "only_if_empty" and saved.auto_assign
    assert saved.excluded_fields == ("lead_source", "industry")
    copilot = client.post(url, data={"csrf_token": token, "section": "copilot",
                                     "daily_token_budget": "5000", "min_evidence": "4",
                                     "competitors": "Acme: Acme Corp, ACME"})  # fmt: skip
    assert copilot.status_code == 200, copilot.text[-500:]
    from copilot.settings import load_settings as copilot_settings

    stored = copilot_settings(registry, console.tenant_id)
    assert stored.llm_enabled is False and stored.daily_token_budget == 5000
    assert dict(stored.competitors) == {"Acme": ("Acme Corp", "ACME")}


def test_curve_points_agree_with_the_reported_auc():
    rng = np.random.default_rng(3)
    labels = rng.random(800) < 0.2
    probs = np.clip(0.2 + 0.3 * labels + rng.normal(0, 0.2, 800), 0, 1)
    curves = curve_points(probs, labels.astype(float))
    fpr, tpr = np.array(curves["roc"]).T
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert abs(np.trapezoid(tpr, fpr) - roc_auc(probs, labels.astype(float))) < 0.01
    assert sum(p["n"] for p in curves["calibration"]) == 800
    assert curves["lift"][0]["lift"] > 1 > curves["lift"][-1]["lift"]
    assert curves["lift"][-1]["cumulative_capture"] == 1.0
    assert curve_points(probs, np.zeros(800))["roc"] == []
