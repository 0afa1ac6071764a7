"""The in-process references: what `cryptography` does on every core of this machine with no
API, queue or database in the way.

- sign: parse and verify a CSR (shared.pki.csr.load_csr) and build, sign and PEM-encode a
  server certificate (shared.pki.signing.sign_server_certificate): the issuer's work per
  request, with a CA key of the same size as the stack's;
- keygen: RSA-2048 key generation (shared.pki.keys.generate_rsa_key).

Each worker process times its own loop after start-up; the rate is the total over the span
from the first start to the last end."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.bench.env import dns_name, host_key, make_csr
from shared.pki.ca import IssuedCa, create_root_ca
from shared.pki.csr import load_csr
from shared.pki.export import to_pem
from shared.pki.keys import generate_rsa_key
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate

DISTINCT_CSRS = 16


@dataclass(frozen=True)
class RawResult:
    count: int
    seconds: float
    processes: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sign_worker(args: tuple[bytes, bytes, list[str], int]) -> tuple[int, float, float]:
    ca_pem, ca_key_pem, csrs, count = args
    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = IssuedCa(x509.load_pem_x509_certificate(ca_pem), key)
    now = dt.datetime.now(dt.UTC)
    started = time.time()
    for i in range(count):
        info = load_csr(csrs[i % len(csrs)], XPROTECT_SERVER)
        certificate = sign_server_certificate(
            info.public_key,
            SubjectNames(info.dns_names),
            signer,
            now=now,
            validity_days=XPROTECT_SERVER.default_validity_days,
            profile=XPROTECT_SERVER,
        )
        to_pem(certificate)
    return count, started, time.time()


def _keygen_worker(count: int) -> tuple[int, float, float]:
    started = time.time()
    for _ in range(count):
        generate_rsa_key(2048)
    return count, started, time.time()


def _spread(total: int, processes: int) -> list[int]:
    return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]


def _combine(parts: list[tuple[int, float, float]], processes: int) -> RawResult:
    count = sum(p[0] for p in parts)
    span = max(p[2] for p in parts) - min(p[1] for p in parts)
    return RawResult(count, span, processes)


def raw_sign(total: int, *, ca_bits: int, processes: int | None = None) -> RawResult:
    processes = processes or cores()
    ca = create_root_ca(
        "Bench Raw Root", now=dt.datetime.now(dt.UTC), key_bits=ca_bits, validity_days=3650
    )
    ca_pem = to_pem(ca.certificate)
    ca_key = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = host_key()
    csrs = [make_csr(key, dns_name(i)) for i in range(DISTINCT_CSRS)]
    jobs = [(ca_pem, ca_key, csrs, n) for n in _spread(total, processes) if n]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return _combine(pool.map(_sign_worker, jobs), processes)


def raw_keygen(total: int, processes: int | None = None) -> RawResult:
    processes = processes or cores()
    jobs = [n for n in _spread(total, processes) if n]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return _combine(pool.map(_keygen_worker, jobs), processes)
