"""``fieldwise install`` and ``fieldwise uninstall``: the install flow without the web app.

For OAuth, the command serves the callback itself on ``FIELDWISE_PUBLIC_URL`` when that points at
this machine, prints the consent URL, and finishes when the CRM redirects back. The Salesforce JWT
bearer flow needs no browser at all. Unlike the web callback, which queues provisioning, the command
provisions in the foreground and prints every item of the plan.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import click
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from connectors.base import InstallPlan, connector_for
from core.config import Config
from core.http import session
from core.services import Services, configure
from core.tenants import Tenant
from handlers.install import accept_callback, begin_install, is_local_url

CONSENT_TIMEOUT_S = 300.0


def run_install(
    crm: str,
    *,
    dry_run: bool,
    tenant_id: str | None,
    jwt_username: str | None,
    jwt_key_pem: str | None,
    auto_consent: bool,
) -> None:
    """Authorise (unless ``tenant_id`` names an installed tenant), then plan or provision."""
    services = configure(Config.from_env())
    if tenant_id:
        tenant = services.registry.get(tenant_id)
        if tenant.crm != crm:
            raise click.UsageError(f"tenant {tenant_id} is a {tenant.crm} tenant, not {crm}")
    elif jwt_username or jwt_key_pem:
        tenant = _jwt_install(services, crm, jwt_username, jwt_key_pem)
    else:
        tenant = _oauth_install(services, crm, auto_consent)
    connector = connector_for(tenant.tenant_id, services.connector_context)
    plan = connector.plan_install() if dry_run else connector.install()
    _print_plan(plan, dry_run)
    if dry_run:
        return
    services.registry.set_status(tenant.tenant_id, "active")
    from sync.jobs import resume_parked_jobs

    resumed = resume_parked_jobs(tenant.tenant_id)
    if resumed:
        click.echo(f"queued {resumed} job(s) held while the tenant needed re-authorisation")
    if services.config.redis_url:
        services.queue.enqueue(
            "sync.jobs.backfill_tenant",
            tenant.tenant_id,
            job_id=f"backfill:{tenant.tenant_id}",
            queue="low",
        )
        click.echo(f"installed {tenant.tenant_id}; the first backfill is queued for the workers")
    else:
        click.echo(f"installed {tenant.tenant_id}; it syncs when `fieldwise serve` runs")


def run_uninstall(tenant_id: str, *, keep_data_fields: bool, dry_run: bool) -> None:
    """Remove what Fieldwise created (or, with ``dry_run``, say what would go)."""
    services = configure(Config.from_env())
    connector = connector_for(tenant_id, services.connector_context)
    if dry_run:
        installed = connector.plan_install()
        plan = InstallPlan(installed.crm, tenant_id, installed.manifest_version)
        for item in installed.items:
            if item.action == "keep" and not (keep_data_fields and item.kind == "field"):
                plan.items.append(type(item)(item.kind, item.target, "delete", item.detail))
        _print_plan(plan, dry_run=True)
        return
    plan = connector.uninstall(keep_data_fields=keep_data_fields)
    services.registry.set_status(tenant_id, "uninstalled", "uninstalled from the command line")
    _print_plan(plan, dry_run=False)


def _jwt_install(services: Services, crm: str, username: str | None, key_pem: str | None) -> Tenant:
    if crm != "salesforce":
        raise click.UsageError(
            "the JWT bearer flow is a Salesforce flow; HubSpot installs use OAuth"
        )
    if not username or not key_pem:
        raise click.UsageError("the JWT bearer flow needs both --jwt-username and --jwt-key")
    from connectors.salesforce import auth as salesforce_auth

    tenant, tokens = salesforce_auth.jwt_bearer(
        services.config, username=username, private_key_pem=key_pem
    )
    return services.registry.save(tenant, tokens)


def _oauth_install(services: Services, crm: str, auto_consent: bool) -> Tenant:
    start = begin_install(services, crm)
    callback = urlparse(start.redirect_uri)
    if not is_local_url(start.redirect_uri):
        click.echo(
            f"Open this URL to consent; the Fieldwise server finishes the install:\n{start.authorization_url}"
        )
        raise SystemExit(0)
    captured: dict[str, str] = {}
    done = threading.Event()

    @Request.application
    def receive(request: Request) -> Response:
        if request.path != callback.path:
            return Response("not found", status=404)
        captured.update({k: v for k, v in request.args.items()})
        done.set()
        return Response(
            "Fieldwise received the consent; you can close this tab.", mimetype="text/plain"
        )

    try:
        server = make_server(callback.hostname or "127.0.0.1", callback.port or 80, receive)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {callback.netloc} for the OAuth callback ({exc.strerror}); if "
            f"`fieldwise serve` runs there, open {services.config.public_url}/install/{crm} instead"
        ) from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        click.echo(f"Open this URL to consent:\n{start.authorization_url}")
        if auto_consent:
            # Sandbox CRMs approve at once when asked with auto=1; real CRMs need a person.
            http = session(ca_bundle=services.config.ca_bundle)
            http.get(start.authorization_url + "&auto=1", timeout=30, allow_redirects=True)
        if not done.wait(CONSENT_TIMEOUT_S):
            raise click.ClickException(f"no consent arrived within {CONSENT_TIMEOUT_S:.0f} s")
    finally:
        server.shutdown()
    if "error" in captured:
        raise click.ClickException(
            f"{crm} did not grant access: {captured.get('error_description') or captured['error']}"
        )
    tenant, _ = accept_callback(services, crm, captured.get("code", ""), captured.get("state", ""))
    return tenant


def _print_plan(plan: InstallPlan, dry_run: bool) -> None:
    verb = "would" if dry_run else "did"
    click.echo(f"{plan.crm} tenant {plan.tenant_id}, manifest {plan.manifest_version}:")
    width = max((len(item.target) for item in plan.items), default=0)
    for item in plan.items:
        detail = f"  ({item.detail})" if item.detail else ""
        click.echo(f"  {item.action:<6} {item.kind:<16} {item.target:<{width}}{detail}")
    changes = len(plan.changes)
    click.echo(
        f"{changes} change(s) {verb} apply; {len(plan.items) - changes} item(s) already in place"
    )
