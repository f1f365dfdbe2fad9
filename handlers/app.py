"""The Flask application factory.

``create_app`` builds one app from one :class:`core.config.Config`: it validates the configuration,
binds the queue and the store, trusts the configured number of reverse proxies, and registers the
blueprints and the JSON error handlers. ``wsgi.py`` holds only ``app = create_app()``.
"""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from core import services as process_services
from core.config import Config
from handlers import admin, health, install, webhooks, widgets
from handlers.context import EXTENSION
from handlers.errors import register_error_handlers


def create_app(config: Config | None = None) -> Flask:
    """Build the Fieldwise web app.

    Args:
        config: the configuration; read from ``FIELDWISE_*`` variables when None.

    Returns:
        The app, with its services in ``app.extensions["fieldwise.services"]``.

    Raises:
        ConfigError: the configuration is invalid or a required secret is missing.
    """
    if config is None:
        config = Config.from_env()
    else:
        config.require_secrets()
    logging.basicConfig(level=config.log_level)
    app = Flask("fieldwise")
    assert config.secret_key is not None  # checked by require_secrets
    app.config.update(
        SECRET_KEY=config.secret_key.reveal(),
        MAX_CONTENT_LENGTH=config.max_webhook_bytes,
        JSON_SORT_KEYS=False,
    )
    if config.proxy_hops:
        # Behind N proxies, the scheme, host and path HubSpot signed are in X-Forwarded-* headers.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=config.proxy_hops,
            x_proto=config.proxy_hops,
            x_host=config.proxy_hops,
            x_port=config.proxy_hops,
            x_prefix=config.proxy_hops,
        )
    services = process_services.configure(config)
    app.extensions[EXTENSION] = services
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(install.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(widgets.bp)
    admin.init_app(app, config)
    return app
