"""A private Knot DNS authoritative server serving test zone files.

Knot is the smallest real authoritative server packaged in Debian 12
(measured against nsd, bind9, PowerDNS and dnsmasq): it reads the same RFC 1035
zone files an admin would publish, starts in ~15 ms and exits cleanly on
SIGTERM. Each instance gets its own config, database and control socket
in ``workdir``, listens on one loopback port, and never writes back to
the zone files (``zonefile-sync: -1``).
"""

import pathlib
import re
import subprocess

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from tests.support.ports import PortInUse, PortServer, stop_process, wait_for

KNOTD = "/usr/sbin/knotd"
START_TIMEOUT = 10.0
MAX_UNIX_SOCKET_PATH = 107  # sizeof(sun_path) - 1 on Linux
# knotd log lines look like "2026-01-01T00:00:00+0000 error: [zone.] ..."
_LOGGED_ERROR = re.compile(r"^\S+ (error|critical): ", re.MULTILINE)


class KnotServer(PortServer):
    """Run ``knotd`` in the foreground as a child process for one test scope.

    ``zones`` maps a zone origin (``"example.net"``) to its zone file.
    """

    name = "knotd"

    def __init__(self, zones: dict[str, pathlib.Path], workdir: pathlib.Path):
        if not zones:
            raise ValueError("KnotServer needs at least one zone")
        self.zones = {dns.name.from_text(origin): path.resolve() for origin, path in zones.items()}
        self.workdir = workdir.resolve()
        self._control_socket = self.workdir / "knot.sock"
        if len(bytes(self._control_socket)) > MAX_UNIX_SOCKET_PATH:
            # knotd cannot run without a control socket, and a longer path
            # only fails later with a cryptic "not enough space provided".
            raise ValueError(f"workdir path too long for knotd's control socket: {self._control_socket}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.workdir / "knotd.log"

    def start(self) -> None:
        """Start knotd and return once every zone answers authoritatively.

        The port comes from :func:`free_port`, which can race with other
        processes; a bind failure is retried on a fresh port.
        """
        if self._proc is not None:
            raise RuntimeError("knotd is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0  # every start picks a fresh port: no test restarts knotd and expects its address back
        self._start_on_a_port()

    def stop(self) -> None:
        """SIGTERM knotd and wait for it (SIGKILL if it hangs)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def resolver(self) -> dns.resolver.Resolver:
        """A resolver that asks only this server, with short time limits.

        ``timeout``/``lifetime`` of 1 s / 2 s make a broken server fail a
        test quickly instead of hanging it on dnspython's 5 s default.
        """
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.address]
        resolver.port = self.port
        resolver.timeout = 1.0
        resolver.lifetime = 2.0
        return resolver

    def log_text(self) -> str:
        """knotd's stderr log (startup, zone load errors, shutdown)."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _spawn_and_wait(self) -> None:
        conf = self.workdir / "knot.conf"
        conf.write_text(self._config())
        with self._log_path.open("wb") as log:
            proc = subprocess.Popen(
                [KNOTD, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                lambda: self._zones_loaded(proc),
                START_TIMEOUT,
                f"knotd on {self.address}@{self.port} to serve {len(self.zones)} zone(s)",
                retry_on=(OSError, dns.exception.DNSException),
            )
        except BaseException as exc:
            stop_process(proc)
            if isinstance(exc, TimeoutError):
                raise RuntimeError(f"{exc}; knotd log:\n{self.log_text()}") from exc
            raise
        self._proc = proc

    def _zones_loaded(self, proc: "subprocess.Popen[bytes]") -> bool:
        """True once every zone answers an authoritative SOA.

        Raises (ending the wait early) when knotd has exited, e.g. on an
        occupied port, or logged an error: a zone file that does not parse
        leaves knotd running without the zone, answering SERVFAIL forever.
        """
        exited = proc.poll() is not None
        log = self.log_text()  # read after poll(): complete if knotd exited
        if "address already in use" in log:
            raise PortInUse()
        if exited:
            raise RuntimeError(f"knotd exited with status {proc.returncode}:\n{log}")
        if _LOGGED_ERROR.search(log):
            raise RuntimeError(f"knotd reported an error:\n{log}")
        return all(self._answers_soa(origin) for origin in self.zones)

    def _answers_soa(self, origin: dns.name.Name) -> bool:
        # TCP, not UDP: before knotd binds, a TCP connect is refused at once,
        # while a UDP query would sit out its whole timeout.
        query = dns.message.make_query(origin, dns.rdatatype.SOA)
        response = dns.query.tcp(query, self.address, port=self.port, timeout=0.5)
        return (
            response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA) and len(response.answer) > 0
        )

    def _config(self) -> str:
        """knotd YAML config: everything stateful lives in ``workdir``."""
        zones = "".join(
            f"  - domain: {_quote(origin.to_text())}\n    file: {_quote(str(path))}\n"
            for origin, path in self.zones.items()
        )
        workdir = _quote(str(self.workdir))
        return (
            "server:\n"
            f"    rundir: {workdir}\n"
            f"    listen: {self.address}@{self.port}\n"
            "    udp-workers: 1\n"
            "    tcp-workers: 1\n"
            "    background-workers: 1\n"
            "database:\n"
            f"    storage: {workdir}\n"
            "control:\n"
            f"    listen: {_quote(str(self._control_socket))}\n"
            "log:\n"
            "  - target: stderr\n"
            "    any: info\n"
            "template:\n"
            "  - id: default\n"
            "    zonefile-sync: -1\n"
            "    zonefile-load: whole\n"
            "    journal-content: none\n"
            "zone:\n" + zones
        )


def _quote(value: str) -> str:
    """Quote a string for knotd's YAML subset (paths may contain spaces)."""
    return f'"{value}"'
