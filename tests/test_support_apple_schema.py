"""Tests of the test-support modules apple_schema and pki.

The validator is what every Apple-profile test trusts, so it is shown here to
reject each kind of mistake it claims to catch; the PKI is shown to produce
signatures that OpenSSL verifies, and refuses when they should not verify.
"""

import plistlib
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.support.apple_schema import (
    SCHEMA_DIR_ENV,
    SHARED_SCHEMA_DIR,
    VENDORED_SCHEMA_DIR,
    assert_valid_profile,
    schema_dir,
    validate_profile,
)
from tests.support.pki import Pki, make_pki, make_unrelated_key

OPENSSL = "/usr/bin/openssl"
MISSING = object()
"""Marks a key a mutation removes."""


def minimal_profile() -> dict[str, Any]:
    """A valid profile with one mail payload and nothing optional beyond ports and SSL."""
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "org.example.autoconfig",
        "PayloadUUID": "5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B01",
        "PayloadDisplayName": "Mail for alice@example.org",
        "PayloadContent": [
            {
                "PayloadType": "com.apple.mail.managed",
                "PayloadVersion": 1,
                "PayloadIdentifier": "org.example.autoconfig.mail",
                "PayloadUUID": "5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B02",
                "EmailAccountType": "EmailTypeIMAP",
                "IncomingMailServerHostName": "imap.example.org",
                "IncomingMailServerPortNumber": 993,
                "IncomingMailServerUseSSL": True,
                "IncomingMailServerAuthentication": "EmailAuthPassword",
                "OutgoingMailServerHostName": "smtp.example.org",
                "OutgoingMailServerPortNumber": 465,
                "OutgoingMailServerUseSSL": True,
                "OutgoingMailServerAuthentication": "EmailAuthPassword",
            }
        ],
    }


def mutated(top: dict[str, object], mail: dict[str, object]) -> dict[str, Any]:
    """minimal_profile() with keys set (or removed, for MISSING) at top level and in the mail payload."""
    profile = minimal_profile()
    for target, changes in ((profile, top), (profile["PayloadContent"][0], mail)):
        for key, value in changes.items():
            if value is MISSING:
                del target[key]
            else:
                target[key] = value
    return profile


def test_minimal_profile_is_valid() -> None:
    assert validate_profile(minimal_profile()) == []
    assert_valid_profile(minimal_profile())


def test_profile_survives_plist_round_trip() -> None:
    """What a client parses, not just the dict we built, must match the schema."""
    profile = mutated(
        {
            "ConsentText": {"default": "Install?", "de": "Installieren?"},
            "RemovalDate": datetime(2030, 1, 1, tzinfo=UTC),
            "DurationUntilRemoval": 3600.0,
            "PayloadScope": "User",
        },
        {"SMIMESigningCertificateUUID": "5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B03", "EmailAddress": "alice@example.org"},
    )
    assert validate_profile(plistlib.loads(plistlib.dumps(profile))) == []


def test_other_payload_types_get_only_the_common_keys_checked() -> None:
    profile = minimal_profile()
    certificate = {
        "PayloadType": "com.apple.security.pem",
        "PayloadVersion": 1,
        "PayloadIdentifier": "org.example.autoconfig.cert",
        "PayloadUUID": "5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B04",
        "PayloadContent": b"-----BEGIN CERTIFICATE-----",
    }
    profile["PayloadContent"].append(certificate)
    assert validate_profile(profile) == []

    del certificate["PayloadUUID"]
    assert validate_profile(profile) == ["PayloadContent[1].PayloadUUID: required key missing"]


M = "PayloadContent[0]"


@pytest.mark.parametrize(
    ("top", "mail", "expected"),
    [
        pytest.param(
            {},
            {"IncomingMailServerHostName": MISSING, "IncomingMailServerHostname": "imap.example.org"},
            [
                f"{M}.IncomingMailServerHostName: required key missing",
                f"{M}.IncomingMailServerHostname: key not in schema",
            ],
            id="misspelled-key",
        ),
        pytest.param(
            {"PayloadDisplayname": "x"}, {}, ["PayloadDisplayname: key not in schema"], id="misspelled-top-key"
        ),
        pytest.param(
            {},
            {"IncomingMailServerPortNumber": "993"},
            [f"{M}.IncomingMailServerPortNumber: expected integer, got str"],
            id="string-port",
        ),
        pytest.param(
            {},
            {"IncomingMailServerUseSSL": 1},
            [f"{M}.IncomingMailServerUseSSL: expected boolean, got int"],
            id="int-for-bool",
        ),
        pytest.param(
            {},
            {"OutgoingMailServerPortNumber": True},
            [f"{M}.OutgoingMailServerPortNumber: expected integer, got bool"],
            id="bool-for-int",
        ),
        pytest.param(
            {"PayloadVersion": True}, {}, ["PayloadVersion: expected integer, got bool"], id="bool-for-version"
        ),
        pytest.param(
            {"DurationUntilRemoval": 3600}, {}, ["DurationUntilRemoval: expected real, got int"], id="int-for-real"
        ),
        pytest.param({"RemovalDate": "2030-01-01"}, {}, ["RemovalDate: expected date, got str"], id="string-for-date"),
        pytest.param(
            {},
            {"EmailAccountType": "EmailTypeFoo"},
            [f"{M}.EmailAccountType: 'EmailTypeFoo' is not one of ['EmailTypeIMAP', 'EmailTypePOP']"],
            id="outside-rangelist",
        ),
        pytest.param(
            {"PayloadVersion": 2}, {}, ["PayloadVersion: 2 is not one of [1]"], id="version-outside-rangelist"
        ),
        pytest.param(
            {},
            {"OutgoingMailServerAuthentication": MISSING},
            [f"{M}.OutgoingMailServerAuthentication: required key missing"],
            id="missing-required",
        ),
        pytest.param({"PayloadUUID": MISSING}, {}, ["PayloadUUID: required key missing"], id="missing-top-required"),
        pytest.param(
            {"PayloadType": "com.apple.mail.managed"},
            {},
            ["PayloadType: 'com.apple.mail.managed' is not one of ['Configuration']"],
            id="wrong-top-payload-type",
        ),
        pytest.param(
            {},
            {"SMIMESigningCertificateUUID": "not-a-uuid"},
            [
                f"{M}.SMIMESigningCertificateUUID: 'not-a-uuid' does not match format "
                "^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$"
            ],
            id="format",
        ),
        pytest.param(
            {"ConsentText": {"en": 1}}, {}, ["ConsentText.en: expected string, got int"], id="consent-text-value"
        ),
        pytest.param(
            {"PayloadContent": ["mail"]}, {}, ["PayloadContent[0]: expected dictionary, got str"], id="payload-not-dict"
        ),
        pytest.param(
            {},
            {"PayloadUUID": "5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B01"},
            [f"{M}.PayloadUUID: '5C1F3B86-2C63-4E43-9C5A-3A3E8C1D1B01' is also used by PayloadUUID"],
            id="duplicate-uuid",
        ),
    ],
)
def test_mutation_is_reported(top: dict[str, object], mail: dict[str, object], expected: list[str]) -> None:
    assert validate_profile(mutated(top, mail)) == expected


def test_assert_valid_profile_lists_every_problem() -> None:
    profile = mutated({"PayloadVersion": 2}, {"EmailAccountType": "EmailTypeFoo"})
    with pytest.raises(AssertionError) as raised:
        assert_valid_profile(profile)
    assert "PayloadVersion: 2" in str(raised.value)
    assert f"{M}.EmailAccountType: 'EmailTypeFoo'" in str(raised.value)


@pytest.mark.skipif(not SHARED_SCHEMA_DIR.is_dir(), reason="no shared/ beside this checkout")
def test_the_vendored_schema_is_the_shared_one() -> None:
    for shared in sorted(SHARED_SCHEMA_DIR.iterdir()):
        vendored = VENDORED_SCHEMA_DIR / shared.name
        assert vendored.is_file(), f"{shared.name} is missing from {VENDORED_SCHEMA_DIR}"
        if shared.suffix == ".yaml" or shared.name == "LICENSE.txt":
            assert vendored.read_bytes() == shared.read_bytes(), f"{shared.name} differs from shared/"


def test_schema_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        validate_profile(minimal_profile())

    monkeypatch.delenv(SCHEMA_DIR_ENV)
    shutil.copytree(schema_dir(), tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    assert validate_profile(minimal_profile()) == []


def test_schema_with_unchecked_constraint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refreshed schema adding e.g. a range must fail loudly, not pass every profile."""
    shutil.copytree(schema_dir(), tmp_path, dirs_exist_ok=True)
    mail_schema = tmp_path / "com.apple.mail.managed.yaml"
    text = mail_schema.read_text(encoding="utf-8")
    port = "- key: IncomingMailServerPortNumber\n"
    mail_schema.write_text(text.replace(port, port + "  range:\n    min: 1\n    max: 65535\n"), encoding="utf-8")
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=r"IncomingMailServerPortNumber uses \['range'\]"):
        validate_profile(minimal_profile())


def sign(pki: Pki, content: bytes, key_path: Path | None = None, *, with_chain: bool = True) -> bytes:
    """Sign the way the service is meant to: DER CMS, binary content embedded, intermediate attached."""
    key = serialization.load_pem_private_key((key_path or pki.signer_key).read_bytes(), password=None)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(x509.load_pem_x509_certificate(pki.signer_cert.read_bytes()), key, hashes.SHA256())
    )
    if with_chain:
        builder = builder.add_certificate(x509.load_pem_x509_certificate(pki.chain.read_bytes()))
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def openssl_verify(pki: Pki, signed: bytes, directory: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``openssl cms -verify`` with its default purpose; return the result and the output file."""
    signed_path, plain = directory / "signed.der", directory / "plain"
    signed_path.write_bytes(signed)
    command = [OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signed_path)]
    command += ["-CAfile", str(pki.root_cert), "-out", str(plain)]
    return subprocess.run(command, capture_output=True, text=True, check=False), plain


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_signed_profile_verifies_with_openssl(tmp_path: Path, key_type: str) -> None:
    pki = make_pki(tmp_path / "pki", key_type=key_type)
    content = plistlib.dumps(minimal_profile())
    result, plain = openssl_verify(pki, sign(pki, content), tmp_path)
    assert result.returncode == 0, result.stderr
    assert plain.read_bytes() == content


def test_signature_without_intermediate_fails_verification(tmp_path: Path) -> None:
    """The signer is not issued by the root directly, so the chain must travel with the signature."""
    pki = make_pki(tmp_path / "pki")
    result, _ = openssl_verify(pki, sign(pki, b"profile", with_chain=False), tmp_path)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stderr


@pytest.mark.parametrize("where", ["content", "signature"])
def test_flipped_byte_fails_verification(tmp_path: Path, where: str) -> None:
    pki = make_pki(tmp_path / "pki")
    content = plistlib.dumps(minimal_profile())
    signed = bytearray(sign(pki, content))
    # The embedded plist, or the signature value, which ends the DER blob.
    offset = signed.index(content) + len(content) // 2 if where == "content" else len(signed) - 1
    signed[offset] ^= 0x01
    result, _ = openssl_verify(pki, bytes(signed), tmp_path)
    assert result.returncode != 0
    assert "Verification failure" in result.stderr


def test_unrelated_key_fails_verification(tmp_path: Path) -> None:
    """cryptography signs with a key that does not match the certificate; only verification notices."""
    pki = make_pki(tmp_path / "pki")
    other_key = make_unrelated_key(tmp_path / "other.key")
    result, _ = openssl_verify(pki, sign(pki, b"profile", other_key), tmp_path)
    assert result.returncode != 0
    assert "Verification failure" in result.stderr


@pytest.mark.parametrize(
    ("not_before", "not_after", "error"),
    [
        pytest.param(None, datetime.now(UTC) - timedelta(days=1), "certificate has expired", id="expired"),
        pytest.param(datetime.now(UTC) + timedelta(days=1), None, "certificate is not yet valid", id="not-yet-valid"),
    ],
)
def test_signer_outside_validity_fails_verification(
    tmp_path: Path, not_before: datetime | None, not_after: datetime | None, error: str
) -> None:
    pki = make_pki(tmp_path / "pki", not_before=not_before, not_after=not_after)
    result, _ = openssl_verify(pki, sign(pki, b"profile"), tmp_path)
    assert result.returncode != 0
    assert error in result.stderr


def test_signer_expiring_soon_still_verifies(tmp_path: Path) -> None:
    expiry = datetime.now(UTC) + timedelta(days=10)
    pki = make_pki(tmp_path / "pki", not_after=expiry)
    signer = x509.load_pem_x509_certificate(pki.signer_cert.read_bytes())
    assert signer.not_valid_after_utc == expiry.replace(microsecond=0)
    result, _ = openssl_verify(pki, sign(pki, b"profile"), tmp_path)
    assert result.returncode == 0, result.stderr
