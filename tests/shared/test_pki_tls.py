"""A real TLS handshake with hostname checking, as a Smart Client or .NET client does it.

Certificates here are made at the real current time (`wall_clock`): Python's ssl module
verifies against the system clock.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509

from shared.clock import FixedClock
from shared.pki.ca import IssuedCa, create_intermediate_ca, create_root_ca
from shared.pki.export import pem_chain
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests.factories import rsa_key, write_key, write_pem
from tests.tls import handshake, tls_server

DNS = "rec01.site1.example.com"


def client_fetch(port: int, cafile: Path, server_hostname: str) -> str:
    """Handshake as a strict client; return the CN of the certificate the server presented."""
    der = handshake(port, cafile, server_hostname)
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


@pytest.fixture
def pki(wall_clock: FixedClock) -> tuple[IssuedCa, IssuedCa]:
    root = create_root_ca("tls test root", now=wall_clock.now(), key_bits=2048, validity_days=30)
    inter = create_intermediate_ca(
        "tls test intermediate",
        parent=root,
        now=wall_clock.now(),
        key_bits=2048,
        validity_days=30,
    )
    return root, inter


def _serve_files(
    tmp_path: Path, issuer: IssuedCa, chain: Sequence[x509.Certificate], now: FixedClock
) -> tuple[Path, Path]:
    key = rsa_key()
    leaf = sign_server_certificate(
        key.public_key(),
        SubjectNames((DNS, "rec01"), (ipaddress.ip_address("127.0.0.1"),)),
        issuer,
        now=now.now(),
        validity_days=397,
        profile=XPROTECT_SERVER,
    )
    certfile = tmp_path / "server-chain.pem"
    certfile.write_bytes(pem_chain(leaf, chain))
    return certfile, write_key(tmp_path / "server-key.pem", key)


@pytest.mark.parametrize("via", ["root", "intermediate"])
def test_handshake_by_dns_name(
    tmp_path: Path, pki: tuple[IssuedCa, IssuedCa], wall_clock: FixedClock, via: str
) -> None:
    root, inter = pki
    issuer, chain = (root, []) if via == "root" else (inter, [inter.certificate])
    certfile, keyfile = _serve_files(tmp_path, issuer, chain, wall_clock)
    trust = write_pem(tmp_path / "trust.pem", root.certificate)
    with tls_server(certfile, keyfile) as port:
        assert client_fetch(port, trust, DNS) == f"CN={DNS}"
        assert client_fetch(port, trust, "rec01") == f"CN={DNS}"


def test_handshake_by_ip_san(
    tmp_path: Path, pki: tuple[IssuedCa, IssuedCa], wall_clock: FixedClock
) -> None:
    root, inter = pki
    certfile, keyfile = _serve_files(tmp_path, inter, [inter.certificate], wall_clock)
    trust = write_pem(tmp_path / "trust.pem", root.certificate)
    with tls_server(certfile, keyfile) as port:
        assert client_fetch(port, trust, "127.0.0.1") == f"CN={DNS}"


def test_name_outside_the_san_is_refused(
    tmp_path: Path, pki: tuple[IssuedCa, IssuedCa], wall_clock: FixedClock
) -> None:
    root, inter = pki
    certfile, keyfile = _serve_files(tmp_path, inter, [inter.certificate], wall_clock)
    trust = write_pem(tmp_path / "trust.pem", root.certificate)
    with tls_server(certfile, keyfile) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            client_fetch(port, trust, "rec02.site1.example.com")
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            client_fetch(port, trust, "127.0.0.2")
        # The server is still fine for a correct name afterwards.
        assert client_fetch(port, trust, DNS) == f"CN={DNS}"


def test_untrusted_root_is_refused(
    tmp_path: Path, pki: tuple[IssuedCa, IssuedCa], wall_clock: FixedClock
) -> None:
    _, inter = pki
    certfile, keyfile = _serve_files(tmp_path, inter, [inter.certificate], wall_clock)
    stranger = create_root_ca("stranger", now=wall_clock.now(), key_bits=2048, validity_days=30)
    trust = write_pem(tmp_path / "stranger.pem", stranger.certificate)
    with (
        tls_server(certfile, keyfile) as port,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        client_fetch(port, trust, DNS)


def test_missing_intermediate_in_served_chain_is_refused(
    tmp_path: Path, pki: tuple[IssuedCa, IssuedCa], wall_clock: FixedClock
) -> None:
    """Why the chain matters: a leaf from the intermediate served alone does not verify."""
    root, inter = pki
    certfile, keyfile = _serve_files(tmp_path, inter, [], wall_clock)
    trust = write_pem(tmp_path / "trust.pem", root.certificate)
    with tls_server(certfile, keyfile) as port, pytest.raises(ssl.SSLCertVerificationError):
        client_fetch(port, trust, DNS)
