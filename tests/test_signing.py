"""Signed Apple profiles: verified by openssl against a throw-away root, and a
signing setup that cannot work stops the service at start, naming the key."""

from __future__ import annotations

import logging
import plistlib
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from autoconfig import create_app
from autoconfig.cli import main
from autoconfig.config import ConfigError, load
from tests.support.admin import LiveAdmin
from tests.support.apple_schema import assert_valid_profile
from tests.support.fixture_types import MakeServer
from tests.support.gunicorn import GunicornServer
from tests.support.pki import Pki, make_pki, make_unrelated_key
from tests.support.promises import APPLE_CONTENT_TYPE

WriteConfig = Callable[..., Path]
NOW = datetime.now(UTC)


def signing(pki: Pki, *, chain: bool = True) -> dict[str, str]:
    """The [apple] section for ``pki``, with paths relative to the config file (tmp_path)."""
    base = pki.signer_cert.parent.parent
    section = {
        "signing_certificate": str(pki.signer_cert.relative_to(base)),
        "signing_key": str(pki.signer_key.relative_to(base)),
    }
    if chain:
        section["signing_chain"] = str(pki.chain.relative_to(base))
    return section


def openssl_verify(signed: Path, root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Exactly the command in docs/clients.md."""
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signed), "-CAfile", str(root)]
    return subprocess.run([*command, "-out", str(out)], capture_output=True, text=True, timeout=30, check=False)


def render(config: Path, address: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "render", "apple", address, *args], env={})


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_profile_downloaded_from_gunicorn_verifies_with_openssl(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig, key_type: str, make_server: MakeServer
) -> None:
    pki = make_pki(tmp_path / "pki", key_type=key_type)
    unsigned_config = write_config(config_data, "unsigned.toml")
    config_data["apple"] = signing(pki)
    server = make_server(config_data)
    LiveAdmin(server).set("alice@example.net", imap=True)
    url = f"{server.url}/apple/mail.mobileconfig?emailaddress=alice@example.net"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == APPLE_CONTENT_TYPE
        signed = response.read()
    assert signed[:1] == b"\x30", "DER, not PEM or a bare plist"
    (tmp_path / "alice.mobileconfig").write_bytes(signed)

    result = openssl_verify(tmp_path / "alice.mobileconfig", pki.root_cert, tmp_path / "embedded.plist")
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    unsigned = render(unsigned_config, "alice@example.net")  # same store, no [apple]: the unsigned profile
    assert unsigned.exit_code == 0, unsigned.output
    assert (tmp_path / "embedded.plist").read_bytes() == unsigned.stdout_bytes

    at = signed.index(b"alice@example.net")
    tampered = signed[:at] + b"A" + signed[at + 1 :]
    (tmp_path / "tampered.mobileconfig").write_bytes(tampered)
    result = openssl_verify(tmp_path / "tampered.mobileconfig", pki.root_cert, tmp_path / "tampered.plist")
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


@pytest.mark.parametrize(("chain", "verifies"), [(True, True), (False, False)])
def test_the_chain_travels_inside_the_signature(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig, chain: bool, verifies: bool
) -> None:
    """Devices trust only roots; without the intermediate inside, nothing connects the signer to one."""
    pki = make_pki(tmp_path / "pki")
    config_data["apple"] = signing(pki, chain=chain)
    config = write_config(config_data)
    enable = CliRunner().invoke(main, ["--config", str(config), "accounts", "set", "a@example.net", "--imap", "on"])
    assert enable.exit_code == 0, enable.output
    out = tmp_path / "a.mobileconfig"
    assert render(config, "a@example.net", "--out", str(out)).exit_code == 0
    assert (openssl_verify(out, pki.root_cert, tmp_path / "a.plist").returncode == 0) is verifies


def test_a_full_chain_file_as_the_certificate_works_too(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    pki = make_pki(tmp_path / "pki")
    fullchain = tmp_path / "pki" / "fullchain.pem"
    fullchain.write_bytes(pki.signer_cert.read_bytes() + pki.chain.read_bytes())
    config_data["apple"] = {"signing_certificate": str(fullchain), "signing_key": str(pki.signer_key)}  # absolute
    config = write_config(config_data)
    enable = CliRunner().invoke(main, ["--config", str(config), "accounts", "set", "a@example.net", "--imap", "on"])
    assert enable.exit_code == 0, enable.output
    out = tmp_path / "a.mobileconfig"
    assert render(config, "a@example.net", "--out", str(out)).exit_code == 0
    assert openssl_verify(out, pki.root_cert, tmp_path / "a.plist").returncode == 0
    assert_valid_profile(plistlib.loads((tmp_path / "a.plist").read_bytes()))


def _mismatched_key(pki: Pki, section: dict[str, str]) -> None:
    make_unrelated_key(pki.signer_key)


def _missing_file(name: str) -> Callable[[Pki, dict[str, str]], None]:
    def apply(pki: Pki, section: dict[str, str]) -> None:
        section[name] = "pki/missing.pem"

    return apply


def _garbage(path_of: Callable[[Pki], Path]) -> Callable[[Pki, dict[str, str]], None]:
    def apply(pki: Pki, section: dict[str, str]) -> None:
        path_of(pki).write_text("-----BEGIN NONSENSE-----\nnot base64\n")

    return apply


def _directory(pki: Pki, section: dict[str, str]) -> None:
    section["signing_key"] = "pki"


Change = Callable[[Pki, dict[str, str]], None] | None
REFUSALS: dict[str, tuple[dict[str, datetime], Change, str, str]] = {
    # case: (signer validity for make_pki, change to the files or the section, config key, message)
    "key does not match": ({}, _mismatched_key, "signing_key", "does not match the certificate"),
    "expired": ({"not_after": NOW - timedelta(days=1)}, None, "signing_certificate", "expired on"),
    "not yet valid": ({"not_before": NOW + timedelta(days=1)}, None, "signing_certificate", "is not valid until"),
    "certificate unreadable": ({}, _missing_file("signing_certificate"), "signing_certificate", "cannot read"),
    "key unreadable": ({}, _missing_file("signing_key"), "signing_key", "cannot read"),
    "key is a directory": ({}, _directory, "signing_key", "cannot read"),
    "chain unreadable": ({}, _missing_file("signing_chain"), "signing_chain", "cannot read"),
    "certificate is garbage": ({}, _garbage(lambda p: p.signer_cert), "signing_certificate", "is not a PEM"),
    "key is garbage": ({}, _garbage(lambda p: p.signer_key), "signing_key", "is not a PEM"),
    "chain is garbage": ({}, _garbage(lambda p: p.chain), "signing_chain", "is not a PEM"),
}


@pytest.mark.parametrize(("validity", "change", "key", "message"), list(REFUSALS.values()), ids=list(REFUSALS))
def test_a_signing_setup_that_cannot_work_stops_the_start(
    tmp_path: Path,
    config_data: dict[str, Any],
    write_config: WriteConfig,
    validity: dict[str, datetime],
    change: Change,
    key: str,
    message: str,
) -> None:
    pki = make_pki(tmp_path / "pki", **validity)  # type: ignore[arg-type]
    section = signing(pki)
    if change is not None:
        change(pki, section)
    config_data["apple"] = section
    path = write_config(config_data)
    with pytest.raises(ConfigError) as raised:
        create_app(load(path, env={}))
    assert str(raised.value).startswith(f"{path}: apple.{key}: ")
    assert message in str(raised.value)
    result = render(path, "a@example.net")  # the command line refuses the same way
    assert result.exit_code == 1 and f"apple.{key}: " in result.output


def test_gunicorn_refuses_to_start_with_a_key_that_does_not_match(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    pki = make_pki(tmp_path / "pki")
    make_unrelated_key(pki.signer_key)
    config_data["apple"] = signing(pki)
    server = GunicornServer(write_config(config_data), tmp_path / "gunicorn.log", workers=1)
    with pytest.raises(RuntimeError):
        server.start()
    assert "apple.signing_key: does not match the certificate" in server.log_text()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"signing_certificate": "signer.pem"}, "apple.signing_key: signing needs both"),
        ({"signing_key": "signer.key"}, "apple.signing_certificate: signing needs both"),
        ({"signing_chain": "chain.pem"}, "apple.signing_chain: only makes sense with"),
        ({"signing_certficate": "signer.pem"}, "apple.signing_certficate: unknown option"),
        ({"profile_identifier_prefix": "not a name"}, "apple.profile_identifier_prefix: must be a reverse-DNS"),
        ({"profile_identifier_prefix": "single"}, "apple.profile_identifier_prefix: must be a reverse-DNS"),
        ({"signing_key": 5, "signing_certificate": "x"}, "apple.signing_key: expected a string"),
    ],
)
def test_config_rejects_half_a_signing_setup(
    config_data: dict[str, Any], write_config: WriteConfig, section: dict[str, Any], message: str
) -> None:
    config_data["apple"] = section
    with pytest.raises(ConfigError, match=message):
        load(write_config(config_data), env={})


@pytest.fixture
def signing_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the signing logger directly: the app's own handler stops propagation to the root."""
    logger = logging.getLogger("autoconfig.signing")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.WARNING)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.mark.parametrize(("days_left", "warned"), [(10, True), (29, True), (45, False), (365, False)])
def test_a_certificate_about_to_expire_is_warned_about_at_start(
    tmp_path: Path,
    config_data: dict[str, Any],
    write_config: WriteConfig,
    signing_log: pytest.LogCaptureFixture,
    days_left: int,
    warned: bool,
) -> None:
    pki = make_pki(tmp_path / "pki", not_after=NOW + timedelta(days=days_left, hours=1))
    config_data["apple"] = signing(pki)
    create_app(load(write_config(config_data), env={})).extensions["autoconfig"].store.close()
    warnings = [r for r in signing_log.records if r.name == "autoconfig.signing" and r.levelno == logging.WARNING]
    assert bool(warnings) is warned
    if warned:
        assert f"expires in {days_left} days" in warnings[0].getMessage()
        assert "signer.pem" in warnings[0].getMessage()


def test_check_config_reports_the_signer(
    tmp_path: Path, config_data: dict[str, Any], write_config: WriteConfig
) -> None:
    unsigned = CliRunner().invoke(main, ["--config", str(write_config(config_data, "unsigned.toml")), "check-config"])
    assert unsigned.exit_code == 0 and "apple profiles: unsigned" in unsigned.output
    pki = make_pki(tmp_path / "pki")
    config_data["apple"] = signing(pki)
    signed = CliRunner().invoke(main, ["--config", str(write_config(config_data)), "check-config"])
    assert signed.exit_code == 0 and "apple profiles: signed by CN=autoconfig test profile signer" in signed.output
    make_unrelated_key(pki.signer_key)
    broken = CliRunner().invoke(main, ["--config", str(write_config(config_data)), "check-config"])
    assert broken.exit_code == 1 and "apple.signing_key: does not match" in broken.output
