"""Property-based bad input that gets past authentication: the admin console and signed widget POSTs.

``test_fuzz.py`` fuzzes what an anonymous caller can reach. Here every request is authenticated:
the admin console is driven with a logged-in session and its CSRF token, and the widget POSTs
(``/cards/<crm>/followup``, ``/feedback``) carry valid signatures of installed tenants, so the
fuzzed query strings, forms and bodies reach the handlers' parsers and the stores behind them.

Whatever arrives: no 5xx, no traceback, and a rejection names its reason (the field, for forms);
a rejected request writes nothing (every LanceDB table keeps its version, tenant settings are
unchanged) and queues nothing. Accepted requests write exactly what they are for, to the signing
tenant only: two Salesforce orgs hold a record under the same id, and one org's feedback never
lands on the other's.

The console is single-operator by design (one password for every tenant; a page names its tenant
in the path or ``?tenant=``), so its tenant isolation means: a tenant-scoped page shows only that
tenant's rows, a save for one tenant leaves the others as they were, and an unknown tenant id is
refused with a 404 that names it.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from admin_fixtures import scored_console
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from live_harness import live_redis_url
from redis_databases import FUZZ_BELOW

from core.config import Secret
from core.tenants import Tenant
from handlers.webhooks import hubspot_signature_v3
from handlers.widget_auth import salesforce_headers
from handlers.widgets import FEEDBACK_RESULTS
from scoring.feedback import VOTES, read_feedback
from scoring.ledger import LedgerEntry, ScoreLedger

pytestmark = [pytest.mark.redis]

HUBSPOT_SECRET = "fuzz-authenticated-hubspot-secret"
HUBSPOT_APP_ID = "4711"
PORTAL = "4242"
OTHER_ORG = "00DOTHERORG0001"
HUBSPOT_TENANT = f"hubspot-{PORTAL}"
OTHER_TENANT = f"salesforce-{OTHER_ORG}"
REP = "005FUZZREP00001"

SHARED_LEAD = "00QSHARED000001"
"""A lead id both Salesforce orgs hold (ids are only unique within an org)."""
OWN = {
    "lead": "00QFUZZ00000001",
    "blocked_lead": "00QFUZZ00000002",
    "contact": "003FUZZ00000001",
    "opportunity": "006FUZZ00000001",
    "account": "001FUZZ00000001",
}
OTHER_ONLY_LEAD = "00QOTHER0000001"
HUBSPOT_CONTACT = "5010042"
HUBSPOT_DEAL = "9010042"

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@dataclass
class World:
    """The app with a scored tenant behind the console, and widget tenants with records."""

    app: Any
    services: Any
    tenant_id: str
    """The console's scored Salesforce tenant, whose org also signs the widget calls."""
    org: str
    widget_secret: str
    admin: Any
    """A test client logged in to the console."""
    csrf: str
    redis: redis.Redis


def _record(tenant_id: str, crm: str, crm_id: str, **values: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "crm": crm, "crm_id": crm_id,
            "updated_at": datetime.now(UTC), **values}  # fmt: skip


def _scored(tenant_id: str, crm_id: str, score: int) -> LedgerEntry:
    return LedgerEntry(
        tenant_id=tenant_id, kind="lead", crm_id=crm_id, scored_at=datetime.now(UTC),
        old_score=None, new_score=score, old_grade=None, new_grade="Hot" if score >= 70 else "Warm",
        model_version="lead-v1", reasons="+ Asked for pricing",
        reasons_detail=[{"text": "+ Asked for pricing", "evidence": []}], next_step="Call back",
    )  # fmt: skip


def _add_widget_records(services: Any, tenant_id: str) -> None:
    """Records with CRM-shaped ids for the signing org, a second org and a HubSpot portal."""
    store = services.store
    services.registry.save(Tenant(OTHER_TENANT, "salesforce", OTHER_ORG,
                                  "https://other.example.invalid", status="active"))  # fmt: skip
    services.registry.save(Tenant(HUBSPOT_TENANT, "hubspot", PORTAL, None, status="active"))
    lead = {"last_name": "Rivera", "company": "Globex", "title": "VP Sales"}
    opted_out = {**lead, "custom": {"HasOptedOutProcessing": True}}
    other = {"last_name": "Other", "company": "Initech"}
    records = {
        (tenant_id, "salesforce", "lead"): [(OWN["lead"], lead), (SHARED_LEAD, lead),
                                            (OWN["blocked_lead"], opted_out)],
        (tenant_id, "salesforce", "contact"): [(OWN["contact"], {"last_name": "Okafor"})],
        (tenant_id, "salesforce", "opportunity"): [
            (OWN["opportunity"], {"name": "Globex renewal", "stage": "Proposal", "amount": 1e4})],
        (tenant_id, "salesforce", "account"): [(OWN["account"], {"name": "Globex"})],
        (OTHER_TENANT, "salesforce", "lead"): [(SHARED_LEAD, other), (OTHER_ONLY_LEAD, other)],
        (HUBSPOT_TENANT, "hubspot", "lead"): [(HUBSPOT_CONTACT, {"last_name": "Nakamura"})],
        (HUBSPOT_TENANT, "hubspot", "opportunity"): [
            (HUBSPOT_DEAL, {"name": "Portal deal", "stage": "appointmentscheduled"})],
    }  # fmt: skip
    for (owner, crm, entity), rows in records.items():
        store.upsert(
            owner, entity, [_record(owner, crm, crm_id, **values) for crm_id, values in rows]
        )
    ScoreLedger(store).record([
        _scored(tenant_id, OWN["lead"], 88), _scored(tenant_id, SHARED_LEAD, 55),
        _scored(OTHER_TENANT, SHARED_LEAD, 12), _scored(OTHER_TENANT, OTHER_ONLY_LEAD, 34),
        _scored(HUBSPOT_TENANT, HUBSPOT_CONTACT, 77),
    ])  # fmt: skip


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    url = live_redis_url(FUZZ_BELOW)
    client = redis.Redis.from_url(url)
    client.flushdb()
    with scored_console(
        tmp_path_factory.mktemp("fuzz-authenticated"), n_leads=300, redis_url=url,
        hubspot_client_id="fuzz-client", hubspot_client_secret=Secret(HUBSPOT_SECRET),
        hubspot_app_id=HUBSPOT_APP_ID, public_url="http://localhost",
    ) as console:  # fmt: skip
        services = console.services
        _add_widget_records(services, console.tenant_id)
        tenant = services.registry.get(console.tenant_id)
        secret = services.registry.widget_secret(console.tenant_id, create=True)
        services.registry.widget_secret(OTHER_TENANT, create=True)
        admin = console.app.test_client()
        admin.environ_base["REMOTE_ADDR"] = "127.0.3.1"
        token = _csrf(admin.get("/admin/login").get_data(as_text=True))
        login = admin.post("/admin/login", data={"password": console.password, "csrf_token": token})
        assert login.status_code == 302, login.get_data(as_text=True)[:300]
        csrf = _csrf(admin.get(f"/admin/settings/{console.tenant_id}").get_data(as_text=True))
        yield World(console.app, services, console.tenant_id, tenant.external_id, secret, admin,
                    csrf, client)  # fmt: skip
    client.flushdb()
    client.close()


# -- what "changes nothing" means ----------------------------------------------------------------


def snapshot(world: World) -> dict[str, Any]:
    """Every table's version, every tenant's settings and status, and every queued job."""
    store = world.services.store
    return {
        "tables": {name: store._db.open_table(name).version for name in store.table_names()},
        "tenants": {t.tenant_id: (t.status, t.settings) for t in world.services.registry.all()},
        "queued": sorted(j["id"] for j in world.services.queue.jobs()),
        "rq": sorted(k.decode() for k in world.redis.scan_iter("rq:*")),
    }


def changed_tables(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    names = set(before["tables"]) | set(after["tables"])
    return {n for n in names if before["tables"].get(n) != after["tables"].get(n)}


def assert_clean(answer: Any, *, json_errors: bool = True) -> str:
    """Below 500, no traceback; a JSON error names a code and a message. Returns the text."""
    text = answer.get_data(as_text=True)
    assert answer.status_code < 500, f"{answer.status_code}: {text[:800]}"
    assert "Traceback" not in text and 'File "' not in text, text[:800]
    if answer.status_code >= 400 and (json_errors or answer.is_json):
        error = answer.get_json(silent=True)
        assert isinstance(error, dict) and isinstance(error.get("error"), dict), text[:300]
        assert error["error"].get("code") and error["error"].get("message"), error
    return text


def page_error(text: str) -> str:
    """The reason a console page shows in its error paragraph."""
    found = re.search(r'<p class="error"[^>]*>(.*?)</p>', text, re.S)
    assert found, f"a rejected form without a reason on the page: {text[:800]}"
    return html.unescape(found.group(1))


# -- the admin console: log pages and tenant-scoped GETs ------------------------------------------

query_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "2025-01-31", "2025-13-01", "31/01/2025", "0", "1", "-1", "201", "9" * 30,
                     "lead", "opportunity", "any", "Hot", "Warm->Hot", "written", "failed",
                     "' OR '1'='1", "%", "\\", "NaN", OWN["lead"], SHARED_LEAD]),
)  # fmt: skip
LOG_PARAMS = ["tenant", "crm_id", "field", "outcome", "grade", "crossing", "kind", "since",
              "until", "page", "version", "x"]  # fmt: skip


@given(
    path=st.sampled_from(["/admin/writes", "/admin/scores", "/admin/", "/admin/api/overview",
                          "/admin/models", "/admin/models/{t}/lead", "/admin/models/{t}/opportunity",
                          "/admin/models/{t}/{g}", "/admin/models/{g}/lead", "/admin/tuning/{t}",
                          "/admin/tuning/{g}", "/admin/settings/{t}", "/admin/settings/{g}"]),
    params=st.dictionaries(st.sampled_from(LOG_PARAMS), query_values, max_size=5),
    garbage=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"),
                    min_size=1, max_size=16),
    own_tenant=st.booleans(),
)  # fmt: skip
@FUZZ
def test_console_pages_take_any_query_string_without_5xx_or_writes(
    world, path, params, garbage, own_tenant
):
    if own_tenant and "tenant" in params:
        params["tenant"] = world.tenant_id
    url = path.format(t=world.tenant_id, g=garbage)
    before = snapshot(world)
    answer = world.admin.get(url, query_string=params)
    text = assert_clean(answer, json_errors=False)
    assert answer.status_code in (200, 400, 404), (url, params, answer.status_code, text[:300])
    if answer.status_code == 400:
        # A bad filter: the page says which one (every 400 here comes from one of them).
        reason = page_error(text)
        assert any(name in reason for name in ("since", "until", "page", "kind")), reason
    elif answer.status_code == 404 and answer.is_json:
        message = answer.get_json()["error"]["message"]
        assert message, answer.get_json()
    assert snapshot(world) == before


@given(tenant=st.text(min_size=1, max_size=30).filter(lambda t: "/" not in t),
       page=st.sampled_from(["writes", "scores"]))  # fmt: skip
@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_console_refuses_unknown_tenant_ids_with_a_404_naming_them(world, tenant, page):
    known = {t.tenant_id for t in world.services.registry.all()}
    if tenant in known:
        return
    segment = quote(tenant, safe="")
    for url, query in ((f"/admin/{page}", {"tenant": tenant}),
                       (f"/admin/settings/{segment}", {}), (f"/admin/tuning/{segment}", {}),
                       (f"/admin/models/{segment}/lead", {})):  # fmt: skip
        answer = world.admin.get(url, query_string=query)
        assert_clean(answer)
        assert answer.status_code == 404, (url, answer.status_code)
        assert repr(tenant) in answer.get_json()["error"]["message"], answer.get_json()
    before = snapshot(world)
    refused = world.admin.post(f"/admin/settings/{segment}", data={
        "csrf_token": world.csrf, "section": "scoring", "overwrite_policy": "always"})  # fmt: skip
    assert_clean(refused)
    assert refused.status_code == 404, refused.status_code
    assert snapshot(world) == before


def test_console_pages_of_one_tenant_show_only_that_tenants_rows(world):
    own = world.admin.get("/admin/scores", query_string={"tenant": world.tenant_id}).text
    other = world.admin.get("/admin/scores", query_string={"tenant": OTHER_TENANT}).text
    portal = world.admin.get("/admin/scores", query_string={"tenant": HUBSPOT_TENANT}).text
    assert OWN["lead"] in own and OTHER_ONLY_LEAD not in own and HUBSPOT_CONTACT not in own
    assert OTHER_ONLY_LEAD in other and OWN["lead"] not in other
    assert HUBSPOT_CONTACT in portal and OWN["lead"] not in portal and SHARED_LEAD not in portal
    # The shared id's page for each org shows that org's own score only.
    for tenant, score, foreign in ((world.tenant_id, "55", "12"), (OTHER_TENANT, "12", "55")):
        page = world.admin.get("/admin/scores", query_string={
            "tenant": tenant, "crm_id": SHARED_LEAD}).text  # fmt: skip
        cells = re.findall(r"<td[^>]*>\s*(\d+)\s*</td>", page)
        assert score in cells and foreign not in cells, (tenant, cells)


# -- the admin console: POSTs with the session's CSRF token ---------------------------------------

garbage_values = st.one_of(
    st.text(max_size=14),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e309", "-1", "0", "0.001", "3.5", "30",
                     "99.9", "100", "101", "1e3", "7 ", "0x10", "1_000", "١٢", "None", "rep=",
                     "=5", "rep=x", "rep=-1", "a=1\nb=2", "Acme", ":", "Acme: a, b\n: x"]),
    st.integers(-(10**12), 10**12).map(str),
    st.floats().map(str),
)  # fmt: skip

TUNING_FORM = {"grade_0": "70", "grade_1": "40", "grade_2": "0", "hysteresis_margin": "5",
               "capacity_default": "60", "fairness_band": "0.25", "days": "30",
               "capacity_per_rep": "005FUZZREP00001=40"}  # fmt: skip
TUNING_NAMES = {
    "grade_0": ("lowest score of Hot", "grades", "hysteresis_margin"),
    "grade_1": ("lowest score of Warm", "grades", "hysteresis_margin"),
    "grade_2": ("lowest score of Cold", "grades", "hysteresis_margin"),
    "hysteresis_margin": ("hysteresis margin", "hysteresis_margin"),
    "capacity_default": ("default capacity", "capacity_default"),
    "fairness_band": ("fairness band", "fairness_band"),
    "days": ("days",),
    "capacity_per_rep": ("capacity per rep", "capacity of", "capacity_per_rep"),
}
SETTINGS_FORMS = {
    "scoring": {"overwrite_policy": "keep_rep_edits", "auto_assign": "on",
                "excluded_fields": "industry, title"},
    "copilot": {"llm_enabled": "on", "daily_token_budget": "150000", "min_evidence": "3",
                "competitors": "Initech: initech, ini\nHooli: hooli",
                "risk_no_activity_days": "14", "risk_close_pushes": "2"},
}  # fmt: skip
SETTINGS_NAMES = {
    "section": ("section",),
    "overwrite_policy": ("overwrite_policy",),
    "auto_assign": ("auto_assign",),
    "excluded_fields": ("excluded_fields",),
    "llm_enabled": ("llm_enabled",),
    "daily_token_budget": ("daily token budget", "daily_token_budget"),
    "min_evidence": ("minimum evidence", "min_evidence"),
    "competitors": ("competitors",),
    "risk_no_activity_days": ("risk threshold no_activity_days", "no_activity_days"),
    "risk_close_pushes": ("risk threshold close_pushes", "close_pushes"),
}


def corrupted(base: dict[str, str]) -> st.SearchStrategy[tuple[dict[str, str], set[str]]]:
    """A valid form with some fields replaced by garbage or left out; returns it and those fields."""

    def build(choice: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
        form = dict(base)
        for name, value in choice["replace"].items():
            form[name] = value
        for name in choice["drop"]:
            form.pop(name, None)
        form.update(choice["extra"])
        touched = set(choice["replace"]) | set(choice["drop"]) & set(base)
        return form, touched

    names = sorted(base)
    return st.fixed_dictionaries({
        # A third of the forms keep every field valid, so saves are tried as often as refusals.
        "replace": st.just({}) | st.dictionaries(st.sampled_from(names), garbage_values,
                                                 min_size=1, max_size=3),
        "drop": st.just([]) | st.lists(st.sampled_from(names), max_size=2),
        "extra": st.dictionaries(st.text(max_size=8).filter(lambda k: k not in base and
                                                            k != "csrf_token"),
                                 st.text(max_size=8), max_size=2),
    }).map(build)  # fmt: skip


@contextmanager
def settings_restored(world: World) -> Iterator[None]:
    """Run one example, then put the console tenant back as it was if the example saved."""
    tenant = world.services.registry.get(world.tenant_id)
    try:
        yield
    finally:
        if world.services.registry.get(world.tenant_id).settings != tenant.settings:
            world.services.registry.save(tenant)


@given(form=corrupted(TUNING_FORM),
       action=st.sampled_from(["preview", "save", "", "delete"]), with_token=st.booleans())  # fmt: skip
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_tuning_form_rejects_garbage_by_field_and_saves_only_valid_settings(
    world, form, action, with_token
):
    with settings_restored(world):
        post_tuning(world, *form, action, with_token)


def post_tuning(
    world: World, fields: dict[str, str], touched: set[str], action: str, with_token: bool
) -> None:
    before = snapshot(world)
    data = {**fields, "action": action, **({"csrf_token": world.csrf} if with_token else {})}
    answer = world.admin.post(f"/admin/tuning/{world.tenant_id}", data=data)
    text = assert_clean(answer, json_errors=False)
    event(f"tuning {action or 'no action'} answered {answer.status_code}")
    if not with_token:
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "csrf_failed"
        assert snapshot(world) == before
        return
    assert answer.status_code in (200, 400), answer.status_code
    if answer.status_code == 400:
        assert_refused_by_name(world, text, touched, TUNING_NAMES, before)
        return
    after = snapshot(world)
    if action == "save":
        assert 'data-testid="tuning-saved"' in text, text[:500]
        saved = after["tenants"][world.tenant_id][1]["scoring"]
        assert saved["hysteresis_margin"] == float(fields["hysteresis_margin"].strip())
        capacity = (fields.get("capacity_default") or "").strip()  # blank keeps the default
        assert saved["capacity_default"] == (int(capacity) if capacity else 60)
    else:  # a dry run computes and shows; it writes nothing
        assert after == before


@given(section=st.sampled_from(["scoring", "copilot"]), scoring_form=corrupted(
           SETTINGS_FORMS["scoring"]), copilot_form=corrupted(SETTINGS_FORMS["copilot"]),
       section_override=st.none() | garbage_values)  # fmt: skip
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
def test_settings_form_rejects_garbage_by_field_and_leaves_settings_unchanged(
    world, section, scoring_form, copilot_form, section_override
):
    fields, touched = scoring_form if section == "scoring" else copilot_form
    if section_override is not None and section_override not in ("scoring", "copilot"):
        section, touched = section_override, touched | {"section"}
    with settings_restored(world):
        post_settings(world, fields, touched, section)


def post_settings(world: World, fields: dict[str, str], touched: set[str], section: str) -> None:
    others = {t.tenant_id: t.settings for t in world.services.registry.all()
              if t.tenant_id != world.tenant_id}  # fmt: skip
    before = snapshot(world)
    answer = world.admin.post(f"/admin/settings/{world.tenant_id}",
                              data={**fields, "section": section, "csrf_token": world.csrf})  # fmt: skip
    text = assert_clean(answer, json_errors=False)
    event(f"settings answered {answer.status_code}")
    assert answer.status_code in (200, 400), answer.status_code
    if answer.status_code == 400:
        assert_refused_by_name(world, text, touched, SETTINGS_NAMES, before)
        return
    assert 'data-testid="settings-saved"' in text, text[:500]
    after = world.services.registry.all()
    assert {t.tenant_id: t.settings for t in after if t.tenant_id != world.tenant_id} == others


@given(job_id=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"),
                      min_size=1, max_size=40),
       with_token=st.booleans())  # fmt: skip
@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_retrying_unknown_jobs_is_refused_cleanly(world, job_id, with_token):
    before = snapshot(world)
    data = {"csrf_token": world.csrf} if with_token else {}
    answer = world.admin.post(f"/admin/jobs/{job_id}/retry", data=data)
    assert_clean(answer)
    assert answer.status_code == (404 if with_token else 400), answer.status_code
    assert snapshot(world) == before


# -- signed widget POSTs with garbage bodies ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
known_ids = st.sampled_from([*OWN.values(), SHARED_LEAD, OTHER_ONLY_LEAD, HUBSPOT_CONTACT,
                             HUBSPOT_DEAL])  # fmt: skip
record_ids = known_ids | st.sampled_from(["", "00Q", "x" * 65, "00Q-1", "../../etc"]) | json_values
OBJECT_TYPES = [None, "lead", "Lead", "contact", "opportunity", "account", "Account", "0-1", "0-2",
                "0-3", "deals", "pipeline", ""]  # fmt: skip
object_types = st.sampled_from(OBJECT_TYPES) | json_values
feedback_fields = {
    "crm": st.sampled_from(["salesforce", "hubspot", "pipedrive", None]) | json_values,
    "object_type": object_types,
    "record_id": record_ids,
    "result": st.sampled_from([*FEEDBACK_RESULTS, "nope", None]) | json_values,
    "vote": st.sampled_from([*VOTES, "meh", None]) | json_values,
    "reason": st.sampled_from([None, "", "Too small", "x" * 1001]) | json_values,
    "override_owner": st.sampled_from([None, "", REP, "x" * 65]) | json_values,
    "override_score": st.sampled_from([None, 0, 55, 100, 101, -1, 5.5, True, "55"]) | json_values,
    "user_id": st.sampled_from([None, "", REP, "005SOMEONEELSE1"]) | json_values,
    "surprise": json_values,
}


def own_record(crm: str) -> st.SearchStrategy[tuple[str, str | None]]:
    """A record of the signing tenant, with the object type its widget sends."""
    if crm == "salesforce":
        return st.tuples(st.sampled_from([*OWN.values(), SHARED_LEAD]), st.none())
    return st.sampled_from([(HUBSPOT_CONTACT, "0-1"), (HUBSPOT_DEAL, "0-3")])


def as_body(
    plausible: st.SearchStrategy[Any], near: st.SearchStrategy[Any], garbage: st.SearchStrategy[Any]
) -> st.SearchStrategy[bytes]:
    """Encoded bodies of five kinds, so the deep checks are reached as often as the parser's.

    Plausible ones name the signer's record as its widget would (what an accepted call stores),
    near ones name any tenant's record with garbage around it (the record's tenant, the override
    rules), then objects of garbage throughout, any JSON, and bytes that are not JSON at all.
    """

    def encode(value: Any) -> bytes:
        return json.dumps(value).encode()

    return st.one_of(plausible.map(encode), near.map(encode), garbage.map(encode),
                     json_values.map(encode), st.binary(max_size=120))  # fmt: skip


def feedback_body(crm: str) -> st.SearchStrategy[bytes]:
    """Feedback bodies for a call signed by ``crm``'s tenant."""
    plausible = own_record(crm).flatmap(
        lambda record: st.fixed_dictionaries(
            {
                "record_id": st.just(record[0]),
                "object_type": st.just(record[1]),
                "result": st.sampled_from(FEEDBACK_RESULTS),
                "vote": st.sampled_from(["up", "down"]),
            }
        )
    )
    near = st.fixed_dictionaries(
        {
            "record_id": known_ids,
            "result": st.sampled_from(FEEDBACK_RESULTS),
            "vote": st.sampled_from(VOTES),
        },
        optional={
            k: v for k, v in feedback_fields.items() if k not in ("record_id", "result", "vote")
        },
    )
    return as_body(plausible, near, st.fixed_dictionaries({}, optional=feedback_fields))  # fmt: skip


def followup_body(crm: str) -> st.SearchStrategy[bytes]:
    """Follow-up requests for a call signed by ``crm``'s tenant."""
    plausible = own_record(crm).map(
        lambda record: {"record_id": record[0], "object_type": record[1]}
    )
    near = st.fixed_dictionaries({"record_id": known_ids}, optional={"object_type": object_types})
    garbage = st.fixed_dictionaries(
        {}, optional={"object_type": object_types, "record_id": record_ids, "surprise": json_values}
    )
    return as_body(plausible, near, garbage)  # fmt: skip


def signed_post(world: World, crm: str, path: str, body: bytes, user: str) -> Any:
    """POST ``body`` to ``path`` signed as the CRM signs a widget call."""
    client = world.app.test_client()
    if crm == "salesforce":
        headers = salesforce_headers(world.widget_secret, "POST", path, world.org, user, body)
        return client.post(path, data=body, headers={**headers, "Content-Type": "application/json"})
    query = urlencode({"portalId": PORTAL, "userId": "77", "appId": HUBSPOT_APP_ID})
    url = f"http://localhost{path}?{query}"
    stamp = str(int(time.time() * 1000))
    signature = hubspot_signature_v3(HUBSPOT_SECRET, "POST", url, body, stamp)
    return client.post(url, data=body, headers={"X-HubSpot-Signature-v3": signature,
                                                "X-HubSpot-Request-Timestamp": stamp,
                                                "Content-Type": "application/json"})  # fmt: skip


def assert_names_the_reason(answer: Any, sent: Any) -> None:
    """A refused widget call says which field (or that the body itself) was wrong."""
    error = answer.get_json()["error"]
    code, message = error["code"], error["message"]
    if code in ("invalid_feedback", "invalid_followup_request"):
        named = error.get("details", {}).get("fields", {})
        assert named, error
        assert all(str(name) in message or name == "_schema" for name in named), error
    elif code in ("bad_record_id", "record_not_found"):
        assert isinstance(sent, dict) and str(sent.get("record_id")) in message, error
    elif code == "unknown_object_type":
        assert "object_type" in message or "objectTypeId" in message, error
    else:
        assert code in ("malformed_json", "malformed_body", "followup_refused"), error


@given(crm=st.sampled_from(["salesforce", "hubspot"]), user=st.sampled_from([REP, ""]),
       data=st.data())  # fmt: skip
@FUZZ
def test_signed_feedback_with_garbage_bodies_is_refused_by_field_and_stays_in_its_tenant(
    world, crm, user, data
):
    body = data.draw(feedback_body(crm), label="body")
    signer = world.tenant_id if crm == "salesforce" else HUBSPOT_TENANT
    store = world.services.store
    feedback_before = {t: len(read_feedback(store, t)) for t in
                       (world.tenant_id, OTHER_TENANT, HUBSPOT_TENANT)}  # fmt: skip
    before = snapshot(world)
    answer = signed_post(world, crm, "/feedback", body, user)
    assert_clean(answer)
    event(f"feedback answered {answer.status_code}")
    try:
        sent = json.loads(body)
    except ValueError:
        sent = None
    after = snapshot(world)
    if answer.status_code >= 400:
        assert answer.status_code in (400, 404), answer.get_json()
        assert_names_the_reason(answer, sent)
        assert after == before, f"a refused feedback changed {changed_tables(before, after)}"
        return
    assert answer.status_code == 201, answer.get_json()
    assert isinstance(sent, dict)
    owned = {*OWN.values(), SHARED_LEAD} if crm == "salesforce" else {HUBSPOT_CONTACT, HUBSPOT_DEAL}
    assert sent["record_id"] in owned, f"feedback stored on another tenant's record: {sent}"
    assert changed_tables(before, after) == {"feedback"}, changed_tables(before, after)
    assert after["queued"] == before["queued"] and after["tenants"] == before["tenants"]
    for tenant_id, count in feedback_before.items():
        grown = len(read_feedback(store, tenant_id)) - count
        assert grown == (1 if tenant_id == signer else 0), (tenant_id, grown)
    stored = read_feedback(store, signer)[-1]
    assert stored["crm_id"] == sent["record_id"] and stored["vote"] == sent["vote"], stored


@given(crm=st.sampled_from(["salesforce", "hubspot"]),
       path_crm=st.sampled_from(["", "", "", "pipedrive"]), data=st.data())  # fmt: skip
@FUZZ
def test_signed_followup_with_garbage_bodies_is_refused_cleanly_and_drafts_only_own_records(
    world, crm, path_crm, data
):
    body = data.draw(followup_body(crm), label="body")
    path = f"/cards/{path_crm or crm}/followup"
    before = snapshot(world)
    answer = signed_post(world, crm, path, body, REP)
    assert_clean(answer)
    event(f"follow-up answered {answer.status_code}")
    after = snapshot(world)
    try:
        sent = json.loads(body)
    except ValueError:
        sent = None
    if answer.status_code >= 400:
        assert answer.status_code in (400, 404, 422), answer.get_json()
        if path_crm:
            assert answer.get_json()["error"]["code"] == "unknown_crm"
        else:
            assert_names_the_reason(answer, sent)
        assert after == before, f"a refused follow-up changed {changed_tables(before, after)}"
        return
    assert answer.status_code == 200, answer.get_json()
    assert isinstance(sent, dict)
    drafted = {OWN["lead"], OWN["contact"], OWN["opportunity"], SHARED_LEAD}
    if crm == "hubspot":
        drafted = {HUBSPOT_CONTACT, HUBSPOT_DEAL}
    assert sent["record_id"] in drafted, f"a draft for a record it may not have: {sent}"
    assert answer.get_json()["followup_draft"], answer.get_json()
    assert changed_tables(before, after) == {"copilot_results"}, changed_tables(before, after)
    new_jobs = set(after["queued"]) - set(before["queued"])
    assert len(new_jobs) <= 1, new_jobs  # the draft's write-back (deduplicated per record)
    assert after["tenants"] == before["tenants"]


def assert_refused_by_name(
    world: World, text: str, touched: set[str], names_of: dict[str, Any], before: Any
) -> None:
    """A refused form: some field was corrupted, the error names one of them, nothing changed."""
    reason = page_error(text)
    names = {n for field in touched for n in names_of.get(field, ())}
    assert touched, f"the valid form was refused: {reason}"
    assert any(n in reason for n in names), f"{reason!r} names none of {sorted(touched)}"
    assert snapshot(world) == before, "a refused form changed something"
