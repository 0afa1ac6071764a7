"""CRLs as the OpenSSL CLI sees them: `openssl crl -verify` accepts them and
`openssl verify -crl_check` refuses exactly the revoked leaf."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa
from shared.pki.crl import (
    REVOCATION_REASONS,
    RevokedEntry,
    build_crl,
    crl_number,
    crl_to_der,
    der_to_pem,
    reason_flag,
)
from shared.pki.profiles import XPROTECT_SERVER, CrlProfile
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests.factories import FIXED_NOW, rsa_key, unique, write_pem

Openssl = Callable[..., subprocess.CompletedProcess[str]]
NOW = FIXED_NOW + dt.timedelta(hours=1)
AT = str(int((NOW + dt.timedelta(minutes=5)).timestamp()))


def _leaf(issuer: IssuedCa, name: str) -> x509.Certificate:
    return sign_server_certificate(
        rsa_key().public_key(),
        SubjectNames((f"{name}.site1.example.com",)),
        issuer,
        now=FIXED_NOW,
        validity_days=397,
        profile=XPROTECT_SERVER,
    )


def _entry(
    certificate: x509.Certificate, reason: x509.ReasonFlags, revoked_at: dt.datetime = FIXED_NOW
) -> RevokedEntry:
    return RevokedEntry(
        certificate.serial_number, revoked_at, reason, certificate.not_valid_after_utc
    )


def _fake_entry(serial: int, not_after: dt.datetime) -> RevokedEntry:
    return RevokedEntry(
        serial, FIXED_NOW - dt.timedelta(days=400), x509.ReasonFlags.superseded, not_after
    )


def _write_crl(tmp_path: Path, crl: x509.CertificateRevocationList) -> Path:
    path = tmp_path / f"{unique('crl')}.pem"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def _reasons(crl: x509.CertificateRevocationList) -> dict[int, x509.ReasonFlags | None]:
    found: dict[int, x509.ReasonFlags | None] = {}
    for revoked in crl:
        try:
            found[revoked.serial_number] = revoked.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            found[revoked.serial_number] = None
    return found


def test_crl_verifies_with_openssl_and_carries_the_reasons(
    tmp_path: Path, root_ca: IssuedCa, openssl: Openssl
) -> None:
    compromised, superseded, unspecified = (_leaf(root_ca, n) for n in ("a", "b", "c"))
    crl = build_crl(
        root_ca,
        [
            _entry(compromised, x509.ReasonFlags.key_compromise),
            _entry(superseded, x509.ReasonFlags.superseded, FIXED_NOW + dt.timedelta(minutes=1)),
            _entry(unspecified, x509.ReasonFlags.unspecified),
        ],
        number=7,
        now=NOW,
    )
    ca_file = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    crl_file = _write_crl(tmp_path, crl)
    checked = openssl("crl", "-in", crl_file, "-CAfile", ca_file, "-verify", "-noout")
    assert checked.returncode == 0 and "verify OK" in checked.stderr + checked.stdout, checked
    text = openssl("crl", "-in", crl_file, "-noout", "-text").stdout
    assert "Key Compromise" in text and "Superseded" in text
    assert _reasons(crl) == {
        compromised.serial_number: x509.ReasonFlags.key_compromise,
        superseded.serial_number: x509.ReasonFlags.superseded,
        unspecified.serial_number: None,  # RFC 5280: no reason extension for "unspecified"
    }
    assert crl.get_revoked_certificate_by_serial_number(
        superseded.serial_number
    ).revocation_date_utc == FIXED_NOW + dt.timedelta(minutes=1)  # type: ignore[union-attr]
    assert crl_number(crl) == 7
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.issuer == root_ca.certificate.subject
    assert (crl.last_update_utc, crl.next_update_utc) == (NOW, NOW + dt.timedelta(days=7))
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root_ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest


def test_a_forged_crl_fails_openssl_verification(
    tmp_path: Path, root_ca: IssuedCa, intermediate_ca: IssuedCa, openssl: Openssl
) -> None:
    """The check above can fail: a CRL that names the root but is signed by another key."""
    impostor = IssuedCa(root_ca.certificate, intermediate_ca.key)
    crl_file = _write_crl(tmp_path, build_crl(impostor, [], number=1, now=NOW))
    ca_file = write_pem(tmp_path / "ca.pem", root_ca.certificate)
    checked = openssl("crl", "-in", crl_file, "-CAfile", ca_file, "-verify", "-noout")
    # OpenSSL 3.0 exits 0 either way: the verdict is in the output.
    assert "verify failure" in checked.stderr and "verify OK" not in checked.stderr


def test_the_crl_number_is_the_one_given_and_must_be_positive(root_ca: IssuedCa) -> None:
    first = build_crl(root_ca, [], number=1, now=NOW)
    second = build_crl(root_ca, [], number=2, now=NOW)
    assert crl_number(first) < crl_number(second)
    assert x509.load_der_x509_crl(crl_to_der(second)) == second
    with pytest.raises(ValidationFailed):
        build_crl(root_ca, [], number=0, now=NOW)


def test_expired_certificates_leave_the_crl_one_period_after_expiry(root_ca: IssuedCa) -> None:
    """RFC 5280 3.3: an entry stays until one scheduled CRL beyond the certificate's
    validity; after that it is omitted."""
    profile = CrlProfile(validity_days=7)
    valid = _fake_entry(1, NOW + dt.timedelta(days=30))
    just_expired = _fake_entry(2, NOW - dt.timedelta(days=1))
    long_expired = _fake_entry(3, NOW - dt.timedelta(days=8))
    crl = build_crl(
        root_ca, [long_expired, valid, just_expired], number=1, now=NOW, profile=profile
    )
    assert [r.serial_number for r in crl] == [1, 2]
    assert crl.next_update_utc == NOW + dt.timedelta(days=7)


def _verify(
    tmp_path: Path,
    openssl: Openssl,
    root: x509.Certificate,
    leaf: x509.Certificate,
    crl: x509.CertificateRevocationList,
    untrusted: Sequence[x509.Certificate] = (),
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = ["verify", "-crl_check", "-attime", AT]
    args += ["-CAfile", write_pem(tmp_path / f"{unique('root')}.pem", root)]
    if untrusted:
        args += ["-untrusted", write_pem(tmp_path / f"{unique('chain')}.pem", *untrusted)]
    args += ["-CRLfile", _write_crl(tmp_path, crl)]
    return openssl(*args, write_pem(tmp_path / f"{unique('leaf')}.pem", leaf))


def test_openssl_crl_check_refuses_only_the_revoked_leaf(
    tmp_path: Path, root_ca: IssuedCa, openssl: Openssl
) -> None:
    revoked, kept = _leaf(root_ca, "revoked"), _leaf(root_ca, "kept")
    crl = build_crl(root_ca, [_entry(revoked, x509.ReasonFlags.key_compromise)], number=1, now=NOW)
    refused = _verify(tmp_path, openssl, root_ca.certificate, revoked, crl)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = _verify(tmp_path, openssl, root_ca.certificate, kept, crl)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_openssl_crl_check_with_an_intermediate_crl(
    tmp_path: Path, root_ca: IssuedCa, intermediate_ca: IssuedCa, openssl: Openssl
) -> None:
    revoked, kept = _leaf(intermediate_ca, "revoked"), _leaf(intermediate_ca, "kept")
    crl = build_crl(
        intermediate_ca, [_entry(revoked, x509.ReasonFlags.superseded)], number=1, now=NOW
    )
    chain = [intermediate_ca.certificate]
    refused = _verify(tmp_path, openssl, root_ca.certificate, revoked, crl, chain)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    accepted = _verify(tmp_path, openssl, root_ca.certificate, kept, crl, chain)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_reasons_accepted_for_revocation() -> None:
    assert reason_flag("keyCompromise") is x509.ReasonFlags.key_compromise
    assert {reason_flag(r).value for r in REVOCATION_REASONS} == set(REVOCATION_REASONS)
    assert len(REVOCATION_REASONS) == 8
    for refused in ("certificateHold", "removeFromCRL"):
        with pytest.raises(ValidationFailed, match="cannot suspend or un-revoke"):
            reason_flag(refused)
    with pytest.raises(ValidationFailed, match="not an RFC 5280"):
        reason_flag("key_compromise")


def test_stored_der_converts_to_pem(root_ca: IssuedCa) -> None:
    crl = build_crl(root_ca, [], number=3, now=NOW)
    pem = der_to_pem(crl_to_der(crl))
    assert pem.startswith(b"-----BEGIN X509 CRL-----")
    assert x509.load_pem_x509_crl(pem) == crl
