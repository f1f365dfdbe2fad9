"""The one configuration object, read from ``FIELDWISE_*`` environment variables.

Every process (web, worker, CLI) builds a :class:`Config` once at start-up with :meth:`Config.from_env`.
Validation happens there, so a bad deployment stops with one line naming the variable and what is
wrong, instead of failing later inside a request. Secrets are held in :class:`Secret`, which never
shows its value in ``repr``, ``str`` or logs. There are no default secrets: production must set them,
and the demo generates fresh ones per run (:meth:`Config.for_demo`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal
from urllib.parse import urlparse

PREFIX = "FIELDWISE_"

TaskType = Literal["auto", "CPU", "GPU"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the variable and how to fix it."""


class Secret:
    """A secret string that never appears in ``repr``, ``str`` or formatted log output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call only where the value is actually used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, repr=False)
class Config:
    """Fieldwise's settings. Each attribute maps to ``FIELDWISE_<NAME>`` (upper case).

    Attributes:
        redis_url: Redis for queues, dedupe, locks and rate-limit budgets; None runs the embedded
            in-process queue (one machine, the demo).
        lancedb_uri: LanceDB location: a local folder or ``s3://bucket/prefix``.
        lancedb_storage_options: object-store options for LanceDB (endpoint, region, keys), as JSON.
        secret_key: Flask session signing key.
        encryption_key: Fernet key(s) for OAuth tokens at rest; comma-separated for rotation, the
            first one encrypts.
        hubspot_client_id: HubSpot app OAuth client id.
        hubspot_client_secret: HubSpot app client secret (also the webhook signing secret).
        hubspot_app_id: HubSpot app id.
        hubspot_developer_api_key: HubSpot developer API key; the webhooks settings and
            subscriptions API of an app authenticates with it, not with OAuth.
        hubspot_legacy_signatures: also accept HubSpot's v1/v2 webhook signatures (apps created
            before v3 may still send them); v3 is always accepted.
        hubspot_api_url: HubSpot's API base (a sandbox URL in the demo and tests).
        hubspot_authorize_url: where HubSpot's OAuth consent page is.
        salesforce_client_id: Salesforce connected app consumer key.
        salesforce_client_secret: Salesforce connected app consumer secret.
        salesforce_login_url: where Salesforce OAuth starts.
        salesforce_api_version: REST/Metadata API version Fieldwise speaks.
        salesforce_api_share: most of an org's daily API allocation Fieldwise may use (0-1).
        ca_bundle: extra PEM certificates to trust for CRM calls (the sandbox's self-signed one).
        catboost_task_type: ``auto`` (GPU when CatBoost sees one), ``CPU`` or ``GPU``.
        llm_model: Anthropic model id used by the copilot.
        anthropic_api_key: read from the standard ``ANTHROPIC_API_KEY``; unset means offline copilot.
        anthropic_base_url: read from the standard ``ANTHROPIC_BASE_URL``.
        llm_timeout_s: seconds one model request may take before it is abandoned.
        llm_concurrency: model requests one tenant may have in flight at once, across processes
            when Redis is configured.
        public_url: the URL the CRMs reach Fieldwise at (webhook targets, OAuth redirects).
        max_webhook_bytes: webhook bodies above this size are refused with 413.
        proxy_hops: reverse proxies in front of the app whose ``X-Forwarded-*`` headers are trusted.
        log_level: Python logging level name.
        admin_password_hash: werkzeug.security hash of the admin console password
            (``fieldwise admin hash-password``); unset, nobody can log in to ``/admin``.
        admin_session_minutes: how long an admin console login lasts.
        demo: True only for ``fieldwise demo`` and tests: secrets may be generated per run.
    """

    redis_url: str | None = None
    lancedb_uri: str = "./var/lancedb"
    lancedb_storage_options: Mapping[str, str] = field(default_factory=dict)
    secret_key: Secret | None = None
    encryption_key: Secret | None = None
    hubspot_client_id: str | None = None
    hubspot_client_secret: Secret | None = None
    hubspot_app_id: str | None = None
    hubspot_developer_api_key: Secret | None = None
    hubspot_legacy_signatures: bool = False
    hubspot_api_url: str = "https://api.hubapi.com"
    hubspot_authorize_url: str = "https://app.hubspot.com/oauth/authorize"
    salesforce_client_id: str | None = None
    salesforce_client_secret: Secret | None = None
    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_api_version: str = "62.0"
    salesforce_api_share: float = 0.2
    ca_bundle: str | None = None
    catboost_task_type: TaskType = "auto"
    llm_model: str = "claude-sonnet-4-6"
    anthropic_api_key: Secret | None = None
    anthropic_base_url: str | None = None
    llm_timeout_s: float = 60.0
    llm_concurrency: int = 4
    public_url: str = "http://127.0.0.1:8000"
    max_webhook_bytes: int = 1_048_576
    proxy_hops: int = 0
    log_level: str = "INFO"
    admin_password_hash: Secret | None = None
    admin_session_minutes: int = 60
    demo: bool = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True
    ) -> Config:
        """Read and validate the configuration from the environment.

        Args:
            environ: the variables to read; ``os.environ`` when None.
            require_secrets: demand ``FIELDWISE_SECRET_KEY`` and ``FIELDWISE_ENCRYPTION_KEY``
                (web and worker processes); read-only commands such as ``status`` pass False.

        Returns:
            The validated configuration.

        Raises:
            ConfigError: the first problem found, naming the variable.
        """
        env = os.environ if environ is None else environ
        unknown = sorted(
            k for k in env if k.startswith(PREFIX) and k[len(PREFIX) :].lower() not in _ENV_FIELDS
        )
        if unknown:
            known = ", ".join(PREFIX + name.upper() for name in sorted(_ENV_FIELDS))
            raise ConfigError(f"{unknown[0]} is not a Fieldwise setting (known: {known})")
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            raw = env.get(PREFIX + name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[name] = parse(PREFIX + name.upper(), raw.strip())
        for name, variable in (("anthropic_api_key", "ANTHROPIC_API_KEY"),):
            if env.get(variable, "").strip():
                values[name] = Secret(env[variable].strip())
        if env.get("ANTHROPIC_BASE_URL", "").strip():
            values["anthropic_base_url"] = _http_url(
                "ANTHROPIC_BASE_URL", env["ANTHROPIC_BASE_URL"]
            )
        config = cls(**values)
        if require_secrets and not config.demo:
            config.require_secrets()
        return config

    @classmethod
    def for_demo(cls, **overrides: Any) -> Config:
        """A configuration for the demo and tests, with secrets freshly generated for this run."""
        generated = {
            "secret_key": Secret(secrets.token_urlsafe(32)),
            "encryption_key": Secret(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
            "demo": True,
        }
        return cls(**{**generated, **overrides})

    def require_secrets(self) -> None:
        """Fail unless the secrets a long-running process needs are set.

        Raises:
            ConfigError: naming the missing variable and how to create a value for it.
        """
        if not self.secret_key:
            raise ConfigError(
                "FIELDWISE_SECRET_KEY is not set: set it to a long random string "
                "(for example the output of `fieldwise keygen --secret-key`)"
            )
        if not self.encryption_key:
            raise ConfigError(
                "FIELDWISE_ENCRYPTION_KEY is not set: OAuth tokens are encrypted at rest with it; "
                "create one with `fieldwise keygen`"
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.describe().items())
        return f"Config({shown})"

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with some settings changed (tests, CLI flags)."""
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-ready data with every secret masked, for logs and ``status``."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = "********"
            elif f.name == "lancedb_storage_options":
                value = {k: ("********" if _looks_secret(k) else v) for k, v in value.items()}
            elif f.name == "redis_url" and value:
                value = _mask_url_password(value)
            shown[f.name] = value
        return shown


# --------------------------------------------------------------------------------------------------
# Parsers: each takes (variable name, raw text) and returns the typed value or raises ConfigError.


def _redis_url(variable: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"{variable}: {_mask_url_password(raw)!r} is not a Redis URL "
            "(expected redis://host:port/db, rediss://... or unix:///path)"
        )
    if parsed.scheme != "unix":
        if not parsed.hostname:
            raise ConfigError(f"{variable}: {_mask_url_password(raw)!r} has no host")
        try:
            parsed.port  # noqa: B018  (urlparse validates the port lazily)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {_mask_url_password(raw)!r}: {exc}") from None
        db = parsed.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{variable}: database {db!r} must be a number, as in redis://host/0")
    return raw


def _lancedb_uri(variable: str, raw: str) -> str:
    parsed = urlparse(raw)
    # A Windows-free deployment: a one-letter scheme would be a drive letter, which we do not support.
    if parsed.scheme and parsed.scheme not in {"s3", "gs", "az", "file"}:
        raise ConfigError(
            f"{variable}: {raw!r} has an unsupported scheme {parsed.scheme!r} "
            "(use a local folder, file://, s3://, gs:// or az://)"
        )
    if parsed.scheme in {"s3", "gs", "az"} and not parsed.netloc:
        raise ConfigError(
            f"{variable}: {raw!r} names no bucket (expected {parsed.scheme}://bucket/path)"
        )
    return raw


def _storage_options(variable: str, raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{variable}: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(
            f'{variable}: must be a JSON object of strings, e.g. {{"region": "eu-west-1"}}'
        )
    return value


def _http_url(variable: str, raw: str) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigError(f"{variable}: {raw!r} is not an http(s) URL")
    return raw.strip().rstrip("/")


def _secret(variable: str, raw: str) -> Secret:
    if len(raw) < 16:
        raise ConfigError(
            f"{variable}: too short ({len(raw)} characters); use at least 16 random characters"
        )
    return Secret(raw)


def _client_secret(variable: str, raw: str) -> Secret:
    return Secret(raw)


def _fernet_keys(variable: str, raw: str) -> Secret:
    for position, key in enumerate(raw.split(","), start=1):
        try:
            decoded = base64.urlsafe_b64decode(key.strip().encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(
                f"{variable}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "create one with `fieldwise keygen`"
            )
    return Secret(raw)


def _plain(variable: str, raw: str) -> str:
    return raw


def _app_id(variable: str, raw: str) -> str:
    if not raw.isdigit():
        raise ConfigError(f"{variable}: {raw!r} must be the numeric HubSpot app id")
    return raw


def _task_type(variable: str, raw: str) -> str:
    by_lower = {"auto": "auto", "cpu": "CPU", "gpu": "GPU"}
    if raw.lower() not in by_lower:
        raise ConfigError(f"{variable}: {raw!r} must be one of auto, CPU, GPU")
    return by_lower[raw.lower()]


def _positive_int(variable: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw) or int(raw) <= 0:
        raise ConfigError(f"{variable}: {raw!r} must be a positive whole number")
    return int(raw)


def _non_negative_int(variable: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw):
        raise ConfigError(f"{variable}: {raw!r} must be a whole number >= 0")
    return int(raw)


def _positive_seconds(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"{variable}: {raw!r} must be a number of seconds above 0, at most 3600")
    return value


def _api_version(variable: str, raw: str) -> str:
    if not re.fullmatch(r"\d{2}\.0", raw):
        raise ConfigError(f"{variable}: {raw!r} must look like 62.0")
    return raw


def _fraction(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ConfigError(f"{variable}: {raw!r} must be a fraction above 0 and at most 1, e.g. 0.2")
    return value


def _existing_file(variable: str, raw: str) -> str:
    if not os.path.isfile(raw):
        raise ConfigError(f"{variable}: no file at {raw!r}")
    return raw


def _log_level(variable: str, raw: str) -> str:
    if raw.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"{variable}: {raw!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return raw.upper()


def _password_hash(variable: str, raw: str) -> Secret:
    # werkzeug.security writes "method$salt$hash", the method being scrypt:... or pbkdf2:...
    method, _, rest = raw.partition("$")
    if not method.startswith(("scrypt", "pbkdf2")) or rest.count("$") != 1:
        raise ConfigError(
            f"{variable}: not a password hash; create one with `fieldwise admin hash-password`"
        )
    return Secret(raw)


def _session_minutes(variable: str, raw: str) -> int:
    minutes = _positive_int(variable, raw)
    if minutes > 24 * 60:
        raise ConfigError(f"{variable}: {raw!r} is longer than a day (1440 minutes)")
    return minutes


def _boolean(variable: str, raw: str) -> bool:
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{variable}: {raw!r} must be true or false")


_PARSERS: dict[str, Any] = {
    "redis_url": _redis_url,
    "lancedb_uri": _lancedb_uri,
    "lancedb_storage_options": _storage_options,
    "secret_key": _secret,
    "encryption_key": _fernet_keys,
    "hubspot_client_id": _plain,
    "hubspot_client_secret": _client_secret,
    "hubspot_app_id": _app_id,
    "hubspot_developer_api_key": _client_secret,
    "hubspot_legacy_signatures": _boolean,
    "hubspot_api_url": _http_url,
    "hubspot_authorize_url": _http_url,
    "salesforce_client_id": _plain,
    "salesforce_client_secret": _client_secret,
    "salesforce_login_url": _http_url,
    "salesforce_api_version": _api_version,
    "salesforce_api_share": _fraction,
    "ca_bundle": _existing_file,
    "catboost_task_type": _task_type,
    "llm_model": _plain,
    "llm_timeout_s": _positive_seconds,
    "llm_concurrency": _positive_int,
    "public_url": _http_url,
    "max_webhook_bytes": _positive_int,
    "proxy_hops": _non_negative_int,
    "log_level": _log_level,
    "admin_password_hash": _password_hash,
    "admin_session_minutes": _session_minutes,
    "demo": _boolean,
}

# Variables that are read but are not FIELDWISE_-prefixed, plus test-only knobs read elsewhere.
_ENV_FIELDS = set(_PARSERS) | {"require_redis", "test_redis_url", "require_browser", "chromium"}


def _looks_secret(name: str) -> bool:
    return any(word in name.lower() for word in ("secret", "key", "token", "password"))


def _mask_url_password(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":********@", 1)
    return url
