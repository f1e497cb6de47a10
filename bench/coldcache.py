"""Our app against the floor in one process, with the CPU caches emptied before every request.

    python -m bench.coldcache [--formats thunderbird,outlook,apple,apple-rsa2048,apple-p256] [--requests 1500]
                              [--rounds 3] [--evict-mib 8] [--accounts 100000]

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

Each format is measured against its ``bench.run`` baseline: the floor, or
for signed Apple profiles the same service with signing off.
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

from bench.run import (
    DEFAULT_FORMATS,
    FORMATS,
    SERVER_HEADERS,
    SIGNED_APPLE,
    TARGETS,
    Answer,
    enabled_address,
    make_accounts,
    write_config,
    write_floor,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(spec: dict[str, Any], address: str) -> tuple[dict[str, Any], bytes]:
    """A request as gunicorn hands it to the app, and its body (``wsgi.input`` is made per call)."""
    path, _, query = spec["path"].replace("{address}", address).partition("?")
    body = spec["body"].replace("{address}", address).encode() if "body" in spec else b""
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
    for name, value in spec.get("headers", {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
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


def prepare(work: Path, store_url: str, formats: list[str]) -> None:
    """Write what ``load_pairs`` needs into ``work``: the configs and the floor's answers.

    Our answers are fetched from a fresh app of this process; the floor replays them.
    """
    config = write_config(work, store_url)
    for fmt in formats:
        if fmt in SIGNED_APPLE:
            write_config(work / fmt, store_url, signing_key_type=SIGNED_APPLE[fmt])
    ours = _create_app(config)
    answered: dict[str, Answer] = {}
    for fmt in formats:
        if TARGETS[fmt].baseline == "floor":
            answered[fmt] = call(ours, *environ_for(FORMATS[fmt], enabled_address(0)))
            if answered[fmt][0] != 200:
                raise SystemExit(f"{fmt}: the service answered {answered[fmt][0]}")
    write_floor(work / "floor", answered)


def load_pairs(work: Path, formats: list[str]) -> dict[str, tuple[WSGIApp, WSGIApp]]:
    """Per format, our app and its baseline's, from the files ``prepare`` wrote."""
    ours = _create_app(work / "autoconfig.toml")
    os.environ["BENCH_FLOOR_DIR"] = str(work / "floor")
    from bench.floor import create_app as create_floor

    floor = create_floor()
    pairs: dict[str, tuple[WSGIApp, WSGIApp]] = {}
    for fmt in formats:
        if TARGETS[fmt].baseline == "floor":
            pairs[fmt] = (ours, floor)
        else:
            pairs[fmt] = (_create_app(work / fmt / "autoconfig.toml"), ours)
    return pairs


def _create_app(config: Path) -> WSGIApp:
    # Metrics as in production: values in shared files (config/gunicorn.conf.py sets this for gunicorn).
    directory = config.parent / "metrics"
    directory.mkdir(exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(directory))
    from autoconfig import config as config_module
    from autoconfig import create_app

    app: WSGIApp = create_app(config_module.load(config))
    return app


def addresses_for(count: int, accounts: int, seed: int = 1) -> list[str]:
    """``count`` random IMAP-enabled accounts, the same list for a given seed."""
    chooser = random.Random(seed)
    enabled = max(1, accounts // 3)
    return [enabled_address(chooser.randrange(enabled)) for _ in range(count)]


def requests_for(fmt: str, count: int, accounts: int, seed: int = 1) -> list[tuple[dict[str, Any], bytes]]:
    """``count`` requests of ``fmt`` for random IMAP-enabled accounts, the same list for a given seed."""
    return [environ_for(FORMATS[fmt], address) for address in addresses_for(count, accounts, seed)]


Step = Callable[[str, bytes], object]  # one step of a request, given its address and body


def format_steps(app: WSGIApp, fmt: str) -> dict[str, Step]:
    """The steps of ``fmt``'s answer that are the format's own work, each callable alone.

    What ``--steps`` times: the address check and switch lookup every
    format makes, the request document Outlook sends, and each format's
    rendering.  What is left of ours over the floor is the view around them
    (Flask's request, the query string, the response object, our hooks).
    """
    from autoconfig.formats import apple, outlook, thunderbird

    service = app.extensions["autoconfig"]  # type: ignore[attr-defined]
    decisions: dict[str, Any] = {}

    def decide(address: str, body: bytes) -> object:
        decisions[address] = decision = service.decide(address)
        return decision

    steps: dict[str, Step] = {}
    if fmt == "outlook":
        steps["read the request document"] = lambda address, body: outlook.read_request(body)
    steps["check the address, look up the switches"] = decide
    renderer = {"thunderbird": thunderbird.render, "outlook": outlook.render, "apple": apple.render}[fmt]
    steps["render the answer"] = lambda address, body: renderer(decisions[address])
    return steps


def time_steps(
    steps: dict[str, Step], requests: list[tuple[str, bytes]], rounds: int, evict: Evictor
) -> dict[str, float]:
    """Per-call µs of each step with the caches emptied before it, as ``paired`` times whole requests."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for address, body in requests:
            for name, step in steps.items():  # in request order: a step may use what the one before made
                evict()
                started = time.perf_counter()
                step(address, body)
                times[name].append(time.perf_counter() - started)
    return {name: trimmed_mean_us(samples) for name, samples in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help=f"any of {', '.join(TARGETS)}")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1500, help="distinct requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--evict-mib", type=int, default=8, help="MiB copied before each request; 0 keeps caches warm")
    parser.add_argument(
        "--steps", action="store_true", help="also time each format's own steps alone (documents formats only)"
    )
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if unknown := [f for f in formats if f not in TARGETS]:
        parser.error(f"unknown formats: {', '.join(unknown)}")

    with tempfile.TemporaryDirectory(prefix="autoconfig-coldcache-") as tmp:
        work = Path(tmp)
        store_url = f"sqlite:///{work}/accounts.sqlite3"
        make_accounts(store_url, args.accounts)
        prepare(work, store_url, formats)
        pairs = load_pairs(work, formats)
        evict = Evictor(args.evict_mib)
        extras: dict[str, tuple[float, dict[str, Step], list[tuple[dict[str, Any], bytes]]]] = {}
        print(f"# python -m bench.coldcache {' '.join(sys.argv[1:])}")
        print(f"{'format':<14} {'against':<9} {'base µs':>9} {'ours µs':>9} {'extra µs':>9} {'ratio':>6}")
        for fmt in formats:
            ours, baseline = pairs[fmt]
            requests = requests_for(fmt, args.requests, args.accounts)
            ours_us, base_us = paired(ours, baseline, requests, args.rounds, evict)
            print(
                f"{fmt:<14} {TARGETS[fmt].baseline:<9} {base_us:>9.1f} {ours_us:>9.1f} {ours_us - base_us:>9.1f} "
                f"{ours_us / base_us:>6.2f}"
            )
            if args.steps and fmt in STEP_FORMATS:
                extras[fmt] = (ours_us - base_us, format_steps(ours, fmt), requests)
        if extras:
            print_steps(extras, args, evict)
    return 0


STEP_FORMATS = ("thunderbird", "outlook", "apple")


def print_steps(
    extras: dict[str, tuple[float, dict[str, Step], list[tuple[dict[str, Any], bytes]]]],
    args: argparse.Namespace,
    evict: Evictor,
) -> None:
    """Where each format's extra over the floor goes: its own steps, and the view around them."""
    print()
    print(f"{'format':<14} {'step':<42} {'µs':>7} {'of extra':>9}")
    for fmt, (extra, steps, requests) in extras.items():
        addresses = addresses_for(len(requests), args.accounts)
        timed = time_steps(
            steps, [(a, body) for a, (_, body) in zip(addresses, requests, strict=True)], args.rounds, evict
        )
        for name, us in timed.items():
            print(f"{fmt:<14} {name:<42} {us:>7.1f} {us / extra:>9.0%}")
        rest = extra - sum(timed.values())
        print(f"{fmt:<14} {'the view around them (Flask, hooks, headers)':<42} {rest:>7.1f} {rest / extra:>9.0%}")
    print("(each step alone, caches emptied before it: the steps' sum can exceed a request's share of cold misses)")


if __name__ == "__main__":
    sys.exit(main())
