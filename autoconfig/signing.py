"""Signing Apple profiles: CMS SignedData with the profile embedded.

iOS and macOS show an unsigned profile in red as "Unsigned", which teaches
users to click through warnings; a signed one shows "Verified".  The
certificate, key and chain are read and checked once, when the service
starts, so a wrong key or a lapsed certificate stops the start with a
message naming the config key, instead of failing on every download or,
worse, serving profiles every device rejects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from .config import Config, ConfigError
from .values import Apple

log = logging.getLogger(__name__)

EXPIRY_WARNING = timedelta(days=30)

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_ErrorFactory = Callable[[str, str], ConfigError]
# Brand id -> its signer; a brand that signs nothing is not in it.
Signers = Mapping[str, "Signer"]


@dataclass(frozen=True)
class Signer:
    """A checked certificate and its key, plus the chain sent along so devices can reach a root."""

    certificate: x509.Certificate
    key: SigningKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    def sign(self, data: bytes) -> bytes:
        """DER SignedData with ``data`` embedded (Apple reads the profile from inside the signature)."""
        builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(self.certificate, self.key, hashes.SHA256())
        for certificate in self.chain:
            builder = builder.add_certificate(certificate)
        # Binary: sign the plist bytes as they are; the default text mode would rewrite line ends.
        return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def expires(self) -> datetime:
        return self.certificate.not_valid_after_utc


def load_signers(config: Config, now: datetime | None = None) -> Signers:
    """Every brand's signer (brands that share one identity share one signer); ``ConfigError`` if one cannot be used."""
    loaded: dict[Apple, Signer] = {}
    signers: dict[str, Signer] = {}
    for provider in config.providers:
        apple = provider.apple
        if not apple.signs:
            continue
        if apple not in loaded:
            loaded[apple] = load_signer(apple, config.source, now)
        signers[provider.id] = loaded[apple]
    return signers


def load_signer(apple: Apple, source: Path, now: datetime | None = None) -> Signer:
    """The signer of one brand's ``apple`` settings (which must name a certificate and a key)."""
    if apple.signing_certificate is None or apple.signing_key is None:
        raise ValueError("these Apple settings sign nothing")
    now = now or datetime.now(UTC)

    def error(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {apple.config_key}.{key}: {message}")

    data = _read(apple.signing_certificate, "signing_certificate", error)
    # A "full chain" file works too: the first certificate signs, the rest travel as the chain.
    certificate, *chain = _load_certificates(data, "signing_certificate", error)
    key = _load_key(_read(apple.signing_key, "signing_key", error), error)
    if apple.signing_chain is not None:
        chain += _load_certificates(_read(apple.signing_chain, "signing_chain", error), "signing_chain", error)

    if not _matches(key, certificate):
        raise error("signing_key", f"does not match the certificate in {apple.signing_certificate}")
    if now < certificate.not_valid_before_utc:
        raise error(
            "signing_certificate",
            f"{apple.signing_certificate} is not valid until {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
        )
    if now >= certificate.not_valid_after_utc:
        raise error(
            "signing_certificate",
            f"{apple.signing_certificate} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        )
    signer = Signer(certificate, key, tuple(chain))
    if certificate.not_valid_after_utc - now <= EXPIRY_WARNING:
        days = (certificate.not_valid_after_utc - now).days
        log.warning(
            "the Apple profile signing certificate %s (%s) expires in %d days, on %s; renew it",
            apple.signing_certificate,
            signer.subject,
            days,
            f"{certificate.not_valid_after_utc:%Y-%m-%d}",
        )
    return signer


def _read(path: Path, key: str, error: _ErrorFactory) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(key, f"cannot read {path}: {exc.strerror}") from None


def _load_certificates(data: bytes, key: str, error: _ErrorFactory) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise error(key, "is not a PEM or DER certificate") from None
    if not certificates:
        raise error(key, "holds no certificate")
    return certificates


def _load_key(data: bytes, error: _ErrorFactory) -> SigningKey:
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise error("signing_key", "is encrypted; store it unencrypted, readable only by the service") from None
    except (ValueError, UnsupportedAlgorithm):
        raise error("signing_key", "is not a PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise error("signing_key", f"is a {type(key).__name__}; profile signing needs an RSA or EC key")
    return key


def _matches(key: SigningKey, certificate: x509.Certificate) -> bool:
    encoding, form = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(encoding, form) == certificate.public_key().public_bytes(encoding, form)
