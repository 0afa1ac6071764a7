"""Where workers may connect: one policy for webhooks, notice webhooks, SSH and TLS probes.

A destination is resolved once, every address it resolves to is checked, and the connection
is made to a checked address (never a second lookup that could answer differently). Refused:
loopback, link-local (which holds the cloud metadata services at 169.254.169.254), multicast,
unspecified and reserved addresses, and the other metadata addresses below, unless the
deployment allows a network by configuration (CERTFLEET_OUTBOUND_ALLOW, e.g. 127.0.0.0/8 for
a lab or the tests). Private ranges are allowed: that is where a VMS lives.

Errors are categories ("refused", "timed out", ...), never what a peer said: a user must not
learn the banner of a port by pointing a setting at it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, Azure, GCP, OpenStack, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)


class DestinationRefused(Exception):
    """A destination this deployment does not connect to, or could not reach. `category` is
    one short word for people and metrics; the message names only what the user wrote."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.message = message
        self.category = category


def forbidden_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a destination by default, or None when it is one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden_kind(ip.ipv4_mapped)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return kind
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(cls, networks: Iterable[str]) -> DestinationPolicy:
        parsed = []
        for value in networks:
            try:
                parsed.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network") from None
        return cls(tuple(parsed))

    def refusal(self, ip: IPAddress) -> str | None:
        """Why this policy refuses `ip`, or None."""
        kind = forbidden_kind(ip)
        if kind is None or any(ip.version == n.version and ip in n for n in self.allowed):
            return None
        return kind

    def check_literal(self, host: str) -> None:
        """Refuse an IP literal at once (when a setting is saved); names are checked when
        they are resolved, at connection time."""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        kind = self.refusal(ip)
        if kind is not None:
            raise DestinationRefused(_refused(host, kind), "not allowed")

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to, each allowed; DestinationRefused otherwise."""
        try:
            infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise DestinationRefused(f"{host} does not resolve", "unresolvable") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for ip in addresses:
            kind = self.refusal(ip)
            if kind is not None:
                raise DestinationRefused(_refused(host, kind), "not allowed")
        if not addresses:
            raise DestinationRefused(f"{host} does not resolve", "unresolvable")
        return addresses

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection to an allowed address of `host`: the first that answers."""
        last = "unreachable"
        for ip in self.resolve(host, port):
            try:
                return socket.create_connection((str(ip), port), timeout=timeout)
            except OSError as exc:
                last = connection_category(exc)
        raise DestinationRefused(f"cannot connect to {host}:{port}: {last}", last)


def connection_category(exc: BaseException) -> str:
    """An OS error of connecting or talking to a peer, as one word."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "connection closed"
    return "unreachable"


def _refused(host: str, kind: str) -> str:
    return (
        f"{host} is a {kind} address, which this deployment does not connect to "
        "(CERTFLEET_OUTBOUND_ALLOW)"
    )
