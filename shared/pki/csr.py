"""Certificate signing requests: parse, check the signature and key, extract requested names."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.errors import CsrRejected, ValidationFailed
from shared.pki.profiles import ServerProfile
from shared.policy import IPAddress, normalize_dns_name


@dataclass(frozen=True)
class CsrInfo:
    public_key: rsa.RSAPublicKey
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]


def load_csr(data: bytes | str, profile: ServerProfile) -> CsrInfo:
    """Parse PEM (or DER) and refuse anything a server certificate must not be built from."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(raw)
        else:
            csr = x509.load_der_x509_csr(raw)
    except ValueError as exc:
        raise CsrRejected("the CSR is not a valid PEM or DER certificate request") from exc
    if not csr.is_signature_valid:
        raise CsrRejected("the CSR signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CsrRejected("the CSR key must be RSA (XProtect clients expect RSA)")
    if public_key.key_size < profile.min_rsa_bits:
        raise CsrRejected(
            f"the CSR key is RSA {public_key.key_size}; at least {profile.min_rsa_bits} is required"
        )
    return CsrInfo(public_key, *_requested_names(csr))


def _requested_names(
    csr: x509.CertificateSigningRequest,
) -> tuple[tuple[str, ...], tuple[IPAddress, ...]]:
    dns: list[str] = []
    ips: list[IPAddress] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
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
    return tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
