"""The real gunicorn server, started the way production starts it.

Tests that speak HTTP over a socket use this instead of Flask's test
client, so the WSGI entry point, the gunicorn config and the workers'
own store connections are all exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .config import write_toml
from .ports import ManagedServer, free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
# What an installed package gives gunicorn (docs/installing.md, config/autoconfig.service); a clone uses wsgi:app.
FACTORY = "autoconfig:create_app()"


def unprivileged_prefix() -> list[str]:
    """What runs a command so that file modes apply to it.

    Root ignores file modes through its capabilities (CAP_DAC_OVERRIDE and
    friends), not through its uid.  Under root (as in CI) the server
    therefore runs with every capability dropped (util-linux ``setpriv``),
    which leaves it as unprivileged as any service account: a file with
    mode 000 is closed to it.  It keeps uid 0 only because the interpreter
    lives under /root (mode 0700) on these machines, where another account
    could not start it.  Anyone else is unprivileged already.
    """
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


class GunicornServer(ManagedServer):
    """``gunicorn -c config/gunicorn.conf.py wsgi:app`` on a free loopback port."""

    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        workers: int | None = 2,
        unprivileged: bool = False,
    ) -> None:
        """``unprivileged``: run gunicorn so that file modes apply to it (see ``unprivileged_prefix``)."""
        self.config_path = config_path
        self.unprivileged = unprivileged
        self.log_path = log_path
        self.extra_env = env or {}
        self.workers = workers
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> GunicornServer:
        for _attempt in range(3):
            self.port = free_port()
            env = {
                **os.environ,
                "AUTOCONFIG_CONFIG": str(self.config_path),
                "AUTOCONFIG_BIND": f"127.0.0.1:{self.port}",
                **self.extra_env,
            }
            if self.workers is not None:  # None: as many as config/gunicorn.conf.py starts by default
                env["AUTOCONFIG_WORKERS"] = str(self.workers)
            else:
                env.pop("AUTOCONFIG_WORKERS", None)
            log = self.log_path.open("ab")
            self._proc = subprocess.Popen(
                [
                    *(unprivileged_prefix() if self.unprivileged else []),
                    *(sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            try:
                wait_for(self._ready, timeout=15, what=f"gunicorn on port {self.port}", retry_on=(OSError,))
                return self
            except (TimeoutError, RuntimeError):
                self.stop()
                if "Address already in use" not in self.log_text():
                    raise RuntimeError(f"gunicorn did not start:\n{self.log_text()[-4000:]}") from None
        raise RuntimeError(f"gunicorn found no free port:\n{self.log_text()[-4000:]}")

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return True  # answering at all means the workers are up

    def worker_pids(self) -> list[int]:
        """PIDs of the current worker processes (children of the master)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(entry.name))
        return found

    def worker_pss_kib(self) -> dict[int, int]:
        """Proportional set size of each worker, in KiB."""
        return self._worker_memory_kib("Pss:")

    def worker_anonymous_kib(self) -> dict[int, int]:
        """Anonymous memory of each worker (its heap and Python's objects), in KiB.

        What a leak grows, and unlike PSS independent of other processes:
        PSS divides each shared page of the interpreter and the libraries by
        the number of processes mapping it, so it jumps when an unrelated
        process using the same files (another test run, a finished server)
        exits.
        """
        return self._worker_memory_kib("Anonymous:")

    def _worker_memory_kib(self, field: str) -> dict[int, int]:
        sizes = {}
        for pid in self.worker_pids():
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            sizes[pid] = next(int(line.split()[1]) for line in text.splitlines() if line.startswith(field))
        return sizes

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, *texts: str, timeout: float = 10.0) -> str:
        """The log once it holds every one of ``texts``: routine lines are written about once a
        second ([service] log_flush_seconds), so a line may trail the answer it belongs to."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if all(text in log for text in texts):
                return log
            if time.monotonic() > deadline:
                missing = [text for text in texts if text not in log]
                raise AssertionError(f"not in the log after {timeout:g} s: {missing}\n{log[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None


def gunicorn_on(
    directory: Path,
    config: dict[str, Any] | Path,
    *,
    name: str = "autoconfig.toml",
    log: str = "gunicorn.log",
    env: dict[str, str] | None = None,
    workers: int | None = 2,
    unprivileged: bool = False,
) -> GunicornServer:
    """A server (not started yet) on ``config``, its log in ``directory``: a dict is written there
    as ``name`` first.  What the ``server`` and ``make_server`` fixtures start, and what a module's
    own longer-lived server fixture starts in its own temp dir."""
    path = write_toml(directory / name, config) if isinstance(config, dict) else config
    return GunicornServer(path, directory / log, env=env, workers=workers, unprivileged=unprivileged)


def http(
    method: str, url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to a running server, JSON body if given: status, headers, body, whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
