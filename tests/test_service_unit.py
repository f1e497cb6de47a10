"""The systemd unit shipped in config/: valid, sandboxed, and wired to what the package provides.

``systemd-analyze verify`` and ``security --offline=true`` read the unit
file alone; neither needs a running systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w

from autoconfig.config import ENV_ADMIN_TOKEN, ENV_DATABASE_URL, ENV_DOVECOT_HEADER, load
from tests.support.gunicorn import FACTORY, ROOT

UNIT = ROOT / "config" / "autoconfig.service"
ENV_FILE = ROOT / "config" / "autoconfig.env"
MAX_EXPOSURE = 2.0
# Where docs/installing.md installs things; the unit must name exactly these.
VENV = "/opt/autoconfig"
GUNICORN_SETTINGS = "/etc/autoconfig/gunicorn.conf.py"


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit or environment file (comments skipped), values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_unit_runs_the_installed_factory_with_the_shipped_gunicorn_settings() -> None:
    unit = settings(UNIT.read_text())
    assert unit["ExecStart"] == [f"{VENV}/bin/gunicorn -c {GUNICORN_SETTINGS} {FACTORY}"]
    assert unit["Environment"][0] == "AUTOCONFIG_CONFIG=/etc/autoconfig/autoconfig.toml"
    assert unit["EnvironmentFile"] == ["/etc/autoconfig/autoconfig.env"]
    assert unit["StateDirectory"] == ["autoconfig"] and unit["WorkingDirectory"] == ["/var/lib/autoconfig"]
    assert unit["User"] == ["autoconfig"]


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this run's gunicorn instead of /opt.
    gunicorn = Path(sys.executable).parent / "gunicorn"
    assert gunicorn.exists()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(f"{VENV}/bin/gunicorn", str(gunicorn)))
    result = analyze("verify", unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_the_unit_is_sandboxed_to_an_exposure_of_at_most_2() -> None:
    result = analyze("security", "--offline=true", "--no-pager", UNIT)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for autoconfig\.service: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_environment_file_names_only_variables_the_service_reads_and_its_examples_load(
    tmp_path: Path, config_data: dict[str, Any]
) -> None:
    """Uncommented, the examples are what sh (docs/installing.md's CLI wrapper) and the config loader accept."""
    examples = "\n".join(
        line.removeprefix("#") for line in ENV_FILE.read_text().splitlines() if re.match(r"#?[A-Z_]+=", line)
    )
    names = set(settings(examples))
    assert names == {
        ENV_ADMIN_TOKEN,
        ENV_DOVECOT_HEADER,
        ENV_DATABASE_URL,
        "AUTOCONFIG_WORKERS",
        "AUTOCONFIG_WORKER_CLASS",
    }
    assert not any(line and not line.startswith("#") for line in ENV_FILE.read_text().splitlines()), (
        "every value is a commented example: nothing is turned on with a published secret"
    )
    source = tmp_path / "autoconfig.env"
    source.write_text(examples + "\n")
    sh = shutil.which("sh")
    assert sh is not None
    printed = subprocess.run(
        [sh, "-c", 'set -a; . "$1"; exec env -0', "sh", source], capture_output=True, text=True, check=True, env={}
    )
    from_sh = dict(item.split("=", 1) for item in printed.stdout.split("\0") if item)
    # systemd takes the value inside the double quotes literally; sh must read the same.
    env = {name: settings(examples)[name][0].removeprefix('"').removesuffix('"') for name in names}
    assert {name: from_sh[name] for name in names} == env
    config = tmp_path / "autoconfig.toml"
    config.write_bytes(tomli_w.dumps(config_data).encode())
    loaded = load(config, env=env)
    assert loaded.dovecot is not None and loaded.dovecot.header == "X-Autoconfig-Policy-Key"
    assert loaded.store.url == env[ENV_DATABASE_URL]
    assert [token.name for token in loaded.admin_tokens][-1] == "env"
