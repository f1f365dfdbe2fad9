"""A live Fieldwise deployment for end-to-end and reliability tests: real processes, real Redis.

:class:`LiveSync` starts, in this order and all on loopback:

* the HubSpot and Salesforce sandboxes (threads of this process, data in a temporary folder,
  a small generated history each);
* the Fieldwise web app on a free port (werkzeug's threaded server in this process), with
  ``FIELDWISE_PUBLIC_URL`` pointing at it, so provisioning subscribes the sandboxes' webhooks and
  outbound messages to it;
* N ``fieldwise worker`` subprocesses (rq workers with the scheduler) on a dedicated Redis database;

then installs each tenant through the OAuth routes (``/install/<crm>`` and the callback), and waits
until provisioning and the backfill have finished. Everything waits with a deadline and everything
started is stopped on exit: workers are killed by process group (their forked work horses too).

The test process is configured like the web app (``core.services.current()`` is the app's), so a
test can call jobs' helpers such as ``sync.writeback.write_values`` as Fieldwise would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import redis
import requests
from redis_databases import LIVE_BELOW, base_url, below
from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from core.config import Config, Secret
from core.queue import QUEUE_NAMES
from core.services import Services
from core.store import Store
from handlers.app import create_app
from sandbox.history import generate
from sandbox.history_model import History
from sandbox.hubspot import HubSpotSandbox
from sandbox.salesforce import SalesforceSandbox
from sync.jobs import BACKFILL_ENTITIES, backfill_progress

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
API = "v62.0"


def live_redis_url(below_base: int = LIVE_BELOW) -> str:
    """A Redis database for live tests, reachable or the test is skipped (failed when required).

    The live tests flush it and run worker processes on it, so it is not the database the unit
    tests flush: it lies ``below_base`` under this test process's base (``redis_databases``), so
    sessions running other tests at the same time cannot wipe a live run's queues.
    ``FIELDWISE_TEST_LIVE_REDIS_URL`` overrides it.
    """
    import pytest

    url = os.environ.get("FIELDWISE_TEST_LIVE_REDIS_URL", below(base_url(), below_base))
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("FIELDWISE_REQUIRE_REDIS") == "1":
            pytest.fail(f"{message} (FIELDWISE_REQUIRE_REDIS=1 makes it required)")
        pytest.skip(message)
    finally:
        client.close()
    return url


class HarnessTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and what was seen last."""


def wait_until(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail after ``timeout``.

    Exceptions raised by the predicate count as "not yet" (a table may not exist yet), and the
    last one is reported if the wait runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # reported below if the wait runs out
            last = exc
        if time.monotonic() >= deadline:
            raise HarnessTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}: last {last!r}"
            )
        time.sleep(interval)


def _descendants(pid: int) -> list[int]:
    """Every live process descended from ``pid`` (read from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return found


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log line per webhook."""


@dataclass
class WorkerProcess:
    """One ``fieldwise worker`` subprocess (leader of its own process group)."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker, its process group, and every process it forked.

        rq's work horse (the child running the current job) and its scheduler move to sessions
        of their own, so a signal to the worker's group alone would leave a job running.
        """
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class LiveSync:
    """Sandboxes, the web app, rq workers and installed tenants; use as a context manager.

    Args:
        folder: a temporary folder for sandboxes, LanceDB and worker logs.
        redis_url: a Redis database the harness owns (it is flushed on entry).
        workers: how many ``fieldwise worker`` processes to start.
        crms: which sandboxes to start and install.
        hubspot_leads / salesforce_leads: leads in each sandbox's generated history.
        seed: the history seed.
        backfill_timeout: longest wait for provisioning plus backfill.
        wait_for_backfill: install and wait for the backfill to finish on entry.
    """

    folder: Path
    redis_url: str
    workers: int = 1
    crms: tuple[str, ...] = ("hubspot", "salesforce")
    hubspot_leads: int = 30
    salesforce_leads: int = 30
    seed: int = 21
    backfill_timeout: float = 120.0
    wait_for_backfill: bool = True
    trim: Callable[[History], History] | None = None
    """Applied to each generated history before loading (a test that needs many leads but few
    notes drops notes: embedding them is what a large backfill spends its time on)."""
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Sandbox faults to set before installing, per CRM (``{"hubspot": {"latency_ms": 50}}``)."""
    hubspot_ten_second_limit: int | None = None
    """The HubSpot portal's burst limit (calls per rolling ten seconds per app), when not the
    sandbox's default. The installed tenant's ``hubspot_ten_second_limit`` setting is set to the same
    value right after the install, as an admin would, so Fieldwise's request budget knows it."""
    hubspot: HubSpotSandbox | None = None
    salesforce: SalesforceSandbox | None = None
    config: Config | None = None
    services: Services | None = None
    store: Store | None = None
    tenants: dict[str, str] = field(default_factory=dict)
    histories: dict[str, History] = field(default_factory=dict)
    """The history loaded into each CRM's sandbox (what a full sync must end up holding)."""
    worker_procs: list[WorkerProcess] = field(default_factory=list)
    _server: BaseWSGIServer | None = None
    _app: Any = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LiveSync:
        try:
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for worker in self.worker_procs:
            worker.stop()
        self._stack.close()

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redis = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        self.redis.flushdb()
        self._stack.callback(self.redis.close)
        if "hubspot" in self.crms:
            limits = {}
            if self.hubspot_ten_second_limit is not None:
                limits["ten_second_limit"] = self.hubspot_ten_second_limit
            self.hubspot = HubSpotSandbox(self.folder / "hubspot", **limits).start()
            self._stack.callback(self.hubspot.stop)
        if "salesforce" in self.crms:
            self.salesforce = SalesforceSandbox(self.folder / "salesforce").start()
            self._stack.callback(self.salesforce.stop)
        # The server is bound first (to learn its port, which is the public URL), the app after.
        self._server = make_server(
            "127.0.0.1", 0, self._dispatch, threaded=True, request_handler=_Quiet
        )
        self.public_url = f"http://127.0.0.1:{self._server.server_port}"
        self.config = self._config()
        # Workers take seconds to import their job modules: they start now and register while
        # the histories load; nothing reaches them before the first install.
        starting = self._launch_workers(self.workers)
        if self.hubspot is not None:
            self.histories["hubspot"] = self._history(self.seed, self.hubspot_leads)
            self.hubspot.load_history(self.histories["hubspot"])
        if self.salesforce is not None:
            self.histories["salesforce"] = self._history(self.seed + 1, self.salesforce_leads)
            self.salesforce.load_history(self.histories["salesforce"])
        self._app = create_app(self.config)
        self.services = self._app.extensions["fieldwise.services"]
        self.store = self.services.store
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        self._stack.callback(self._stop_server)
        starting()
        for crm, faults in self.faults.items():
            self.set_faults(crm, **faults)
        for crm in self.crms:
            self.install(crm)
        if self.wait_for_backfill:
            self.wait_backfilled(timeout=self.backfill_timeout)

    def _history(self, seed: int, leads: int) -> History:
        history = generate(seed=seed, n_leads=leads)
        return self.trim(history) if self.trim is not None else history

    def _dispatch(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._app(environ, start_response)

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _config(self) -> Config:
        overrides: dict[str, Any] = {
            "redis_url": self.redis_url,
            "lancedb_uri": str(self.folder / "lancedb"),
            "public_url": self.public_url,
            "log_level": "WARNING",
        }
        if self.hubspot is not None:
            hs = self.hubspot
            overrides |= {
                "hubspot_client_id": hs.client_id,
                "hubspot_client_secret": Secret(hs.client_secret),
                "hubspot_app_id": str(hs.app_id),
                "hubspot_developer_api_key": Secret(hs.developer_api_key),
                "hubspot_api_url": hs.base_url,
                "hubspot_authorize_url": f"{hs.base_url}/oauth/authorize",
            }
        if self.salesforce is not None:
            sf = self.salesforce
            overrides |= {
                "salesforce_login_url": sf.instance_url,
                "salesforce_client_id": sf.client_id,
                "salesforce_client_secret": Secret(sf.client_secret),
                "ca_bundle": str(sf.ca_cert),
            }
        return Config.for_demo(**overrides)

    def worker_env(self) -> dict[str, str]:
        """The environment of a worker process: this configuration as ``FIELDWISE_*`` variables."""
        assert self.config is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDWISE_")}
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONPATH"] = str(REPO)
        defaults = Config()
        for name, value in vars(self.config).items():
            if name == "demo" or value == getattr(defaults, name) or value is None:
                continue
            text = value.reveal() if isinstance(value, Secret) else str(value)
            env[f"FIELDWISE_{name.upper()}"] = text
        return env

    # -- workers -----------------------------------------------------------------------------

    def start_worker(self, timeout: float = 30.0) -> WorkerProcess:
        """Start one ``fieldwise worker`` and wait until it has registered with rq."""
        self._launch_workers(1, timeout)()
        return self.worker_procs[-1]

    def _launch_workers(self, count: int, timeout: float = 60.0) -> Callable[[], None]:
        """Start ``count`` workers side by side; returns the wait until all have registered."""
        before = {w.name for w in Worker.all(connection=self.redis)}
        launched = []
        for _ in range(count):
            log_path = self.folder / f"worker-{len(self.worker_procs)}.log"
            handle = log_path.open("ab")
            self._stack.callback(handle.close)
            proc = subprocess.Popen(
                [sys.executable, "-m", "core", "worker"],
                cwd=REPO,
                env=self.worker_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            launched.append(WorkerProcess(proc, log_path))
            self.worker_procs.append(launched[-1])

        def registered() -> bool:
            for worker in launched:
                if not worker.alive:
                    raise AssertionError(f"worker exited at start:\n{worker.log()[-3000:]}")
            return len({w.name for w in Worker.all(connection=self.redis)} - before) >= count

        def wait() -> None:
            if count:
                wait_until(registered, timeout, interval=0.1, what=f"{count} worker(s) to register")

        return wait

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL a worker and its work horse, as a crashed machine would."""
        worker = self.worker_procs[index]
        worker.kill(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- worker {i}\n{w.log()[-4000:]}" for i, w in enumerate(self.worker_procs)
        )

    # -- installing --------------------------------------------------------------------------

    def install(self, crm: str) -> str:
        """Install a CRM through ``/install/<crm>`` and the OAuth callback, as an admin would."""
        browser = requests.Session()
        start = browser.get(f"{self.public_url}/install/{crm}", allow_redirects=False, timeout=10)
        assert start.status_code == 302, start.text
        location = start.headers["Location"]
        if crm == "salesforce":
            assert self.salesforce is not None
            consent = self.salesforce.session().get(
                location + "&auto=1", allow_redirects=False, timeout=10
            )
        else:
            consent = requests.get(location, allow_redirects=False, timeout=10)
        assert consent.status_code == 302, consent.text
        callback = consent.headers["Location"]
        assert callback.startswith(f"{self.public_url}/oauth/{crm}/callback?"), callback
        finished = browser.get(callback, allow_redirects=False, timeout=30)
        assert finished.status_code == 200, finished.text
        tenant_id = str(finished.json()["tenant_id"])
        self.tenants[crm] = tenant_id
        if crm == "hubspot" and self.hubspot_ten_second_limit is not None:
            # Provisioning is queued by now, its connector perhaps built with the default limit,
            # but its ~100 calls fit in one burst; every later job's connector reads the setting.
            # Provisioning rereads the tenant to mark it active seconds later, so it keeps the
            # setting (the benchmark checks that it held).
            self.update_settings(tenant_id, hubspot_ten_second_limit=self.hubspot_ten_second_limit)
        return tenant_id

    def update_settings(self, tenant_id: str, **settings: Any) -> None:
        """Merge ``settings`` into a tenant's settings (as the admin console would)."""
        assert self.services is not None
        registry = self.services.registry
        tenant = registry.get(tenant_id)
        registry.save(replace(tenant, settings={**tenant.settings, **settings}))

    def backfilled(self, tenant_id: str) -> bool:
        assert self.store is not None
        progress = backfill_progress(self.store, tenant_id)
        return len(progress) == len(BACKFILL_ENTITIES) and all(p["done"] for p in progress.values())

    def wait_backfilled(
        self, timeout: float = 120.0, idle: bool = True, interval: float = 0.2
    ) -> None:
        """Wait until every installed tenant is active and fully backfilled (and the queues idle:
        the scoring that follows a backfill has run). Each look reads the store: ``interval``
        spaces them out where the CPU they take would slow what is measured."""

        def done() -> bool:
            assert self.services is not None
            for tenant_id in self.tenants.values():
                if self.services.registry.get(tenant_id).status != "active":
                    return False
                if not self.backfilled(tenant_id):
                    return False
            return True

        try:
            wait_until(done, timeout, interval=interval, what="provisioning and backfill")
            if idle:
                self.wait_idle(timeout=timeout)
        except HarnessTimeout as exc:
            raise HarnessTimeout(f"{exc}\n{self.failures()}\n{self.worker_logs()}") from None

    # -- queue inspection --------------------------------------------------------------------

    def queues(self) -> list[Queue]:
        return [Queue(name, connection=self.redis) for name in QUEUE_NAMES]

    def job_ids(self) -> set[str]:
        """Every job id rq knows: queued, started, finished, failed, scheduled or deferred."""
        ids: set[str] = set()
        for queue in self.queues():
            ids.update(queue.get_job_ids())
            for registry in (
                StartedJobRegistry,
                FinishedJobRegistry,
                FailedJobRegistry,
                ScheduledJobRegistry,
                DeferredJobRegistry,
            ):
                ids.update(registry(queue=queue).get_job_ids())
        return ids

    def jobs(self, ids: set[str] | None = None) -> list[Job]:
        wanted = sorted(self.job_ids() if ids is None else ids)
        return [j for j in Job.fetch_many(wanted, connection=self.redis) if j is not None]

    def new_jobs(self, before: set[str], func: str | None = None) -> list[Job]:
        """Jobs created since the ``before`` snapshot of :meth:`job_ids` (of one function)."""
        fresh = self.jobs(self.job_ids() - before)
        return [j for j in fresh if func is None or j.func_name == func]

    def failures(self) -> str:
        """Failed jobs with their errors (for assertion messages)."""
        lines = []
        for queue in self.queues():
            registry = FailedJobRegistry(queue=queue)
            for job_id in registry.get_job_ids():
                job = Job.fetch(job_id, connection=self.redis)
                result = job.latest_result()
                lines.append(f"{job.func_name}{job.args}: {result.exc_string if result else '?'}")
        return "\n".join(lines) or "(no failed jobs)"

    def failed_count(self) -> int:
        return sum(FailedJobRegistry(queue=q).count for q in self.queues())

    def busy(self, horizon_s: float = 60.0) -> bool:
        """Work queued, running, or scheduled (a retry) within ``horizon_s``."""
        for queue in self.queues():
            if queue.count or StartedJobRegistry(queue=queue).count:
                return True
            scheduled = ScheduledJobRegistry(queue=queue)
            due = self.redis.zrangebyscore(scheduled.key, 0, time.time() + horizon_s)
            if due:
                return True
        return False

    def deliveries_pending(self) -> int:
        pending = 0
        if self.hubspot is not None:
            self.hubspot.webhooks.flush()
            pending += self.hubspot.deliverer.pending()
        if self.salesforce is not None:
            self.salesforce.relay.flush(force=True)
            pending += self.salesforce.deliverer.pending()
        return pending

    def wait_idle(self, timeout: float = 60.0, settle_s: float = 0.3) -> None:
        """Wait until no webhook is owed and no job is queued, running or about to retry."""

        def idle() -> bool:
            if self.deliveries_pending() or self.busy():
                return False
            time.sleep(settle_s)  # a delivery in flight may still enqueue work
            return not self.deliveries_pending() and not self.busy()

        wait_until(idle, timeout, interval=0.1, what="queues and deliveries to go idle")

    def counters(self) -> dict[str, int]:
        assert self.services is not None
        return self.services.events.counters()

    # -- reading the store -------------------------------------------------------------------

    def stored(self, crm: str, entity: str, crm_id: str) -> dict[str, Any] | None:
        assert self.store is not None
        return self.store.get(self.tenants[crm], entity, crm_id)

    def wait_stored(
        self,
        crm: str,
        entity: str,
        crm_id: str,
        check: Callable[[dict[str, Any] | None], bool],
        timeout: float = 30.0,
        what: str = "",
    ) -> dict[str, Any] | None:
        """Wait until the stored record satisfies ``check`` (which may test for None: deleted)."""
        box: dict[str, Any] = {}

        def ok() -> bool:
            box["row"] = self.stored(crm, entity, crm_id)
            return check(box["row"])

        try:
            wait_until(ok, timeout, interval=0.05, what=what or f"{crm} {entity} {crm_id}")
        except HarnessTimeout as exc:
            raise HarnessTimeout(f"{exc}\n{self.failures()}\n{self.worker_logs()}") from None
        return box.get("row")

    # -- HubSpot edits (as a person in HubSpot's UI) -----------------------------------------

    def hubspot_ui_edit(self, object_type: str, record_id: str, properties: dict[str, Any]) -> Any:
        assert self.hubspot is not None
        answer = requests.post(
            f"{self.hubspot.base_url}/__admin/ui-edit",
            json={"objectType": object_type, "id": record_id, "properties": properties},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def hubspot_ui_create(self, object_type: str, properties: dict[str, Any]) -> str:
        assert self.hubspot is not None
        record = self.hubspot.repo.create(object_type, properties, self.hubspot.ui_source)
        return str(record["id"])

    def hubspot_ui_delete(self, object_type: str, record_id: str) -> None:
        assert self.hubspot is not None
        assert self.hubspot.repo.archive(object_type, record_id, self.hubspot.ui_source)

    def hubspot_ui_merge(self, object_type: str, primary_id: str, merged_id: str) -> Any:
        assert self.hubspot is not None
        answer = requests.post(
            f"{self.hubspot.base_url}/__admin/merge",
            json={
                "objectType": object_type,
                "primaryObjectId": primary_id,
                "objectIdToMerge": merged_id,
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def hubspot_app_write(
        self, object_type: str, record_id: str, properties: dict[str, Any]
    ) -> Any:
        """Write as Fieldwise's app does (its OAuth token: changeSource INTEGRATION, our app id)."""
        assert self.hubspot is not None
        answer = requests.patch(
            f"{self.hubspot.base_url}/crm/v3/objects/{object_type}/{record_id}",
            json={"properties": properties},
            headers={"Authorization": f"Bearer {self.hubspot.access_token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def hubspot_faults(self, **faults: Any) -> None:
        assert self.hubspot is not None
        answer = requests.post(f"{self.hubspot.base_url}/__admin/faults", json=faults, timeout=10)
        assert answer.status_code == 200, answer.text

    def set_faults(self, crm: str, **faults: Any) -> None:
        if crm == "hubspot":
            self.hubspot_faults(**faults)
        else:
            self.salesforce_faults(**faults)

    def hubspot_contact_ids(self, limit: int) -> list[str]:
        assert self.hubspot is not None
        return [str(r["id"]) for r in self.hubspot.repo.all("contacts")[:limit]]

    # -- Salesforce edits (as a sales rep, through the REST API) -----------------------------

    def salesforce_rep(self) -> tuple[str, str]:
        """A user other than Fieldwise's integration user, and an access token of theirs."""
        assert self.salesforce is not None
        sf = self.salesforce
        for user_id, user in sf.state.store.iter("User"):
            if user_id != sf.user_id and user.get("IsActive") and user.get("Username"):
                return user_id, sf.oauth.issue(user_id)
        raise AssertionError("the Salesforce sandbox has no other active user")

    def salesforce_call(
        self, method: str, path: str, token: str, json: Any = None, ok: tuple[int, ...] = (200,)
    ) -> Any:
        assert self.salesforce is not None
        answer = self.salesforce.session().request(
            method,
            f"{self.salesforce.instance_url}/services/data/{API}/{path}",
            json=json,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code in ok, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def salesforce_faults(self, **faults: Any) -> None:
        assert self.salesforce is not None
        answer = self.salesforce.session().post(
            f"{self.salesforce.instance_url}/__admin/faults", json=faults, timeout=10
        )
        assert answer.status_code == 200, answer.text

    def salesforce_lead_ids(self, limit: int) -> list[str]:
        assert self.salesforce is not None
        ids = []
        for record_id, record in self.salesforce.state.store.iter("Lead"):
            if not record.get("IsConverted"):
                ids.append(record_id)
            if len(ids) >= limit:
                break
        return ids

    # -- misc --------------------------------------------------------------------------------

    def deliverer_attempts(self, crm: str) -> list[dict[str, Any]]:
        sandbox = self.hubspot if crm == "hubspot" else self.salesforce
        assert sandbox is not None
        return list(sandbox.deliverer.attempts)

    @property
    def port(self) -> int:
        return int(urlparse(self.public_url).port or 0)


@contextlib.contextmanager
def live_sync(folder: Path, redis_url: str, **options: Any) -> Iterator[LiveSync]:
    """``with live_sync(tmp_path, redis_url, workers=2) as live: ...``."""
    with LiveSync(folder, redis_url, **options) as live:
        yield live
