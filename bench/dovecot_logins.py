"""Logins per second through the real Dovecot installed (2.3 or 2.4), with autoconfig's login hook and without it.

    python -m bench.dovecot_logins [--protocol imap|pop3] [--realistic] [--logins 1000] [--rounds 3]
                                   [--clients 8] [--users 200] [--max-seconds 60]
                                   [--out bench/results/dovecot-logins.txt]

Two Dovecot instances (three with ``--also-closing``) run side by side on loopback, alike in everything
(passwd-file passdb, static userdb, maildirs, tests/support/dovecot.py)
but one: the second carries the shipped snippet for the installed version
(config/dovecot-2.3-auth-policy.conf or config/dovecot-2.4-auth-policy.conf)
as an admin would install it (only the URL, the secret and the nonce
filled in), pointing at autoconfig under gunicorn with the production
settings (config/gunicorn.conf.py, 2 sync workers) on a SQLite store.
Every user has IMAP and POP on, so every login succeeds both ways.

A round is ``--logins`` complete logins (connect, greeting, LOGIN or
USER/PASS, LOGOUT or QUIT) by ``--clients`` concurrent connections, on
each instance back to back, in alternating order, so a busy machine slows
both alike; each round is bounded by ``--max-seconds``.  Printed per
instance: logins per second (wall clock, what a user of the machine sees)
and CPU per login from /proc: Dovecot's process tree (its login and mail
processes are short-lived; their time is counted once their master has
reaped them) plus, with the hook, autoconfig's.  The overhead is the median
over rounds of each round's pair.  Target (issue 24, 25 % in issue 14): the
hook costs at most 10 % of Dovecot's own login rate on this machine.

By default a login is the cheapest Dovecot can make: plain IMAP or POP3 and
PLAIN passwords, so the hook's share is as large as it gets.
``--realistic`` logs in as an ISP runs it: implicit TLS (IMAPS, POP3S; a
self-signed certificate made for the run, a full handshake per login) and
SHA512-CRYPT hashes in the passdb.  Both instances are alike in that too.

The CPU the rest of the machine used meanwhile (other processes: another
engineer's tests, say) is printed per round, from /proc/stat, so a shared
machine shows in the results.

The load generator is plain sockets in threads of this process, and its
own CPU is in neither figure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    CLK_TCK,
    DOVECOT_CONFIG,
    FORMATS,
    enabled_address,
    gunicorn,
    make_accounts,
    write_config,
)
from tests.support.dovecot import DovecotServer  # noqa: E402
from tests.support.tls import self_signed  # noqa: E402
from tests.test_dovecot_login import dovecot_settings  # noqa: E402  (the shipped snippet, filled in)

PASSWORD = "bench-password"
TARGET_OVERHEAD = 0.10
CLOSING = "hook, closing"
WARM_UP = 50
METRICS = "\n[metrics]\nenabled = true\n"  # loopback only (the default allow_networks)
_EXPRESS = re.compile(r'^autoconfig_express_requests_total\{format="dovecot"\} ([0-9.e+]+)$', re.MULTILINE)
_DECISIONS = re.compile(
    r"^autoconfig_dovecot_policy_decisions_total"
    r'\{(?=[^}]*command="allow")(?=[^}]*decision="allow")[^}]*\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def api_header() -> str:
    name, value = next(iter(FORMATS["dovecot"]["headers"].items()))
    assert f"{name}: {value}" in DOVECOT_CONFIG, "the bench config and the Dovecot header must agree"
    return f"{name}: {value}"


# -- one login as a mail program makes it -------------------------------------------------------------------------


class _Lines:
    """Lines from a socket, CRLF-terminated."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {self.buffer[-200:]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line


# The client's TLS for --realistic (trusting the run's own certificate); None: plain connections.
CLIENT_TLS: ssl.SSLContext | None = None


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if CLIENT_TLS is None:
        return sock
    return CLIENT_TLS.wrap_socket(sock, server_hostname="127.0.0.1")  # a full handshake, as a new client makes


def imap_login(port: int, user: str) -> None:
    with _connect(port) as sock:
        lines = _Lines(sock)
        _expect(lines.line(), b"* OK")
        sock.sendall(f'a LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
        _expect(_tagged(lines, b"a "), b"a OK")
        sock.sendall(b"b LOGOUT\r\n")
        _expect(_tagged(lines, b"b "), b"b OK")


def pop3_login(port: int, user: str) -> None:
    with _connect(port) as sock:
        lines = _Lines(sock)
        _expect(lines.line(), b"+OK")
        sock.sendall(f"USER {user}\r\n".encode())
        _expect(lines.line(), b"+OK")
        sock.sendall(f"PASS {PASSWORD}\r\n".encode())
        _expect(lines.line(), b"+OK")
        sock.sendall(b"QUIT\r\n")
        _expect(lines.line(), b"+OK")


def _tagged(lines: _Lines, tag: bytes) -> bytes:
    while True:
        line = lines.line()
        if line.startswith(tag):
            return line


def _expect(line: bytes, prefix: bytes) -> None:
    if not line.startswith(prefix):
        raise RuntimeError(f"expected {prefix!r}, got {line[:200]!r}")


LOGINS: dict[str, Callable[[int, str], None]] = {"imap": imap_login, "pop3": pop3_login}


# -- measuring ----------------------------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every live descendant, with what each has reaped of its children."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    """This process's CPU (the load generator's threads)."""
    times = os.times()
    return times.user + times.system


@dataclass
class Run:
    logins: int
    seconds: float
    dovecot_cpu: float
    autoconfig_cpu: float
    others_cpu: float = 0.0  # everything else on the machine meanwhile (the load generator left out)

    @property
    def rate(self) -> float:
        return self.logins / self.seconds

    @property
    def cpu_ms_per_login(self) -> float:
        return (self.dovecot_cpu + self.autoconfig_cpu) * 1000 / self.logins


def run_logins(
    login: Callable[[int, str], None], port: int, users: list[str], count: int, clients: int, max_seconds: float
) -> tuple[int, float]:
    """``count`` logins by ``clients`` threads (stopping early after ``max_seconds``): logins done, seconds."""
    lock = threading.Lock()
    state = {"next": 0, "done": 0}
    errors: list[BaseException] = []
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        while True:
            with lock:
                number = state["next"]
                if number >= count or time.monotonic() > deadline or errors:
                    return
                state["next"] += 1
            try:
                login(port, users[number % len(users)])
            except BaseException as exc:  # reported below; the other clients stop
                errors.append(exc)
                return
            with lock:
                state["done"] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"a login failed: {errors[0]!r}") from errors[0]
    return state["done"], elapsed


def measure(dovecot: DovecotServer, autoconfig_pid: int | None, args: argparse.Namespace, users: list[str]) -> Run:
    assert dovecot.pid is not None
    port = dovecot.imap_port if args.protocol == "imap" else dovecot.pop3_port
    port = dovecot.imaps_port if args.realistic and args.protocol == "imap" else port
    port = dovecot.pop3s_port if args.realistic and args.protocol == "pop3" else port
    machine, own = machine_busy_seconds(), own_cpu_seconds()
    before = tree_cpu_seconds(dovecot.pid), tree_cpu_seconds(autoconfig_pid) if autoconfig_pid else 0.0
    done, seconds = run_logins(LOGINS[args.protocol], port, users, args.logins, args.clients, args.max_seconds)
    after = tree_cpu_seconds(dovecot.pid), tree_cpu_seconds(autoconfig_pid) if autoconfig_pid else 0.0
    machine, own = machine_busy_seconds() - machine, own_cpu_seconds() - own
    dovecot_cpu, autoconfig_cpu = after[0] - before[0], after[1] - before[1]
    others = max(0.0, machine - own - dovecot_cpu - autoconfig_cpu)
    return Run(done, seconds, dovecot_cpu, autoconfig_cpu, others)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=sorted(LOGINS), default="imap")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="implicit TLS (IMAPS/POP3S) and SHA512-CRYPT passwords, as an ISP runs it",
    )
    parser.add_argument(
        "--also-closing",
        action="store_true",
        help=f"a third instance, '{CLOSING}': the hook with the service closing each connection (--keep-alive 0)",
    )
    parser.add_argument("--logins", type=int, default=1000, help="logins per instance and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--users", type=int, default=200, help="distinct users (Dovecot limits connections per user)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="bound on each instance's round")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dovecot-logins.txt")
    args = parser.parse_args()

    global CLIENT_TLS
    users = [enabled_address(i) for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="autoconfig-dovecot-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        tls, scheme = None, "PLAIN"
        if args.realistic:
            certs = work / "tls"
            certs.mkdir()
            certs.chmod(0o755)  # Dovecot's master reads them as root; the login processes get them from it
            tls, scheme = self_signed(certs, ["imap.example.net"]), "SHA512-CRYPT"
            CLIENT_TLS = ssl.create_default_context(cafile=str(tls[0]))
        store_url = f"sqlite:///{work}/accounts.sqlite3"
        make_accounts(store_url, args.users * 3)
        _enable_imap_and_pop(store_url, users)
        config = write_config(work, store_url, METRICS)
        env = {"AUTOCONFIG_CONFIG": str(config), "AUTOCONFIG_DATABASE_URL": store_url}
        autoconfig_pid, url = stack.enter_context(gunicorn("wsgi:app", env, work / "gunicorn.log"))
        passwords = dict.fromkeys(users, PASSWORD)
        plain = stack.enter_context(DovecotServer(work / "dovecot-plain", passwords, tls=tls, passdb_scheme=scheme))
        snippet = dovecot_settings(f"{url}/dovecot/auth-policy", api_header(), reject_on_fail=False)  # as shipped
        hooked = stack.enter_context(
            DovecotServer(work / "dovecot-hooked", passwords, extra_config=snippet, tls=tls, passdb_scheme=scheme)
        )
        instances = {"without hook": (plain, None), "with hook": (hooked, autoconfig_pid)}
        urls = {"with hook": url}
        if args.also_closing:  # the same service closing each connection after its answer, as before issue 24
            closing_env = {**env, "GUNICORN_CMD_ARGS": "--keep-alive 0"}
            closing_pid, urls[CLOSING] = stack.enter_context(gunicorn("wsgi:app", closing_env, work / "closing.log"))
            snippet = dovecot_settings(f"{urls[CLOSING]}/dovecot/auth-policy", api_header(), reject_on_fail=False)
            closing = stack.enter_context(
                DovecotServer(work / "dovecot-closing", passwords, extra_config=snippet, tls=tls, passdb_scheme=scheme)
            )
            instances[CLOSING] = (closing, closing_pid)
        asked = dict.fromkeys(urls, 0)
        for name, (dovecot, _) in instances.items():  # maildirs made, caches and connections warm
            port = dovecot.imap_port if args.protocol == "imap" else dovecot.pop3_port
            if args.realistic:
                port = dovecot.imaps_port if args.protocol == "imap" else dovecot.pop3s_port
            done, _ = run_logins(LOGINS[args.protocol], port, users, WARM_UP, args.clients, args.max_seconds)
            if name in asked:
                asked[name] += done
        runs: dict[str, list[Run]] = {name: [] for name in instances}
        names = list(instances)
        for round_number in range(args.rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                dovecot, pid = instances[name]
                runs[name].append(measure(dovecot, pid, args, users))
        # The shipped snippet lets a login through when the hook fails (auth_policy_reject_on_fail = no),
        # so the figures count only if autoconfig decided every one of them.
        time.sleep(1.5)  # each worker writes its tally of decisions once a second
        lines = report(runs, args)
        for name, service_url in urls.items():
            asked[name] += sum(run.logins for run in runs[name])
            decided, express = _allowed_decisions(service_url)
            lines.append(
                f"{'PASS' if decided == asked[name] else 'FAIL'}  autoconfig decided {decided} of the "
                f"{asked[name]} logins through the Dovecot {name} (allow, from its metrics; "
                f"{express} in the worker's express lane)"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 1 if "FAIL" in text else 0


def _allowed_decisions(url: str) -> tuple[int, int]:
    """The logins autoconfig allowed, and the questions its express lane answered (autoconfig/web/express.py)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    express = sum(float(value) for value in _EXPRESS.findall(text))
    return int(sum(float(value) for value in _DECISIONS.findall(text))), int(express)


def _enable_imap_and_pop(store_url: str, users: list[str]) -> None:
    from autoconfig.store import StoreSettings, Switches, open_store

    store = open_store(StoreSettings(store_url))
    store.import_switches(((user, Switches(imap=True, pop=True)) for user in users), "bench")
    store.close()


def _median_ms(runs: list[Run]) -> str:
    values = sorted(run.autoconfig_cpu * 1000 / run.logins for run in runs)
    return f"{statistics.median(values):.2f} ms (range {values[0]:.2f} to {values[-1]:.2f})"


def report(runs: dict[str, list[Run]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"# python -m bench.dovecot_logins {' '.join(sys.argv[1:])}",
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.protocol}"
        f"{' over implicit TLS, SHA512-CRYPT passwords' if args.realistic else ', plain, PLAIN passwords'}, "
        f"{args.clients} connections, {args.logins} logins per instance and round, {args.rounds} rounds; "
        f"{os.cpu_count()} cores",
        f"{'dovecot':<13} {'round':>5} {'logins':>6} {'seconds':>8} {'logins/s':>9} "
        f"{'dovecot CPU ms/login':>20} {'autoconfig CPU ms/login':>23} {'other processes, % of machine':>29}",
    ]
    for name, measured in runs.items():
        for number, run in enumerate(measured, 1):
            lines.append(
                f"{name:<13} {number:>5} {run.logins:>6} {run.seconds:>8.2f} {run.rate:>9.1f} "
                f"{run.dovecot_cpu * 1000 / run.logins:>20.3f} {run.autoconfig_cpu * 1000 / run.logins:>23.3f} "
                f"{run.others_cpu / run.seconds / (os.cpu_count() or 1):>29.0%}"
            )
    plain, hooked = runs["without hook"], runs["with hook"]
    closing = runs.get(CLOSING)
    rate_overheads = sorted(1 - h.rate / p.rate for p, h in zip(plain, hooked, strict=True))
    cpu_overheads = sorted(h.cpu_ms_per_login / p.cpu_ms_per_login - 1 for p, h in zip(plain, hooked, strict=True))
    rate, cpu = statistics.median(rate_overheads), statistics.median(cpu_overheads)
    everything = [run for measured in runs.values() for run in measured]
    shares = sorted(run.others_cpu / run.seconds / (os.cpu_count() or 1) for run in everything)
    lines += [
        "",
        f"info  other processes used {statistics.median(shares):.0%} of the machine's CPU during the rounds "
        f"(median, range {shares[0]:.0%} to {shares[-1]:.0%})"
        + ("; the machine was shared, so the rates are noisy" if shares[-1] >= 0.05 else "; a quiet machine"),
        f"info  logins/s without the hook {statistics.median(r.rate for r in plain):.1f}, "
        f"with it {statistics.median(r.rate for r in hooked):.1f} (medians)",
        f"info  CPU per login (Dovecot + autoconfig): {cpu:+.0%} with the hook "
        f"(median of {args.rounds} paired rounds, range {cpu_overheads[0]:+.0%} to {cpu_overheads[-1]:+.0%})",
        f"info  autoconfig CPU per login {_median_ms(hooked)} with connections kept"
        + (f", {_median_ms(closing)} closing each one" if closing else ""),
    ]
    if closing:
        closing_rates = sorted(1 - c.rate / p.rate for p, c in zip(plain, closing, strict=True))
        closing_cpu = sorted(c.cpu_ms_per_login / p.cpu_ms_per_login - 1 for p, c in zip(plain, closing, strict=True))
        lines.append(
            f"info  {CLOSING} (the service closing each connection, as before issue 24): the hook costs "
            f"{statistics.median(closing_rates):.0%} of the login rate (range {closing_rates[0]:.0%} to "
            f"{closing_rates[-1]:.0%}), CPU per login {statistics.median(closing_cpu):+.0%} "
            f"(range {closing_cpu[0]:+.0%} to {closing_cpu[-1]:+.0%})"
        )
    lines += [
        f"{'PASS' if rate <= TARGET_OVERHEAD else 'FAIL'}  the hook costs {rate:.0%} of Dovecot's own login rate "
        f"(median of {args.rounds} paired rounds, range {rate_overheads[0]:.0%} to {rate_overheads[-1]:.0%}; "
        f"target <= {TARGET_OVERHEAD:.0%})",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
