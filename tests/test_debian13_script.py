"""``./scripts/debian13 --run``: a run ends whole, however the script is stopped.

The real userland is not needed: the script is pointed
(``AUTOCONFIG_DEBIAN13_ROOT``) at a root made here, whose ``/usr`` is this
machine's, bind-mounted in a mount namespace of the test's own (nothing is
mounted where the rest of the machine sees it).  The commands run there carry
a marker in their arguments, so the test finds them among this machine's
processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gunicorn import ROOT
from tests.support.ports import stop_process, wait_for

# The script refuses to run inside its own userland, and could not: a chroot's / is no mount
# point, so unshare cannot make the mounts private there.  It runs from Debian 12.
pytestmark = pytest.mark.skipif(
    os.environ.get("AUTOCONFIG_DEBIAN13") == "inside", reason="scripts/debian13 runs outside the Debian 13 userland"
)


def sleeps(marker: str) -> list[int]:
    """The ``sleep 600.<marker>N`` processes of this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(f"sleep\x00600.{marker}".encode()):
                    found.append(int(entry.name))
            except OSError:
                continue  # ended meanwhile
    return found


@pytest.fixture
def userland(tmp_path: Path) -> Path:
    """A root with just this machine's /usr (merged /usr: /bin and /lib are links into it)."""
    root = tmp_path / "userland"
    for name in ("usr", "proc", "sys", "dev", "src", "tmp"):
        (root / name).mkdir(parents=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        if Path(f"/{name}").is_symlink():
            (root / name).symlink_to(os.readlink(f"/{name}"))
    (root / ".autoconfig-ready").touch()
    return root


@pytest.fixture
def start_run(userland: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    markers: list[str] = []

    def start(marker: str) -> subprocess.Popen[bytes]:
        markers.append(marker)
        # Two sleeps: one in the background, as a test's servers are, one in the foreground.
        inner = f"sleep 600.{marker}1 & exec sleep 600.{marker}2"
        launch = 'mount --bind /usr "$1/usr" && exec "$2" --run /bin/bash -c "$3"'
        environment = {k: v for k, v in os.environ.items() if k != "AUTOCONFIG_DEBIAN13"}
        environment["AUTOCONFIG_DEBIAN13_ROOT"] = str(userland)
        command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", launch]
        command += ["launch", str(userland), str(ROOT / "scripts" / "debian13"), inner]
        proc = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)
    for pid in (pid for marker in markers for pid in sleeps(marker)):  # what a failing run left
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP], ids=lambda s: s.name)
def test_stopping_the_script_ends_every_process_of_the_run(
    start_run: Callable[[str], subprocess.Popen[bytes]], how: signal.Signals
) -> None:
    """Before: SIGTERM to the script (timeout, a CI cancel, kill PID) ended the script alone; the
    whole run went on in its namespace, reparented to init, /src still bound, ports held."""
    marker = secrets.token_hex(4).translate(str.maketrans("abcdef", "123456"))  # digits: sleep reads it
    proc = start_run(marker)
    wait_for(lambda: len(sleeps(marker)) == 2, 30, "both sleeps of the run to start")
    proc.send_signal(how)  # the script itself: bash exec'd it
    proc.wait(timeout=10)
    wait_for(lambda: not sleeps(marker), 5, "every process of the run to end")


def test_the_commands_status_is_the_runs(userland: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "AUTOCONFIG_DEBIAN13"}
    environment["AUTOCONFIG_DEBIAN13_ROOT"] = str(userland)
    launch = 'mount --bind /usr "$1/usr" && exec "$2" --run /bin/bash -c "test -f /src/pyproject.toml && exit 7"'
    command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", launch]
    command += ["launch", str(userland), str(ROOT / "scripts" / "debian13")]
    done = subprocess.run(command, env=environment, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == 7, done.stderr
