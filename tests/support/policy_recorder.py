"""An HTTP hop between Dovecot and the service that keeps what Dovecot sends.

The service logs its decisions, never the request body (a pwhash in it
must never reach a log line).  To prove what a real Dovecot with the
shipped snippet puts on the wire, Dovecot's ``auth_policy_server_url``
points here instead: every request is kept as received (path, headers,
body) and passed on to the service unchanged, and the service's answer
goes back unchanged.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.ports import ManagedServer

# Hop-by-hop headers and those the forwarding request sets itself.
_NOT_FORWARDED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


@dataclass(frozen=True)
class Recorded:
    path: str  # with the query, as Dovecot asked: /dovecot/auth-policy?command=allow
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict), self.body
        return value


class PolicyRecorder(ManagedServer):
    """Listens on 127.0.0.1 (:attr:`url`), records each request in :attr:`requests`, forwards it to ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the recorder is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def recorded(self, since: int = 0) -> list[Recorded]:
        """The requests received so far, from the ``since``-th on."""
        with self._lock:
            return self.requests[since:]

    def start(self) -> PolicyRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # Dovecot's HTTP client keeps connections open

            def do_POST(self) -> None:
                body = self._read_body()
                headers = {name: value for name, value in self.headers.items()}
                with recorder._lock:
                    recorder.requests.append(Recorded(self.path, headers, body))
                status, content_type, answer = recorder._forward(self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="policy-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        forwarded = {name: value for name, value in headers.items() if name.lower() not in _NOT_FORWARDED}
        request = urllib.request.Request(self.target + path, data=body, headers=forwarded, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()
