"""The ``fieldwise`` command line.

Every command reads the configuration once and turns a configuration problem into one line on
stderr and exit status 2, never a traceback. Commands import what they run lazily, so ``--help`` and
``status`` stay fast.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Callable
from functools import wraps
from importlib.metadata import version
from typing import Any, TypeVar

import click

from core.config import Config, ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def _config_errors_are_one_line(command: F) -> F:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"fieldwise: configuration error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("fieldwise"), prog_name="fieldwise")
def main() -> None:
    """Fieldwise: AI scores, routing, battle cards and forecast notes inside your CRM."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn worker processes (more than one needs FIELDWISE_REDIS_URL).",
)
@_config_errors_are_one_line
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web app (webhooks, install, widgets, admin) with gunicorn."""
    config = Config.from_env()
    if workers > 1 and not config.redis_url:
        raise ConfigError(
            "FIELDWISE_REDIS_URL is not set: the embedded queue lives inside one process, "
            "so --workers above 1 needs Redis for shared queues, dedupe and locks"
        )
    from gunicorn.app.base import BaseApplication

    from handlers.app import create_app

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return create_app(config)

    _Server().run()


@main.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@_config_errors_are_one_line
def worker(burst: bool) -> None:
    """Work the rq queues (high, default, low) on FIELDWISE_REDIS_URL."""
    config = Config.from_env()
    if not config.redis_url:
        raise ConfigError(
            "FIELDWISE_REDIS_URL is not set: without Redis, jobs run inside `fieldwise serve` "
            "or `fieldwise demo`; separate workers need a shared Redis"
        )
    from core import queue as job_queue
    from core.services import configure

    redis_queue = configure(config).queue
    assert isinstance(redis_queue, job_queue.RedisQueue)
    job_queue.preload_job_modules()
    # The tuned worker notices a killed worker's job within seconds (see RedisQueue.worker).
    redis_queue.worker().work(burst=burst, with_scheduler=True)


@main.command()
@_config_errors_are_one_line
def status() -> None:
    """Print the health of Redis, the store, models and tenants as JSON (exit 1 if degraded)."""
    config = Config.from_env(require_secrets=False)
    from core import queue as job_queue
    from core.store import Store
    from handlers.health import collect_status

    report = collect_status(job_queue.build(config), Store.from_config(config))
    report["config"] = config.describe()
    click.echo(json.dumps(report, indent=2, default=str))
    sys.exit(0 if report["status"] == "ok" else 1)


@main.command()
@click.option("--secret-key", is_flag=True, help="Print a FIELDWISE_SECRET_KEY instead.")
def keygen(secret_key: bool) -> None:
    """Print a new FIELDWISE_ENCRYPTION_KEY (or, with --secret-key, a FIELDWISE_SECRET_KEY)."""
    import secrets

    from core.crypto import generate_key

    click.echo(secrets.token_urlsafe(48) if secret_key else generate_key())


@main.command()
@click.option(
    "--salesforce-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="HTTPS port for the Salesforce sandbox (0: a free port).",
)
@click.option(
    "--hubspot-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="HTTP port for the HubSpot sandbox (0: a free port).",
)
@click.option(
    "--data",
    "data_dir",
    default="./var/sandbox",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the sandboxes keep their state.",
)
@click.option(
    "--seed-leads",
    default=0,
    type=click.IntRange(0, 200_000),
    help="Load a generated history of this many leads (once per data folder).",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the generated history.")
@click.option(
    "--widget-url", default=None, help="Fieldwise URL the record pages embed widgets from."
)
def sandbox(
    salesforce_port: int,
    hubspot_port: int,
    data_dir: str,
    seed_leads: int,
    seed: int,
    widget_url: str | None,
) -> None:
    """Run local Salesforce and HubSpot sandboxes; prints one JSON line with connection details."""
    import signal
    import threading
    from pathlib import Path

    from sandbox.runner import start_sandboxes

    sandboxes = start_sandboxes(
        Path(data_dir),
        salesforce_port=salesforce_port,
        hubspot_port=hubspot_port,
        seed_leads=seed_leads,
        seed=seed,
        widget_base_url=widget_url,
    )
    click.echo(json.dumps(sandboxes.connection_info()), nl=True)
    sys.stdout.flush()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandboxes.stop()


@main.group()
def admin() -> None:
    """The admin console's login."""


@admin.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def admin_hash_password(from_stdin: bool) -> None:
    """Print a hash for FIELDWISE_ADMIN_PASSWORD_HASH (prompts for the password twice)."""
    import sys

    from werkzeug.security import generate_password_hash

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < 12:
        raise click.ClickException("the admin password must have at least 12 characters")
    click.echo(generate_password_hash(password))


@main.command()
@click.option(
    "--data",
    "data_dir",
    default="./var/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The demo's own folder (emptied first).",
)
@click.option(
    "--seed-leads",
    default=3000,
    show_default=True,
    type=click.IntRange(500, 200_000),
    help="Size of the generated company history.",
)
@click.option("--once", is_flag=True, help="Exit after the summary instead of serving.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def demo(data_dir: str, seed_leads: int, once: bool, as_json: bool) -> None:
    """Run the whole journey on embedded defaults against the sandbox CRMs."""
    import threading
    from pathlib import Path

    from sandbox.demo import render, run_demo

    run = run_demo(Path(data_dir), seed_leads=seed_leads)
    click.echo(json.dumps(run.summary, default=str) if as_json else render(run.summary))
    try:
        if not once:
            click.echo(
                f"Fieldwise is serving at {run.app_url} (health: {run.app_url}/healthz); "
                "the record pages above embed its widget. Admin console: "
                f"{run.app_url}/admin/ (password for this run: {run.admin_password}). "
                "Press Ctrl-C to stop.",
                err=True,
            )
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        run.stop()


@main.command()
@click.argument("crm", type=click.Choice(["salesforce", "hubspot"]))
@click.option(
    "--dry-run", is_flag=True, help="Print what install would create or change; change nothing."
)
@click.option(
    "--tenant",
    "tenant_id",
    default=None,
    help="An installed tenant to re-run install for, with its stored tokens (no consent).",
)
@click.option(
    "--jwt-username", default=None, help="Salesforce JWT bearer flow: the integration user."
)
@click.option(
    "--jwt-key",
    default=None,
    type=click.File("r"),
    help="Salesforce JWT bearer flow: the connected app's private key (PEM).",
)
@click.option(
    "--auto-consent",
    is_flag=True,
    help="Follow the consent page's redirects without a browser (sandbox CRMs consent at once).",
)
@_config_errors_are_one_line
def install(
    crm: str,
    dry_run: bool,
    tenant_id: str | None,
    jwt_username: str | None,
    jwt_key: Any,
    auto_consent: bool,
) -> None:
    """Install Fieldwise into a CRM from the command line (headless setups)."""
    from handlers.install_cli import run_install

    run_install(
        crm,
        dry_run=dry_run,
        tenant_id=tenant_id,
        jwt_username=jwt_username,
        jwt_key_pem=jwt_key.read() if jwt_key else None,
        auto_consent=auto_consent,
    )


@main.command()
@click.argument("tenant_id")
@click.option(
    "--keep-data-fields",
    is_flag=True,
    help="Keep the AI fields and their values; remove subscriptions and access only.",
)
@click.option("--dry-run", is_flag=True, help="Print what uninstall would remove; change nothing.")
@_config_errors_are_one_line
def uninstall(tenant_id: str, keep_data_fields: bool, dry_run: bool) -> None:
    """Remove what Fieldwise created in a tenant's CRM, and only that."""
    from handlers.install_cli import run_uninstall

    run_uninstall(tenant_id, keep_data_fields=keep_data_fields, dry_run=dry_run)


@main.command()
@click.option("--backfill", "mode", flag_value="backfill", help="Copy every record (resumes).")
@click.option(
    "--reconcile",
    "mode",
    flag_value="reconcile",
    help="Sweep for changes and deletions since the last sweep (for cron).",
)
@click.option(
    "--tenant", "tenant_ids", multiple=True, help="Only these tenants (default: all active)."
)
@_config_errors_are_one_line
def sync(mode: str | None, tenant_ids: tuple[str, ...]) -> None:
    """Backfill or reconcile tenants in the foreground, with progress."""
    if mode is None:
        raise click.UsageError("choose --backfill or --reconcile")
    from connectors.base import connector_for
    from core.services import configure
    from sync.jobs import BACKFILL_ENTITIES, reconcile_tenant, run_backfill

    services = configure(Config.from_env())
    chosen = _active_tenants(services, tenant_ids, "sync")
    for tenant_id in chosen:
        if mode == "reconcile":
            summary = reconcile_tenant(tenant_id, reschedule=False)
            click.echo(json.dumps({"tenant_id": tenant_id, "reconciled": summary}))
            continue
        connector = connector_for(tenant_id, services.connector_context)
        for entity in BACKFILL_ENTITIES:
            with click.progressbar(length=0, label=f"{tenant_id} {entity}", show_pos=True) as bar:
                result = run_backfill(services, connector, tenant_id, entity, on_page=bar.update)
            click.echo(f"{tenant_id} {entity}: {result['records']} records, done")


@main.command()
@click.argument("subject")
@click.option("--tenant", "tenant_ids", multiple=True, help="Only these tenants (default: all).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_config_errors_are_one_line
def forget(subject: str, tenant_ids: tuple[str, ...], yes: bool) -> None:
    """Erase a person (email address or CRM id) from the store, its indexes and future syncs."""
    from core.services import configure
    from sync.erasure import forget as erase

    services = configure(Config.from_env())
    if not yes:
        click.confirm(f"Erase every record of {subject!r}? This cannot be undone", abort=True)
    try:
        reports = erase(services, subject, list(tenant_ids) or None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for report in reports:
        click.echo(json.dumps({"tenant_id": report.tenant_id, "removed": report.removed}))


# --------------------------------------------------------------------------------------------------
# Scoring models: train, list versions, show a report, roll back

_KINDS = ("lead", "opportunity")
_REPORT_KEYS = ("auc", "pr_auc", "brier", "ece", "lift_top20", "n_train", "n_holdout")


def _active_tenants(services: Any, requested: tuple[str, ...], doing: str) -> list[str]:
    """The tenants named on the command line, or else every active one."""
    chosen = list(requested) or [
        t.tenant_id for t in services.registry.all() if t.status == "active"
    ]
    if not chosen:
        raise click.ClickException(f"no active tenant to {doing}: install a CRM first")
    return chosen


def _tenant_ids(services: Any, tenant: str | None) -> list[str]:
    if tenant:
        return [tenant]
    found = [str(row["tenant_id"]) for row in services.store.list_tenants()]
    if not found:
        raise click.UsageError("no tenants installed; pass --tenant or install a CRM first")
    return found


def _summary(report: dict[str, Any]) -> str:
    head = f"{report.get('kind')} {report.get('model_version') or '(not saved)'}"
    if report.get("rule_based"):
        head += " RULE-BASED: " + str(report.get("sufficiency", {}).get("message", ""))
    numbers = ", ".join(
        f"{k} {report[k]:.3f}" if isinstance(report.get(k), float) else f"{k} {report.get(k)}"
        for k in _REPORT_KEYS
    )
    promoted = "promoted" if report.get("promoted") else "not promoted"
    reason = (report.get("promotion") or {}).get("reason", "")
    return f"{head}\n  {numbers}\n  {promoted}{': ' + reason if reason else ''}"


@main.command()
@click.option("--tenant", default=None, help="Tenant id (default: every installed tenant).")
@click.option(
    "--kind",
    type=click.Choice([*_KINDS, "all"]),
    default="all",
    show_default=True,
    help="Which model to train.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each report as one JSON object.")
@click.option("--from-csv", "csv_path", type=click.Path(exists=True, dir_okay=False),
              help="Train from a CSV export of history instead of the store.")  # fmt: skip
@click.option(
    "--label", "label_column", help="The CSV column holding the outcome (with --from-csv)."
)
@click.option("--exclude", "excluded", multiple=True, help="Leave this field out (repeatable).")
@_config_errors_are_one_line
def train(
    tenant: str | None,
    kind: str,
    as_json: bool,
    csv_path: str | None,
    label_column: str | None,
    excluded: tuple[str, ...],
) -> None:
    """Train lead and opportunity models with CatBoost and print their reports."""
    from core.services import configure
    from scoring.training import train as train_model
    from scoring.training import train_from_csv

    config = Config.from_env()
    services = configure(config)
    kinds = list(_KINDS) if kind == "all" else [kind]
    reports: list[dict[str, Any]] = []

    def run(label: str, work: Callable[[Any], dict[str, Any]]) -> None:
        if as_json:
            reports.append(work(None))
            return
        with click.progressbar(length=1, label=label, show_pos=True) as bar:

            def progress(step: str, done: int, total: int) -> None:
                bar.label = f"{label}: {step}"
                bar.length = max(total, 1)
                bar.pos = 0
                bar.update(done)

            report = work(progress)
        reports.append(report)
        click.echo(_summary(report))

    if csv_path:
        if not label_column:
            raise click.UsageError("--from-csv needs --label COLUMN")
        csv_kind = kinds[0] if len(kinds) == 1 else "lead"
        run(
            f"{csv_path} ({csv_kind})",
            lambda progress: train_from_csv(
                csv_path, label_column, kind=csv_kind,  # type: ignore[arg-type]
                store=services.store if tenant else None, tenant_id=tenant,
                task_type=config.catboost_task_type, excluded_fields=excluded, progress=progress,
            ),
        )  # fmt: skip
    else:
        for tenant_id in _tenant_ids(services, tenant):
            for one in kinds:

                def work(progress: Any, t: str = tenant_id, k: str = one) -> dict[str, Any]:
                    return train_model(
                        services.store, t, k,  # type: ignore[arg-type]
                        task_type=config.catboost_task_type,
                        excluded_fields=excluded, progress=progress,
                    )  # fmt: skip

                run(f"{tenant_id} {one}", work)
    if as_json:
        for report in reports:
            click.echo(json.dumps(report, default=str))


@main.group()
def model() -> None:
    """Trained scoring models: versions, reports and rollback."""


@model.command("versions")
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--kind", type=click.Choice(_KINDS), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the versions as one JSON object.")
@_config_errors_are_one_line
def model_versions(tenant: str, kind: str, as_json: bool) -> None:
    """List a tenant's model versions, oldest first (* marks the current one)."""
    from core.services import configure
    from scoring.registry import ModelRegistry

    versions = ModelRegistry(configure(Config.from_env()).store).versions(tenant, kind)
    if as_json:
        click.echo(json.dumps({"tenant_id": tenant, "kind": kind, "versions": versions}))
        return
    if not versions:
        click.echo(f"{tenant}: no {kind} model trained yet (run `fieldwise train`)")
    for v in versions:
        mark = "*" if v["current"] else " "
        auc = f"{v['auc']:.3f}" if isinstance(v.get("auc"), float) else "-"
        kind_label = "rule-based" if v["rule_based"] else "catboost"
        click.echo(f"{mark} {v['version']}  {v['created_at']}  {kind_label}  auc {auc}")


@model.command("report")
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--kind", type=click.Choice(_KINDS), required=True)
@click.option("--version", "version", default=None, help="A version (default: the current one).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@_config_errors_are_one_line
def model_report(tenant: str, kind: str, version: str | None, as_json: bool) -> None:
    """Show the saved report of a model version, with its latest drift check."""
    from core.services import configure
    from scoring.registry import ModelRegistry

    try:
        report = ModelRegistry(configure(Config.from_env()).store).report(tenant, kind, version)
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    click.echo(_summary(report))
    for row in report.get("conversion_per_grade", []):
        rate = row.get("conversion_rate")
        click.echo(f"  {row['grade']:<5} n {row['n']:>5}  conversion "
                   f"{'-' if rate is None else f'{rate:.1%}'}")  # fmt: skip
    monitoring = report.get("monitoring")
    if monitoring:
        verdict = "retrain recommended" if monitoring.get("retrain_recommended") else "no drift"
        click.echo(f"  monitoring ({monitoring.get('checked_at')}): {verdict}")
        for reason in monitoring.get("reasons", []):
            click.echo(f"    - {reason}")


@model.command("rollback")
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--kind", type=click.Choice(_KINDS), required=True)
@_config_errors_are_one_line
def model_rollback(tenant: str, kind: str) -> None:
    """Make the previously current model version current again."""
    from core.services import configure
    from scoring.registry import ModelRegistry

    try:
        version = ModelRegistry(configure(Config.from_env()).store).rollback(tenant, kind)
    except LookupError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    click.echo(f"{tenant} {kind}: {version} is current again")


# --------------------------------------------------------------------------------------------------
# Scoring and routing


@main.command()
@click.option(
    "--tenant", "tenant_ids", multiple=True, help="Only these tenants (default: all active)."
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["lead", "opportunity"]),
    multiple=True,
    help="What to score (default: both).",
)
@click.option("--all", "score_all", is_flag=True, help="Score every open record.")
@click.option("--id", "crm_ids", multiple=True, help="Score these records only.")
@click.option(
    "--dry-run", is_flag=True, help="Print the value each field would get; write and queue nothing."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per record instead of text.")
@_config_errors_are_one_line
def score(
    tenant_ids: tuple[str, ...],
    kinds: tuple[str, ...],
    score_all: bool,
    crm_ids: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Score leads and opportunities now, route new leads, and queue the write-back."""
    if not score_all and not crm_ids:
        raise click.UsageError("choose --all or name records with --id")
    from core.services import configure
    from scoring.jobs import score_and_match
    from sync.writeback import queue_writeback

    services = configure(Config.from_env())
    chosen = _active_tenants(services, tenant_ids, "score")
    for tenant_id in chosen:
        for kind in kinds or ("lead", "opportunity"):
            ids = list(crm_ids) or None
            with click.progressbar(
                length=0, label=f"{tenant_id} {kind}", show_pos=True, file=sys.stderr
            ) as bar:
                results = score_and_match(
                    services, tenant_id, kind, ids, dry_run=dry_run, on_batch=bar.update
                )
            if dry_run:
                _print_planned_writes(services, tenant_id, kind, results, as_json)
            elif as_json:
                for result in results:
                    line = {"tenant_id": tenant_id, "kind": kind, "crm_id": result.crm_id,
                            "material": result.material, "stale": result.stale,
                            "values": result.values()}  # fmt: skip
                    click.echo(json.dumps(line, default=str))
            changed = [r.crm_id for r in results if r.material or r.stale or r.extra.get("routed")]
            if not dry_run:
                queue_writeback(services, tenant_id, kind, changed)
            stale = sum(r.stale for r in results)
            verb = "would change" if dry_run else "changed"
            click.echo(
                f"{tenant_id} {kind}: {len(results)} scored, {len(changed)} {verb}, {stale} stale",
                err=True,
            )


def _print_planned_writes(
    services: Any, tenant_id: str, kind: str, results: list[Any], as_json: bool
) -> None:
    """What write-back would change for these results: per field, old and new value."""
    from sync.writeback import describe_plan, overwrite_policy, plan_writes

    policy, days = overwrite_policy(services, tenant_id)
    values = {result.crm_id: result.values() for result in results}
    plan = plan_writes(services, tenant_id, kind, values, policy=policy, rep_edit_days=days)
    for row in describe_plan(plan):
        if as_json:
            click.echo(json.dumps({"tenant_id": tenant_id, "kind": kind, **row}))
        else:
            new = str(row["new"]).replace("\\n", " | ")
            click.echo(f"  {row['object']} {row['crm_id']} {row['field']}: {row['old']} -> {new}")
    click.echo(
        f"{tenant_id} {kind}: {len(plan.writes)} field(s) would be written, {plan.unchanged} "
        f"unchanged, {len(plan.kept_human_edits)} kept as a person edited them",
        err=True,
    )


@main.command()
@click.option(
    "--replay",
    "days",
    type=click.IntRange(1, 3650),
    required=True,
    help="Route the leads of the last DAYS days again with today's rules and compare.",
)
@click.option(
    "--tenant", "tenant_ids", multiple=True, help="Only these tenants (default: all active)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@_config_errors_are_one_line
def match(days: int, tenant_ids: tuple[str, ...], as_json: bool) -> None:
    """Replay past leads through the routing rules: load, fairness and expected conversion."""
    from core.services import configure
    from scoring.matching import replay
    from scoring.settings import load_settings

    services = configure(Config.from_env())
    chosen = _active_tenants(services, tenant_ids, "replay")
    for tenant_id in chosen:
        tenant = services.registry.get(tenant_id)
        try:
            report = replay(
                services.store,
                tenant_id,
                days,
                load_settings(services.registry, tenant_id),
                integration_user_id=tenant.integration_user_id,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(report, default=str))
            continue
        fw, hist, fair = report["fieldwise"], report["historical"], report["fairness"]
        click.echo(f"{tenant_id}: {report['leads']} leads in the last {days} days")
        click.echo(
            f"  expected conversions  Fieldwise {fw['expected_conversions']:.1f} "
            f"vs historical {hist['expected_conversions']:.1f} (x{report['lift']})"
        )
        click.echo(
            f"  shares                max {fair['max_share']:.1%} min {fair['min_share']:.1%} "
            f"(equal {fair['equal_share']:.1%}, band ±{fair['band']:.0%}): "
            f"{'within' if fair['within_band'] else 'OUTSIDE'} the band"
        )
        over = report["capacity"]["over"]
        click.echo(
            f"  capacity              {'all reps within' if not over else 'over: ' + ', '.join(over)}"
        )
        click.echo(f"  {'rep':<22}{'assigned':>9}{'share':>8}{'peak/cap':>10}{'historical':>12}")
        for row in report["reps"]:
            click.echo(
                f"  {(row['name'] or row['rep'])[:21]:<22}{row['assigned']:>9}{row['share']:>8.1%}"
                f"{str(row['peak_open']) + '/' + str(row['capacity']):>10}"
                f"{row['historical_assigned']:>12}"
            )


@main.group()
def widgets() -> None:
    """The in-CRM widgets: build their sources for this deployment, show a tenant's secret."""


@widgets.command("build")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Folder to write hubspot/app-project and salesforce/force-app into.",
)
@_config_errors_are_one_line
def widgets_build(out_dir: pathlib.Path) -> None:
    """Write the widget sources with FIELDWISE_PUBLIC_URL filled in, ready to deploy."""
    from handlers.widgets import build_widget_projects

    config = Config.from_env(require_secrets=False)
    written = build_widget_projects(config.public_url, out_dir)
    click.echo(f"HubSpot project: {written['hubspot']} (deploy with `hs project upload`)")
    click.echo(
        f"Salesforce source: {written['salesforce']} (deploy with `sf project deploy start`)"
    )
    click.echo(f"Both call Fieldwise at {config.public_url}")


@widgets.command("secret")
@click.argument("tenant_id")
@_config_errors_are_one_line
def widgets_secret(tenant_id: str) -> None:
    """Print a Salesforce tenant's widget secret (created on first use) for its External Credential."""
    from core.services import configure
    from core.tenants import UnknownTenantError

    services = configure(Config.from_env())
    try:
        tenant = services.registry.get(tenant_id)
    except UnknownTenantError as exc:
        raise click.ClickException(str(exc)) from None
    if tenant.crm != "salesforce":
        raise click.ClickException(
            f"{tenant_id} is a {tenant.crm} tenant; only Salesforce widgets use a widget secret"
        )
    secret = services.registry.widget_secret(tenant_id, create=True)
    click.echo(
        "Paste this into Setup > Named Credentials > External Credentials > Fieldwise_API_Auth > "
        "Principals > SigningSecret:"
    )
    click.echo(secret)


# --------------------------------------------------------------------------------------------------
# Competitor intel for battle cards


@main.group()
def intel() -> None:
    """Competitor documents that battle cards cite (markdown, text, PDF)."""


def _one_tenant(services: Any, tenant: str | None) -> str:
    """The tenant named, or the only installed one."""
    if tenant:
        return tenant
    installed = [t.tenant_id for t in services.registry.all()]
    if len(installed) != 1:
        found = "no tenant is installed" if not installed else f"{len(installed)} are installed"
        raise click.UsageError(f"pass --tenant: {found}")
    return installed[0]


@intel.command("add")
@click.argument("competitor")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--tenant", default=None, help="Tenant id (default: the only installed tenant).")
@_config_errors_are_one_line
def intel_add(competitor: str, files: tuple[str, ...], tenant: str | None) -> None:
    """Add or replace a competitor's documents; their battle cards are marked for refresh."""
    from copilot.intel import IntelError, add_intel, summary
    from core.services import configure

    services = configure(Config.from_env())
    tenant_id = _one_tenant(services, tenant)
    try:
        added = add_intel(services, tenant_id, competitor, list(files))
    except IntelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"tenant_id": tenant_id, **summary(added)}))


@intel.command("list")
@click.option("--tenant", default=None, help="Tenant id (default: every installed tenant).")
@click.option("--competitor", default=None, help="Only this competitor's documents.")
@_config_errors_are_one_line
def intel_list(tenant: str | None, competitor: str | None) -> None:
    """List competitor documents: competitor, file, chunks, document id, when added."""
    from copilot.intel import list_intel
    from core.services import configure

    services = configure(Config.from_env())
    for tenant_id in _tenant_ids(services, tenant):
        documents = list_intel(services.store, tenant_id, competitor)
        if not documents:
            click.echo(
                f"{tenant_id}: no competitor documents (add some with `fieldwise intel add`)"
            )
        for doc in documents:
            click.echo(
                f"{tenant_id}  {doc['competitor']:<20} {doc['source']:<32} "
                f"{doc['chunks']:>4} chunks  {doc['doc_id']}  {doc['added_at']:%Y-%m-%d %H:%M}"
            )
