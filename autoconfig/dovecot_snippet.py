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

import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
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
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:[.\-~+\w]*)")
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
        raise SnippetError(f"{version.strip()!r} is not a Dovecot version such as 2.3 or 2.4")
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
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SnippetError(f"{binary} --version did not run ({exc}); name the version with --dovecot-version") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise SnippetError(
            f"{binary} --version failed (exit {done.returncode}): {done.stderr.strip()[:200]}; "
            "name the version with --dovecot-version"
        )
    return done.stdout.strip().splitlines()[0]


def snippet_file(series: str) -> Path:
    """The shipped file: inside the package when installed from the wheel, else the clone's config/."""
    name = SNIPPETS[series]
    inside = PACKAGE / "snippets" / name
    return inside if inside.is_file() else PACKAGE.parent / "config" / name


def policy_url(base: str) -> str:
    """This service's policy endpoint as Dovecot reaches it, from a base URL or the endpoint's own."""
    if not base or not all("\x21" <= ch <= "\x7e" for ch in base):
        raise SnippetError(f"--url {base!r}: must be an http:// or https:// URL without spaces or control characters")
    if any(ch in _UNSAFE_IN_DOVECOT for ch in base):
        raise SnippetError(f"--url {base!r}: must not contain any of {''.join(sorted(_UNSAFE_IN_DOVECOT))}")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SnippetError(f"--url {base!r}: must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SnippetError(f"--url {base!r}: no user, query or fragment (Dovecot adds ?command=allow itself)")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise SnippetError(f"--url {base!r}: the port is not a number from 1 to 65535") from None
    path = parts.path.rstrip("/")
    if not path.endswith(POLICY_PATH):
        path += POLICY_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


def url_from_bind(bind: str) -> str:
    """gunicorn's first ``AUTOCONFIG_BIND`` address as a URL (a wildcard as loopback)."""
    first = bind.split(",")[0].strip()
    if not first or first.startswith(("unix:", "fd://")):
        raise SnippetError(f"AUTOCONFIG_BIND={bind!r} is not a TCP address Dovecot can reach; give the URL with --url")
    host, _, port = first.rpartition(":")
    if not port.isdigit() or not host:
        raise SnippetError(f"AUTOCONFIG_BIND={bind!r}: expected host:port; give the URL with --url")
    wildcards = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104 - read from the bind, mapped to loopback
    host = wildcards.get(host, host)
    return policy_url(f"http://{host}:{port}")


def check_header(header: str, secret: str) -> str:
    """The header line Dovecot sends, refused when Dovecot would read it as something else."""
    unsafe = sorted({ch for ch in secret if ch in _UNSAFE_IN_DOVECOT})
    if unsafe:
        raise SnippetError(
            f"[dovecot] api_header: the secret contains {' '.join(unsafe)}, which Dovecot's config reads "
            "differently (a comment, a variable or a quote); choose letters, digits and -._~+/= "
            "(for example: openssl rand -base64 32)"
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
        raise SnippetError(f"{source}: {exc.strerror or exc}: this installation lacks its shipped snippet") from None
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
    header = [
        f"# Written by `autoconfig dovecot snippet` for Dovecot {series} from {source.name},",
        f"# with the URL and the policy header of {made_from}: the values below are filled in.",
        "# Install it as /etc/dovecot/conf.d/95-autoconfig-policy.conf, owner root, group dovecot,",
        "# mode 0640 (it holds the secret), then run `doveadm reload`.",
        "",
    ]
    return Snippet(series=series, source=source, text="\n".join(header + lines) + "\n")
