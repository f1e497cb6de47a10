"""Our app against the floor in one process, with the CPU caches emptied before every request.

    python -m bench.coldcache [--formats thunderbird,outlook,apple] [--requests 1500] [--rounds 3]
                              [--evict-mib 8] [--accounts 100000]

Why this exists next to ``bench.run``: under wrk on this machine the ratio
of our CPU per request to the floor's moves by ±0.2 between rounds, too much
to tell whether a change of a few microseconds helped.  Timing the WSGI call
in a loop is steady but wrong: a warm loop keeps every cache hot, while a
loaded gunicorn worker starts each request after the kernel, wrk and the
other worker have run, and pays 3-6x the in-loop cost for the same step.

So this script calls both WSGI apps directly, alternately, request by
request, and before each call copies a buffer of ``--evict-mib`` MiB, which
pushes our code and data out of the CPU caches as the other processes do.
It prints the trimmed mean (10 % off each end) per request and the ratio,
which repeats to about ±0.02.  The ratio is larger than wrk's because
gunicorn's own work (sockets, parsing, the access log) is not in either
figure; use it to compare changes, and ``bench.run`` for the targets.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.run import FORMATS, SERVER_HEADERS, Answer, enabled_address, make_accounts, write_config, write_floor

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(spec: dict[str, str], address: str) -> tuple[dict[str, Any], bytes]:
    """A request as gunicorn hands it to the app, and its body (``wsgi.input`` is made per call)."""
    path, _, query = spec["path"].format(address=address).partition("?")
    body = spec["body"].format(address=address).encode() if "body" in spec else b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": spec["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_USER_AGENT": "bench.coldcache",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    if body:
        environ["CONTENT_TYPE"] = spec["content_type"]
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ, body


def call(app: WSGIApp, environ: dict[str, Any], body: bytes) -> Answer:
    """One request, answered as ``fetch`` reports it over HTTP: headers a server writes itself left out."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        answer["status"] = int(status[:3])
        answer["headers"] = [(name, value) for name, value in headers if name.lower() not in SERVER_HEADERS]
        return lambda data: None

    chunks = b"".join(app({**environ, "wsgi.input": io.BytesIO(body)}, start_response))
    return answer["status"], answer["headers"], chunks


class Evictor:
    """Copies ``mib`` MiB from one buffer to another: enough to empty a core's caches of our working set."""

    def __init__(self, mib: int) -> None:
        self.source = bytearray(b"\x5a" * (mib << 20))
        self.target = bytearray(len(self.source))

    def __call__(self) -> None:
        if self.source:
            self.target[:] = self.source


def trimmed_mean_us(samples: list[float]) -> float:
    ordered = sorted(samples)
    cut = len(ordered) // 10
    return statistics.fmean(ordered[cut : len(ordered) - cut]) * 1e6


def paired(
    ours: WSGIApp, floor: WSGIApp, requests: list[tuple[dict[str, Any], bytes]], rounds: int, evict: Evictor
) -> tuple[float, float]:
    """Per-request µs of each app, the two called alternately so drifts of the machine hit both alike."""
    times: dict[int, list[float]] = {id(ours): [], id(floor): []}
    for round_number in range(rounds):
        order = (ours, floor) if round_number % 2 == 0 else (floor, ours)
        for environ, body in requests:
            for app in order:
                request_environ = {**environ, "wsgi.input": io.BytesIO(body)}
                evict()
                started = time.perf_counter()
                for _ in app(request_environ, _discard):
                    pass
                times[id(app)].append(time.perf_counter() - started)
    return trimmed_mean_us(times[id(ours)]), trimmed_mean_us(times[id(floor)])


def _discard(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
    if not status.startswith("200"):
        raise RuntimeError(f"the benchmark expects 200 answers, got {status}")
    return lambda data: None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="thunderbird,outlook,apple")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1500, help="distinct requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--evict-mib", type=int, default=8, help="MiB copied before each request; 0 keeps caches warm")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autoconfig-coldcache-") as tmp:
        work = Path(tmp)
        store_url = f"sqlite:///{work}/accounts.sqlite3"
        make_accounts(store_url, args.accounts)
        config = write_config(work, store_url)
        # Metrics as in production: values in shared files (config/gunicorn.conf.py sets this for gunicorn).
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(work / "metrics"))
        (work / "metrics").mkdir(exist_ok=True)
        from autoconfig import config as config_module
        from autoconfig import create_app

        ours = create_app(config_module.load(config))
        floor_dir = work / "floor"
        answered: dict[str, Answer] = {}
        formats = [f for f in args.formats.split(",") if f]
        for fmt in formats:
            answered[fmt] = call(ours, *environ_for(FORMATS[fmt], enabled_address(0)))
            if answered[fmt][0] != 200:
                parser.error(f"{fmt}: the service answered {answered[fmt][0]}")
        write_floor(floor_dir, answered)
        os.environ["BENCH_FLOOR_DIR"] = str(floor_dir)
        from bench.floor import create_app as create_floor

        floor = create_floor()
        evict = Evictor(args.evict_mib)
        chooser = random.Random(1)
        enabled = max(1, args.accounts // 3)
        print(f"# python -m bench.coldcache {' '.join(sys.argv[1:])}")
        print(f"{'format':<12} {'floor µs':>9} {'ours µs':>9} {'extra µs':>9} {'ratio':>6}")
        for fmt in formats:
            spec = FORMATS[fmt]
            requests = [environ_for(spec, enabled_address(chooser.randrange(enabled))) for _ in range(args.requests)]
            ours_us, floor_us = paired(ours, floor, requests, args.rounds, evict)
            print(f"{fmt:<12} {floor_us:>9.1f} {ours_us:>9.1f} {ours_us - floor_us:>9.1f} {ours_us / floor_us:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
