"""Certificate signing requests: parse, check the signature and key, extract requested names."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.errors import CsrRejected, ValidationFailed
from shared.pki.profiles import ServerProfile
from shared.policy import IPAddress, normalize_dns_name

WEAK_HASHES = (hashes.MD5, hashes.SHA1, hashes.SHA224)
STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
MIN_EXPONENT = 2**16 + 1
MAX_EXPONENT = 2**256 - 1


def _primes_below(limit: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return tuple(i for i, prime in enumerate(sieve) if prime)


# The CA/Browser Forum's Baseline Requirements (6.1.6) ask for no factor below 752.
SMALL_PRIMES = _primes_below(1000)


@dataclass(frozen=True)
class CsrInfo:
    public_key: rsa.RSAPublicKey
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]


def load_csr(data: bytes | str, profile: ServerProfile) -> CsrInfo:
    """Parse PEM (or DER) and refuse anything a server certificate must not be built from, each
    with a message that says what is wrong. Every failure of the library while reading a
    hostile request (wrong version, unknown algorithms, undecodable attributes) is a
    CsrRejected, never another exception. The order matters: what the request is, how it is
    signed, what key it carries, and only then whether the signature verifies."""
    raw = data.encode() if isinstance(data, str) else data
    if not raw.strip():
        raise CsrRejected("the CSR is empty")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(raw)
        else:
            csr = x509.load_der_x509_csr(raw)
    except x509.InvalidVersion as exc:
        raise CsrRejected("the CSR has an unknown version (only version 1 exists)") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("the CSR is not a valid PEM or DER certificate request") from exc
    _check_signature_algorithm(csr)
    public_key = _public_key(csr, profile)
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("the CSR signature cannot be checked") from exc
    if not valid:
        raise CsrRejected("the CSR signature does not verify")
    return CsrInfo(public_key, *_requested_names(csr))


def _check_signature_algorithm(csr: x509.CertificateSigningRequest) -> None:
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise CsrRejected("the CSR is signed with an algorithm certfleet does not accept") from exc
    if isinstance(algorithm, WEAK_HASHES):
        raise CsrRejected(
            f"the CSR is signed with {algorithm.name.upper()}, which is broken: "
            "sign it with SHA-256 or better"
        )
    if algorithm is None or not isinstance(algorithm, STRONG_HASHES):
        raise CsrRejected("the CSR is signed with an algorithm certfleet does not accept")


def _public_key(csr: x509.CertificateSigningRequest, profile: ServerProfile) -> rsa.RSAPublicKey:
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("the CSR key cannot be read (an unsupported key type?)") from exc
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CsrRejected("the CSR key must be RSA (XProtect clients expect RSA)")
    problem = weak_rsa_key(public_key.public_numbers(), profile)
    if problem is not None:
        raise CsrRejected(f"the CSR key {problem}")
    return public_key


def weak_rsa_key(numbers: rsa.RSAPublicNumbers, profile: ServerProfile) -> str | None:
    """Why an RSA public key must not be certified, or None: its size, its exponent (odd,
    from 2^16+1 up to 2^256-1 as the CA/Browser Forum requires), a small prime factor."""
    bits = numbers.n.bit_length()
    if bits < profile.min_rsa_bits:
        return f"is RSA {bits}; at least {profile.min_rsa_bits} is required"
    if bits > profile.max_rsa_bits:
        return f"is RSA {bits}; at most {profile.max_rsa_bits} is accepted"
    e = numbers.e
    if e % 2 == 0 or not MIN_EXPONENT <= e <= MAX_EXPONENT:
        return "has an exponent that is even or outside 65537 to 2^256-1"
    if any(numbers.n % p == 0 for p in SMALL_PRIMES):
        return "has a small prime factor (it is not a real RSA modulus)"
    return None


def _requested_names(
    csr: x509.CertificateSigningRequest,
) -> tuple[tuple[str, ...], tuple[IPAddress, ...]]:
    dns: list[str] = []
    ips: list[IPAddress] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (
        ValueError,
        TypeError,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        # A well-signed CSR can still carry extensions that do not parse (a SAN with a
        # non-ASCII dNSName or a 1-byte iPAddress): refuse it rather than crash the caller.
        raise CsrRejected("the CSR carries a malformed extension") from exc
    try:
        if san is not None:
            dns += [normalize_dns_name(n) for n in san.get_values_for_type(x509.DNSName)]
            for address in san.get_values_for_type(x509.IPAddress):
                if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
                    raise ValidationFailed(f"an IP range ({address}) is not a server name")
                ips.append(address)
        for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = attr.value if isinstance(attr.value, str) else attr.value.decode()
            if value and value not in dns and not _is_ip(value):
                dns.append(normalize_dns_name(value))
    except ValidationFailed as exc:
        raise CsrRejected(f"the CSR requests an invalid name: {exc.message}") from exc
    except (ValueError, UnicodeError, TypeError) as exc:
        # A subject attribute the library cannot decode (a BMPString of odd length,
        # UTF8String bytes that are not UTF-8).
        raise CsrRejected("the CSR subject has an attribute that cannot be decoded") from exc
    return tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
