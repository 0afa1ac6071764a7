"""What a delivery target is: one small interface for directory, SSH, webhook and agent.

A target receives a `Bundle` (everything a host needs, already decrypted in memory) and the
host's delivery settings (plain JSON from the inventory: never a secret; a secret is named by
the environment variable of the distributor that holds it). It raises TargetError with
`retryable` telling the worker whether another attempt can help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.bundles import (
    CERT_FILE,
    CHAIN_FILE,
    FULLCHAIN_FILE,
    KEY_FILE,
    KEY_MODE,
    PFX_FILE,
    PUBLIC_MODE,
    TRUST_FILE,
    Bundle,
    BundleKind,
)

__all__ = [
    "CERT_FILE",
    "CHAIN_FILE",
    "FULLCHAIN_FILE",
    "KEY_FILE",
    "KEY_MODE",
    "PFX_FILE",
    "PUBLIC_MODE",
    "TRUST_FILE",
    "Bundle",
    "BundleKind",
    "Delivered",
    "Target",
    "TargetError",
]


@dataclass(frozen=True)
class Delivered:
    """`installed` is true when the target also ran the host's reload/install step."""

    installed: bool
    detail: str = ""


class TargetError(Exception):
    """A delivery that did not happen. The message must name no secret."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Target(Protocol):
    method: str

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered: ...
