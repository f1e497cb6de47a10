"""The store registry: config reading loads no backend, and a new source is one module plus one entry.

The ``fixed`` source below is such a module in miniature: every address gets
the switches its ``[store.fixed]`` table names.  It is added to
``registry.BACKENDS`` and nowhere else, and the config reader, ``open_store``,
``inspect_store`` and ``check-config`` all find it there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from click.testing import CliRunner

from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from autoconfig.store import Store, StoreError, StoreSettings, Switches, inspect_store, open_store, registry
from autoconfig.store.settings import Backend, SourceSettings
from autoconfig.store.source import ReadOnlySource

if TYPE_CHECKING:
    from autoconfig.store.settings import Table  # the config reader's table, named for type checkers only

Write = Callable[[dict[str, Any]], Path]

# What importing the config reader or a renderer may load of the store package: the contract
# and the light settings halves; never a backend or a driver.
LIGHT = {"base", "source", "presets", "settings", "registry"}
DRIVERS = ("psycopg", "psycopg_pool", "MySQLdb", "pymysql", "ldap", "ldap3", "sqlite3")


def test_reading_the_config_or_rendering_loads_no_backend_and_no_driver() -> None:
    code = (
        "import json, sys\n"
        "import autoconfig.config, autoconfig.formats.thunderbird\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    store = {name.split(".")[2] for name in loaded if name.startswith("autoconfig.store.")}
    backends = sorted(name for name in store if name not in LIGHT and not name.endswith("_settings"))
    assert backends == [], f"importing the config loads store backends: {backends}"
    drivers = sorted(name for name in loaded if name.split(".")[0] in DRIVERS)
    assert drivers == [], f"importing the config loads drivers: {drivers}"


@pytest.mark.parametrize("renderer", ["thunderbird", "outlook", "apple", "android"])
def test_a_renderer_loads_nothing_of_the_store(renderer: str) -> None:
    """A renderer takes a Decision; the store, the service and the app factory are not its business."""
    code = f"import json, sys\nimport autoconfig.formats.{renderer}\nprint(json.dumps(sorted(sys.modules)))\n"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    unwanted = ("autoconfig.store", "autoconfig.service", "autoconfig.app", "autoconfig.config", "autoconfig.web")
    assert sorted(name for name in loaded if name.startswith(unwanted)) == []


@dataclass(frozen=True)
class FixedSettings(SourceSettings):
    name: ClassVar[str] = "fixed"
    switches: Switches


class FixedSource(ReadOnlySource):
    kind = "fixed"
    origin = "the config"
    read_only_reason = "the fixed source is read-only"

    def __init__(self, switches: Switches) -> None:
        self.fixed = switches

    def _switches(self, key: str) -> Switches | None:
        return self.fixed

    def _ping(self) -> None:
        pass


def _check_url(value: str) -> str:
    if value != "fixed://":
        raise ValueError("must be fixed://")
    return value


def _read(table: Table, env: Mapping[str, str], base: Path) -> FixedSettings:
    settings = FixedSettings(Switches(imap=table.boolean("imap", False), pop=table.boolean("pop", False)))
    table.finish()
    return settings


def _open(settings: StoreSettings) -> Store:
    assert isinstance(settings.source, FixedSettings)
    return FixedSource(settings.source.switches)


FIXED = Backend(
    name="fixed",
    schemes=("fixed://",),
    example="fixed://",
    check_url=_check_url,
    needs="[store.fixed]",
    open=_open,
    read=_read,
    reads=("fixed://",),
    reads_words="a fixed:// URL",
)


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry entry."""
    monkeypatch.setattr(registry, "BACKENDS", (*registry.BACKENDS, FIXED))


@pytest.mark.usefixtures("fixed")
def test_a_new_source_is_read_opened_and_checked_through_its_registry_entry(
    config_data: dict[str, Any], write_config: Write
) -> None:
    config_data["store"] = {"url": "fixed://", "timeout": 5, "fixed": {"imap": True}}
    path = write_config(config_data)
    config = load(path, env={})
    assert config.store == StoreSettings("fixed://", timeout=5, source=FixedSettings(Switches(imap=True)))
    with closing(open_store(config.store)) as store:
        assert store.switches("anyone@example.net") == Switches(imap=True)
    assert inspect_store(config.store).summary == "fixed"
    result = CliRunner().invoke(main, ["--config", str(path), "check-config"], env={})
    assert result.exit_code == 0, result.output
    assert "  store:    fixed" in result.output


@pytest.mark.usefixtures("fixed")
@pytest.mark.parametrize(
    ("store", "says"),
    [
        ({"url": "fixed://"}, "store.url: fixed:// is a read-only source; it needs [store.fixed]"),
        ({"url": "fixed://x", "fixed": {}}, "store.url: must be fixed://"),
        ({"url": "fixed://", "fixed": {"imap": 1}}, "store.fixed.imap: expected true or false, got int"),
        ({"url": "fixed://", "fixed": {"smtp": True}}, "store.fixed.smtp: unknown option"),
        ({"url": "sqlite:///x.sqlite3", "fixed": {}}, "store.url: the fixed source ([store.fixed]) needs a fixed://"),
        (
            {"url": "fixed://", "fixed": {}, "sql": {"query": "SELECT 1, 1 WHERE %(address)s <> ''"}},
            "store.fixed: [store.sql] and [store.fixed] are two different sources; keep one",
        ),
    ],
)
def test_a_new_source_gets_the_same_config_errors(
    config_data: dict[str, Any], write_config: Write, store: dict[str, Any], says: str
) -> None:
    config_data["store"] = store
    path = write_config(config_data)
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    assert str(error.value).startswith(f"{path}: {says}"), str(error.value)


def test_without_its_entry_the_scheme_is_unknown(config_data: dict[str, Any], write_config: Write) -> None:
    config_data["store"] = {"url": "fixed://", "fixed": {}}
    with pytest.raises(ConfigError, match=r"store\.url: must look like sqlite:///relative/path, .* or ldap://host"):
        load(write_config(config_data), env={})
    with pytest.raises(StoreError, match="unsupported store URL scheme: 'fixed'"):
        open_store(StoreSettings("fixed://"))
    with pytest.raises(StoreError, match="no fixed source is registered"):
        open_store(StoreSettings("fixed://", source=FixedSettings(Switches())))
