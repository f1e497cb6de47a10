"""Debian's nginx running the shipped example config (config/nginx/autoconfig.conf).

The example is an admin-facing file with production ports and paths; this
harness rewrites exactly those (listen addresses, certificate, upstream, log)
so the test exercises the rest of it unchanged.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from .ports import ManagedServer, free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "nginx" / "autoconfig.conf"


class NginxServer(ManagedServer):
    def __init__(self, workdir: Path, upstream_port: int, cert: Path, key: Path) -> None:
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.cert, self.key = cert, key
        self.http_port = self.https_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _site(self) -> str:
        text = EXAMPLE.read_text()
        replacements = [
            (r"(?m)^\s*listen \[::\]:\d+.*\n", ""),
            (r"listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            (r"listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;"),
            (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{self.upstream_port};"),
            (r"/etc/ssl/autoconfig/fullchain\.pem", str(self.cert)),
            (r"/etc/ssl/autoconfig/privkey\.pem", str(self.key)),
            (r"/var/log/nginx/autoconfig\.access\.log", str(self.workdir / "access.log")),
        ]
        for pattern, replacement in replacements:
            text, count = re.subn(pattern, replacement, text)
            assert count, f"the example config no longer contains {pattern!r}"
        return text

    def start(self) -> NginxServer:
        self.http_port, self.https_port = free_port(), free_port()
        (self.workdir / "site.conf").write_text(self._site())
        temp = self.workdir / "temp"
        temp.mkdir(exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.workdir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
            f"error_log {self.workdir}/error.log info;\nevents {{ worker_connections 128; }}\n"
            f"http {{\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n"
            f"  fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
            f"  access_log off;\n  include {self.workdir}/site.conf;\n}}\n"
        )
        with (self.workdir / "stderr.log").open("wb") as stderr:
            self._proc = subprocess.Popen(
                ["nginx", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

        def listening() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log_text()}")
            socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
            return True

        wait_for(listening, timeout=10, what="nginx")
        return self

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.workdir / "stderr.log", self.workdir / "error.log")
            if p.exists()
        )

    def access_log(self) -> str:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None
