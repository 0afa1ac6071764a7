"""Plain functions that build rows, keys, CSRs and files for tests.

Row factories add to the given session and flush (so IDs are set) but never commit: the
caller's `with db.session()` block decides that.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from shared.authorities import generate_material
from shared.clock import Clock
from shared.db.models import Authority, Host, IssuanceRequest, Site
from shared.db.session import Database
from shared.destinations import DestinationPolicy
from shared.issuance import request_fingerprint
from shared.pki.keys import generate_rsa_key

FIXED_NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
# The tests' servers listen on loopback, which a deployment refuses unless it allows it.
LOOPBACK = DestinationPolicy.build(["127.0.0.0/8", "::1/128"])
SSH_KEY_VARIABLE = "CERTFLEET_SECRET_TEST_SSH_KEY"
# Delivery roots for tests that are not about them: the whole file system.
ANYWHERE = (Path("/"),)

SITE_SUFFIX = "site1.example.com"
SITE_RANGE = "10.1.0.0/16"

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


# --- Keys -----------------------------------------------------------------------------------


class KeyPool:
    """Pre-generated RSA-2048 keys, made on first use and handed out round-robin, so the suite
    pays for a handful of key generations instead of one per test. Consecutive calls return
    different keys."""

    SIZE = 6

    def __init__(self) -> None:
        self._keys: list[rsa.RSAPrivateKey] = []
        self._next = itertools.count()
        self._lock = threading.Lock()

    def get(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if not self._keys:
                self._keys = [generate_rsa_key(2048) for _ in range(self.SIZE)]
            return self._keys[next(self._next) % self.SIZE]


KEY_POOL = KeyPool()


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key: a cached one for 2048 bits, a fresh one for any other size."""
    if bits == 2048:
        return KEY_POOL.get()
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_der(key: PublicKeyTypes | PrivateKeyTypes) -> bytes:
    """The SubjectPublicKeyInfo of a key (public or private), to compare keys of any type."""
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    cn: str | None = None,
) -> str:
    """A real PEM CSR signed by `key`. CN defaults to the first DNS name; no SAN if no names."""
    common_name = cn if cn is not None else (dns_names[0] if dns_names else None)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# --- Rows -----------------------------------------------------------------------------------


def make_pending_authority(
    session: Session,
    clock: Clock,
    name: str | None = None,
    *,
    kind: str = "root",
    parent: Authority | None = None,
    validity_days: int = 3650,
) -> Authority:
    authority = Authority(
        name=name or unique(f"pending-{kind}"),
        kind=kind,
        parent_id=parent.id if parent else None,
        status="pending",
        key_bits=2048,
        validity_days=validity_days,
        created_at=clock.now(),
    )
    session.add(authority)
    session.flush()
    return authority


def _activate(session: Session, authority: Authority, passphrase: str, clock: Clock) -> Authority:
    """Generate the key material shared.authorities makes for a pending row."""
    generate_material(session, authority, passphrase=passphrase, now=clock.now())
    session.flush()
    return authority


def make_root_authority(
    session: Session,
    passphrase: str,
    clock: Clock,
    name: str | None = None,
    *,
    validity_days: int = 3650,
) -> Authority:
    """An active root."""
    pending = make_pending_authority(
        session, clock, name or unique("root"), validity_days=validity_days
    )
    return _activate(session, pending, passphrase, clock)


def make_intermediate_authority(
    session: Session,
    parent: Authority,
    passphrase: str,
    clock: Clock,
    name: str | None = None,
    *,
    validity_days: int = 1825,
) -> Authority:
    pending = make_pending_authority(
        session,
        clock,
        name or unique("intermediate"),
        kind="intermediate",
        parent=parent,
        validity_days=validity_days,
    )
    return _activate(session, pending, passphrase, clock)


def make_site(
    session: Session,
    authority: Authority,
    name: str | None = None,
    dns_suffixes: Sequence[str] = (SITE_SUFFIX,),
    ip_ranges: Sequence[str] = (SITE_RANGE,),
    *,
    allow_short_names: bool = True,
) -> Site:
    site = Site(
        name=name or unique("site"),
        authority_id=authority.id,
        dns_suffixes=list(dns_suffixes),
        ip_ranges=list(ip_ranges),
        allow_short_names=allow_short_names,
    )
    session.add(site)
    session.flush()
    return site


def make_host(
    session: Session,
    site: Site,
    name: str | None = None,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[str] | None = None,
    roles: Sequence[str] = ("recording",),
) -> Host:
    """A host; by default named `<name>.<first site suffix>` and `<name>`, with one IP."""
    host_name = name or unique("rec")
    suffix = site.dns_suffixes[0] if site.dns_suffixes else SITE_SUFFIX
    default_dns = [f"{host_name}.{suffix}", host_name]
    host = Host(
        site_id=site.id,
        name=host_name,
        dns_names=list(dns_names) if dns_names is not None else default_dns,
        ip_addresses=list(ip_addresses) if ip_addresses is not None else ["10.1.0.10"],
        roles=list(roles),
    )
    session.add(host)
    session.flush()
    return host


def make_request(
    session: Session,
    host: Host,
    csr_pem: str | None = None,
    validity_days: int = 397,
    *,
    status: str = "queued",
) -> IssuanceRequest:
    request = IssuanceRequest(
        host_id=host.id,
        csr_pem=csr_pem,
        validity_days=validity_days,
        status=status,
        request_hash=request_fingerprint(host.id, csr_pem, validity_days),
        requested_by="tests",
    )
    session.add(request)
    session.flush()
    return request


def issue_certificate(
    database: Database, clock: Clock, host_id: int, passphrase: str, data_key: str
) -> int:
    """Queue a server-side-key request for the host and run the issuer on it, in process;
    returns the new certificate's ID."""
    from services.issuer import service

    with database.session() as session:
        host = session.get(Host, host_id)
        assert host is not None
        request_id = make_request(session, host).id
    result = service.issue_batch(
        database,
        [request_id],
        signers=service.SignerCache(),
        secrets=service.Secrets(passphrase, data_key),
        clock=clock,
    )
    return result.certificate_ids[0]


# --- Files and the openssl CLI --------------------------------------------------------------


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def write_key(path: Path, key: rsa.RSAPrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI; check the return code yourself (check=False)."""
    return subprocess.run(
        ["openssl", *(str(a) for a in args)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def openssl_verify(
    tmp_path: Path,
    leaf: x509.Certificate,
    root: x509.Certificate,
    intermediates: Sequence[x509.Certificate] = (),
    *extra: str,
    at: dt.datetime | None = None,
) -> subprocess.CompletedProcess[str]:
    """`openssl verify -CAfile root.pem [-untrusted intermediates.pem] leaf.pem`, optionally
    at a given time (so certificates made with a fixed clock verify on any day)."""
    root_file = write_pem(tmp_path / f"{unique('root')}.pem", root)
    leaf_file = write_pem(tmp_path / f"{unique('leaf')}.pem", leaf)
    args: list[str | Path] = ["verify", "-CAfile", root_file]
    if intermediates:
        args += ["-untrusted", write_pem(tmp_path / f"{unique('chain')}.pem", *intermediates)]
    if at is not None:
        args += ["-attime", str(int(at.timestamp()))]
    return openssl(*args, *extra, leaf_file)
