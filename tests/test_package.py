"""The package as an operator installs it: a wheel in a fresh virtualenv, used from another directory.

The wheel is built from this checkout and installed into a new virtualenv
in a temp dir; every command then runs with a working directory outside the
repository, so nothing can come from the checkout by accident.  The new
virtualenv gets its dependencies from the test run's own site-packages
(minus this project's editable install) instead of a download: pip, run
with ``--no-index``, still has to find every declared dependency there at a
version inside its declared range, or the install fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.gunicorn import FACTORY, ROOT, http
from tests.support.ports import PortInUse, await_start, free_port, stop_process

DEMO_CONFIG = ROOT / "config" / "autoconfig.toml"
GUNICORN_SETTINGS = ROOT / "config" / "gunicorn.conf.py"


def _pins(name: str) -> dict[str, Requirement]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def _declared(extras: bool) -> dict[str, Requirement]:
    """``[project] dependencies``, or every optional dependency (the source drivers' extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if extras:
        texts = [text for extra in project["optional-dependencies"].values() for text in extra]
    else:
        texts = project["dependencies"]
    declared = [Requirement(text) for text in texts]
    return {canonicalize_name(requirement.name): requirement for requirement in declared}


@pytest.mark.parametrize(
    ("pinned_in", "extras"),
    [("requirements.txt", False), ("requirements-sources.txt", True)],
    ids=["dependencies", "optional-dependencies"],
)
def test_every_pinned_runtime_package_is_declared_with_a_range_that_holds_the_pin(pinned_in: str, extras: bool) -> None:
    pins, declared = _pins(pinned_in), _declared(extras)
    assert sorted(pins) == sorted(declared)
    for name, pin in pins.items():
        (version,) = (spec.version for spec in pin.specifier)
        assert declared[name].specifier.contains(version), f"{name} {version} is outside {declared[name].specifier}"
        assert declared[name].extras == pin.extras, name
        # A range, not a pin: an operator's other packages must be able to move it.
        assert all(spec.operator != "==" for spec in declared[name].specifier), name


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    workdir: Path  # outside the checkout: where every command runs

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "autoconfig"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
        return {name: os.environ[name] for name in keep if name in os.environ} | extra

    def run(self, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        command = [str(arg) for arg in args]
        env_vars = self.env(**env)
        return subprocess.run(command, cwd=self.workdir, env=env_vars, capture_output=True, text=True, timeout=60)


def _dependencies_view(target: Path) -> Path:
    """This run's site-packages as symlinks, without this project's own (editable) install."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("autoconfig", "_editable_impl_autoconfig", "__editable__")) or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("package")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(base / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (base / "dist").glob("autoconfig-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(f"{_dependencies_view(base / 'dependencies')}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-index",
         "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    workdir = base / "elsewhere"
    workdir.mkdir()
    return Installed(venv, wheel, workdir)


def test_the_wheel_carries_the_package_templates_and_static_files_and_nothing_else(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "autoconfig = autoconfig.cli:main" in wheel.read(entry_points).decode()
    assert {n.split("/")[0] for n in names} == {"autoconfig", "autoconfig-0.1.0.dist-info"}
    shipped = {name.removeprefix("autoconfig/") for name in names}
    for folder in ("templates", "static"):
        for path in (ROOT / folder).iterdir():
            assert f"{folder}/{path.name}" in shipped
    assert "web/setup.py" in shipped
    for series in ("2.3", "2.4"):
        assert f"snippets/dovecot-{series}-auth-policy.conf" in shipped


@pytest.mark.parametrize("series", ["2.3", "2.4"])
def test_the_installed_command_prints_the_dovecot_snippet_from_the_wheel(installed: Installed, series: str) -> None:
    header = "X-Autoconfig-Policy-Key: installed-wheel-0123456789"
    result = installed.run(
        installed.command, "--config", DEMO_CONFIG, "dovecot", "snippet", "--dovecot-version", series,
        AUTOCONFIG_DOVECOT_API_HEADER=header,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"auth_policy_server_api_header = {header}\n" in result.stdout
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = wheel.read(f"autoconfig/snippets/dovecot-{series}-auth-policy.conf").decode()
    assert shipped.splitlines()[0] in result.stdout.splitlines()


def test_the_installed_package_is_the_one_in_the_new_virtualenv(installed: Installed) -> None:
    result = installed.run(
        installed.python, "-c", "import autoconfig, autoconfig.resources as r; print(autoconfig.__file__); "
        "print(r.data_dir('templates')); print(r.data_dir('static'))"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    package = installed.venv.resolve()
    for line in result.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(package), line


def test_check_config_runs_from_any_directory_and_creates_nothing(installed: Installed) -> None:
    result = installed.run(installed.command, "--config", DEMO_CONFIG, "check-config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{DEMO_CONFIG}: OK"
    assert "example.net" in result.stdout
    # The demo store is sqlite:///instance/accounts.sqlite3, relative to here: a check creates nothing.
    assert list(installed.workdir.iterdir()) == []


def _start_gunicorn(installed: Installed, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn from the new virtualenv on a free port, or ``PortInUse`` from ``await_start``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = installed.env(AUTOCONFIG_CONFIG=str(DEMO_CONFIG), AUTOCONFIG_BIND=f"127.0.0.1:{port}", AUTOCONFIG_WORKERS="1")
    with log.open("ab") as output:
        proc = subprocess.Popen(
            [installed.python, "-m", "gunicorn", "-c", GUNICORN_SETTINGS, FACTORY],
            cwd=installed.workdir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    await_start(
        proc,
        lambda: http("GET", f"{url}/healthz")[0] == 200,
        timeout=30,
        what="gunicorn from the installed wheel",
        name="gunicorn",
        log=lambda: log.read_text(errors="replace"),
    )
    return proc, url


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    """gunicorn on the installed factory and the demo config, started in the other directory."""
    log = installed.workdir.parent / "gunicorn.log"
    for _attempt in range(3):
        try:
            proc, url = _start_gunicorn(installed, log)
        except PortInUse:
            continue
        try:
            yield url
        finally:
            stop_process(proc, timeout=10)
        return
    raise RuntimeError("gunicorn found no free port")


def test_gunicorn_serves_thunderbird_from_the_installed_package(installed: Installed, served: str) -> None:
    address = "alice@example.net"
    status, _, _ = http("GET", f"{served}/mail/config-v1.1.xml?emailaddress={address}")
    assert status == 404  # nothing enabled yet
    # The installed command, from the same directory, writes the store the server reads.
    result = installed.run(installed.command, "--config", DEMO_CONFIG, "accounts", "set", address, "--imap", "on")
    assert result.returncode == 0, result.stderr
    status, headers, body = http("GET", f"{served}/mail/config-v1.1.xml?emailaddress={address}")
    assert status == 200
    assert headers["Cache-Control"] == "private, no-cache"
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert [server.get("type") for server in root.iterfind("emailProvider/incomingServer")] == ["imap"]


def test_the_setup_page_and_its_stylesheet_come_from_the_wheel(installed: Installed, served: str) -> None:
    status, _, body = http("GET", f"{served}/setup")
    assert status == 200
    assert b"Example Networks Mail" in body
    status, _, body = http("GET", f"{served}/setup/static/setup.css")
    assert status == 200
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert body == wheel.read("autoconfig/static/setup.css")
