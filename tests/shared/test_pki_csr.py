"""CSR validation: only a well-signed RSA >= 2048 request with valid names is accepted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.errors import CsrRejected
from shared.pki.csr import load_csr
from shared.pki.profiles import XPROTECT_SERVER
from tests.factories import make_csr, openssl, public_der, rsa_key, write_key


def test_valid_csr_gives_key_and_names() -> None:
    key = rsa_key()
    pem = make_csr(key, ["rec01.site1.example.com", "rec01"], ["10.1.0.10", "fd00::1"])
    info = load_csr(pem, XPROTECT_SERVER)
    assert public_der(info.public_key) == public_der(key)
    assert info.dns_names == ("rec01.site1.example.com", "rec01")
    assert info.ip_addresses == (
        ipaddress.ip_address("10.1.0.10"),
        ipaddress.ip_address("fd00::1"),
    )


def test_names_are_taken_from_cn_and_san_normalized_and_deduplicated() -> None:
    pem = make_csr(
        rsa_key(),
        ["REC01.Site1.Example.com.", "rec01"],
        ["10.1.0.10"],
        cn="Other.Site1.Example.com",
    )
    info = load_csr(pem.encode(), XPROTECT_SERVER)
    assert info.dns_names == ("rec01.site1.example.com", "rec01", "other.site1.example.com")


def test_cn_only_csr_yields_the_cn_as_dns_name() -> None:
    info = load_csr(make_csr(rsa_key(), [], [], cn="mgmt.site1.example.com"), XPROTECT_SERVER)
    assert info.dns_names == ("mgmt.site1.example.com",)
    assert info.ip_addresses == ()


def test_ip_in_cn_is_not_taken_as_a_dns_name() -> None:
    info = load_csr(make_csr(rsa_key(), [], ["10.1.0.10"], cn="10.1.0.10"), XPROTECT_SERVER)
    assert info.dns_names == ()
    assert info.ip_addresses == (ipaddress.ip_address("10.1.0.10"),)


def test_der_csr_is_accepted() -> None:
    pem = make_csr(rsa_key(), ["rec01.site1.example.com"])
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert load_csr(der, XPROTECT_SERVER).dns_names == ("rec01.site1.example.com",)


@pytest.mark.parametrize(
    "garbage",
    [
        b"not a csr at all",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        bytes(range(256)),
    ],
    ids=["text", "bad-pem-body", "binary"],
)
def test_garbage_is_rejected(garbage: bytes) -> None:
    with pytest.raises(CsrRejected, match="not a valid PEM or DER"):
        load_csr(garbage, XPROTECT_SERVER)


@pytest.mark.parametrize("empty", [b"", b"  \n\t", ""])
def test_an_empty_csr_is_said_to_be_empty(empty: bytes | str) -> None:
    with pytest.raises(CsrRejected, match="the CSR is empty"):
        load_csr(empty, XPROTECT_SERVER)


def test_tampered_signature_is_rejected() -> None:
    pem = make_csr(rsa_key(), ["rec01.site1.example.com"])
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature BIT STRING
    with pytest.raises(CsrRejected, match="signature does not verify"):
        load_csr(bytes(der), XPROTECT_SERVER)


def test_tampered_name_is_rejected() -> None:
    """Changing a requested name after signing must break the signature."""
    pem = make_csr(rsa_key(), ["rec01.site1.example.com"])
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    forged = der.replace(b"rec01.site1", b"rec99.site1")
    assert forged != der
    with pytest.raises(CsrRejected, match="signature"):
        load_csr(forged, XPROTECT_SERVER)


def test_rsa_1024_is_rejected() -> None:
    with pytest.raises(CsrRejected, match="RSA 1024; at least 2048"):
        load_csr(make_csr(rsa_key(1024), ["rec01.site1.example.com"]), XPROTECT_SERVER)


def test_ec_key_is_rejected() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CsrRejected, match="must be RSA"):
        load_csr(make_csr(key, ["rec01.site1.example.com"]), XPROTECT_SERVER)


@pytest.mark.parametrize("bad_name", ["*.site1.example.com", "bad_name.example.com", "-x.example"])
def test_invalid_requested_names_are_rejected(bad_name: str) -> None:
    with pytest.raises(CsrRejected, match="invalid name"):
        load_csr(make_csr(rsa_key(), [bad_name], cn="ok.example.com"), XPROTECT_SERVER)


@pytest.mark.parametrize(
    "san_der",
    ["30:05:82:03:61:ff:62", "30:03:87:01:0a"],
    ids=["non-ascii-dns-name", "one-byte-ip"],
)
def test_malformed_san_is_rejected(tmp_path: Path, san_der: str) -> None:
    """A CSR openssl signs happily but whose SAN cannot be parsed is a CsrRejected."""
    key, config = tmp_path / "key.pem", tmp_path / "req.cnf"
    write_key(key, rsa_key())
    config.write_text(
        "[req]\ndistinguished_name=dn\nreq_extensions=ext\nprompt=no\n"
        f"[dn]\nCN=rec01.site1.example.com\n[ext]\nsubjectAltName=DER:{san_der}\n"
    )
    made = openssl("req", "-new", "-key", key, "-config", config)
    assert made.returncode == 0, made.stderr
    assert openssl("req", "-verify", "-noout", stdin=made.stdout.encode()).returncode == 0
    with pytest.raises(CsrRejected, match="malformed extension"):
        load_csr(made.stdout, XPROTECT_SERVER)
