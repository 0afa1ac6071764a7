"""Export: PEM/DER helpers and a PKCS#12 that old Windows imports (3DES, SHA-1 MAC)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.errors import ValidationFailed
from shared.pki.ca import IssuedCa
from shared.pki.export import (
    PFX_KDF_ROUNDS,
    fingerprint_sha256,
    load_pem_certificates,
    pem_chain,
    serial_hex,
    to_der,
    to_pem,
    to_pfx,
)
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests.factories import FIXED_NOW, openssl, public_der, rsa_key

PASSWORD = "pfx-password-42"
FRIENDLY = "certfleet rec01 2026-11-28"

Leaf = tuple[x509.Certificate, rsa.RSAPrivateKey]


@pytest.fixture
def leaf(intermediate_ca: IssuedCa) -> Leaf:
    key = rsa_key()
    cert = sign_server_certificate(
        key.public_key(),
        SubjectNames(("rec01.site1.example.com",)),
        intermediate_ca,
        now=FIXED_NOW,
        validity_days=397,
        profile=XPROTECT_SERVER,
    )
    return cert, key


def _pfx(leaf: Leaf, root_ca: IssuedCa, intermediate_ca: IssuedCa) -> bytes:
    cert, key = leaf
    return to_pfx(cert, key, [intermediate_ca.certificate, root_ca.certificate], PASSWORD, FRIENDLY)


def test_pfx_loads_back_with_the_password(
    leaf: Leaf, root_ca: IssuedCa, intermediate_ca: IssuedCa
) -> None:
    cert, key = leaf
    data = _pfx(leaf, root_ca, intermediate_ca)
    loaded_key, loaded_cert, extra = pkcs12.load_key_and_certificates(data, PASSWORD.encode())
    assert loaded_cert == cert
    assert loaded_key is not None
    assert public_der(loaded_key) == public_der(key)
    assert extra == [intermediate_ca.certificate, root_ca.certificate]

    bundle = pkcs12.load_pkcs12(data, PASSWORD.encode())
    assert bundle.cert is not None
    assert bundle.cert.friendly_name == FRIENDLY.encode()


def test_pfx_wrong_password_fails(leaf: Leaf, root_ca: IssuedCa, intermediate_ca: IssuedCa) -> None:
    data = _pfx(leaf, root_ca, intermediate_ca)
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data, b"wrong-password")


def test_pfx_short_password_is_refused(leaf: Leaf, root_ca: IssuedCa) -> None:
    cert, key = leaf
    with pytest.raises(ValidationFailed, match="at least 8"):
        to_pfx(cert, key, [root_ca.certificate], "short", FRIENDLY)


def test_pfx_uses_legacy_algorithms_windows_imports(
    tmp_path: Path, leaf: Leaf, root_ca: IssuedCa, intermediate_ca: IssuedCa
) -> None:
    path = tmp_path / "rec01.pfx"
    path.write_bytes(_pfx(leaf, root_ca, intermediate_ca))
    result = openssl("pkcs12", "-in", path, "-passin", f"pass:{PASSWORD}", "-nokeys", "-info")
    if result.returncode != 0 and "unsupported" in result.stderr.lower():
        result = openssl(
            "pkcs12", "-legacy", "-in", path, "-passin", f"pass:{PASSWORD}", "-nokeys", "-info"
        )
    assert result.returncode == 0, result.stderr
    info = result.stdout + result.stderr

    assert re.search(r"^MAC: sha1, Iteration \d+", info, re.M), info
    pbes = re.findall(r"(?:PKCS7 Encrypted data|Shrouded Keybag): (\S+), Iteration (\d+)", info)
    assert ("pbeWithSHA1And3-KeyTripleDES-CBC", str(PFX_KDF_ROUNDS)) in pbes
    assert {alg for alg, _ in pbes} == {"pbeWithSHA1And3-KeyTripleDES-CBC"}
    assert {int(rounds) for _, rounds in pbes} == {50000}
    assert "AES" not in info
    assert f"friendlyName: {FRIENDLY}" in info
    assert "-----BEGIN PRIVATE KEY-----" not in info

    wrong = openssl("pkcs12", "-in", path, "-passin", "pass:wrong-password", "-nokeys")
    assert wrong.returncode != 0


def test_pem_and_der_helpers(leaf: Leaf, root_ca: IssuedCa, intermediate_ca: IssuedCa) -> None:
    cert, _ = leaf
    chain = pem_chain(cert, [intermediate_ca.certificate, root_ca.certificate])
    assert load_pem_certificates(chain) == [cert, intermediate_ca.certificate, root_ca.certificate]
    assert x509.load_pem_x509_certificate(to_pem(cert)) == cert
    assert x509.load_der_x509_certificate(to_der(cert)) == cert
    assert fingerprint_sha256(cert) == hashlib.sha256(to_der(cert)).hexdigest()
    assert int(serial_hex(cert), 16) == cert.serial_number
