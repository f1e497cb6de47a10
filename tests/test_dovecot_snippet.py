"""`autoconfig dovecot snippet`: the Dovecot side of the gate, for the Dovecot installed, filled in.

The printed file is read back by the real ``doveconf`` of this machine
(Dovecot 2.3 on Debian 12, 2.4 on Debian 13), which must see this service's
URL and the very header line of its config, and no password hash among the
attributes it would send.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from autoconfig import dovecot_snippet
from autoconfig.cli import main
from tests.support.dovecot import installed_series, version_preamble
from tests.support.gunicorn import unprivileged_prefix

HEADER = "X-Autoconfig-Policy-Key: 0123456789abcdef-snippet+/="
ROOT = Path(__file__).resolve().parent.parent

Run = Callable[..., Result]


@pytest.fixture
def run(config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]) -> Run:
    config_data["dovecot"] = {"api_header": HEADER, "webmail_networks": ["127.0.0.9/32"]}
    path = write_config(config_data)

    def invoke(*args: str, **env: str) -> Result:
        environment = {"AUTOCONFIG_BIND": "", "AUTOCONFIG_DOVECOT_API_HEADER": ""} | env
        return CliRunner().invoke(main, ["--config", str(path), "dovecot", "snippet", *args], env=environment)

    return invoke


def settings(text: str) -> dict[str, str]:
    """The top-level ``name = value`` lines, as the command writes them."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(auth_policy_\w+) = (.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def snippet_settings(run: Run, *args: str, **env: str) -> dict[str, str]:
    """The settings a run of the command printed, once it succeeded (a failure shows its output)."""
    result = run(*args, **env)
    assert result.exit_code == 0, result.output
    return settings(result.stdout)


def doveconf(snippet: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``doveconf -P`` of a config that includes only ``snippet`` (plus 2.4's mandatory first lines)."""
    main_config = tmp_path / "dovecot.conf"
    main_config.write_text(f"{version_preamble()}!include {snippet}\n")
    return subprocess.run(["doveconf", "-c", str(main_config), "-P"], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("version", "series"),
    [
        ("2.3.19.1 (9b53102964)", "2.3"),  # Debian 12's dovecot --version
        ("2.4.1-4 (7d8c0e5759)", "2.4"),  # Debian 13's
        ("2.3", "2.3"),
        ("2.4.2", "2.4"),
    ],
)
def test_a_version_chooses_its_series_snippet(version: str, series: str) -> None:
    assert dovecot_snippet.series_of(version) == series
    assert dovecot_snippet.snippet_file(series).name == f"dovecot-{series}-auth-policy.conf"


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("2.2.36", "Dovecot 2.2 is not a version this service has a snippet for (it has 2.3 and 2.4)"),
        ("2.5.0", "Dovecot 2.5 is not a version this service has a snippet for (it has 2.3 and 2.4)"),
        ("3.0", "Dovecot 3.0 is not a version this service has a snippet for"),
        ("two point four", "'two point four' is not a Dovecot version such as 2.3 or 2.4"),
        ("", "'' is not a Dovecot version such as 2.3 or 2.4"),
    ],
)
def test_a_version_without_a_snippet_is_refused_by_name(run: Run, version: str, says: str) -> None:
    result = run("--dovecot-version", version)
    assert result.exit_code == 1
    assert says in result.output
    assert "auth_policy" not in result.output


@pytest.mark.parametrize("series", sorted(dovecot_snippet.SNIPPETS))
def test_the_shipped_file_is_printed_with_url_header_and_nonce_filled_in(run: Run, series: str) -> None:
    result = run("--dovecot-version", series, "--url", "http://10.0.0.11:8080")
    assert result.exit_code == 0, result.output
    shipped = (ROOT / "config" / f"dovecot-{series}-auth-policy.conf").read_text()
    values = settings(result.stdout)
    assert values["auth_policy_server_url"] == "http://10.0.0.11:8080/dovecot/auth-policy"
    assert values["auth_policy_server_api_header"] == HEADER
    assert "replace-with" not in "\n".join(f"{k} = {v}" for k, v in values.items())
    # Every other setting exactly as shipped: the file in the repository is the file Dovecot gets.
    for name, value in settings(shipped).items():
        if name not in ("auth_policy_server_url", "auth_policy_server_api_header", "auth_policy_hash_nonce"):
            assert values[name] == value
    assert set(values) == set(settings(shipped))
    assert f"for Dovecot {series} from dovecot-{series}-auth-policy.conf" in result.stdout


def test_without_a_version_the_installed_dovecot_chooses_and_its_doveconf_reads_it(run: Run, tmp_path: Path) -> None:
    result = run()
    assert result.exit_code == 0, result.output
    series = installed_series()  # read by the fixtures' own parser, not the command's
    assert f"for Dovecot {series} from" in result.stdout
    snippet = tmp_path / "95-autoconfig-policy.conf"
    snippet.write_text(result.stdout)
    read = doveconf(snippet, tmp_path)
    assert read.returncode == 0, read.stderr
    # 2.3 prints auth_policy_x = ..., 2.4 x = ... inside its auth_policy { } block.
    effective = {m[1]: m[2] for m in re.finditer(r"^\s*(?:auth_policy_)?(server_\w+) = (.*)$", read.stdout, re.M)}
    assert effective["server_url"] == "http://127.0.0.1:8080/dovecot/auth-policy"
    assert effective["server_api_header"] == HEADER
    assert "hashed_password" not in read.stdout and "pwhash" not in read.stdout


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("", "http://127.0.0.1:8080/dovecot/auth-policy"),
        ("127.0.0.1:8081", "http://127.0.0.1:8081/dovecot/auth-policy"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000/dovecot/auth-policy"),
        ("[::]:9000,127.0.0.1:9001", "http://[::1]:9000/dovecot/auth-policy"),
        ("10.0.0.11:8080", "http://10.0.0.11:8080/dovecot/auth-policy"),
        ("tcp://127.0.0.1:8081", "http://127.0.0.1:8081/dovecot/auth-policy"),  # gunicorn's own spelling
    ],
)
def test_the_url_defaults_to_where_gunicorn_listens(run: Run, bind: str, url: str) -> None:
    assert snippet_settings(run, "--dovecot-version", "2.3", AUTOCONFIG_BIND=bind)["auth_policy_server_url"] == url


@pytest.mark.parametrize(
    ("url", "written"),
    [
        ("http://10.0.0.11:8080/", "http://10.0.0.11:8080/dovecot/auth-policy"),
        ("https://policy.internal/dovecot/auth-policy", "https://policy.internal/dovecot/auth-policy"),
        ("http://10.0.0.11/prefix", "http://10.0.0.11/prefix/dovecot/auth-policy"),
        # Written back from its checked parts:
        ("http://[::1]:08080", "http://[::1]:8080/dovecot/auth-policy"),
        ("http://[::FFFF:192.0.2.1]/", "http://[::ffff:192.0.2.1]/dovecot/auth-policy"),
        ("http://policy.internal.:8080", "http://policy.internal.:8080/dovecot/auth-policy"),
        ("HTTP://Policy.Internal", "http://policy.internal/dovecot/auth-policy"),
        ("http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/dovecot/auth-policy"),
        ("http://policy_1.internal/", "http://policy_1.internal/dovecot/auth-policy"),
    ],
)
def test_a_url_given_is_the_service_as_dovecot_reaches_it(run: Run, url: str, written: str) -> None:
    assert snippet_settings(run, "--dovecot-version", "2.4", "--url", url)["auth_policy_server_url"] == written


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://10.0.0.11/", "must be an http:// or https:// URL with a host"),
        ("http:///dovecot", "must be an http:// or https:// URL with a host"),
        ("http://10.0.0.11/?command=allow", "no user, query or fragment"),
        ("http://user:pw@10.0.0.11/", "no user, query or fragment"),
        ("http://10.0.0.11:99999/", "the port is not a number from 1 to 65535"),
        ("http://10.0.0.11/ x", "without spaces or control characters"),
        ("http://10.0.0.11/\nauth_policy_reject_on_fail = yes", "without spaces or control characters"),
        ("http://10.0.0.11/#x", "must not contain any of"),
        ("http://10.0.0.11/%{user}", "must not contain any of"),
    ],
)
def test_a_url_dovecot_could_not_use_is_refused(run: Run, url: str, says: str) -> None:
    result = run("--dovecot-version", "2.4", "--url", url)
    assert result.exit_code == 1
    assert says in result.output
    assert "auth_policy_reject_on_fail = yes" not in result.output.replace(repr(url), "")


@pytest.mark.parametrize("bind", ["unix:/run/autoconfig.sock", "fd://3", "nonsense"])
def test_a_bind_dovecot_cannot_reach_asks_for_the_url(run: Run, bind: str) -> None:
    result = run("--dovecot-version", "2.3", AUTOCONFIG_BIND=bind)
    assert result.exit_code == 1
    assert "give the URL with --url" in result.output


def test_without_a_policy_header_there_is_nothing_to_fill_in(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    path = write_config(config_data)
    result = CliRunner().invoke(
        main, ["--config", str(path), "dovecot", "snippet", "--dovecot-version", "2.4"],
        env={"AUTOCONFIG_DOVECOT_API_HEADER": ""},
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{path}: [dovecot] api_header is not set" in result.output


def test_the_header_from_the_environment_file_is_the_one_written(run: Run) -> None:
    line = "X-Other-Key: from-the-environment-0123456789"
    result = run("--dovecot-version", "2.4", AUTOCONFIG_DOVECOT_API_HEADER=line)
    assert result.exit_code == 0, result.output
    assert settings(result.stdout)["auth_policy_server_api_header"] == line
    assert "policy header of $AUTOCONFIG_DOVECOT_API_HEADER" in result.stdout


@pytest.mark.parametrize("character", ["#", "%", "$", '"', "\\", "{", "}", "'"])
def test_a_secret_dovecot_would_read_differently_is_refused(run: Run, character: str) -> None:
    line = f"X-Autoconfig-Policy-Key: 0123456789{character}abcdef"
    result = run("--dovecot-version", "2.3", AUTOCONFIG_DOVECOT_API_HEADER=line)
    assert result.exit_code == 1
    assert f"the secret contains {character}" in result.output
    assert "0123456789" not in result.output


def test_webmail_networks_unset_is_warned_about(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    config_data["dovecot"] = {"api_header": HEADER}
    path = write_config(config_data)
    result = CliRunner().invoke(main, ["--config", str(path), "dovecot", "snippet", "--dovecot-version", "2.3"])
    assert result.exit_code == 0
    assert "[dovecot] webmail_networks is empty" in result.stderr
    assert "webmail_networks is empty" not in result.stdout


def test_out_writes_a_file_only_root_and_its_group_read(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "95-autoconfig-policy.conf"
    target.write_text("old")
    os.chmod(target, 0o644)
    result = run("--dovecot-version", "2.4", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert settings(target.read_text())["auth_policy_server_api_header"] == HEADER
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- hostile or odd input: a clear refusal (exit 1), never a traceback, never the secret -------------

SECRET = HEADER.split(": ", 1)[1]


def refused(result: Result, says: str) -> None:
    """Refused by a ClickException: exit 1 and the message, not an exception click only caught."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert says in result.output, result.output
    assert SECRET not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "version",
    [
        "２.４",  # full-width digits: \d matched them, and int() read them as 2.4
        "٢.٤",  # Arabic-Indic digits
        "9" * 5000 + ".4",  # over int()'s 4,300 digits: a ValueError traceback
        "2.4garbage",
    ],
    ids=["full-width", "arabic-indic", "5000-digits", "2.4garbage"],
)
def test_a_version_in_other_digits_or_with_a_tail_is_refused(run: Run, version: str) -> None:
    result = run("--dovecot-version", version, "--url", "http://10.0.0.11:8080")
    refused(result, "is not a Dovecot version such as 2.3 or 2.4")
    assert len(result.output) < 400  # a long version is cut short in the message


@pytest.mark.parametrize("version", ["2.4\n", " 2.4 ", "2.4.1-4 (7d8c0e5759)", "2.4.0~rc1", "2.3.19.1"])
def test_a_version_with_spaces_around_or_a_release_after_is_read(run: Run, version: str) -> None:
    result = run("--dovecot-version", version, "--url", "http://10.0.0.11:8080")
    assert result.exit_code == 0, result.output
    assert f"for Dovecot {version.strip()[:3]} from" in result.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://[::1", "not a URL (Invalid IPv6 URL)"),  # urlsplit's ValueError was a traceback
        ("http://]::1[", "not a URL"),
        ("http://10.0.0.11:0/", "the port is not a number from 1 to 65535"),  # port 0 was written
        ("http://@10.0.0.11/", "no user, query or fragment"),  # an empty user was written
        ("http://:@10.0.0.11/", "no user, query or fragment"),
        ("http://10.0.0.11/<x>", "the path may hold only"),
        ("http://[v1.x]/", "[v1.x] is not an IPv6 address"),
        ("http://1.2.3.4.5/", "'1.2.3.4.5' is not an IPv4 address"),
        ("http://*:8080/", "'*' is not a host name"),
        ("http://-policy.internal/", "is not a host name"),
        ("http://" + "a" * 64 + ".example/", "is not a host name"),
        ("http://" + "a" * 5000, "is not a host name"),
    ],
)
def test_a_url_dovecot_would_read_as_another_host_or_not_at_all_is_refused(run: Run, url: str, says: str) -> None:
    result = run("--dovecot-version", "2.4", "--url", url)
    refused(result, says)
    assert len(result.output) < 600


@pytest.mark.parametrize("bind", ["[::1:8080", "*:8080", "127.0.0.1:0", "127.0.0.1:٨٠", "0:8080"])
def test_a_bind_that_gives_no_usable_url_asks_for_the_url(run: Run, bind: str) -> None:
    refused(run("--dovecot-version", "2.3", AUTOCONFIG_BIND=bind), "give the URL with --url")


@pytest.mark.parametrize("character", ["#", "%", "$", "'"])
def test_a_header_name_dovecot_would_read_differently_is_refused(run: Run, character: str) -> None:
    """An HTTP token may hold # $ % and ', which [dovecot] api_header accepts in the name."""
    line = f"X-Autoconfig{character}Key: {SECRET}"
    refused(
        run("--dovecot-version", "2.4", AUTOCONFIG_DOVECOT_API_HEADER=line), f"the header name contains {character}"
    )


def test_dovecot_reads_a_hash_in_the_header_name_as_a_comment(tmp_path: Path) -> None:
    """Why the name is checked: the header Dovecot would send has lost its secret, so every policy
    request fails (401) and, failing open, every login goes through unasked."""
    snippet = tmp_path / "policy.conf"
    snippet.write_text(
        "auth_policy_server_url = http://127.0.0.1:1/\nauth_policy_hash_nonce = n0nce\n"
        f"auth_policy_server_api_header = X-Key#1: {SECRET}\n"
    )
    read = doveconf(snippet, tmp_path)
    assert read.returncode == 0, read.stderr
    assert re.search(r"^\s*(?:auth_policy_)?server_api_header = X-Key$", read.stdout, re.M), read.stdout


def test_a_config_path_with_a_newline_adds_no_setting(
    config_data: dict[str, Any], write_config: Callable[..., Path]
) -> None:
    """The path is named in the header comment; a newline in it began a line Dovecot would read."""
    config_data["dovecot"] = {"api_header": HEADER, "webmail_networks": ["127.0.0.9/32"]}
    path = write_config(config_data, "x\nauth_policy_server_timeout_msecs = 1\n#.toml")
    result = CliRunner().invoke(
        main, ["--config", str(path), "dovecot", "snippet", "--dovecot-version", "2.3"],
        env={"AUTOCONFIG_BIND": "", "AUTOCONFIG_DOVECOT_API_HEADER": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "auth_policy_server_timeout_msecs = 2000" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("auth_policy_server_timeout_msecs = 1")]
    assert all(line.startswith("#") for line in result.stdout.splitlines()[:4])


# -- dovecot --version, as PATH finds it -----------------------------------------------------------


@pytest.fixture
def fake_dovecot(tmp_path: Path) -> Callable[[str], str]:
    """A ``dovecot`` first on PATH running ``script`` (sh); returns the PATH to use."""
    directory = tmp_path / "bin"
    directory.mkdir()

    def make(script: str) -> str:
        binary = directory / "dovecot"
        binary.write_text(f"#!/bin/sh\n{script}\n")
        binary.chmod(0o755)
        return f"{directory}:{os.environ['PATH']}"

    return make


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (r"printf '\377\376 2.4\n'", "is not a Dovecot version"),  # not UTF-8: a UnicodeDecodeError traceback
        (
            r"printf 'broken \033[2J\n' >&2; exit 3",
            "--version failed (exit 3): broken ?[2J;",
        ),  # no escape reaches the terminal
        ("exit 0", "--version failed (exit 0)"),
        ("echo 3.0.0", "Dovecot 3.0 is not a version this service has a snippet for"),
    ],
    ids=["not-utf8", "escape-on-stderr", "silent", "unknown-series"],
)
def test_whatever_dovecot_version_prints_ends_in_a_message(
    run: Run, fake_dovecot: Callable[[str], str], script: str, says: str
) -> None:
    result = run("--url", "http://10.0.0.11:8080", PATH=fake_dovecot(script))
    refused(result, says)
    assert "\033" not in result.output


def test_a_dovecot_version_that_hangs_is_given_up_on(fake_dovecot: Callable[[str], str], monkeypatch: Any) -> None:
    monkeypatch.setenv("PATH", fake_dovecot("exec sleep 30"))
    with pytest.raises(dovecot_snippet.SnippetError, match=r"did not answer within 0\.5 s; name the version"):
        dovecot_snippet.installed_version(timeout=0.5)


# -- --out: the file with the secret -------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_file_planted_under_a_temporary_name_never_receives_the_secret(run: Run, tmp_path: Path) -> None:
    """The temporary name was .<name>.tmp, opened without O_EXCL: a symlink there (in a directory
    another account may write) had the snippet written through it, into any file root can write."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / ".95-autoconfig-policy.conf.tmp").symlink_to(victim)
    result = run("--dovecot-version", "2.4", "--out", str(out / "95-autoconfig-policy.conf"))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert settings((out / "95-autoconfig-policy.conf").read_text())["auth_policy_server_api_header"] == HEADER
    assert not (out / "95-autoconfig-policy.conf").is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo"])
def test_out_refuses_what_is_not_a_regular_file(run: Run, tmp_path: Path, kind: str) -> None:
    """os.replace swapped a device for a file: --out /dev/stdout (or /dev/null) replaced the device node."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = fifo
    if kind == "symlink-to-fifo":
        target = tmp_path / "link"
        target.symlink_to(fifo)
    refused(run("--dovecot-version", "2.4", "--out", str(target)), "not a regular file; --out replaces a file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert leftovers(tmp_path) == []


def test_out_through_a_symlink_replaces_the_file_it_names(run: Run, tmp_path: Path) -> None:
    real = tmp_path / "managed" / "policy.conf"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "95-autoconfig-policy.conf"
    link.symlink_to(real)
    result = run("--dovecot-version", "2.3", "--out", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real
    assert settings(real.read_text())["auth_policy_server_api_header"] == HEADER
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert leftovers(real.parent) == []


def test_out_keeps_the_group_of_the_file_it_replaces(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "95-autoconfig-policy.conf"
    target.write_text("old\n")
    group = 65534 if os.geteuid() == 0 else os.getegid()  # nogroup, like a group dovecot root may give
    os.chown(target, -1, group)
    result = run("--dovecot-version", "2.4", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.stat().st_gid == group
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/95-autoconfig-policy.conf", "cannot create a file in"),
        ("", "--out: name a file to write"),
    ],
    ids=["parent-missing", "empty"],
)
def test_out_where_no_file_can_be_is_a_clear_error(run: Run, tmp_path: Path, where: str, says: str) -> None:
    refused(run("--dovecot-version", "2.4", "--out", str(tmp_path / where) if where else ""), says)
    assert leftovers(tmp_path) == []


def test_out_with_the_longest_file_name_is_written(run: Run, tmp_path: Path) -> None:
    """.<name>.tmp was 5 characters over NAME_MAX for a 255-character name: an OSError traceback."""
    target = tmp_path / ("p" * 250 + ".conf")
    result = run("--dovecot-version", "2.4", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_out_in_a_directory_it_may_not_write_is_a_clear_error(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    """Run as an account file modes apply to (root without its capabilities, as the tests run gunicorn)."""
    config_data["dovecot"] = {"api_header": HEADER, "webmail_networks": ["127.0.0.9/32"]}
    config = write_config(config_data)
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    command = [*unprivileged_prefix(), sys.executable, "-m", "autoconfig", "--config", str(config)]
    command += ["dovecot", "snippet", "--dovecot-version", "2.4", "--out", str(closed / "policy.conf")]
    environment = os.environ | {"AUTOCONFIG_BIND": "", "AUTOCONFIG_DOVECOT_API_HEADER": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert f"cannot create a file in {closed}: Permission denied" in done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert list(closed.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(run: Run, tmp_path: Path, monkeypatch: Any) -> None:
    target = tmp_path / "95-autoconfig-policy.conf"
    target.write_text("old\n")
    seen: list[int] = []

    def full(source: str, destination: Path) -> None:
        seen.append(stat.S_IMODE(os.stat(source).st_mode))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dovecot_snippet.os, "replace", full)
    refused(run("--dovecot-version", "2.4", "--out", str(target)), f"{target}: No space left on device")
    assert seen == [0o640]  # the secret's file was never more than owner-write, group-read
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_an_installation_without_its_snippet_says_where_it_looked(run: Run, tmp_path: Path, monkeypatch: Any) -> None:
    """A wheel whose autoconfig/snippets/ lost a file: the message named only the clone's
    config/ path, which an installed package never has."""
    package = tmp_path / "site-packages" / "autoconfig"
    (package / "snippets").mkdir(parents=True)
    monkeypatch.setattr(dovecot_snippet, "PACKAGE", package)
    result = run("--dovecot-version", "2.4", "--url", "http://10.0.0.11:8080")
    refused(result, "this installation lacks its shipped snippet")
    assert f"{package}/snippets/dovecot-2.4-auth-policy.conf" in result.output
    assert "reinstall autoconfig" in result.output
