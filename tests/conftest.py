"""Fixture chain: config file -> app -> client / admin / CLI runner, and the
real gunicorn server.  Every test gets its own config file and SQLite file."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from autoconfig import create_app
from autoconfig.cli import main
from autoconfig.config import Config, load
from tests.support.admin import Admin
from tests.support.config import base_config, merged, write_toml
from tests.support.fixture_types import MakeApp, MakeServer
from tests.support.gunicorn import GunicornServer, gunicorn_on
from tests.support.knot import KnotServer
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster
from tests.support.slapd import SlapdServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def config_data(tmp_path: Path) -> dict[str, Any]:
    """A mutable copy of the base config, its store in this test's temp dir."""
    return base_config(tmp_path)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(data: dict[str, Any], name: str = "autoconfig.toml") -> Path:
        return write_toml(tmp_path / name, data)

    return write


@pytest.fixture
def config_path(config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Path:
    return write_config(config_data)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load(config_path, env={})


@pytest.fixture
def app(config: Config) -> Iterator[Flask]:
    app = create_app(config)
    app.config["TESTING"] = True
    yield app
    app.extensions["autoconfig"].store.close()


@pytest.fixture
def make_app(write_config: Callable[..., Path]) -> Iterator[MakeApp]:
    """``make_app(data, name=...)``: the app on that config, its store closed when the test ends."""
    made: list[Flask] = []

    def make(data: dict[str, Any], name: str = "autoconfig.toml") -> Flask:
        app = create_app(load(write_config(data, name), env={}))
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["autoconfig"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(client: FlaskClient) -> Admin:
    return Admin(client)


@pytest.fixture
def cli(config_path: Path) -> Callable[..., Result]:
    """Run ``python -m autoconfig --config <this test's config> ARGS``."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, ["--config", str(config_path), *args], input=input, env={})

    return run


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[MakeServer]:
    """``make_server(config, **options)``: the real gunicorn server on a free loopback port,
    started on ``config`` (a dict, written to this test's temp dir, or a path) and stopped when
    the test ends.  ``options`` are ``gunicorn_on``'s: ``env``, ``workers``, ``unprivileged``,
    ``name`` (the config file's) and ``log`` (the log file's, in the temp dir)."""
    started: list[GunicornServer] = []

    def make(config: dict[str, Any] | Path, **options: Any) -> GunicornServer:
        server = gunicorn_on(tmp_path, config, **options)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest, config_data: dict[str, Any], make_server: MakeServer) -> GunicornServer:
    """The real gunicorn server on this test's config and database.

    ``@pytest.mark.server(config={...}, env={...}, workers=N, unprivileged=True)`` configures it:
    ``config`` is merged into ``config_data`` (tables key by key), the rest go to ``make_server``.
    """
    marker = request.node.get_closest_marker("server")
    options = dict(marker.kwargs) if marker else {}
    return make_server(merged(config_data, options.pop("config", {})), **options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium for one test module (each module brings its own contexts and pages)."""
    from tests.support.browser import chromium  # Playwright loads only for the modules that drive a browser

    with chromium() as browser:
        yield browser


# -- DNS: one Knot server for the whole session, serving tests/dns_zones/ ------------

DNS_ZONES = Path(__file__).resolve().parent / "dns_zones"


@pytest.fixture(scope="session")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """Knot serving every ``<origin>.zone`` under tests/dns_zones/ (read-only)."""
    zones = {path.name.removesuffix(".zone"): path for path in sorted(DNS_ZONES.glob("*.zone"))}
    with KnotServer(zones, tmp_path_factory.mktemp("knot")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """One private PostgreSQL cluster for the whole run; tests isolate by database."""
    with PostgresCluster(tmp_path_factory.mktemp("postgres")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """A cluster of this test module's own, which its tests may stop, start or freeze
    (``pause``) without disturbing any other module's."""
    with PostgresCluster(tmp_path_factory.mktemp("own-postgres")) as cluster:
        yield cluster


_database_numbers = itertools.count(1)


@pytest.fixture
def pg_dsn(postgres: PostgresCluster) -> str:
    """A fresh, empty database of its own for this test (CREATE DATABASE costs ~40 ms)."""
    return postgres.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """One private MariaDB for the whole run; tests isolate by database."""
    with MariaDBServer(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """One private OpenLDAP for the whole run; tests isolate by subtree."""
    with SlapdServer(tmp_path_factory.mktemp("slapd")) as server:
        yield server
