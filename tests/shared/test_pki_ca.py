"""Root and intermediate CAs: the extensions Windows and XProtect clients check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa, create_intermediate_ca, create_root_ca
from tests.factories import FIXED_NOW, openssl, public_der, write_pem


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def _assert_ca_profile(cert: x509.Certificate) -> None:
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical is True
    assert basic.value.ca is True
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical is True
    assert usage.value.key_cert_sign is True
    assert usage.value.crl_sign is True
    assert usage.value.key_encipherment is False
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_root_ca_profile(root_ca: IssuedCa) -> None:
    cert = root_ca.certificate
    _assert_ca_profile(cert)
    assert _ext(cert, x509.BasicConstraints).value.path_length is None
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_before_utc == FIXED_NOW
    assert cert.not_valid_after_utc == FIXED_NOW + dt.timedelta(days=3650)
    assert isinstance(root_ca.key, rsa.RSAPrivateKey)
    assert root_ca.key.key_size == 2048
    assert public_der(root_ca.key) == public_der(cert.public_key())


def test_intermediate_ca_profile(root_ca: IssuedCa, intermediate_ca: IssuedCa) -> None:
    cert = intermediate_ca.certificate
    _assert_ca_profile(cert)
    assert _ext(cert, x509.BasicConstraints).value.path_length == 0
    assert cert.issuer == root_ca.certificate.subject
    cert.verify_directly_issued_by(root_ca.certificate)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    root_ski = _ext(root_ca.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert cert.not_valid_after_utc == FIXED_NOW + dt.timedelta(days=1825)


def test_intermediate_never_outlives_its_parent() -> None:
    short_root = create_root_ca("short root", now=FIXED_NOW, key_bits=2048, validity_days=30)
    inter = create_intermediate_ca(
        "long intermediate", parent=short_root, now=FIXED_NOW, key_bits=2048, validity_days=1825
    )
    assert inter.certificate.not_valid_after_utc == short_root.certificate.not_valid_after_utc


def test_intermediate_refused_when_parent_expired(root_ca: IssuedCa) -> None:
    later = root_ca.certificate.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(ValidationFailed, match="expired"):
        create_intermediate_ca("late", parent=root_ca, now=later, key_bits=2048, validity_days=10)


def test_root_validity_and_key_size_are_checked() -> None:
    with pytest.raises(ValidationFailed, match="at least one day"):
        create_root_ca("zero", now=FIXED_NOW, key_bits=2048, validity_days=0)
    with pytest.raises(ValidationFailed, match="RSA key size"):
        create_root_ca("weak", now=FIXED_NOW, key_bits=1024, validity_days=10)


def test_organization_goes_into_the_subject() -> None:
    root = create_root_ca(
        "org root", now=FIXED_NOW, key_bits=2048, validity_days=10, organization="Example Ltd"
    )
    assert root.certificate.subject.rfc4514_string() == "O=Example Ltd,CN=org root"


def test_openssl_reads_the_ca_extensions(
    tmp_path: Path, root_ca: IssuedCa, intermediate_ca: IssuedCa
) -> None:
    text = openssl(
        "x509", "-in", write_pem(tmp_path / "i.pem", intermediate_ca.certificate), "-noout", "-text"
    )
    assert text.returncode == 0, text.stderr
    assert "X509v3 Basic Constraints: critical" in text.stdout
    assert "CA:TRUE, pathlen:0" in text.stdout
    assert "X509v3 Key Usage: critical" in text.stdout
    assert "Certificate Sign, CRL Sign" in text.stdout
    assert "Extended Key Usage" not in text.stdout

    root_file = write_pem(tmp_path / "root.pem", root_ca.certificate)
    verify = openssl(
        "verify",
        "-x509_strict",
        "-attime",
        str(int(FIXED_NOW.timestamp()) + 60),
        "-CAfile",
        root_file,
        write_pem(tmp_path / "inter.pem", intermediate_ca.certificate),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.strip().endswith(": OK")
