"""The application factory: config, store and app, built when asked for and not at import.

``autoconfig.create_app`` and ``autoconfig.create_service`` are these
(``autoconfig/__init__.py`` hands them out on first use), so importing
a renderer or the config reader loads no web framework setup and no store.
"""

from __future__ import annotations

import logging

from flask import Flask

from . import logs, metrics
from .config import MAX_BODY_LIMIT, Config, load
from .dns import make_resolver
from .dns.hosted import HostedDomains
from .resources import data_dir
from .service import Service
from .store import open_store

__all__ = ["create_app", "create_service"]


def create_service(config: Config | None = None) -> Service:
    """Config plus an opened store: what both the web app and the CLI run on."""
    config = config or load()
    store = open_store(config.store)
    try:
        return Service(config, store, hosted=_hosted_domains(config))
    except BaseException:
        store.close()  # a refused start leaves no connection behind (the CLI and tests carry on)
        raise


def _hosted_domains(config: Config) -> HostedDomains | None:
    """Hosted-domain detection, only when some brand names its MX hosts (``[dns] mx_hosts`` with one brand)."""
    settings = config.dns
    if not config.hosted:
        return None
    return HostedDomains(
        make_resolver(settings),
        {provider.id: provider.mx_hosts for provider in config.providers},
        own_domains=config.domains,
        deny=settings.deny,
        cache_size=settings.cache_size,
        lookup_rate=settings.lookup_rate,
        lookup_burst=settings.lookup_burst,
    )


def create_app(config: Config | None = None) -> Flask:
    """Build the WSGI app for ``config`` (default: read from ``$AUTOCONFIG_CONFIG``)."""
    config = config or load()
    # First: opening the store may migrate it, and that is logged.
    logs.configure(config.log_level, config.log_flush_seconds)
    svc = create_service(config)
    try:
        from . import web

        # No app-wide /static route: the setup page's blueprint serves the only static file.
        app = web.App(__name__, template_folder=data_dir("templates"), static_folder=None)
        # Werkzeug refuses larger bodies with 413 before a view reads them.
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_LIMIT
        app.extensions["autoconfig"] = svc
        metrics.init_app(app)
        web.init_app(app)  # refuses a signing setup that cannot work, among others
    except BaseException:
        svc.store.close()  # the start is refused: the store opened for it is closed, not left to the collector
        raise
    brands = "; ".join(f"{provider.id} for {', '.join(provider.domains)}" for provider in svc.config.providers)
    # Logged as "autoconfig": operators (and the fault tests) look for this start line by that name.
    logging.getLogger("autoconfig").info("serving %s; store %s", brands, svc.store.kind)
    return app
