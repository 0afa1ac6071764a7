"""A corpus of malformed and hostile certificate signing requests, made with `cryptography`
where it will build them and with raw DER where it will not (a small DER writer below).

Each case is (label, csr text, what it is aimed at). Every one must be refused by every route
that takes a CSR. The requests that are well formed ask for the names of `HOST` (registered in
examples/inventory.yaml) so that the only thing wrong with them is the thing under test."""

from __future__ import annotations

import base64
import functools
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from tests.factories import rsa_key

HOST = "hq-rec01"
FQDN = "hq-rec01.hq.vms.nordbank.example"
IP = "10.10.2.11"

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
SHA256_RSA = "1.2.840.113549.1.1.11"
SHA1_RSA = "1.2.840.113549.1.1.5"
MD5_RSA = "1.2.840.113549.1.1.4"
SHA224_RSA = "1.2.840.113549.1.1.14"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
SUBJECT_ALT_NAME = "2.5.29.17"
COMMON_NAME = "2.5.4.3"


# --- a small DER writer ---------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(items))


def integer(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(length, "big", signed=True))


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = [40 * parts[0] + parts[1], *parts[2:]]
    out = b""
    for number in body:
        chunk = [number & 0x7F]
        number >>= 7
        while number:
            chunk.append(0x80 | (number & 0x7F))
            number >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, out)


def bits(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


NULL = b"\x05\x00"


def name(value: bytes, tag: int = 0x0C) -> bytes:
    """A subject of one CN whose value is `value` under string tag `tag` (UTF8String)."""
    return seq(set_of(seq(oid(COMMON_NAME), tlv(tag, value))))


def rsa_spki(n: int, e: int, algorithm: str = RSA_ENCRYPTION) -> bytes:
    return seq(seq(oid(algorithm), NULL), bits(seq(integer(n), integer(e))))


def key_spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def san_attribute(*general_names: bytes, twice: bool = False) -> bytes:
    extension = seq(oid(SUBJECT_ALT_NAME), octets(seq(*general_names)))
    extensions = seq(extension, extension) if twice else seq(extension)
    return seq(oid(EXTENSION_REQUEST), set_of(extensions))


def dns(value: bytes) -> bytes:
    return tlv(0x82, value)


def ip(raw: bytes) -> bytes:
    return tlv(0x87, raw)


def raw_csr(
    *,
    version: int = 0,
    subject: bytes | None = None,
    spki: bytes | None = None,
    attributes: bytes = b"",
    algorithm: str = SHA256_RSA,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    signature: bytes | None = None,
    version_der: bytes | None = None,
) -> bytes:
    """A PKCS#10 request assembled by hand, signed (PKCS#1 v1.5) by a pooled key over its
    info unless `signature` is given."""
    key = rsa_key()
    info = seq(
        version_der if version_der is not None else integer(version),
        subject if subject is not None else name(FQDN.encode()),
        spki if spki is not None else key_spki(key),
        tlv(0xA0, attributes),
    )
    if signature is None:
        signature = key.sign(info, padding.PKCS1v15(), hash_algorithm or hashes.SHA256())
    alg = seq(oid(algorithm), NULL)
    return seq(info, alg, bits(signature))


def pem(der: bytes, label: str = "CERTIFICATE REQUEST") -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


# --- built with cryptography ----------------------------------------------------------------


def built(
    key: object, algorithm: hashes.HashAlgorithm | None, names: list[str] | None = None
) -> str:
    names = names if names is not None else [FQDN, HOST]
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(IP))]
            ),
            critical=False,
        )
    )
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _composite(*factors: int, bits_wanted: int = 2048) -> int:
    """An odd number of `bits_wanted` bits with the given small factors."""
    n = 1
    for f in factors:
        n *= f
    big = (1 << (bits_wanted - 1)) // n | 1
    while (n * big).bit_length() < bits_wanted:
        big += 2
    return n * big


@functools.cache
def corpus() -> tuple[tuple[str, str], ...]:
    good = rsa_key()
    valid_der = x509.load_pem_x509_csr(built(good, hashes.SHA256()).encode()).public_bytes(
        serialization.Encoding.DER
    )
    n = good.public_key().public_numbers().n
    cases: list[tuple[str, str]] = [
        # Not a request at all.
        ("plain text", "not a certificate request"),
        ("whitespace only", "   \n\t "),
        ("NUL bytes", "\x00\x00\x00"),
        ("non-ASCII", "☃" * 40),
        ("armor, junk inside", pem(b"\x13\x37" * 64)),
        ("armor, no end line", "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n"),
        ("armor, truncated DER", pem(valid_der[: len(valid_der) // 2])),
        ("armor, empty", pem(b"")),
        ("base64 without armor", base64.b64encode(valid_der).decode()),
        ("DER length overflow", pem(b"\x30\x84\xff\xff\xff\xff" + valid_der[4:])),
        ("BER indefinite length", pem(b"\x30\x80" + valid_der[4:] + b"\x00\x00")),
        ("nested sequences", pem(b"\x30\x82\x03\xe8" + b"\x30\x80" * 500)),
        (
            "a private key",
            good.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        ),
        ("a certificate, not a request", pem(valid_der, "CERTIFICATE")),
        ("oversized", "A" * 20000),
        # Keys that are not RSA.
        ("EC P-256", built(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())),
        ("EC P-384", built(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())),
        ("EC P-521", built(ec.generate_private_key(ec.SECP521R1()), hashes.SHA512())),
        ("Ed25519", built(ed25519.Ed25519PrivateKey.generate(), None)),
        ("Ed448", built(ed448.Ed448PrivateKey.generate(), None)),
        ("DSA 2048", built(dsa.generate_private_key(2048), hashes.SHA256())),
        ("RSA 1024", built(rsa_key(1024), hashes.SHA256())),
        # Signatures.
        ("SHA-1 signed", pem(raw_csr(algorithm=SHA1_RSA, hash_algorithm=hashes.SHA1()))),
        ("SHA-224 signed", pem(raw_csr(algorithm=SHA224_RSA, hash_algorithm=hashes.SHA224()))),
        ("MD5 signed (raw)", pem(raw_csr(algorithm=MD5_RSA, signature=b"\x01" * 256))),
        ("MD5 signed", pem(raw_csr(algorithm=MD5_RSA, hash_algorithm=hashes.MD5()))),
        ("unknown signature OID", pem(raw_csr(algorithm="1.2.3.4.5"))),
        ("ECDSA OID on an RSA key", pem(raw_csr(algorithm=ECDSA_SHA256))),
        ("RSA-PSS OID without parameters", pem(raw_csr(algorithm=RSASSA_PSS))),
        ("tampered signature", pem(valid_der[:-1] + bytes([valid_der[-1] ^ 0xFF]))),
        ("empty signature", pem(raw_csr(signature=b""))),
        ("SHA-256 OID, SHA-1 signature", pem(raw_csr(hash_algorithm=hashes.SHA1()))),
        # Versions.
        ("version 2 (v2)", pem(raw_csr(version=1))),
        ("version 3", pem(raw_csr(version=2))),
        ("version -1", pem(raw_csr(version=-1))),
        ("version 2^64", pem(raw_csr(version=2**64))),
        ("version not an integer", pem(raw_csr(version_der=octets(b"\x00")))),
        # RSA keys that must never be certified.
        ("exponent 1", pem(raw_csr(spki=rsa_spki(n, 1)))),
        ("exponent 2", pem(raw_csr(spki=rsa_spki(n, 2)))),
        ("exponent 3", pem(raw_csr(spki=rsa_spki(n, 3)))),
        ("even exponent 65538", pem(raw_csr(spki=rsa_spki(n, 65538)))),
        ("exponent 2^300+1", pem(raw_csr(spki=rsa_spki(n, 2**300 + 1)))),
        ("modulus with factor 3", pem(raw_csr(spki=rsa_spki(_composite(3), 65537)))),
        ("modulus with factor 997", pem(raw_csr(spki=rsa_spki(_composite(997), 65537)))),
        ("even modulus", pem(raw_csr(spki=rsa_spki(n - 1, 65537)))),
        (
            "modulus of 1024 bits",
            pem(raw_csr(spki=rsa_spki(_composite(1, bits_wanted=1024), 65537))),
        ),
        ("modulus of 16384 bits", pem(raw_csr(spki=rsa_spki((1 << 16383) + 1, 65537)))),
        ("modulus zero", pem(raw_csr(spki=rsa_spki(0, 65537)))),
        ("negative modulus", pem(raw_csr(spki=rsa_spki(-n, 65537)))),
        (
            "key bits not a sequence",
            pem(raw_csr(spki=seq(seq(oid(RSA_ENCRYPTION), NULL), bits(b"\x01\x02")))),
        ),
        ("unknown key algorithm", pem(raw_csr(spki=rsa_spki(n, 65537, "1.2.3.4")))),
        ("RSASSA-PSS key", pem(raw_csr(spki=rsa_spki(n, 65537, RSASSA_PSS)))),
        # Subjects.
        ("CN not UTF-8", pem(raw_csr(subject=name(b"\xff\xfe\xfd")))),
        ("CN BMPString of odd length", pem(raw_csr(subject=name(b"\x00a\x00", tag=0x1E)))),
        ("CN with NUL", pem(raw_csr(subject=name(b"hq-rec01\x00.evil.example")))),
        ("CN wildcard", pem(raw_csr(subject=name(b"*.hq.vms.nordbank.example")))),
        ("CN with spaces", pem(raw_csr(subject=name(b"not a host name")))),
        ("CN of 300 characters", pem(raw_csr(subject=name(b"a" * 300)))),
        (
            "CN of another site's host",
            built(good, hashes.SHA256(), ["aar-rec01.aar.vms.nordbank.example"]),
        ),
        ("CN with @ in a PrintableString", pem(raw_csr(subject=name(b"rec@01", tag=0x13)))),
        # Subject alternative names.
        ("SAN wildcard", pem(raw_csr(attributes=san_attribute(dns(b"*.hq.vms.nordbank.example"))))),
        ("SAN non-ASCII", pem(raw_csr(attributes=san_attribute(dns("hq-réc01.example".encode()))))),
        ("SAN IP of 1 byte", pem(raw_csr(attributes=san_attribute(ip(b"\x0a"))))),
        (
            "SAN IP range",
            pem(raw_csr(attributes=san_attribute(ip(b"\x0a\x0a\x02\x0b\xff\xff\xff\x00")))),
        ),
        ("SAN twice", pem(raw_csr(attributes=san_attribute(dns(FQDN.encode()), twice=True)))),
        (
            "SAN outside the site's suffixes",
            built(good, hashes.SHA256(), [FQDN, "hq-rec01.evil.example"]),
        ),
        ("SAN empty dNSName", pem(raw_csr(attributes=san_attribute(dns(b""))))),
        (
            "SAN of unregistered names",
            built(
                good, hashes.SHA256(), [FQDN, *[f"h{i}.hq.vms.nordbank.example" for i in range(40)]]
            ),
        ),
        (
            "extension request not a sequence",
            pem(raw_csr(attributes=seq(oid(EXTENSION_REQUEST), set_of(octets(b"junk"))))),
        ),
    ]
    return tuple(cases)
