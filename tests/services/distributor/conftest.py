"""Fixtures for the delivery targets: a real OpenSSH server on loopback, a real HTTPS webhook
receiver with a certificate from shared.pki, and bundles made of real certificates and keys.

Each pytest-xdist worker starts its own sshd on a free port (session scope); the receiver is
started per test, its CA and certificate once per session.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.distributor.targets.base import Bundle
from services.distributor.targets.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from shared.pki.ca import IssuedCa, create_root_ca
from shared.pki.export import fingerprint_sha256, to_pem
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests.factories import FIXED_NOW, rsa_key, write_key, write_pem

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
WEBHOOK_SECRET = "webhook-secret-9f8e7d6c5b4a"

BundleFactory = Callable[..., Bundle]


# --- Bundles --------------------------------------------------------------------------------


def key_pem_of(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def make_bundle(root_ca: IssuedCa, intermediate_ca: IssuedCa) -> BundleFactory:
    """Bundles for `host`: a fresh leaf (pooled RSA key) under the test intermediate, with
    the key unless with_key=False; kind="trust" gives a trust-only bundle."""

    def make(host: str = "rec01", *, with_key: bool = True, kind: str = "certificate") -> Bundle:
        trust = to_pem(root_ca.certificate)
        names = (f"{host}.site1.example.com", host, "127.0.0.1")
        if kind == "trust":
            return Bundle(host, "trust", trust, host_names=names, fingerprint="f" * 64)
        key = rsa_key()
        leaf = sign_server_certificate(
            key.public_key(),
            SubjectNames((f"{host}.site1.example.com", host)),
            intermediate_ca,
            now=FIXED_NOW,
            validity_days=397,
            profile=XPROTECT_SERVER,
        )
        return Bundle(
            host,
            "certificate",
            trust,
            host_names=names,
            certificate_pem=to_pem(leaf),
            chain_pem=to_pem(intermediate_ca.certificate) + trust,
            fingerprint=fingerprint_sha256(leaf),
            key_pem=key_pem_of(key) if with_key else None,
        )

    return make


@pytest.fixture
def bundle(make_bundle: BundleFactory) -> Bundle:
    return make_bundle()


# --- A real HTTPS webhook receiver ----------------------------------------------------------


@dataclass(frozen=True)
class ReceiverPki:
    ca_file: Path
    chain_file: Path
    key_file: Path


@pytest.fixture(scope="session")
def receiver_pki(tmp_path_factory: pytest.TempPathFactory) -> ReceiverPki:
    """A root CA and a server certificate for 127.0.0.1, valid now on the real clock (the
    TLS client checks the system time)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    root = create_root_ca("certfleet webhook test root", now=now, key_bits=2048, validity_days=30)
    key = rsa_key()
    leaf = sign_server_certificate(
        key.public_key(),
        SubjectNames(("localhost",), (ipaddress.ip_address("127.0.0.1"),)),
        root,
        now=now,
        validity_days=7,
        profile=XPROTECT_SERVER,
    )
    workdir = tmp_path_factory.mktemp("receiver")
    return ReceiverPki(
        ca_file=write_pem(workdir / "root.pem", root.certificate),
        chain_file=write_pem(workdir / "server.pem", leaf),
        key_file=write_key(workdir / "server.key", key),
    )


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool


@dataclass
class Receiver:
    """Answers POST /status/<code> with <code> and anything else with 204; records every
    request with the result of checking its signature."""

    base_url: str
    ca_file: Path
    secret: str
    received: list[Received] = field(default_factory=list)

    def url(self, status: int | None = None) -> str:
        return f"{self.base_url}/status/{status}" if status else f"{self.base_url}/hook"


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        valid = verify_signature(
            self.receiver.secret,
            self.headers.get(TIMESTAMP_HEADER, ""),
            body,
            self.headers.get(SIGNATURE_HEADER, ""),
            now=time.time(),
        )
        self.receiver.received.append(Received(self.path, dict(self.headers), body, valid))
        path = urlsplit(self.path).path
        status = int(path.removeprefix("/status/")) if path.startswith("/status/") else 204
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "https://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver(receiver_pki: ReceiverPki) -> Iterator[Receiver]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(receiver_pki.chain_file, receiver_pki.key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    state = Receiver(f"https://127.0.0.1:{port}", receiver_pki.ca_file, WEBHOOK_SECRET)
    server.RequestHandlerClass = type("Handler", (_Handler,), {"receiver": state})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
