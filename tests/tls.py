"""A real TLS server and client on loopback, for proving that an issued certificate works
for a client that trusts only the trust bundle and checks the host name."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tls_server(chain_file: Path, key_file: Path, key_password: str | None = None) -> Iterator[int]:
    """Serve TLS on a free loopback port until the block ends; yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain_file, key_file, password=key_password)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"certfleet\n")
            except (ssl.SSLError, OSError):
                conn.close()  # the client refused the certificate: some tests want that

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def handshake(port: int, cafile: Path, server_hostname: str) -> bytes:
    """Connect as a strict client: trust only `cafile`, check the host name. Returns the DER
    certificate the server presented; raises ssl.SSLCertVerificationError on a mismatch."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        assert tls.recv(16) == b"certfleet\n"
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der
