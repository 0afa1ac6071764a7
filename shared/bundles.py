"""What a host receives: the certificate, its issuers, the trust bundle and, for keys held
by certfleet, the key (and optionally a PFX). Assembled from the database in memory only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session, undefer

from shared.authorities import chain_above, trust_anchors
from shared.db.models import Certificate, Delivery
from shared.delivery_settings import ENV_NAME
from shared.errors import ConfigError, KeyUnavailable
from shared.pki.export import to_pem, to_pfx
from shared.pki.keys import decrypt_private_key

BundleKind = Literal["certificate", "trust"]

# File names every file-based target writes, and their modes: keys are 0600, the rest 0644
# (or 0640 where a group of the host should read them).
CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
FULLCHAIN_FILE = "fullchain.pem"
KEY_FILE = "key.pem"
TRUST_FILE = "ca-bundle.pem"
PFX_FILE = "certificate.pfx"
KEY_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class Bundle:
    """What one host receives. `key_pem` (unencrypted PKCS#8) and `pfx` exist only for
    server-held keys and never appear in repr(), logs or errors."""

    host_name: str
    kind: BundleKind
    trust_pem: bytes
    # The host's registered DNS names and addresses: where a target may connect to it.
    host_names: tuple[str, ...] = ()
    certificate_pem: bytes | None = None
    chain_pem: bytes | None = None
    fingerprint: str | None = None
    key_pem: bytes | None = field(default=None, repr=False)
    pfx: bytes | None = field(default=None, repr=False)

    def files(self, group_readable: bool = False) -> dict[str, tuple[bytes, int]]:
        """File name -> (content, mode) for file-based targets."""
        public = 0o640 if group_readable else PUBLIC_MODE
        out: dict[str, tuple[bytes, int]] = {TRUST_FILE: (self.trust_pem, public)}
        if self.certificate_pem is not None:
            out[CERT_FILE] = (self.certificate_pem, public)
        if self.chain_pem is not None:
            out[CHAIN_FILE] = (self.chain_pem, public)
            out[FULLCHAIN_FILE] = ((self.certificate_pem or b"") + self.chain_pem, public)
        if self.key_pem is not None:
            out[KEY_FILE] = (self.key_pem, KEY_MODE)
        if self.pfx is not None:
            out[PFX_FILE] = (self.pfx, KEY_MODE)
        return out


def trust_bundle_pem(session: Session) -> bytes:
    return b"".join(to_pem(c) for c in trust_anchors(session))


def fingerprint_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_bundle(
    session: Session,
    delivery: Delivery,
    *,
    data_key: str | None,
    environ: Mapping[str, str],
) -> Bundle:
    host = delivery.host
    names = (*host.dns_names, *host.ip_addresses)
    trust = trust_bundle_pem(session)
    if delivery.kind == "trust":
        return Bundle(
            host.name, "trust", trust, host_names=names, fingerprint=fingerprint_of(trust)
        )
    certificate = session.get(
        Certificate, delivery.certificate_id, options=[undefer(Certificate.encrypted_key)]
    )
    assert certificate is not None
    leaf = x509.load_pem_x509_certificate(certificate.certificate_pem.encode())
    issuers = chain_above(session, certificate.authority)
    key_pem = pfx = None
    if certificate.encrypted_key is not None and delivery.method != "agent":
        if not data_key:
            raise ConfigError("CERTFLEET_DATA_KEY is not set on the distributor")
        key = decrypt_private_key(certificate.encrypted_key, data_key)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pfx = _pfx_if_asked(host.delivery.get("settings", {}), environ, leaf, key, issuers)
    return Bundle(
        host.name,
        "certificate",
        trust,
        host_names=names,
        certificate_pem=to_pem(leaf),
        chain_pem=b"".join(to_pem(c) for c in issuers),
        fingerprint=certificate.fingerprint,
        key_pem=key_pem,
        pfx=pfx,
    )


def _pfx_if_asked(
    settings: Mapping[str, Any],
    environ: Mapping[str, str],
    leaf: x509.Certificate,
    key: rsa.RSAPrivateKey,
    issuers: list[x509.Certificate],
) -> bytes | None:
    """A Windows host's file target may also get a PFX; its password is named by the
    distributor's CERTFLEET_SECRET_* variable `pfx_password_env`, never stored in the
    inventory (`environ` holds only those variables)."""
    name = settings.get("pfx_password_env")
    if not name:
        return None
    password = environ.get(str(name)) if ENV_NAME.match(str(name)) else None
    if not password:
        raise KeyUnavailable(f"the PFX password variable {name} is not set on the distributor")
    friendly = f"certfleet {leaf.subject.rfc4514_string().removeprefix('CN=')}"
    return to_pfx(leaf, key, issuers, password, friendly)
