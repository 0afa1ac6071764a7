"""Probing a host's TLS endpoints: which certificate does it present right now?"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from typing import Protocol

from shared.destinations import DestinationPolicy, DestinationRefused, connection_category


class ProbeFailed(Exception):
    """The endpoint could not be reached or did not complete a TLS handshake."""


class Prober(Protocol):
    def presented_fingerprint(self, endpoint: str) -> str: ...


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


class TlsProber:
    """A real TLS handshake. Trust is not the question here (the client side is proven by the
    trust bundle); the presented certificate's SHA-256 fingerprint is. It connects only where
    the outbound destination policy allows, and says why a probe failed in one category."""

    def __init__(self, timeout: float = 5.0, policy: DestinationPolicy | None = None) -> None:
        self.timeout = timeout
        self.policy = policy or DestinationPolicy()

    def presented_fingerprint(self, endpoint: str) -> str:
        host, port = split_endpoint(endpoint)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        server_name = None if _is_ip(host) else host
        try:
            raw = self.policy.connect(host, port, self.timeout)
        except DestinationRefused as exc:
            raise ProbeFailed(f"{endpoint}: {exc.category}") from exc
        try:
            with raw, context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLError as exc:
            raise ProbeFailed(f"{endpoint}: TLS failed") from exc
        except OSError as exc:
            raise ProbeFailed(f"{endpoint}: {connection_category(exc)}") from exc
        if der is None:
            raise ProbeFailed(f"{endpoint}: no certificate presented")
        return hashlib.sha256(der).hexdigest()


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
