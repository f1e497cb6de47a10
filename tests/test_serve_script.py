"""``./scripts/serve`` as the README runs it: a node started during a database outage comes up."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.gunicorn import ROOT, http
from tests.support.ports import PortInUse, await_start, free_port, stop_process


def test_serve_starts_while_postgresql_is_down_and_answers_503(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    down = f"postgresql://autoconfig@127.0.0.1:{free_port()}/autoconfig"  # nothing listens there
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "AUTOCONFIG_DATABASE_URL": down,
            "AUTOCONFIG_BIND": f"127.0.0.1:{port}",
            "AUTOCONFIG_WORKERS": "1",
        }
        with log.open("ab") as output:
            proc = subprocess.Popen([ROOT / "scripts" / "serve"], env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            await_start(
                proc,
                lambda url=url: http("GET", f"{url}/healthz")[0] in (200, 503),
                timeout=120,  # the first run may set up .venv's runtime requirements
                what="./scripts/serve",
                name="scripts/serve",
                log=lambda: log.read_text(errors="replace"),
            )
        except PortInUse:
            continue
        try:
            status, _, body = http("GET", f"{url}/healthz")
            assert (status, json.loads(body)["status"]) == (503, "down")
            status, headers, _ = http("GET", f"{url}/mail/config-v1.1.xml?emailaddress=alice@example.net")
            assert status == 503 and headers["Retry-After"] == "5"
        finally:
            stop_process(proc, timeout=10)
        output = log.read_text(errors="replace")
        assert "OK, but the store cannot be reached now" in output
        return
    raise RuntimeError("scripts/serve found no free port")
