"""The Dovecot side of the login gate, filled in for this installation.

Dovecot 2.3 and 2.4 need different files (2.4 refuses 2.3's flat string list
at start, 2.3 does not know 2.4's blocks), and the policy secret must be the
very same line in this service's config and in Dovecot's.  An operator who
copies the right file and the secret by hand gets either wrong often enough;
``autoconfig dovecot snippet`` does both from what is installed.

The shipped files (``config/dovecot-<series>-auth-policy.conf`` in a clone,
``autoconfig/snippets/`` in the wheel) stay the single source: this module
replaces the values of three settings in them and adds nothing of its own
but a header comment, so the file an operator reads in the repository is the
file Dovecot gets.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from urllib.parse import urlsplit

from .resources import PACKAGE

# Dovecot release series -> the shipped snippet.  A series not listed here
# gets a refusal, never the nearest file: the two differ in syntax.
SNIPPETS = {
    "2.3": "dovecot-2.3-auth-policy.conf",
    "2.4": "dovecot-2.4-auth-policy.conf",
}
POLICY_PATH = "/dovecot/auth-policy"
# Where Dovecot is when PATH (a non-root shell's) lacks the sbin directories.
DOVECOT_BINARIES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
# ASCII digits only (\\d also takes "２.４" and "٢.٤"), a few of them (int() refuses over 4,300),
# and the series must end there: "2.4garbage" is no Dovecot's version, "2.4.1-4 (...)" is.
_VERSION = re.compile(r"^\s*([0-9]{1,9})\.([0-9]{1,9})(?![0-9A-Za-z])")
_SHOWN = 80  # characters of an operator's input an error message repeats
# Dovecot reads "#" as a comment and may expand "%", "$" and braces in a value,
# and quotes and backslashes change how it reads one: such a secret would reach
# this service as something other than what its config says.
_UNSAFE_IN_DOVECOT = frozenset("#%$\"\\{}'")


class SnippetError(Exception):
    """What the operator must change (a version, the URL, the secret); the message says which."""


@dataclass(frozen=True)
class Snippet:
    series: str
    source: Path
    text: str


def series_of(version: str) -> str:
    """``2.4.1-4 (7d8c0e5759)`` -> ``2.4``; a version of no shipped snippet is refused."""
    match = _VERSION.match(version)
    if match is None:
        raise SnippetError(f"{_shown(version.strip())} is not a Dovecot version such as 2.3 or 2.4")
    series = f"{int(match.group(1))}.{int(match.group(2))}"
    if series not in SNIPPETS:
        known = " and ".join(SNIPPETS)
        raise SnippetError(
            f"Dovecot {series} is not a version this service has a snippet for (it has {known}); "
            "its settings differ between series, so no other file is a safe stand-in"
        )
    return series


def installed_version(timeout: float = 10.0) -> str:
    """What ``dovecot --version`` says on this machine."""
    binary = shutil.which("dovecot") or next((b for b in DOVECOT_BINARIES if Path(b).is_file()), None)
    if binary is None:
        raise SnippetError("Dovecot is not installed here; name its version with --dovecot-version 2.3 or 2.4")
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SnippetError(
            f"{binary} --version did not answer within {timeout:g} s; name the version with --dovecot-version"
        ) from None
    except OSError as exc:
        raise SnippetError(f"{binary} --version did not run ({exc}); name the version with --dovecot-version") from None
    # Bytes, not text: whatever a "dovecot" first on PATH prints must end in a message, not a traceback.
    stdout = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not stdout:
        said = _printable(done.stderr.decode("utf-8", "replace").strip())[:200]
        raise SnippetError(
            f"{binary} --version failed (exit {done.returncode}): {said}; name the version with --dovecot-version"
        )
    return stdout.splitlines()[0]


def _printable(text: str) -> str:
    """``text`` with every character a terminal or a config file could act on shown as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _shown(text: str) -> str:
    """An operator's input, quoted and cut short, for an error message."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def snippet_file(series: str) -> Path:
    """The shipped file: inside the package when installed from the wheel, else the clone's config/."""
    name = SNIPPETS[series]
    inside = PACKAGE / "snippets" / name
    return inside if inside.is_file() else PACKAGE.parent / "config" / name


# What a URL's path may hold (RFC 3986 pchar and "/"), less what Dovecot's config reads differently;
# a label of a host name (underscores too: /etc/hosts names may have them).
_PATH = re.compile(r"^[A-Za-z0-9\-._~!&()*+,;=:@/]*$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_MAX_HOST = 253


def policy_url(base: str) -> str:
    """This service's policy endpoint as Dovecot reaches it, from a base URL or the endpoint's own.

    Written back from its parts, each checked: a URL Dovecot would read as
    another host, or not read at all, is refused here rather than by every
    login's policy request (which, failing open, would leave the gate off).
    """
    shown = f"--url {_shown(base)}"
    if not base or not all("\x21" <= ch <= "\x7e" for ch in base):
        raise SnippetError(f"{shown}: must be an http:// or https:// URL without spaces or control characters")
    if any(ch in _UNSAFE_IN_DOVECOT for ch in base):
        raise SnippetError(f"{shown}: must not contain any of {''.join(sorted(_UNSAFE_IN_DOVECOT))}")
    try:
        parts = urlsplit(base)
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ]
        raise SnippetError(f"{shown}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SnippetError(f"{shown}: must be an http:// or https:// URL with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise SnippetError(f"{shown}: no user, query or fragment (Dovecot adds ?command=allow itself)")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise SnippetError(f"{shown}: the port is not a number from 1 to 65535")
    host = _host(parts.netloc, parts.hostname, shown)
    if not _PATH.match(parts.path):
        raise SnippetError(f"{shown}: the path may hold only letters, digits, / and -._~!&()*+,;=:@")
    path = parts.path.rstrip("/")
    if not path.endswith(POLICY_PATH):
        path += POLICY_PATH
    return f"{parts.scheme}://{host}{'' if port is None else f':{port}'}{path}"


def _host(netloc: str, hostname: str, shown: str) -> str:
    """The URL's host as written back: a checked IPv6 literal in brackets, an IPv4 address or a DNS name."""
    if netloc.startswith("["):
        try:
            IPv6Address(hostname)
        except ValueError:
            raise SnippetError(f"{shown}: [{hostname}] is not an IPv6 address") from None
        return f"[{hostname}]"  # as written (Python versions print ::ffff:a.b.c.d differently)
    name = hostname[:-1] if hostname.endswith(".") else hostname  # a trailing dot is a DNS name's own
    if name.replace(".", "").isdigit():
        try:
            return str(IPv4Address(name))
        except ValueError:
            raise SnippetError(f"{shown}: {_shown(hostname)} is not an IPv4 address") from None
    if len(name) > _MAX_HOST or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise SnippetError(f"{shown}: {_shown(hostname)} is not a host name (letters, digits, - and _ between dots)")
    return hostname


def url_from_bind(bind: str) -> str:
    """gunicorn's first ``AUTOCONFIG_BIND`` address as a URL (a wildcard as loopback)."""
    first = bind.split(",")[0].strip()
    if first.startswith("tcp://"):  # gunicorn's spelling of a plain host:port
        first = first[len("tcp://") :]
    if not first or first.startswith(("unix:", "fd://")):
        raise SnippetError(
            f"AUTOCONFIG_BIND={_shown(bind)} is not a TCP address Dovecot can reach; give the URL with --url"
        )
    host, _, port = first.rpartition(":")
    if not (port.isascii() and port.isdigit()) or not host:
        raise SnippetError(f"AUTOCONFIG_BIND={_shown(bind)}: expected host:port; give the URL with --url")
    wildcards = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104 - read from the bind, mapped to loopback
    host = wildcards.get(host, host)
    try:
        return policy_url(f"http://{host}:{port}")
    except SnippetError as exc:
        raise SnippetError(
            f"AUTOCONFIG_BIND={_shown(bind)} does not give a URL Dovecot can use ({exc}); give the URL with --url"
        ) from None


def check_header(header: str, secret: str) -> str:
    """The header line Dovecot sends, refused when Dovecot would read it as something else.

    The name as well as the secret: an HTTP token may hold # $ % and ', and
    Dovecot reads ``X-Key#1: secret`` as the header ``X-Key`` with no secret,
    which every policy request then fails with, and fails open.
    """
    for part, text, choose in (
        ("the header name", header, "letters, digits and -"),
        ("the secret", secret, "letters, digits and -._~+/= (for example: openssl rand -base64 32)"),
    ):
        unsafe = sorted({ch for ch in text if ch in _UNSAFE_IN_DOVECOT})
        if unsafe:
            raise SnippetError(
                f"[dovecot] api_header: {part} contains {' '.join(unsafe)}, which Dovecot's config reads "
                f"differently (a comment, a variable or a quote); choose {choose}"
            )
    return f"{header}: {secret}"


def render(series: str, url: str, header_line: str, made_from: str, nonce: str | None = None) -> Snippet:
    """The shipped snippet for ``series`` with its URL, header and nonce lines filled in.

    A fresh nonce each time is harmless: it only salts a password hash that
    neither snippet lets Dovecot send.
    """
    source = snippet_file(series)
    try:
        template = source.read_text(encoding="utf-8")
    except OSError as exc:
        # Name the wheel's place as well: an installed package has no config/ beside it, so the
        # path that failed alone would send the operator looking in the wrong directory.
        places = " and ".join(dict.fromkeys(str(p) for p in (PACKAGE / "snippets" / SNIPPETS[series], source)))
        raise SnippetError(
            f"{source}: {exc.strerror or exc}: this installation lacks its shipped snippet "
            f"(looked for {places}); reinstall autoconfig"
        ) from None
    values = {
        "auth_policy_server_url": url,
        "auth_policy_server_api_header": header_line,
        "auth_policy_hash_nonce": nonce or secrets.token_urlsafe(24),
    }
    filled: set[str] = set()
    lines = []
    for line in template.splitlines():
        name, equals, _ = line.partition("=")
        name = name.strip()
        if equals and not line.startswith((" ", "\t", "#")) and name in values:
            line = f"{name} = {values[name]}"
            filled.add(name)
        lines.append(line)
    missing = {"auth_policy_server_url", "auth_policy_server_api_header"} - filled
    if missing:  # the shipped files are tested to have both; a hand-edited install may not
        raise SnippetError(f"{source}: no line for {', '.join(sorted(missing))} to fill in")
    # made_from is a path: a newline in it would start a setting of its own.
    header = [
        f"# Written by `autoconfig dovecot snippet` for Dovecot {series} from {_printable(source.name)},",
        f"# with the URL and the policy header of {_printable(made_from)}: the values below are filled in.",
        "# Install it as /etc/dovecot/conf.d/95-autoconfig-policy.conf, owner root, group dovecot,",
        "# mode 0640 (it holds the secret), then run `doveadm reload`.",
        "",
    ]
    return Snippet(series=series, source=source, text="\n".join(header + lines) + "\n")


def write_private(path: Path, text: str) -> None:
    """Replace the file at ``path`` whole with ``text``, never readable by others, even for a moment.

    The temporary file is made by ``mkstemp`` beside the target: created
    exclusively (a symlink or file planted under a predictable name would
    have received the secret, and two runs would have written into one
    file) and mode 0600 until it is 0640.  A symlink at ``path`` is
    followed, and the file it names replaced; anything there that is not a
    regular file (``/dev/stdout``, a fifo) is refused, since ``os.replace``
    would swap it for a file.  A replaced file keeps its group (the header
    asks for group dovecot).  Nothing is left behind on an error.
    """
    if path.name in ("", ".", ".."):
        raise SnippetError("--out: name a file to write")
    target = Path(os.path.realpath(path))
    try:
        existing: os.stat_result | None = target.stat()
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise SnippetError(f"{path}: {exc.strerror or exc}") from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise SnippetError(
            f"{path}: not a regular file; --out replaces a file (without --out the snippet goes to standard output)"
        )
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise SnippetError(f"{path}: cannot create a file in {target.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o640)
            if existing is not None:
                with contextlib.suppress(OSError):  # not ours to give: the new file keeps our own group
                    os.fchown(handle.fileno(), -1, existing.st_gid)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise SnippetError(f"{path}: {exc.strerror or exc}") from None
        raise
