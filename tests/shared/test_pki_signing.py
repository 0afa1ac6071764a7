"""The XProtect server certificate profile."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa, create_root_ca
from shared.pki.profiles import XPROTECT_SERVER, ServerProfile
from shared.pki.signing import SubjectNames, sign_server_certificate, validity_window
from tests.factories import FIXED_NOW, rsa_key

NAMES = SubjectNames(
    ("rec01.site1.example.com", "rec01", "rec01-alias.site1.example.com"),
    (ipaddress.ip_address("10.1.0.10"), ipaddress.ip_address("fd00::10")),
)


def _sign(
    issuer: IssuedCa,
    *,
    names: SubjectNames = NAMES,
    validity_days: int = XPROTECT_SERVER.default_validity_days,
    now: dt.datetime = FIXED_NOW,
    key: rsa.RSAPrivateKey | None = None,
) -> x509.Certificate:
    key = key or rsa_key()
    return sign_server_certificate(
        key.public_key(),
        names,
        issuer,
        now=now,
        validity_days=validity_days,
        profile=XPROTECT_SERVER,
    )


def test_server_profile_extensions(root_ca: IssuedCa) -> None:
    key = rsa_key()
    cert = _sign(root_ca, key=key)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ext = cert.extensions

    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical is True
    assert usage.value.digital_signature is True
    assert usage.value.key_encipherment is True
    assert usage.value.key_cert_sign is False
    assert usage.value.crl_sign is False

    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical is True
    assert basic.value.ca is False

    with pytest.raises(x509.ExtensionNotFound):
        ext.get_extension_for_class(x509.CRLDistributionPoints)

    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = root_ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert aki.key_identifier == issuer_ski.digest
    assert cert.issuer == root_ca.certificate.subject
    cert.verify_directly_issued_by(root_ca.certificate)


def test_san_has_every_name_and_cn_is_first_dns_name(root_ca: IssuedCa) -> None:
    cert = _sign(root_ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(NAMES.dns_names)
    assert san.get_values_for_type(x509.IPAddress) == list(NAMES.ip_addresses)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cns] == ["rec01.site1.example.com"]


def test_ip_only_certificate_uses_the_ip_as_cn(root_ca: IssuedCa) -> None:
    names = SubjectNames((), (ipaddress.ip_address("10.1.0.20"),))
    cert = _sign(root_ca, names=names)
    assert cert.subject.rfc4514_string() == "CN=10.1.0.20"


def test_subject_names_need_at_least_one_name() -> None:
    with pytest.raises(ValidationFailed, match="at least one"):
        SubjectNames(())


def test_default_validity_is_397_days_with_backdating(root_ca: IssuedCa) -> None:
    assert XPROTECT_SERVER.default_validity_days == 397
    cert = _sign(root_ca, now=FIXED_NOW + dt.timedelta(hours=1))
    now = FIXED_NOW + dt.timedelta(hours=1)
    assert cert.not_valid_before_utc == now - dt.timedelta(seconds=300)
    # The backdating is part of the 397 days, not added to them.
    assert cert.not_valid_after_utc == cert.not_valid_before_utc + dt.timedelta(days=397)


def test_backdating_never_precedes_the_issuer(root_ca: IssuedCa) -> None:
    cert = _sign(root_ca, now=FIXED_NOW)
    assert cert.not_valid_before_utc == root_ca.certificate.not_valid_before_utc


@pytest.mark.parametrize("days", [1, 825])
def test_validity_up_to_825_days_is_accepted(root_ca: IssuedCa, days: int) -> None:
    cert = _sign(root_ca, validity_days=days)
    assert cert.not_valid_after_utc - FIXED_NOW == dt.timedelta(days=days)


@pytest.mark.parametrize("days", [0, -1, 826, 3650])
def test_validity_outside_1_to_825_days_is_refused(root_ca: IssuedCa, days: int) -> None:
    with pytest.raises(ValidationFailed, match="between 1 and 825"):
        _sign(root_ca, validity_days=days)


def test_leaf_never_outlives_its_issuer() -> None:
    issuer = create_root_ca("short", now=FIXED_NOW, key_bits=2048, validity_days=100)
    cert = _sign(issuer, validity_days=397)
    assert cert.not_valid_after_utc == issuer.certificate.not_valid_after_utc


def test_expired_issuer_cannot_sign(root_ca: IssuedCa) -> None:
    after = root_ca.certificate.not_valid_after_utc
    with pytest.raises(ValidationFailed, match="expired"):
        _sign(root_ca, now=after)


def test_weak_rsa_key_is_refused(root_ca: IssuedCa) -> None:
    with pytest.raises(ValidationFailed, match="1024"):
        _sign(root_ca, key=rsa_key(1024))


def test_validity_window_follows_the_profile(root_ca: IssuedCa) -> None:
    strict = ServerProfile(max_validity_days=90, backdate_seconds=0)
    start, end = validity_window(FIXED_NOW + dt.timedelta(days=1), 90, root_ca.certificate, strict)
    assert start == FIXED_NOW + dt.timedelta(days=1)
    assert end == start + dt.timedelta(days=90)
    with pytest.raises(ValidationFailed):
        validity_window(FIXED_NOW, 91, root_ca.certificate, strict)
