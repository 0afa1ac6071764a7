"""Build and sign XProtect server certificates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa
from shared.pki.profiles import ServerProfile
from shared.policy import IPAddress


@dataclass(frozen=True)
class SubjectNames:
    """Every name clients use. The first DNS name becomes the CN (modern clients read only
    the SAN, old ones the CN)."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ip_addresses:
            raise ValidationFailed("a server certificate needs at least one DNS name or IP address")

    @property
    def common_name(self) -> str:
        return self.dns_names[0] if self.dns_names else str(self.ip_addresses[0])

    def general_names(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in self.dns_names]
        names += [x509.IPAddress(ip) for ip in self.ip_addresses]
        return names


def validity_window(
    now: dt.datetime, validity_days: int, issuer: x509.Certificate, profile: ServerProfile
) -> tuple[dt.datetime, dt.datetime]:
    """notBefore/notAfter for a leaf: capped by the profile and by the issuer's notAfter. The
    backdating counts in the validity: a leaf asked for N days is valid N days in all (an
    825-day certificate must not be 825 days and 5 minutes long to a client that counts)."""
    if not 1 <= validity_days <= profile.max_validity_days:
        raise ValidationFailed(
            f"validity must be between 1 and {profile.max_validity_days} days, not {validity_days}"
        )
    not_before = max(
        now - dt.timedelta(seconds=profile.backdate_seconds), issuer.not_valid_before_utc
    )
    not_after = min(not_before + dt.timedelta(days=validity_days), issuer.not_valid_after_utc)
    if not_after <= now:
        raise ValidationFailed("the issuing CA has expired")
    return not_before, not_after


def sign_server_certificate(
    public_key: rsa.RSAPublicKey,
    names: SubjectNames,
    issuer: IssuedCa,
    *,
    now: dt.datetime,
    validity_days: int,
    profile: ServerProfile,
) -> x509.Certificate:
    if public_key.key_size < profile.min_rsa_bits:
        raise ValidationFailed(f"RSA {public_key.key_size} is below {profile.min_rsa_bits} bits")
    not_before, not_after = validity_window(now, validity_days, issuer.certificate, profile)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names.general_names()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer.key, hashes.SHA256())
