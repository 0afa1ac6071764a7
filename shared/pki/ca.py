"""Root and intermediate certificate authorities."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.errors import ValidationFailed
from shared.pki.keys import generate_rsa_key


@dataclass(frozen=True)
class IssuedCa:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _ca_name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def create_root_ca(
    common_name: str,
    *,
    now: dt.datetime,
    key_bits: int,
    validity_days: int,
    organization: str | None = None,
) -> IssuedCa:
    """A self-signed root. No EKU: Windows then accepts it for every purpose in the chain."""
    if validity_days < 1:
        raise ValidationFailed("CA validity must be at least one day")
    key = generate_rsa_key(key_bits)
    name = _ca_name(common_name, organization)
    builder = _ca_builder(
        name, name, key.public_key(), now, now + dt.timedelta(days=validity_days), None
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    return IssuedCa(builder.sign(key, hashes.SHA256()), key)


def create_intermediate_ca(
    common_name: str,
    *,
    parent: IssuedCa,
    now: dt.datetime,
    key_bits: int,
    validity_days: int,
    organization: str | None = None,
) -> IssuedCa:
    """An intermediate that may sign only leaves (path length 0), never outliving its parent."""
    parent_end = parent.certificate.not_valid_after_utc
    if parent_end <= now:
        raise ValidationFailed("the parent CA has expired")
    not_after = min(now + dt.timedelta(days=validity_days), parent_end)
    key = generate_rsa_key(key_bits)
    builder = _ca_builder(
        _ca_name(common_name, organization),
        parent.certificate.subject,
        key.public_key(),
        now,
        not_after,
        0,
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
        critical=False,
    )
    return IssuedCa(builder.sign(parent.key, hashes.SHA256()), key)
