"""RSA keys and their encryption at rest.

Keys at rest are PKCS#8 PEM encrypted with the best available algorithm for a passphrase
(CERTFLEET_CA_KEY_PASSPHRASE for CA keys, CERTFLEET_DATA_KEY for server-held host keys):
a standard format that `openssl pkey` can read, with no home-made crypto.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.errors import KeyUnavailable, ValidationFailed
from shared.pki.profiles import ALLOWED_RSA_BITS

PUBLIC_EXPONENT = 65537


def generate_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    if bits not in ALLOWED_RSA_BITS:
        raise ValidationFailed(f"RSA key size must be one of {ALLOWED_RSA_BITS}, not {bits}")
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)


def encrypt_private_key(key: rsa.RSAPrivateKey, passphrase: str) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(passphrase.encode()),
    )


def decrypt_private_key(sealed: bytes, passphrase: str) -> rsa.RSAPrivateKey:
    """Load an encrypted key; a wrong passphrase is a KeyUnavailable, never a stack trace."""
    try:
        key = serialization.load_pem_private_key(sealed, password=passphrase.encode())
    except (ValueError, TypeError) as exc:
        raise KeyUnavailable(
            "the stored key cannot be decrypted with the configured secret"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyUnavailable("the stored key is not an RSA key")
    return key
