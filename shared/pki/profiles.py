"""Certificate profiles: the few numbers that decide what a certificate looks like.

The XProtect server profile follows DOMAIN.md: RSA >= 2048, SHA-256, EKU serverAuth,
KU digitalSignature + keyEncipherment, CA:FALSE, every name in the SAN, CN = first DNS name,
397 days by default and never more than 825 (Apple clients reject longer).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

ALLOWED_RSA_BITS = (2048, 3072, 4096)


@dataclass(frozen=True)
class ServerProfile:
    default_validity_days: int = 397
    max_validity_days: int = 825
    min_rsa_bits: int = 2048
    max_rsa_bits: int = 8192
    server_key_bits: int = 2048
    # Backdating absorbs clock skew between the CA and clients.
    backdate_seconds: int = 300


@dataclass(frozen=True)
class CaProfile:
    key_bits: int = 3072
    # Ten years for a root, five for an intermediate: far past PowerShell's one-year default
    # that silently kills every leaf with the CA.
    root_validity_days: int = 3650
    intermediate_validity_days: int = 1825


@dataclass(frozen=True)
class CrlProfile:
    """How long a CRL is valid. The issuer replaces it once half of that has passed, and a
    revoked certificate stays listed for one validity period after it expires, so that it
    appears on at least one regularly scheduled CRL beyond its own validity (RFC 5280, 3.3)."""

    validity_days: int = 7

    @property
    def validity(self) -> dt.timedelta:
        return dt.timedelta(days=self.validity_days)

    @property
    def refresh_before(self) -> dt.timedelta:
        return self.validity / 2

    @property
    def keep_expired(self) -> dt.timedelta:
        return self.validity


XPROTECT_SERVER = ServerProfile()
DEFAULT_CA = CaProfile()
DEFAULT_CRL = CrlProfile()
