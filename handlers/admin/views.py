"""The admin console's pages: overview, logs, model cards, dry run and tuning, settings.

Every page is rendered on the server by Jinja; the only client-side behaviour is HTML forms. Bad
input (an unknown tenant, a malformed date, invalid settings) renders the page again with the
reason and a 4xx status, and saves nothing.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from core.queue import QueueUnavailable
from core.store import Store
from handlers import context
from handlers.admin import charts, data
from handlers.admin.blueprint import bp
from handlers.errors import error_response
from scoring.registry import ModelRegistry
from scoring.settings import (
    OVERWRITE_POLICIES,
    ScoringSettingsError,
    load_settings,
    save_settings,
)
from scoring.tuning import MAX_DAYS, dry_run, warm_dry_run

log = logging.getLogger(__name__)

KINDS = ("lead", "opportunity")
DEFAULT_DRY_RUN_DAYS = 30


class InputError(ValueError):
    """A form or query value the page cannot use; the message names the field."""


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A function from a module that may not exist yet in this deployment."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


def _tenant_ids() -> list[str]:
    """The installed tenants, read once per request (a page asks for them two or three times)."""
    found: list[str] | None = g.get("admin_tenant_ids")
    if found is None:
        found = sorted(row["tenant_id"] for row in context.services().store.list_tenants())
        g.admin_tenant_ids = found
    return list(found)


def _tenant_or_404(tenant_id: str) -> str:
    if tenant_id not in _tenant_ids():
        abort(404, description=f"no installed tenant {tenant_id!r}")
    return tenant_id


def _chosen_tenant() -> str | None:
    tenants = _tenant_ids()
    wanted = request.args.get("tenant")
    if wanted:
        return _tenant_or_404(wanted)
    return tenants[0] if tenants else None


def _date(name: str, *, end_of_day: bool = False) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"{name}: {raw!r} is not a date like 2025-01-31") from None
    return day + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else day


def _int(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise InputError(f"{name}: {value} must be between {low} and {high}")
    return value


def _float(raw: str | None, name: str) -> float:
    try:
        return float((raw or "").strip())
    except ValueError:
        raise InputError(f"{name}: {raw!r} is not a number") from None


# --------------------------------------------------------------------------------------------------
# Overview and jobs


@bp.get("/")
def overview() -> str:
    """Tenants, tokens, API budgets, sync state, queue, failed and parked jobs."""
    return render_template("admin/overview.html", data=data.overview(context.services()))


@bp.get("/api/overview")
def overview_json() -> Response:
    """The overview as JSON, for scripts and monitoring."""
    return jsonify(data.overview(context.services()))


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Any:
    """Queue a failed job again."""
    try:
        requeued = context.services().queue.requeue(job_id)
    except QueueUnavailable as exc:
        return error_response(503, "queue_unavailable", str(exc))
    if not requeued:
        return error_response(404, "not_found", f"no failed job {job_id!r} to retry")
    flash(f"Job {job_id} queued again.")
    return redirect(url_for("admin.overview"))


# --------------------------------------------------------------------------------------------------
# Logs


@bp.get("/writes")
def writes() -> Any:
    """The write-back log, filtered by record, field, outcome and time."""
    return _log_page("admin/writes.html", ("crm_id", "field", "outcome"), data.write_log)


@bp.get("/scores")
def scores() -> Any:
    """The score ledger, filtered by record, grade, grade change and time."""
    kind = request.args.get("kind", "lead")
    if kind not in KINDS:
        error = InputError(f"kind: {kind!r} must be lead or opportunity")
        return _page_error("admin/scores.html", error, tenant_id=_chosen_tenant(), args={})
    read = functools.partial(data.score_log, kind=kind)
    return _log_page("admin/scores.html", ("crm_id", "grade", "crossing"), read)


def _log_page(template: str, filters: tuple[str, ...], read: Callable[..., data.Page]) -> Any:
    """One page of a log: the text filters named, a date range and a page number from the query."""
    tenant_id = _chosen_tenant()
    args = {k: request.args.get(k, "").strip() for k in filters}
    try:
        since, until = _date("since"), _date("until", end_of_day=True)
        page_no = _int(request.args.get("page"), "page", 1, data.MAX_PAGE, 1)
    except InputError as exc:
        return _page_error(template, exc, tenant_id=tenant_id, args=args)
    page = (
        read(context.services(), tenant_id, since=since, until=until, page=page_no,
             **{k: v or None for k, v in args.items()})
        if tenant_id
        else data.Page([], 0, 1, 1)
    )  # fmt: skip
    return render_template(template, tenants=_tenant_ids(), tenant_id=tenant_id,
                           page=page, args=request.args, error=None)  # fmt: skip


def _page_error(template: str, exc: Exception, **values: Any) -> tuple[str, int]:
    empty = data.Page([], 0, 1, 1)
    page = render_template(template, tenants=_tenant_ids(), page=empty, error=str(exc),
                           **{**values, "args": request.args})  # fmt: skip
    return page, 400


# --------------------------------------------------------------------------------------------------
# Model cards


@bp.get("/models")
def models() -> str:
    """Every tenant's model versions per kind."""
    registry = ModelRegistry(context.services().store)
    listing = [
        {"tenant_id": t, "kind": kind, "versions": registry.versions(t, kind)}
        for t in _tenant_ids()
        for kind in KINDS
    ]
    return render_template("admin/models.html", listing=listing)


@bp.get("/models/<tenant_id>/<kind>")
def model_card(tenant_id: str, kind: str) -> Any:
    """One model's report with its pictures, grade history, sufficiency and feedback."""
    _tenant_or_404(tenant_id)
    if kind not in KINDS:
        abort(404, description=f"no model kind {kind!r}; expected lead or opportunity")
    services = context.services()
    registry = ModelRegistry(services.store)
    version = request.args.get("version") or None
    try:
        report = registry.report(tenant_id, kind, version)
    except KeyError as exc:
        page = render_template("admin/model.html", tenant_id=tenant_id, kind=kind, report=None,
                               missing=str(exc).strip("'\""), versions=[], pictures={},
                               weeks=None, feedback=None)  # fmt: skip
        return page, 404
    pictures: dict[str, Any] = {}
    curves = report.get("curves")
    if curves:
        if curves.get("roc"):
            pictures["roc"] = charts.roc_chart(curves["roc"], report.get("auc"))
        if curves.get("calibration"):
            pictures["calibration"] = charts.calibration_chart(curves["calibration"])
        if curves.get("lift"):
            pictures["lift"] = charts.lift_chart(curves["lift"])
    labels = [b[0] for b in load_settings(services.registry, tenant_id).grades]
    weeks = data.grade_weeks(services, tenant_id, kind, labels)
    if weeks:
        pictures["weeks"] = charts.stacked_weeks(weeks, labels)
        pictures["legend"] = charts.legend(labels)
    summary = _optional("scoring.feedback", "feedback_summary")
    feedback = None
    if summary is not None:
        try:
            feedback = summary(services.store, tenant_id)
        except Exception:  # the card still shows when feedback cannot be read
            log.exception("feedback summary failed for %s", tenant_id)
            feedback = {"error": "feedback could not be read; see the log"}
    return render_template("admin/model.html", tenant_id=tenant_id, kind=kind, report=report,
                           missing=None, versions=registry.versions(tenant_id, kind),
                           pictures=pictures, weeks=weeks, feedback=feedback)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Dry run and tuning


def _tuning_changes(form: Mapping[str, str], grades: list[tuple[str, float]]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    bands = []
    for i, (label, _) in enumerate(grades):
        raw = form.get(f"grade_{i}")
        bands.append([label, _float(raw, f"lowest score of {label}")])
    changes["grades"] = bands
    changes["hysteresis_margin"] = _float(form.get("hysteresis_margin"), "hysteresis margin")
    changes["capacity_default"] = _int(
        form.get("capacity_default"), "default capacity", 1, 100_000, 60
    )
    changes["fairness_band"] = _float(form.get("fairness_band"), "fairness band")
    per_rep: dict[str, int] = {}
    for number, line in enumerate((form.get("capacity_per_rep") or "").splitlines(), start=1):
        if not line.strip():
            continue
        rep, sep, cap = line.partition("=")
        if not sep or not rep.strip():
            raise InputError(f"capacity per rep, line {number}: write it as rep_id=capacity")
        per_rep[rep.strip()] = _int(cap, f"capacity of {rep.strip()}", 0, 100_000, 0)
    changes["capacity_per_rep"] = per_rep
    return changes


_warmed: weakref.WeakSet[Store] = weakref.WeakSet()
_warmed_lock = threading.Lock()


def warm_console() -> bool:
    """Build what the console's slowest first views need, on a thread (once per process and store).

    At 100k leads a tenant's first dry-run preview replays its ledger and routing (seconds) and
    its model card's first view counts grades per week over the whole ledger (hundreds of ms).
    Called on each logged-in request, so a web process starts this when it first serves the
    console, not when it starts: processes that never serve the console never pay for it. No
    request waits for the thread; a view asked for before it is done builds what it needs itself.

    Returns:
        Whether a thread was started (False when this store was warmed already).
    """
    services = context.services()
    with _warmed_lock:
        if services.store in _warmed:
            return False
        _warmed.add(services.store)

    def warm() -> None:
        try:
            tenant_ids = [row["tenant_id"] for row in services.store.list_tenants()]
        except Exception:  # each first view builds its own
            log.exception("warming the admin console failed")
            return
        for tenant_id in tenant_ids:
            try:
                current = load_settings(services.registry, tenant_id)
                warm_dry_run(services.store, tenant_id, current, days=DEFAULT_DRY_RUN_DAYS)
                labels = [grade[0] for grade in current.grades]
                for kind in KINDS:
                    data.grade_weeks(services, tenant_id, kind, labels)
            except Exception:  # this tenant's first views build theirs instead
                log.exception("warming the admin console for %s failed", tenant_id)

    threading.Thread(target=warm, name="fieldwise-admin-warm", daemon=True).start()
    return True


@bp.route("/tuning/<tenant_id>", methods=["GET", "POST"])
def tuning(tenant_id: str) -> Any:
    """Try grade thresholds, hysteresis, capacity and fairness on the last N days; then save."""
    _tenant_or_404(tenant_id)
    services = context.services()
    current = load_settings(services.registry, tenant_id)
    values: dict[str, Any] = current.to_dict()
    result = error = saved = None
    status = 200
    days = DEFAULT_DRY_RUN_DAYS
    if request.method == "POST":
        try:
            days = _int(request.form.get("days"), "days", 1, MAX_DAYS, DEFAULT_DRY_RUN_DAYS)
            changes = _tuning_changes(request.form, list(current.grades))
            values = {**values, **changes}
            if request.form.get("action") == "save":
                saved_settings = save_settings(services.registry, tenant_id, changes)
                current = saved_settings
                values = saved_settings.to_dict()
                saved = "Settings saved."
            else:
                result = dry_run(services.store, tenant_id, current, changes, days=days)
        except (InputError, ScoringSettingsError, ValueError) as exc:
            error, status = str(exc), 400
    page = render_template("admin/tuning.html", tenant_id=tenant_id, values=values, days=days,
                           result=result, error=error, saved=saved)  # fmt: skip
    return page, status


# --------------------------------------------------------------------------------------------------
# Settings


def _copilot_changes(form: Mapping[str, str], thresholds: Mapping[str, float]) -> dict[str, Any]:
    competitors: dict[str, list[str]] = {}
    for number, line in enumerate((form.get("competitors") or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, aliases = line.partition(":")
        if not name.strip():
            raise InputError(f"competitors, line {number}: write it as Name: alias, alias")
        competitors[name.strip()] = [a.strip() for a in aliases.split(",") if a.strip()]
    return {
        "llm_enabled": form.get("llm_enabled") == "on",
        "daily_token_budget": _int(
            form.get("daily_token_budget"), "daily token budget", 0, 10**10, 0
        ),
        "min_evidence": _int(form.get("min_evidence"), "minimum evidence", 0, 1000, 0),
        "competitors": competitors,
        "risk_thresholds": {
            key: _threshold(form.get(f"risk_{key}"), f"risk threshold {key}")
            for key in thresholds
            if (form.get(f"risk_{key}") or "").strip()
        },
    }


def _threshold(raw: str | None, name: str) -> int | float:
    """A risk threshold as typed; a whole number becomes an int.

    Day and count thresholds accept only whole numbers, and the page fills every threshold in, so
    ``14`` must reach them as 14, not 14.0.
    """
    value = _float(raw, name)
    return int(value) if value.is_integer() else value


@bp.route("/settings/<tenant_id>", methods=["GET", "POST"])
def settings(tenant_id: str) -> Any:
    """Scoring write-back settings and the copilot's settings of one tenant."""
    _tenant_or_404(tenant_id)
    services = context.services()
    load_copilot = _optional("copilot.settings", "load_settings")
    save_copilot = _optional("copilot.settings", "save_settings")
    usage_today = _optional("copilot.llm", "usage_today")
    error = saved = None
    status = 200
    if request.method == "POST":
        section = request.form.get("section")
        try:
            if section == "scoring":
                excluded = [f.strip() for f in request.form.get("excluded_fields", "").split(",")]
                save_settings(services.registry, tenant_id, {
                    "overwrite_policy": request.form.get("overwrite_policy", ""),
                    "auto_assign": request.form.get("auto_assign") == "on",
                    "excluded_fields": [f for f in excluded if f],
                })  # fmt: skip
                saved = "Scoring settings saved."
            elif section == "copilot" and load_copilot and save_copilot:
                thresholds = load_copilot(services.registry, tenant_id).risk_thresholds
                save_copilot(
                    services.registry, tenant_id, _copilot_changes(request.form, thresholds)
                )
                saved = "Copilot settings saved."
            else:
                raise InputError(f"unknown settings section {section!r}")
        except (InputError, ValueError) as exc:
            error, status = str(exc), 400
    copilot = load_copilot(services.registry, tenant_id) if load_copilot else None
    usage = None
    if usage_today is not None:
        try:
            usage = usage_today(services.store, tenant_id)
        except Exception:  # usage is informative; the settings stay editable without it
            log.exception("LLM usage could not be read for %s", tenant_id)
    page = render_template("admin/settings.html", tenant_id=tenant_id,
                           scoring=load_settings(services.registry, tenant_id),
                           policies=OVERWRITE_POLICIES, copilot=copilot, usage=usage,
                           error=error, saved=saved)  # fmt: skip
    return page, status
