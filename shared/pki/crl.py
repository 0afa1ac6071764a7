"""Certificate revocation lists (RFC 5280, section 5), one per authority, rebuilt whole.

The CRL Number must increase with every CRL an authority publishes. It is not derived from
a clock (a fixed or stepped-back clock would repeat it): the caller keeps a counter next to
the stored CRL and passes the next value here (see shared/crls.py, which stores it with a
compare-and-set on the previous number, so it never repeats or goes backwards).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa
from shared.pki.profiles import DEFAULT_CRL, CrlProfile

# Every CRLReason of RFC 5280 (5.3.1), by the names the RFC (and x509.ReasonFlags) use.
RFC5280_REASONS: tuple[str, ...] = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
)
# certificateHold is a suspension that is meant to be lifted, and removeFromCRL exists only to
# lift one (in delta CRLs). certfleet has no un-revocation, so it refuses both.
UNSUPPORTED_REASONS: tuple[str, ...] = ("certificateHold", "removeFromCRL")
REVOCATION_REASONS: tuple[str, ...] = tuple(
    r for r in RFC5280_REASONS if r not in UNSUPPORTED_REASONS
)
MAX_CRL_NUMBER = 2**159  # RFC 5280: at most 20 octets, positive


@dataclass(frozen=True)
class RevokedEntry:
    serial_number: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags
    # The revoked certificate's notAfter: the entry is dropped one CRL period after it.
    not_after: dt.datetime


def reason_flag(name: str) -> x509.ReasonFlags:
    """The RFC 5280 reason a revocation may be made with; ValidationFailed otherwise."""
    if name in UNSUPPORTED_REASONS:
        raise ValidationFailed(
            f"{name} is not supported: certfleet cannot suspend or un-revoke a certificate; "
            "revoke it for good with another reason",
            {"reason": [f"one of {', '.join(REVOCATION_REASONS)}"]},
        )
    if name not in RFC5280_REASONS:
        raise ValidationFailed(
            f"{name!r} is not an RFC 5280 revocation reason",
            {"reason": [f"one of {', '.join(REVOCATION_REASONS)}"]},
        )
    return x509.ReasonFlags(name)


def _revoked(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial_number)
        .revocation_date(entry.revoked_at)
    )
    # RFC 5280 5.3.1: the reason code "unspecified" SHOULD NOT be used; leave the extension out.
    if entry.reason is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
    return builder.build()


def _authority_key_identifier(issuer: IssuedCa) -> x509.AuthorityKeyIdentifier:
    """The AKI that matches the CA certificate's SKI, so that verifiers find the key."""
    try:
        ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def build_crl(
    issuer: IssuedCa,
    revoked: Iterable[RevokedEntry],
    *,
    number: int,
    now: dt.datetime,
    profile: CrlProfile = DEFAULT_CRL,
) -> x509.CertificateRevocationList:
    """A CRL signed by `issuer` (SHA-256) valid from `now` for the profile's period, listing
    every entry whose certificate has not been expired for longer than one CRL period."""
    if not 0 < number < MAX_CRL_NUMBER:
        raise ValidationFailed(f"a CRL number must be positive and below 2**159, not {number}")
    listed = sorted(
        (e for e in revoked if e.not_after + profile.keep_expired > now),
        key=lambda e: e.serial_number,
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(now)
        .next_update(now + profile.validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_identifier(issuer), critical=False)
    )
    for entry in listed:
        builder = builder.add_revoked_certificate(_revoked(entry))
    return builder.sign(issuer.key, hashes.SHA256())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    value = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    return value.crl_number


def crl_to_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def der_to_pem(der: bytes) -> bytes:
    """A stored (DER) CRL as PEM, for `openssl crl` and `openssl verify -CRLfile`."""
    crl = x509.load_der_x509_crl(der)
    return crl.public_bytes(serialization.Encoding.PEM)
