"""Export formats: PEM chain, DER, and Windows-importable PKCS#12."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.errors import ValidationFailed

# Iterations stay far below 600000: old Windows takes minutes (or fails) on large counts.
PFX_KDF_ROUNDS = 50000
MIN_PFX_PASSWORD = 8


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def to_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def to_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem_chain(leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> bytes:
    """Leaf first, then issuers up to (and including) the root."""
    return b"".join(to_pem(c) for c in (leaf, *chain))


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def to_pfx(
    leaf: x509.Certificate,
    key: rsa.RSAPrivateKey,
    chain: Sequence[x509.Certificate],
    password: str,
    friendly_name: str,
) -> bytes:
    """PKCS#12 that Windows Server 2016 / Windows 10 before 1709 import: PBES1 3DES for key
    and certificates and a SHA-1 MAC (a SHA-256 MAC makes old Windows report a wrong password).
    """
    if len(password) < MIN_PFX_PASSWORD:
        raise ValidationFailed(f"the PFX password must be at least {MIN_PFX_PASSWORD} characters")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PFX_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - required by the Windows versions in the field
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode(), key, leaf, list(chain), encryption
    )
