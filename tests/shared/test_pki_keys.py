"""Keys at rest: encrypted PKCS#8 that only the right secret (and openssl) can open."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.errors import KeyUnavailable, ValidationFailed
from shared.pki.keys import decrypt_private_key, encrypt_private_key, generate_rsa_key
from tests.factories import openssl, rsa_key


def _pem_body(pem: bytes) -> str:
    return "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))


def test_round_trip(data_key: str) -> None:
    key = rsa_key()
    sealed = encrypt_private_key(key, data_key)
    opened = decrypt_private_key(sealed, data_key)
    assert opened.private_numbers() == key.private_numbers()


def test_wrong_passphrase_is_key_unavailable(data_key: str) -> None:
    sealed = encrypt_private_key(rsa_key(), data_key)
    with pytest.raises(KeyUnavailable) as info:
        decrypt_private_key(sealed, data_key + "-wrong")
    assert data_key not in info.value.message


def test_garbage_is_key_unavailable(data_key: str) -> None:
    with pytest.raises(KeyUnavailable):
        decrypt_private_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n", data_key)


def test_sealed_pem_hides_the_key(data_key: str) -> None:
    key = rsa_key()
    sealed = encrypt_private_key(key, data_key)
    plain = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert sealed.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    body = _pem_body(plain)
    assert body[100:160] not in _pem_body(sealed)
    assert body not in sealed.decode()
    assert data_key.encode() not in sealed


def test_openssl_reads_the_sealed_key(tmp_path: Path, data_key: str) -> None:
    key = rsa_key()
    path = tmp_path / "key.pem"
    path.write_bytes(encrypt_private_key(key, data_key))

    result = openssl("pkey", "-in", path, "-passin", f"pass:{data_key}", "-pubout")
    assert result.returncode == 0, result.stderr
    expected = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert result.stdout.encode() == expected

    wrong = openssl("pkey", "-in", path, "-passin", "pass:not-the-data-key", "-noout")
    assert wrong.returncode != 0


def test_non_rsa_key_is_refused(data_key: str) -> None:
    sealed = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(data_key.encode()),
    )
    with pytest.raises(KeyUnavailable, match="not an RSA key"):
        decrypt_private_key(sealed, data_key)


def test_only_allowed_rsa_sizes_are_generated() -> None:
    with pytest.raises(ValidationFailed, match="2048"):
        generate_rsa_key(1024)
    assert generate_rsa_key(2048).key_size == 2048
