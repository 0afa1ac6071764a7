"""Name policy: which DNS names and IP addresses a site's certificates may carry.

Small, ordered functions in the manner of a CA policy engine: normalize, then check syntax,
then check the site's allowed suffixes and IP ranges. Each returns readable reasons rather
than raising, so callers can report every problem at once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import PolicyViolation, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


def normalize_dns_name(name: str) -> str:
    """Lower-case, strip one trailing dot, and check LDH syntax; wildcards are refused."""
    candidate = name.strip().lower().removesuffix(".")
    if not candidate or len(candidate) > 253:
        raise ValidationFailed(f"invalid DNS name {name!r}: empty or longer than 253 characters")
    if "*" in candidate:
        raise ValidationFailed(f"invalid DNS name {name!r}: wildcards are not issued")
    for label in candidate.split("."):
        if not _LABEL.match(label):
            raise ValidationFailed(f"invalid DNS name {name!r}: bad label {label!r}")
    return candidate


def parse_ip(value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError as exc:
        raise ValidationFailed(f"invalid IP address {value!r}") from exc


def parse_network(value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValidationFailed(f"invalid IP range {value!r}") from exc


def normalize_dns_suffix(suffix: str) -> str:
    return normalize_dns_name(suffix.removeprefix("."))


@dataclass(frozen=True)
class SitePolicy:
    """What a site allows. Empty suffixes allow no FQDN; empty ranges allow no IP SAN."""

    dns_suffixes: tuple[str, ...]
    ip_ranges: tuple[IPNetwork, ...]
    allow_short_names: bool = True

    @classmethod
    def build(
        cls,
        dns_suffixes: Iterable[str],
        ip_ranges: Iterable[str],
        allow_short_names: bool = True,
    ) -> SitePolicy:
        return cls(
            tuple(normalize_dns_suffix(s) for s in dns_suffixes),
            tuple(parse_network(r) for r in ip_ranges),
            allow_short_names,
        )

    def dns_name_allowed(self, name: str) -> bool:
        if "." not in name:
            # Workgroup clients often connect by the bare host name.
            return self.allow_short_names
        return any(name == s or name.endswith("." + s) for s in self.dns_suffixes)

    def ip_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.ip_ranges)

    def violations(self, dns_names: Iterable[str], ips: Iterable[IPAddress]) -> list[str]:
        problems = [
            f"DNS name {n!r} is outside the site's allowed suffixes"
            for n in dns_names
            if not self.dns_name_allowed(n)
        ]
        problems += [
            f"IP address {str(ip)!r} is outside the site's allowed ranges"
            for ip in ips
            if not self.ip_allowed(ip)
        ]
        return problems

    def enforce(self, dns_names: Iterable[str], ips: Iterable[IPAddress]) -> None:
        problems = self.violations(dns_names, ips)
        if problems:
            raise PolicyViolation("; ".join(problems), {"names": problems})
