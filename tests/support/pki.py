"""A throw-away PKI (root CA -> intermediate CA -> signer) for profile-signing tests.

Three levels rather than a self-signed signer, because that is what real
deployments have: the signature only verifies against the root if the
intermediate travels with it, which is exactly what the tests need to see.

The signer has key usage digitalSignature and extended key usage
emailProtection, which ``openssl cms -verify`` accepts under its default
purpose (smime_sign), so no ``-purpose any`` is needed.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pki:
    """PEM files of one PKI; keys are unencrypted PKCS#8."""

    root_cert: Path
    intermediate_cert: Path
    signer_cert: Path
    signer_key: Path
    chain: Path
    """The intermediate certificate, as a signer would ship it next to its own."""


def make_pki(
    directory: Path,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_type: str = "ec",
) -> Pki:
    """Write a root, an intermediate and a signer into ``directory``.

    ``not_before``/``not_after`` (timezone-aware) set the signer's validity, so
    tests can make it expired, not yet valid or about to expire. Unset, the
    signer starts a day before now (or before ``not_after``) and ends a year
    after now (or after ``not_before``). The CAs are valid around both now and
    the signer's period, so only the signer decides the outcome.
    ``key_type`` is "ec" (P-256) or "rsa" (2048 bits) for all three keys.
    """
    now = datetime.now(UTC)
    start = not_before if not_before is not None else min(now, not_after or now) - timedelta(days=1)
    end = not_after if not_after is not None else max(now, start) + timedelta(days=365)
    ca_validity = (min(now, start) - timedelta(days=1), max(now, end) + timedelta(days=1))

    root_key = _new_key(key_type)
    root = _issue("autoconfig test root CA", root_key, None, root_key, ca_validity, _ca_extensions(None))
    intermediate_key = _new_key(key_type)
    intermediate = _issue(
        "autoconfig test intermediate CA", intermediate_key, root, root_key, ca_validity, _ca_extensions(0)
    )
    signer_key = _new_key(key_type)
    signer_extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
    ]
    signer = _issue(
        "autoconfig test profile signer", signer_key, intermediate, intermediate_key, (start, end), signer_extensions
    )

    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        root_cert=directory / "root.pem",
        intermediate_cert=directory / "intermediate.pem",
        signer_cert=directory / "signer.pem",
        signer_key=directory / "signer.key",
        chain=directory / "chain.pem",
    )
    pki.root_cert.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    pki.intermediate_cert.write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
    pki.chain.write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
    pki.signer_cert.write_bytes(signer.public_bytes(serialization.Encoding.PEM))
    _write_key(signer_key, pki.signer_key)
    return pki


def make_unrelated_key(path: Path, *, key_type: str = "ec") -> Path:
    """Write a fresh private key matching no certificate, for key/certificate mismatch tests."""
    _write_key(_new_key(key_type), path)
    return path


def _new_key(key_type: str) -> _PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _write_key(key: _PrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_extensions(path_length: int | None) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (_key_usage(cert_sign=True), True),
    ]


def _issue(
    common_name: str,
    key: _PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: _PrivateKey,
    validity: tuple[datetime, datetime],
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """Sign a certificate for ``key``; self-signed when ``issuer`` is None.

    Key identifiers are included so chain building can match issuers by key, as
    with real CA-issued certificates, not by subject name alone.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())
