"""What both sandbox CRMs share: persistence, the request log, fault injection and webhook delivery.

Each CRM server is a Flask app; :func:`install_admin` adds the ``/__admin`` routes and the request
hooks that count every call and apply injected faults before the CRM's own handler runs.
"""

from __future__ import annotations

import collections
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from flask import Flask, Response, jsonify, request

ADMIN_PREFIX = "/__admin"


# --------------------------------------------------------------------------------------------------
# Persistence


class RecordStore:
    """A small SQLite-backed document store, one per sandbox CRM, so a restart keeps records.

    Records are JSON objects keyed by ``(object_type, record_id)``. Deleted records are kept with a
    ``deleted_at`` timestamp because both CRMs let integrations list recent deletions.
    """

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self._meta: dict[str, str | None] = {}
        """Key-value texts read or written so far (None: no such key)."""
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (object_type TEXT NOT NULL, record_id TEXT NOT NULL,"
            " data TEXT NOT NULL, modified REAL NOT NULL, deleted_at REAL,"
            " PRIMARY KEY (object_type, record_id))"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS records_modified ON records (object_type, modified)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def put(self, object_type: str, record_id: str, data: dict[str, Any]) -> None:
        """Insert or replace one live record."""
        self.put_many(object_type, [(record_id, data)])

    def put_many(self, object_type: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Insert or replace many live records in one transaction."""
        now = time.time()
        rows = [(object_type, rid, json.dumps(data, default=str), now) for rid, data in items]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO records (object_type, record_id, data, modified, deleted_at)"
                " VALUES (?, ?, ?, ?, NULL)",
                rows,
            )
            self._db.execute("COMMIT")

    def get(self, object_type: str, record_id: str, include_deleted: bool = False) -> dict | None:
        """Return one record, or None when it does not exist (or is deleted)."""
        with self._lock:
            row = self._db.execute(
                "SELECT data, deleted_at FROM records WHERE object_type = ? AND record_id = ?",
                (object_type, record_id),
            ).fetchone()
        if row is None or (row[1] is not None and not include_deleted):
            return None
        return json.loads(row[0])

    def iter(self, object_type: str, include_deleted: bool = False) -> Iterator[tuple[str, dict]]:
        """Yield ``(record_id, data)`` for every record of a type, in insertion order."""
        sql = "SELECT record_id, data FROM records WHERE object_type = ?"
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY rowid", (object_type,)).fetchall()
        for record_id, data in rows:
            yield record_id, json.loads(data)

    def count(self, object_type: str) -> int:
        """Number of live records of a type."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM records WHERE object_type = ? AND deleted_at IS NULL",
                (object_type,),
            ).fetchone()
        return int(n)

    def delete(self, object_type: str, record_id: str) -> bool:
        """Mark a record deleted; False when there was no live record."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE records SET deleted_at = ? WHERE object_type = ? AND record_id = ?"
                " AND deleted_at IS NULL",
                (time.time(), object_type, record_id),
            )
        return cur.rowcount > 0

    def purge(self, object_type: str, record_id: str) -> bool:
        """Remove a record outright (used to roll back a failed all-or-none write)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM records WHERE object_type = ? AND record_id = ?",
                (object_type, record_id),
            )
        return cur.rowcount > 0

    def deleted_between(
        self, object_type: str, start: float, end: float
    ) -> list[tuple[str, float]]:
        """Return ``(record_id, deleted_at)`` of records deleted in ``[start, end]``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, deleted_at FROM records WHERE object_type = ?"
                " AND deleted_at BETWEEN ? AND ? ORDER BY deleted_at",
                (object_type, start, end),
            ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def get_meta(self, key: str, default: Any = None) -> Any:
        """Read a JSON value from the key-value side table (org settings, schema, counters).

        The text is kept after the first read (this store is the table's only writer): webhook
        subscriptions are read on every record change, and a query per change was a fifth of the
        sandbox's CPU during a bulk write-back. Each call decodes afresh, so callers may change
        what they get.
        """
        with self._lock:
            if key not in self._meta:
                row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                self._meta[key] = None if row is None else row[0]
            text = self._meta[key]
        return default if text is None else json.loads(text)

    def set_meta(self, key: str, value: Any) -> None:
        """Write a JSON value to the key-value side table."""
        text = json.dumps(value)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, text))
            self._meta[key] = text

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------------------------------
# Faults and the request log


@dataclass
class Faults:
    """Faults a test or benchmark injects through ``POST /__admin/faults``.

    Attributes:
        error_rate: fraction of API calls answered with ``error_status`` instead of being served.
        error_status: the status those injected errors carry (500, 502, 503 ...).
        latency_ms: extra latency added to every API call.
        storm_429_until: epoch seconds until which every API call is answered 429.
        webhooks_paused: queued webhook deliveries wait while this is true.
        drop_rate: fraction of webhook deliveries silently never sent.
        duplicate_rate: fraction of webhook deliveries sent twice.
        reorder: deliver queued webhook batches in shuffled order.
    """

    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: float = 0.0
    storm_429_until: float = 0.0
    webhooks_paused: bool = False
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, rejecting unknown names and wrong types."""
        known = asdict(self)
        for name, value in changes.items():
            if name == "storm_429_seconds":
                self.storm_429_until = time.time() + float(value)
                continue
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {sorted(known)}")
            expected = type(known[name])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"fault {name!r} must be {expected.__name__}")
            setattr(self, name, value)


@dataclass
class RequestLog:
    """Counts API calls per endpoint and keeps the most recent ones for tests and benchmarks."""

    capacity: int = 50_000
    counters: collections.Counter = field(default_factory=collections.Counter)
    entries: collections.deque = field(default_factory=collections.deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: dict[str, Any], endpoint: str) -> None:
        """Add one served request."""
        with self.lock:
            self.counters[endpoint] += 1
            self.entries.append(entry)
            while len(self.entries) > self.capacity:
                self.entries.popleft()

    def reset(self) -> None:
        """Forget all counts and entries."""
        with self.lock:
            self.counters.clear()
            self.entries.clear()

    def snapshot(self) -> dict[str, Any]:
        """Counters and the logged entries as JSON-ready data."""
        with self.lock:
            return {"counters": dict(self.counters), "requests": list(self.entries)}


class SandboxState:
    """The mutable, thread-safe state one sandbox CRM server shares between its request handlers."""

    def __init__(self, store: RecordStore, *, clock_scale: float = 0.01) -> None:
        self.store = store
        self.faults = Faults()
        self.log = RequestLog()
        self.rng = random.Random(7)
        self.clock_scale = clock_scale
        """Multiplier applied to vendor retry schedules, so an hour of redelivery takes seconds."""
        self.hooks: dict[str, Callable[[dict[str, Any]], Any]] = {}
        """Extra admin actions a CRM registers, called as ``POST /__admin/<name>`` with a JSON body."""


def install_admin(
    app: Flask,
    state: SandboxState,
    *,
    endpoint_name: Callable[[], str],
    is_api_call: Callable[[], bool],
    error_response: Callable[[int], Response],
    rate_limited_response: Callable[[], Response],
) -> None:
    """Add request logging, fault injection and the ``/__admin`` routes to a sandbox CRM app.

    Args:
        app: the CRM's Flask app.
        state: that CRM's state.
        endpoint_name: names the current request for the counters, e.g. ``"GET sobjects/Lead"``.
        is_api_call: True when the current request counts as an API call (faults apply to it).
        error_response: builds the CRM's own error body for an injected status.
        rate_limited_response: builds the CRM's own 429 (or 403 quota) answer for a 429 storm.
    """

    @app.before_request
    def _apply_faults() -> Response | None:
        if request.path.startswith(ADMIN_PREFIX) or not is_api_call():
            return None
        faults = state.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000.0)
        if faults.storm_429_until > time.time():
            return rate_limited_response()
        if faults.error_rate and state.rng.random() < faults.error_rate:
            return error_response(faults.error_status)
        return None

    @app.after_request
    def _log(response: Response) -> Response:
        if not request.path.startswith(ADMIN_PREFIX):
            name = endpoint_name()
            state.log.record(
                {
                    "t": time.time(),
                    "method": request.method,
                    "path": request.full_path.rstrip("?"),
                    "endpoint": name,
                    "status": response.status_code,
                    "api_call": is_api_call(),
                    "body": _log_body(),
                    "headers": {
                        k: v
                        for k, v in request.headers.items()
                        if k.lower() in {"sforce-call-options", "content-type", "user-agent"}
                    },
                },
                name,
            )
        return response

    @app.get(f"{ADMIN_PREFIX}/requests")
    def _requests() -> Response:
        return jsonify(state.log.snapshot())

    @app.get(f"{ADMIN_PREFIX}/counters")
    def _counters() -> Response:
        return jsonify(state.log.snapshot()["counters"])

    @app.post(f"{ADMIN_PREFIX}/reset-log")
    def _reset_log() -> Response:
        state.log.reset()
        return jsonify({"ok": True})

    @app.get(f"{ADMIN_PREFIX}/faults")
    def _get_faults() -> Response:
        return jsonify(asdict(state.faults))

    @app.post(f"{ADMIN_PREFIX}/faults")
    def _set_faults() -> Response | tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify({"error": "body must be a JSON object of fault names to values"}), 400
        try:
            state.faults.update(body)
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify(asdict(state.faults))

    @app.post(f"{ADMIN_PREFIX}/<name>")
    def _hook(name: str) -> Response | tuple[Response, int]:
        action = state.hooks.get(name)
        if action is None:
            return jsonify(
                {"error": f"unknown admin action {name!r}", "known": sorted(state.hooks)}
            ), 404
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            return jsonify({"error": "body must be a JSON object"}), 400
        try:
            return jsonify(action(body))
        except (ValueError, KeyError) as exc:
            return jsonify({"error": str(exc)}), 400


def _log_body() -> Any:
    if request.method == "GET":
        return None
    raw = request.get_data(cache=True)
    if len(raw) > 20_000:
        return {"truncated": len(raw)}
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# Webhook delivery


@dataclass
class Delivery:
    """One webhook POST the sandbox owes a subscriber."""

    url: str
    render: Callable[[int], tuple[bytes, dict[str, str]]]
    """Builds the body and headers of attempt N (0-based) at send time: signatures that include a
    timestamp must be fresh per attempt, and HubSpot numbers its attempts in the body."""
    accepted: Callable[[requests.Response], bool]
    retry_on: Callable[[requests.Response | None], bool]
    """Whether a failed attempt is retried: given None for a timeout or connection error."""
    schedule_s: list[float]
    """Vendor delays between attempts, in real seconds (scaled by the state's clock)."""
    attempt: int = 0
    not_before: float = 0.0
    label: str = ""


class Deliverer:
    """A background thread that posts webhooks with the vendor's retry schedule on a compressed clock.

    Honours the ``webhooks_paused``, ``drop_rate``, ``duplicate_rate`` and ``reorder`` faults. Every
    attempt and its outcome is kept in ``attempts`` for tests.
    """

    def __init__(self, state: SandboxState, timeout_s: float = 5.0) -> None:
        self._state = state
        self._timeout_s = timeout_s
        self._pending: list[Delivery] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._session = requests.Session()
        self.attempts: collections.deque = collections.deque(maxlen=20_000)
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery; a dropped one (``drop_rate``) is recorded and never sent."""
        rng = self._state.rng
        faults = self._state.faults
        if faults.drop_rate and rng.random() < faults.drop_rate:
            self.attempts.append({"label": delivery.label, "outcome": "dropped", "t": time.time()})
            return
        copies = 2 if faults.duplicate_rate and rng.random() < faults.duplicate_rate else 1
        with self._cond:
            for _ in range(copies):
                self._pending.append(
                    Delivery(**{**delivery.__dict__, "attempt": 0, "not_before": 0.0})
                )
            self._cond.notify()

    def pending(self) -> int:
        """Deliveries queued or waiting for a retry."""
        with self._cond:
            return len(self._pending)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until nothing is pending; False on timeout."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop the thread; pending deliveries are abandoned."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _next_due(self) -> Delivery | None:
        now = time.time()
        due = [d for d in self._pending if d.not_before <= now]
        if not due or self._state.faults.webhooks_paused:
            return None
        chosen = self._state.rng.choice(due) if self._state.faults.reorder else due[0]
        self._pending.remove(chosen)
        return chosen

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                delivery = self._next_due()
                if delivery is None:
                    self._cond.wait(timeout=0.02)
                    continue
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        response: requests.Response | None = None
        outcome = "error"
        body, headers = delivery.render(delivery.attempt)
        try:
            response = self._session.post(
                delivery.url, data=body, headers=headers, timeout=self._timeout_s
            )
            outcome = (
                "accepted" if delivery.accepted(response) else f"rejected {response.status_code}"
            )
        except requests.RequestException as exc:
            outcome = f"error {type(exc).__name__}"
        self.attempts.append(
            {
                "label": delivery.label,
                "attempt": delivery.attempt,
                "outcome": outcome,
                "t": time.time(),
            }
        )
        if outcome == "accepted" or not delivery.retry_on(response):
            return
        if delivery.attempt >= len(delivery.schedule_s):
            self.attempts.append({"label": delivery.label, "outcome": "gave up", "t": time.time()})
            return
        delay = delivery.schedule_s[delivery.attempt] * self._state.clock_scale
        delivery.attempt += 1
        delivery.not_before = time.time() + delay
        with self._cond:
            self._pending.append(delivery)
            self._cond.notify()


# --------------------------------------------------------------------------------------------------
# The Fieldwise widget, as the CRM platforms render it on record pages

_CARD_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:.8rem;color:#1f2d3d;font-size:14px}"
    "h3{font-size:13px;color:#516f90;margin:.9rem 0 .3rem;text-transform:uppercase}"
    ".score{font-size:2rem;font-weight:600}.grade{margin-left:.6rem;padding:.1rem .5rem;"
    "border-radius:.3rem;background:#eaf0f6}.muted{color:#7c98b6}.flag{color:#b3261e}"
    "ul{margin:.2rem 0;padding-left:1.2rem}form{display:inline}button{margin-right:.4rem}"
    ".chosen{font-weight:600}"
)


def _card_text(value: Any) -> str:
    from html import escape

    return escape("" if value is None else str(value))


def _detail_html(detail: Any, testid: str, title: str) -> str:
    """A copilot result's structured detail: summary, sections with bullets, citations."""
    if not detail:
        return ""
    parts = [f"<section data-testid='{testid}'><h3>{_card_text(title)}</h3>"]
    if isinstance(detail, dict):
        if detail.get("offline"):
            parts.append("<p class='muted'>generated offline</p>")
        for key in ("summary", "text", "headline"):
            if detail.get(key):
                parts.append(f"<p>{_card_text(detail[key])}</p>")
        # A forecast note is a list of cited sentences.
        parts += [_cited_html(s, "p") for s in detail.get("sentences") or [] if isinstance(s, dict)]
        sections = detail.get("sections") or []
        if isinstance(sections, dict):
            # A battle card: a cited summary, then named lists of cited bullets.
            sections = _named_sections(sections, parts)
        for section in sections:
            if not isinstance(section, dict):
                continue
            parts.append(f"<p><strong>{_card_text(section.get('title'))}</strong></p><ul>")
            for bullet in section.get("bullets") or []:
                text = bullet.get("text") if isinstance(bullet, dict) else bullet
                cites = bullet.get("cites") if isinstance(bullet, dict) else None
                cited = (
                    f" <span class='muted'>[{_card_text(', '.join(cites))}]</span>" if cites else ""
                )
                parts.append(f"<li>{_card_text(text)}{cited}</li>")
            parts.append("</ul>")
    else:
        parts.append(f"<p>{_card_text(detail)}</p>")
    parts.append("</section>")
    return "".join(parts)


def _cited_html(item: dict[str, Any], tag: str) -> str:
    text = item.get("text")
    if text is None and item.get("objection"):
        text = f"{item['objection']} - {item.get('response') or ''}"
    cites = item.get("cites") or []
    cited = f" <span class='muted'>[{_card_text(', '.join(cites))}]</span>" if cites else ""
    return f"<{tag}>{_card_text(text)}{cited}</{tag}>"


def _named_sections(sections: dict[str, Any], parts: list[str]) -> list[dict[str, Any]]:
    """Sections keyed by name as titled bullet lists; a dict-valued entry is a paragraph."""
    listed = []
    for name, value in sections.items():
        if isinstance(value, dict):
            parts.append(_cited_html(value, "p"))
        elif isinstance(value, list) and value:
            bullets = [
                {**b, "text": b.get("text") or f"{b.get('objection')} - {b.get('response')}"}
                for b in value
                if isinstance(b, dict)
            ]
            listed.append({"title": name.replace("_", " ").capitalize(), "bullets": bullets})
    return listed


def render_fieldwise_card(card: dict[str, Any], feedback_action: str) -> str:
    """The HTML page of the Fieldwise widget for one record's card JSON (every value escaped).

    Args:
        card: the JSON Fieldwise answered for the record.
        feedback_action: where the thumbs buttons post (a sandbox route that forwards, signed).
    """
    from html import escape

    body = ["<div data-testid='fw-card'>"]
    if card.get("score") is not None:
        stale = " <span class='muted'>(stale)</span>" if card.get("stale") else ""
        body.append(
            f"<p><span class='score' data-testid='fw-score'>{_card_text(card['score'])}</span>"
            f"<span class='grade' data-testid='fw-grade'>{_card_text(card.get('grade'))}</span>"
            f"{stale}</p>"
        )
    else:
        body.append("<p class='muted'>Fieldwise has not scored this record yet.</p>")
    reasons = card.get("reasons") or []
    if reasons:
        items = "".join(
            f"<li>{_card_text(r.get('text') if isinstance(r, dict) else r)}</li>" for r in reasons
        )
        body.append(f"<section data-testid='fw-reasons'><h3>Why</h3><ul>{items}</ul></section>")
    if card.get("suggested_owner"):
        why = card.get("match_reason")
        body.append(
            "<section data-testid='fw-owner'><h3>Suggested owner</h3>"
            f"<p>{_card_text(card['suggested_owner'])}</p>"
            + (f"<p class='muted'>{_card_text(why)}</p>" if why else "")
            + "</section>"
        )
    if card.get("next_step"):
        body.append(
            "<section data-testid='fw-next-step'><h3>Next step</h3>"
            f"<p>{_card_text(card['next_step'])}</p></section>"
        )
    body.append(_detail_html(card.get("battle_card"), "fw-battle-card", "Battle card"))
    body.append(_detail_html(card.get("forecast_note"), "fw-forecast-note", "Forecast note"))
    flags = card.get("risk_flags")
    if flags:
        listed = flags.get("flags") if isinstance(flags, dict) else flags
        flag_items: list[str] = []
        for flag in listed if isinstance(listed, list) else [listed]:
            if isinstance(flag, dict):
                label = (
                    flag.get("label") or flag.get("text") or flag.get("name") or flag.get("kind")
                    or flag
                )  # fmt: skip
                evidence = flag.get("evidence") or flag.get("cites") or []
                shown = ", ".join(
                    str(e.get("ref") or e.get("text") or e) if isinstance(e, dict) else str(e)
                    for e in evidence
                )
                review = flag.get("review") or flag.get("review_state")
                flag_items.append(
                    f"<li class='flag'>{_card_text(label)}"
                    + (f" <span class='muted'>[{_card_text(shown)}]</span>" if shown else "")
                    + (f" <span class='muted'>({_card_text(review)})</span>" if review else "")
                    + "</li>"
                )
            else:
                flag_items.append(f"<li class='flag'>{_card_text(flag)}</li>")
        body.append(
            f"<section data-testid='fw-risk-flags'><h3>Risk flags</h3><ul>{''.join(flag_items)}</ul>"
            "</section>"
        )
    if card.get("model_version"):
        body.append(f"<p class='muted'>model {_card_text(card['model_version'])}</p>")
    chosen = (card.get("feedback") or {}).get("score", {}).get("vote")
    action = escape(feedback_action, quote=True)
    for vote, label, testid in (("up", "👍 Looks right", "fw-thumbs-up"),
                                ("down", "👎 Looks wrong", "fw-thumbs-down")):  # fmt: skip
        css = " class='chosen'" if chosen == vote else ""
        body.append(
            f"<form method='post' action='{action}'><input type='hidden' name='result' "
            f"value='score'><input type='hidden' name='vote' value='{vote}'>"
            f"<button type='submit'{css} data-testid='{testid}'>{label}</button></form>"
        )
    body.append("</div>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Fieldwise</title>"
        f"<style>{_CARD_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def render_fieldwise_problem(message: str) -> str:
    """The widget's page when Fieldwise cannot be asked or refused the call."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Fieldwise</title>"
        f"<style>{_CARD_STYLE}</style></head><body><div data-testid='fw-card'>"
        f"<p class='muted' data-testid='fw-error'>{_card_text(message)}</p></div></body></html>"
    )
