"""Benchmark: our service against the framework floor, in one run, with wrk.

    python -m bench.run [--accounts 100000] [--duration 4] [--repeat 5] [--connections 8,32,128]
                        [--formats thunderbird,outlook,apple,apple-rsa2048,apple-p256]
                        [--store sqlite|postgresql|mysql|ldap]
                        [--scale] [--import-test] [--peer automx2] [--out bench/results/latest.txt]

It starts the service under gunicorn with the production settings
(config/gunicorn.conf.py, 2 workers) on a store of N generated accounts, and
a minimal Flask app that replays our answer to each client format
(bench/floor.py) under the same settings, and loads both with wrk over
loopback, in ``--repeat`` paired rounds per format and connection count.
Every wrk run is bounded by --duration.  Server CPU per request comes from
/proc (utime + stime of the gunicorn master and its workers), memory from
each worker's PSS.  Targets print PASS or FAIL; this is not a unit test and
never runs in the test suite.

Each format has its own target (``TARGETS``): CPU per request against its
baseline, the median of the paired rounds.  The baseline is the floor,
except for signed Apple profiles (``apple-rsa2048``, ``apple-p256``): a
second instance of the service signs with a throw-away key of that type
(tests/support/pki.py), and is paired against the unsigned one, so the
ratio is what signing costs.

``--scale`` compares CPU per request at 1,000,000 and 1,000 accounts, both
servers up at once; with ``--store mysql`` or ``--store ldap`` the accounts
are iRedMail-shaped mailboxes in a private MariaDB or slapd, read through
the iredmail preset (the read-only sources); ``--import-test`` times ``accounts import`` of
1,000,000 rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoconfig.config import load as load_config  # noqa: E402
from autoconfig.signing import load_signers  # noqa: E402
from autoconfig.store import StoreSettings, Switches, open_store  # noqa: E402
from tests.support.mariadb import MariaDBServer  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.ports import free_port, wait_for  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.slapd import READER_DN, SUFFIX, SlapdServer  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Nothing is pinned: the workers may use every core, as in production, and wrk
# shares them.  Pinning the server to one core steadied CPU per request a
# little but halved its throughput, which put p99 at the mercy of one core.
# The machine's noise is handled by pairing instead (see ``compare``).
WORKERS = 2  # --workers: the measuring setup; production's default is 2 per core + 1
DOMAIN = "example.net"

# Request shapes per client format; {address} is replaced per request (by wrk's Lua, and str.replace here).
FORMATS = {
    "thunderbird": {"method": "GET", "path": "/mail/config-v1.1.xml?emailaddress={address}"},
    "outlook": {
        "method": "POST",
        "path": "/autodiscover/autodiscover.xml",
        "content_type": "text/xml",
        "body": (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
            "<Request><EMailAddress>{address}</EMailAddress>"
            "<AcceptableResponseSchema>"
            "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
            "</AcceptableResponseSchema></Request></Autodiscover>"
        ),
    },
    "apple": {"method": "GET", "path": "/apple/mail.mobileconfig?emailaddress={address}"},
    # Dovecot's login decision, as the shipped snippets (config/dovecot-2.{3,4}-auth-policy.conf) make Dovecot ask it:
    # after the password, with the attributes it names, from an IMAP client outside the webmail's networks.
    "dovecot": {
        "method": "POST",
        "path": "/dovecot/auth-policy?command=allow",
        "content_type": "application/json",
        "headers": {"X-Autoconfig-Policy-Key": "bench-secret-0123456789abcdef"},
        "body": (
            '{"login":"{address}","protocol":"imap","remote":"198.51.100.7","real_remote":"198.51.100.7",'
            '"session_id":"mzUGwsPRjN1/AAAB"}'
        ),
    },
}
# What write_config adds so the service answers Dovecot: the secret above, and a webmail
# network (not the client's), so the exemption check runs as in a real setup.
DOVECOT_CONFIG = (
    '\n[dovecot]\napi_header = "X-Autoconfig-Policy-Key: bench-secret-0123456789abcdef"\n'
    'webmail_networks = ["192.0.2.80/32"]\n'
)
# Signed Apple profiles: the Apple request, to a service that signs with a key of this type (tests/support/pki.py).
SIGNED_APPLE = {"apple-rsa2048": "rsa", "apple-p256": "ec"}
FORMATS.update(dict.fromkeys(SIGNED_APPLE, FORMATS["apple"]))
DEFAULT_FORMATS = "thunderbird,outlook,apple,apple-rsa2048,apple-p256,dovecot"
PEER_FORMATS = ("thunderbird", "outlook", "apple")  # what automx2 serves


@dataclass(frozen=True)
class Target:
    """What a format is measured against, and the most its CPU per request may cost relative to that."""

    baseline: str  # "floor" (bench/floor.py) or "unsigned" (this service, Apple profiles unsigned)
    cpu_ratio: float | None  # None: measured and printed, no target
    p99_ratio: float | None = None  # p99 at 32 connections against the baseline's, where there is a target
    # p99 at 32 connections in ms, or None: printed as info.  RSA-2048 has none: its signature is CPU the
    # two workers queue behind at 32 connections, so its p99 says how fast this machine signs (the run prints
    # it), not how well the service answers; the P-256 key the docs recommend is held to the target.
    p99_ms: float | None = 25.0

    @property
    def baseline_name(self) -> str:
        return {"floor": "the floor", "unsigned": "the unsigned profile"}[self.baseline]

    def describe(self) -> str:
        return "-" if self.cpu_ratio is None else f"<= {self.cpu_ratio:g}x"


# Issue 14: per-format targets, CPU per request as the median of paired rounds against the baseline.
TARGETS = {
    "thunderbird": Target("floor", 1.3),
    "outlook": Target("floor", 1.6),
    "apple": Target("floor", 1.6),
    "apple-rsa2048": Target("unsigned", None, p99_ms=None),
    "apple-p256": Target("unsigned", 2.0),
    "dovecot": Target("floor", 1.4, p99_ratio=1.3),
}
TARGET_PSS_MIB = 60.0
TARGET_SCALE_DRIFT = 0.10
TARGET_IMPORT_SECONDS = 60.0


@dataclass
class Result:
    server: str
    fmt: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_ms_per_request: float
    pss_mib: float
    # Ours against the floor: the median of the per-round ratios, and their range.
    ratio: float | None = None
    ratio_range: tuple[float, float] | None = None
    note: str = ""  # what the report says of a figure it holds to no target


# -- accounts and config ------------------------------------------------------


def enabled_address(i: int) -> str:
    return f"user{i * 3}@{DOMAIN}"


def make_accounts(url: str, count: int) -> None:
    """``count`` accounts; every third one has IMAP on (those are the ones the load asks for)."""

    def rows() -> Iterator[tuple[str, Switches]]:
        for i in range(count):
            yield f"user{i}@{DOMAIN}", Switches(imap=i % 3 == 0, pop=i % 5 == 0)

    store = open_store(StoreSettings(url))
    store.import_switches(rows(), "bench")
    store.close()


def write_config(directory: Path, store_url: str, extra: str = "", signing_key_type: str | None = None) -> Path:
    """The demo config on this store.  wrk is one client IP, so the per-IP limit
    is raised out of reach, but left on: its cost belongs in the figure.
    ``extra`` is more TOML (a read-only source's [store.sql] or [store.ldap]).

    With ``signing_key_type`` ("ec" or "rsa"), Apple profiles are signed by a
    throw-away signer of that type, with an intermediate in the chain as in a
    real deployment.
    """
    text = (ROOT / "config" / "autoconfig.toml").read_text()
    text = re.sub(r'(?m)^url = ".*"$', f'url = "{store_url}"', text)
    text += "\n[limits]\nclient_rate = 1000000000.0\nclient_burst = 100000\n" + DOVECOT_CONFIG + extra
    if signing_key_type is not None:
        pki = make_pki(directory / "pki", key_type=signing_key_type)
        text += (
            f'\n[apple]\nsigning_certificate = "{pki.signer_cert}"\nsigning_key = "{pki.signer_key}"\n'
            f'signing_chain = "{pki.chain}"\n'
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "autoconfig.toml"
    path.write_text(text)
    return path


# -- processes ---------------------------------------------------------------


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path, python: Path | None = None) -> Iterator[tuple[int, str]]:
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "AUTOCONFIG_BIND": f"127.0.0.1:{port}",
        "AUTOCONFIG_WORKERS": str(WORKERS),
        "PYTHONPATH": str(ROOT),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(python or sys.executable), "-m", "gunicorn", "-c", "config/gunicorn.conf.py", app],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
        with suppress(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/healthz", timeout=2).close()
        return len(children(proc.pid)) == WORKERS

    try:
        wait_for(up, timeout=30, what=f"{app} on {url}")
        time.sleep(0.5)  # let every worker finish importing
        yield proc.pid, url
    finally:
        proc.terminate()
        proc.wait(15)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def pss_mib(pid: int) -> float:
    """Largest worker PSS (MiB): the per-worker memory figure."""
    values = []
    for p in children(pid):
        text = Path(f"/proc/{p}/smaps_rollup").read_text()
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if match:
            values.append(int(match.group(1)) / 1024)
    return max(values, default=0.0)


# -- wrk ---------------------------------------------------------------------


def lua_script(directory: Path, spec: dict[str, Any], accounts: int) -> Path:
    """A wrk script picking a random IMAP-enabled account per request."""
    enabled = max(1, accounts // 3)
    path_template = json.dumps(spec["path"])
    body_template = json.dumps(spec.get("body", ""))
    headers = "\n".join(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers_of(spec))
    script = f"""
math.randomseed({int(time.time())})
wrk.method = "{spec["method"]}"
{headers}
local path_template = {path_template}
local body_template = {body_template}
request = function()
  local address = "user" .. (math.random(0, {enabled - 1}) * 3) .. "@{DOMAIN}"
  local path = path_template:gsub("{{address}}", address)
  local body = nil
  if body_template ~= "" then body = body_template:gsub("{{address}}", address) end
  return wrk.format(nil, path, nil, body)
end
"""
    path = directory / f"{spec['method']}-{abs(hash(spec['path']))}.lua"
    path.write_text(script)
    return path


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> tuple[int, float, float, float, int]:
    threads = 1
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    if "Requests/sec" not in out or "50%" not in out:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_duration_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_duration_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return requests, rps, p50, p99, bad


# Headers the HTTP server writes itself; the floor gets every other header of our answer.
SERVER_HEADERS = {"date", "server", "content-length", "connection", "transfer-encoding", "keep-alive"}


Answer = tuple[int, list[tuple[str, str]], bytes]  # status, the app's own headers (no SERVER_HEADERS), body


def write_floor(directory: Path, answered: dict[str, Answer]) -> None:
    """What bench/floor.py replays: our answer per format, keyed by the format's path."""
    directory.mkdir(exist_ok=True)
    answers = {}
    for fmt, (status, headers, body) in answered.items():
        (directory / fmt).write_bytes(body)
        answers[FORMATS[fmt]["path"].split("?")[0].lower()] = [status, headers, fmt]
    (directory / "answers.json").write_text(json.dumps(answers))


def headers_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers of a format: its Content-Type, if it sends a body, and any others it names."""
    content_type = [("Content-Type", spec["content_type"])] if "content_type" in spec else []
    return content_type + list(spec.get("headers", {}).items())


def fetch(url: str, spec: dict[str, Any], address: str) -> Answer:
    """One request as wrk sends it: the status, the app's own headers and the body."""
    data = spec["body"].replace("{address}", address).encode() if "body" in spec else None
    request = urllib.request.Request(url + spec["path"].replace("{address}", address), data=data, method=spec["method"])
    for name, value in headers_of(spec):
        request.add_header(name, value)
    try:
        response = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in SERVER_HEADERS]
        return response.status, headers, response.read()


def measure(server: str, pid: int, url: str, fmt: str, script: Path, connections: int, duration: int) -> Result:
    # A short warm-up keeps connection set-up and lazy imports out of the figure.
    run_wrk(url, script, connections, 1)
    before = cpu_seconds(pid)
    requests, rps, p50, p99, bad = run_wrk(url, script, connections, duration)
    used = cpu_seconds(pid) - before
    return Result(server, fmt, connections, requests, rps, p50, p99, bad, used * 1000 / max(requests, 1), pss_mib(pid))


# -- the runs ----------------------------------------------------------------


def compare(args: argparse.Namespace, work: Path, store_url: str, log: Path) -> list[Result]:
    """Ours and its baseline, both running, measured in paired rounds.

    This machine's speed drifts by tens of percent within a minute (other
    tenants on the host), so a single run of each says little.  Each
    (format, connections) pair gets ``--repeat`` rounds; a round measures
    ours and the baseline back to back, in alternating order, and yields one
    ratio.  The verdict uses the median ratio, and its range is printed.
    """
    config = write_config(work, store_url)
    env = {"AUTOCONFIG_CONFIG": str(config), "AUTOCONFIG_DATABASE_URL": store_url}
    floor_dir = work / "floor"
    answered: dict[str, Answer] = {}
    formats = [f for f in args.formats.split(",") if f]
    unknown = [f for f in formats if f not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown formats: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    scripts = {}
    results: list[Result] = []
    with gunicorn("wsgi:app", env, log) as (pid, url):
        floored = [f for f in formats if TARGETS[f].baseline == "floor"]
        for fmt in list(floored):
            answer = fetch(url, FORMATS[fmt], enabled_address(0))
            if answer[0] != 200:
                print(f"# {fmt}: the service answered {answer[0]}; skipped", file=sys.stderr)
                floored.remove(fmt)
                continue
            answered[fmt] = answer
            scripts[fmt] = lua_script(work, FORMATS[fmt], args.accounts)
        if floored:
            write_floor(floor_dir, answered)
            with gunicorn("bench.floor_wsgi:app", {"BENCH_FLOOR_DIR": str(floor_dir)}, log) as (floor_pid, floor_url):
                servers = {"autoconfig": (pid, url), "floor": (floor_pid, floor_url)}
                for fmt in floored:
                    for connections in args.connections:
                        ours, floor = paired_rounds(servers, fmt, scripts[fmt], connections, args)
                        results += [ours, floor]
        for fmt in formats:
            if TARGETS[fmt].baseline == "unsigned":
                results += signed_apple(args, work, store_url, log, fmt, (pid, url))
    return results


def signed_apple(
    args: argparse.Namespace, work: Path, store_url: str, log: Path, fmt: str, unsigned: tuple[int, str]
) -> list[Result]:
    """A second service that signs Apple profiles, in paired rounds against the unsigned one."""
    config = write_config(work / fmt, store_url, signing_key_type=SIGNED_APPLE[fmt])
    env = {"AUTOCONFIG_CONFIG": str(config), "AUTOCONFIG_DATABASE_URL": store_url}
    spec = FORMATS[fmt]
    script = lua_script(work, spec, args.accounts)
    results: list[Result] = []
    with gunicorn("wsgi:app", env, log) as (pid, url):
        status, _, body = fetch(url, spec, enabled_address(0))
        plain_status, _, plain = fetch(unsigned[1], spec, enabled_address(0))
        if status != 200 or plain_status != 200:
            print(f"# {fmt}: the services answered {status} and {plain_status}; skipped", file=sys.stderr)
            return []
        if not body.startswith(b"\x30") or plain not in body:  # DER SignedData with the profile inside
            raise RuntimeError(f"{fmt}: the answer is not the unsigned profile wrapped in a signature")
        servers = {"autoconfig": (pid, url), "unsigned": unsigned}
        for connections in args.connections:
            results += paired_rounds(servers, fmt, script, connections, args)
    note = signing_note(config, plain, connections=32)
    for result in results:
        if result.server == "autoconfig":
            result.note = note
    return results


def signing_note(config: Path, profile: bytes, connections: int, calls: int = 300) -> str:
    """What one signature costs, timed in this process with the service's own signer and key.

    Why the signed profile's p99 is what it is: every signature is CPU
    that the two workers queue ``connections`` requests behind.
    """
    (signer,) = set(load_signers(load_config(config)).values())

    def per_call(work: Callable[[], object]) -> float:
        work()
        started = time.process_time()
        for _ in range(calls):
            work()
        return (time.process_time() - started) * 1000 / calls

    whole = per_call(lambda: signer.sign(profile))
    key_operation = per_call(lambda: _private_key_operation(signer.key, profile))
    return (
        f"each signature costs {whole:.2f} ms of CPU ({key_operation:.2f} ms of it the private-key operation; "
        f"timed in this run with the service's signer), and {connections} connections queue behind "
        f"{WORKERS} workers; the ECDSA P-256 key the docs recommend is held to the target"
    )


def _private_key_operation(key: object, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    raise TypeError(f"no private-key operation for {type(key).__name__}")


def paired_rounds(
    servers: dict[str, tuple[int, str]],
    fmt: str,
    script: Path | dict[str, Path],
    connections: int,
    args: argparse.Namespace,
) -> tuple[Result, Result]:
    """``--repeat`` rounds of the two ``servers`` back to back; the first one's result carries the ratio."""
    scripts = script if isinstance(script, dict) else dict.fromkeys(servers, script)
    (a_name, (a_pid, a_url)), (b_name, (b_pid, b_url)) = servers.items()
    for name, (_, url) in servers.items():  # connection set-up and lazy imports stay out of the figures
        run_wrk(url, scripts[name], connections, 1)
    a_runs: list[Result] = []
    b_runs: list[Result] = []
    for round_number in range(args.repeat):
        order = [(a_name, a_pid, a_url, a_runs), (b_name, b_pid, b_url, b_runs)]
        for name, pid, url, runs in order if round_number % 2 == 0 else order[::-1]:
            runs.append(measure(name, pid, url, fmt, scripts[name], connections, args.duration))
    ratios = sorted(a.cpu_ms_per_request / b.cpu_ms_per_request for a, b in zip(a_runs, b_runs, strict=True))
    a_result = median_result(a_runs)
    a_result.ratio, a_result.ratio_range = ratios[len(ratios) // 2], (ratios[0], ratios[-1])
    return a_result, median_result(b_runs)


def median_result(runs: list[Result]) -> Result:
    """Each figure's median over the runs (requests summed)."""

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    first = runs[0]
    return Result(
        first.server,
        first.fmt,
        first.connections,
        sum(r.requests for r in runs),
        median([r.rps for r in runs]),
        median([r.p50_ms for r in runs]),
        median([r.p99_ms for r in runs]),
        sum(r.non_2xx for r in runs),
        median([r.cpu_ms_per_request for r in runs]),
        max(r.pss_mib for r in runs),
    )


PEER_VENV = ROOT / "bench" / ".peer-venv"
PEER_PATHS = {"apple": "/mobileconfig/?emailaddress={address}"}  # automx2's spelling of the Apple URL


def peer_python() -> Path:
    """automx2 in a virtualenv of its own, so none of its dependencies touch ours."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench" / "peer-requirements.txt")],
            check=True,
        )
    return python


def peer(args: argparse.Namespace, work: Path, log: Path) -> list[Result]:
    """automx2 with the same servers (it has no per-account switches: it always shows them all)."""
    python = peer_python()
    conf = work / "automx2.conf"
    conf.write_text(f"[automx2]\nloglevel = WARNING\ndb_echo = no\ndb_uri = sqlite:///{work}/automx2.sqlite\n")
    seed = {
        "version": 2,
        "provider": "Example Networks Mail",
        "domains": [{"name": DOMAIN}],
        "servers": [
            {"name": "imap.example.net", "type": "imap", "port": 993},
            {"name": "pop.example.net", "type": "pop", "port": 995},
            {"name": "smtp.example.net", "type": "smtp", "port": 465},
            {"name": "smtp.example.net", "type": "smtp", "port": 587},
        ],
    }
    results = []
    # gunicorn's sync worker: the buffering worker is this package's, not installed beside automx2.
    # It is the sync worker fed only complete requests, which wrk's requests always are.
    env = {"AUTOMX2_CONF": str(conf), "AUTOCONFIG_WORKER_CLASS": "sync"}
    with gunicorn("automx2.server:app", env, log, python=python) as (pid, url):
        request = urllib.request.Request(
            url + "/initdb/",
            data=json.dumps(seed).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        for fmt in [f for f in args.formats.split(",") if f in PEER_FORMATS]:
            spec = {**FORMATS[fmt], **({"path": PEER_PATHS[fmt]} if fmt in PEER_PATHS else {})}
            status, _, _ = fetch(url, spec, enabled_address(0))
            if status != 200:
                print(f"# automx2 {fmt}: answered {status}; skipped", file=sys.stderr)
                continue
            script = lua_script(work, spec, args.accounts)
            for connections in args.connections:
                run_wrk(url, script, connections, 1)
                runs = [
                    measure("automx2", pid, url, fmt, script, connections, args.duration) for _ in range(args.repeat)
                ]
                results.append(median_result(runs))
    return results


def scale(args: argparse.Namespace, work: Path, log: Path) -> tuple[Result, Result]:
    """Thunderbird at 32 connections on 1,000,000 accounts against 1,000, both servers up, in paired rounds."""
    with ExitStack() as stack:
        servers, scripts = {}, {}
        large, small = args.scale_accounts
        for label, accounts in ((f"{large:,}", large), (f"{small:,}", small)):
            directory = work / f"scale-{accounts}"
            if args.store in ("mysql", "ldap"):
                store_url, extra, extra_env = prepare_source(args, directory, accounts)
            else:
                store_url, extra, extra_env = prepare_store(args, directory, accounts), "", {}
            config = write_config(directory, store_url, extra)
            env = {"AUTOCONFIG_CONFIG": str(config), "AUTOCONFIG_DATABASE_URL": store_url, **extra_env}
            servers[label] = stack.enter_context(gunicorn("wsgi:app", env, log))
            scripts[label] = lua_script(directory, FORMATS["thunderbird"], accounts)  # addresses from all of the store
        return paired_rounds(servers, "thunderbird", scripts, 32, args)


def prepare_store(args: argparse.Namespace, directory: Path, accounts: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    if args.store == "sqlite":
        url = f"sqlite:///{directory}/accounts.sqlite3"
    else:
        url = args.postgres.create_database(f"bench_{accounts}")
        if args.pg_socket:
            url = args.postgres.socket_dsn(f"bench_{accounts}")
    started = time.monotonic()
    make_accounts(url, accounts)
    print(f"# {accounts:,} accounts generated in {time.monotonic() - started:.1f} s ({args.store})", file=sys.stderr)
    return url


IREDMAIL_TABLES = (
    "CREATE TABLE domain (domain VARCHAR(255) NOT NULL PRIMARY KEY, backupmx TINYINT NOT NULL DEFAULT 0,"
    " active TINYINT NOT NULL DEFAULT 1)",
    "CREATE TABLE mailbox (username VARCHAR(255) NOT NULL PRIMARY KEY, domain VARCHAR(255) NOT NULL,"
    " active TINYINT NOT NULL DEFAULT 1, enableimaptls TINYINT NOT NULL DEFAULT 1,"
    " enablepop3tls TINYINT NOT NULL DEFAULT 1)",
)
LDAP_PASSWORD_ENV = "BENCH_LDAP_PASSWORD"


def prepare_source(args: argparse.Namespace, directory: Path, accounts: int) -> tuple[str, str, dict[str, str]]:
    """A read-only source shaped like iRedMail's, read with the iredmail preset: URL, extra TOML, extra env.

    The same switches as ``make_accounts``: every third mailbox has IMAP on, every fifth POP.
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.store == "mysql":
        name = f"bench_{accounts}"
        url = args.mariadb.create_database(name, "bench_ro", "bench-ro-secret")
        conn = args.mariadb.root(name)
        cur = conn.cursor()
        for statement in IREDMAIL_TABLES:
            cur.execute(statement)
        cur.execute("INSERT INTO domain (domain) VALUES (%s)", (DOMAIN,))
        batch = []
        for i in range(accounts):
            batch.append((f"user{i}@{DOMAIN}", DOMAIN, int(i % 3 == 0), int(i % 5 == 0)))
            if len(batch) == 10_000 or i == accounts - 1:
                cur.executemany(
                    "INSERT INTO mailbox (username, domain, enableimaptls, enablepop3tls) VALUES (%s, %s, %s, %s)",
                    batch,
                )
                batch = []
        cur.execute("ANALYZE TABLE mailbox")  # information_schema's sizes are InnoDB's estimate until then
        cur.fetchall()
        cur.execute(
            "SELECT data_length + index_length FROM information_schema.tables"
            " WHERE table_schema = %s AND table_name = 'mailbox'",
            (name,),
        )
        print(f"# mailbox table: {int(cur.fetchone()[0]) / 2**20:.0f} MiB of data and indexes", file=sys.stderr)
        conn.close()
        extra, env = '\n[store.sql]\npreset = "iredmail"\n', {}
    else:
        base = f"ou=bench{accounts},{SUFFIX}"
        ldif = directory / "mailboxes.ldif"
        with ldif.open("w") as out:
            out.write(f"dn: {base}\nobjectClass: organizationalUnit\nou: bench{accounts}\n\n")
            for i in range(accounts):
                services = "".join(
                    f"enabledService: {s}\n" for s, on in (("imaptls", i % 3 == 0), ("pop3tls", i % 5 == 0)) if on
                )
                out.write(
                    f"dn: cn=u{i},{base}\nobjectClass: inetOrgPerson\nobjectClass: mailUser\ncn: u{i}\nsn: u\n"
                    f"mail: user{i}@{DOMAIN}\naccountStatus: active\nenabledService: mail\n{services}\n"
                )
        args.slapd.load_ldif(ldif)
        ldif.unlink()
        url = args.slapd.url
        extra = (
            f'\n[store.ldap]\nbind_dn = "{READER_DN}"\npassword_env = "{LDAP_PASSWORD_ENV}"\n'
            f'base = "{base}"\npreset = "iredmail"\n'
        )
        env = {LDAP_PASSWORD_ENV: args.slapd.reader_password}
    print(f"# {accounts:,} mailboxes loaded in {time.monotonic() - started:.1f} s ({args.store})", file=sys.stderr)
    return url, extra, env


def import_test(work: Path, count: int, store_url: str) -> float:
    path = work / "import.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["address", "imap", "pop"])
        for i in range(count):
            writer.writerow([f"user{i}@{DOMAIN}", "on" if i % 3 == 0 else "off", "off"])
    config = write_config(work, store_url)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "autoconfig", "--config", str(config), "accounts", "import", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def judged_rows(results: list[Result]) -> Iterator[tuple[Result, Target, Result | None]]:
    """Autoconfig's rows with a CPU ratio (and its range), each with its format's target and the
    baseline's row at the same format and connections (None if it was not measured): the rows
    both the verdict lines (``report``) and the per-format table judge."""
    by_key = {(r.server, r.fmt, r.connections): r for r in results}
    for r in results:
        if r.server == "autoconfig" and r.ratio is not None and r.ratio_range is not None:
            target = TARGETS[r.fmt]
            yield r, target, by_key.get((target.baseline, r.fmt, r.connections))


def report(results: list[Result], repeat: int) -> list[str]:
    lines = [
        f"{'server':<11} {'format':<14} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'non-2xx':>7} {'CPU ms/req':>10} {'x base':>7} {'PSS MiB':>8}",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(
            f"{r.server:<11} {r.fmt:<14} {r.connections:>5} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.non_2xx:>7} {r.cpu_ms_per_request:>10.3f} {ratio:>7} {r.pss_mib:>8.1f}"
        )
    lines += ["", *per_format_table(results, repeat), ""]
    by_key = {(r.server, r.fmt, r.connections): r for r in results}
    for r, target, base in judged_rows(results):
        if base is None:
            continue
        low, high = r.ratio_range
        measured = (
            f"{r.fmt} at {r.connections} connections: CPU per request {r.ratio:.2f}x {target.baseline_name} "
            f"(median of {repeat} paired rounds, range {low:.2f}-{high:.2f}"
        )
        if target.cpu_ratio is None:
            lines.append(f"info  {measured}; no target)")
        else:
            lines.append(f"{verdict(r.ratio <= target.cpu_ratio)}  {measured}; target {target.describe()})")
        if r.connections == 32 and target.p99_ratio is not None:
            lines.append(
                f"{verdict(r.p99_ms <= target.p99_ratio * base.p99_ms)}  {r.fmt} p99 at 32 connections: "
                f"{r.p99_ms:.2f} ms, {r.p99_ms / base.p99_ms:.2f}x {target.baseline_name}'s {base.p99_ms:.2f} ms "
                f"(target <= {target.p99_ratio:g}x)"
            )
        if r.connections == 32 and target.p99_ms is not None:
            lines.append(
                f"{verdict(r.p99_ms < target.p99_ms)}  {r.fmt} p99 at 32 connections: "
                f"{r.p99_ms:.2f} ms (target < {target.p99_ms:g} ms; "
                f"{target.baseline_name}'s: {base.p99_ms:.2f} ms)"
            )
        elif r.connections == 32:
            lines.append(
                f"info  {r.fmt} p99 at 32 connections: {r.p99_ms:.2f} ms ({target.baseline_name}'s: "
                f"{base.p99_ms:.2f} ms); no target: {r.note}"
            )
        lines.append(f"{verdict(r.non_2xx == 0)}  {r.fmt} at {r.connections} connections: {r.non_2xx} non-2xx/errors")
    for r in results:
        floor = by_key.get(("floor", r.fmt, r.connections))
        ours = by_key.get(("autoconfig", r.fmt, r.connections))
        if r.server == "automx2" and floor is not None and ours is not None:
            lines.append(
                f"info  automx2 {r.fmt} at {r.connections} connections: {r.cpu_ms_per_request:.3f} ms CPU per request, "
                f"{r.cpu_ms_per_request / floor.cpu_ms_per_request:.2f}x the floor; ours "
                f"{ours.cpu_ms_per_request / r.cpu_ms_per_request:.2f}x automx2's"
            )
    worst = max((r.pss_mib for r in results if r.server == "autoconfig"), default=0.0)
    lines.append(f"{verdict(worst < TARGET_PSS_MIB)}  PSS per worker: {worst:.1f} MiB (target < {TARGET_PSS_MIB:g})")
    return lines


def per_format_table(results: list[Result], repeat: int) -> list[str]:
    """One line per format and connection count: CPU per request against the format's own target.

    With ``--peer automx2``, its CPU per request against the same floor
    is in the last column.
    """
    lines = [
        f"{'format':<14} {'against':<9} {'target':>7} {'conns':>5} {'x base':>7} {'range':>11} "
        f"{'p99 ms':>7} {'base p99':>8} {'verdict':>7} {'automx2':>8}"
    ]
    by_key = {(r.server, r.fmt, r.connections): r for r in results}
    for r, target, base in judged_rows(results):
        base_p99 = f"{base.p99_ms:.2f}" if base is not None else "-"
        judged = "info" if target.cpu_ratio is None else verdict(r.ratio <= target.cpu_ratio)
        low, high = r.ratio_range
        peer_result = by_key.get(("automx2", r.fmt, r.connections))
        peer_ratio = (
            f"{peer_result.cpu_ms_per_request / base.cpu_ms_per_request:.2f}x"
            if peer_result is not None and base is not None and target.baseline == "floor"
            else "-"
        )
        lines.append(
            f"{r.fmt:<14} {target.baseline:<9} {target.describe():>7} {r.connections:>5} {r.ratio:>7.2f} "
            f"{f'{low:.2f}-{high:.2f}':>11} {r.p99_ms:>7.2f} {base_p99:>8} {judged:>7} {peer_ratio:>8}"
        )
    lines.append(f"(x base: median CPU per request over {repeat} paired rounds against the baseline, wrk on loopback)")
    return lines


def main() -> int:
    global WORKERS  # --workers: read by gunicorn() for every server this run starts
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run (bounded)")
    parser.add_argument("--repeat", type=int, default=5, help="paired rounds per measurement; medians are kept")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32, 128])
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help=f"any of {', '.join(TARGETS)}")
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="gunicorn workers for every server (production: 2 per core + 1)"
    )
    parser.add_argument("--store", choices=["sqlite", "postgresql", "mysql", "ldap"], default="sqlite")
    parser.add_argument(
        "--pg-socket", action="store_true", help="with --store postgresql: reach it over its Unix socket, not TCP"
    )
    parser.add_argument("--scale", action="store_true", help="compare 1,000 and 1,000,000 accounts")
    parser.add_argument(
        "--scale-accounts",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(1_000_000, 1_000),
        help="the large and small account counts for --scale (default 1000000,1000)",
    )
    parser.add_argument("--import-test", action="store_true", help="time importing 1,000,000 accounts")
    parser.add_argument("--peer", choices=["automx2"], help="also measure this peer under the same settings")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.txt")
    args = parser.parse_args()
    WORKERS = args.workers
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian package wrk)")

    lines = [
        f"# python -m bench.run {' '.join(sys.argv[1:])}",
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]
    with tempfile.TemporaryDirectory(prefix="autoconfig-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        # PostgreSQL runs as a private cluster on loopback, like the tests' (tests/support/postgres.py).
        args.postgres = stack.enter_context(PostgresCluster(work / "pg")) if args.store == "postgresql" else None
        # MySQL and LDAP are the read-only sources (iRedMail-shaped, the iredmail preset), for --scale.
        # Its buffer pool holds the million mailboxes (114 MiB; the run prints it), as a production server's would:
        # with the tests' 64 MiB, lookups at 1,000,000 read pages from the OS and load the shared CPUs.
        args.mariadb = (
            stack.enter_context(MariaDBServer(work / "maria", buffer_pool="1G")) if args.store == "mysql" else None
        )
        args.slapd = stack.enter_context(SlapdServer(work / "slapd")) if args.store == "ldap" else None
        if args.store in ("mysql", "ldap") and not args.scale:
            parser.error("--store mysql and --store ldap are read-only sources: use them with --scale")
        log = work / "gunicorn.log"
        if args.import_test:
            store_url = (
                f"sqlite:///{work}/import.sqlite3"
                if args.postgres is None
                else args.postgres.create_database("bench_import")
            )
            seconds = import_test(work, 1_000_000, store_url)
            lines.append(
                f"{verdict(seconds < TARGET_IMPORT_SECONDS)}  import of 1,000,000 accounts (CLI, {args.store}): "
                f"{seconds:.1f} s (target < {TARGET_IMPORT_SECONDS:g} s)"
            )
        elif args.scale:
            large, small = scale(args, work, log)
            assert large.ratio is not None and large.ratio_range is not None
            drift = abs(large.ratio - 1.0)
            low, high = large.ratio_range
            lines.append(
                f"info  thunderbird at 32 connections ({args.store}), median CPU per request: "
                f"{small.cpu_ms_per_request:.3f} ms at {args.scale_accounts[1]:,} accounts, "
                f"{large.cpu_ms_per_request:.3f} ms at {args.scale_accounts[0]:,}"
            )
            lines.append(
                f"{verdict(drift <= TARGET_SCALE_DRIFT)}  CPU per request ({args.store}) at "
                f"{args.scale_accounts[0]:,} accounts is {large.ratio:.2f}x that at {args.scale_accounts[1]:,} "
                f"(median of {args.repeat} paired rounds, range {low:.2f}-{high:.2f}; "
                f"target within {TARGET_SCALE_DRIFT:.0%})"
            )
        else:
            store_url = prepare_store(args, work / "store", args.accounts)
            results = compare(args, work, store_url, log)
            if args.peer:
                results += peer(args, work, log)
            lines += report(results, args.repeat)
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 1 if "FAIL" in text else 0


if __name__ == "__main__":
    sys.exit(main())
