"""What a delivery target is: one small interface for directory, SSH, webhook and agent.

A target receives a `Bundle` (everything a host needs, already decrypted in memory) and the
host's delivery settings (plain JSON from the inventory, typed by shared.delivery_settings:
never a secret; a secret, key file or CA file is named by a CERTFLEET_SECRET_* variable of
the distributor). It raises TargetError with `retryable` telling the worker whether another
attempt can help. No TargetError carries a value read from the environment or from a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared import delivery_settings
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
from shared.errors import ValidationFailed

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
    "named_file",
    "named_secret",
    "parse_settings",
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


def parse_settings(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The stored settings through the method's schema (shared.delivery_settings): bad ones
    are a permanent failure, as they were when the API refused them."""
    try:
        return delivery_settings.parse_settings(method, settings)
    except ValidationFailed as exc:
        problems = exc.errors.get("settings") if isinstance(exc.errors, dict) else None
        detail = f": {problems}" if problems else ""
        raise TargetError(f"{exc.message}{detail}", retryable=False) from exc


def named_secret(environ: Mapping[str, str], variable: str, setting: str) -> str:
    """The value of a CERTFLEET_SECRET_* variable that a setting names; its absence is
    permanent. The value itself never appears in a message."""
    value = environ.get(variable, "") if delivery_settings.ENV_NAME.match(variable) else ""
    if not value:
        raise TargetError(
            f"the variable {variable} ({setting}) is not set on the distributor", retryable=False
        )
    return value


def named_file(environ: Mapping[str, str], variable: str, setting: str) -> str:
    """A file path held by a CERTFLEET_SECRET_* variable: it must be an absolute path to a
    readable file. Which of these fails is not said, nor the path: the variable is the
    deployment's, and the message goes to users."""
    path = named_secret(environ, variable, setting)
    if not (os.path.isabs(path) and os.path.isfile(path) and os.access(path, os.R_OK)):
        raise TargetError(
            f"the file named by {variable} ({setting}) cannot be used on the distributor",
            retryable=False,
        )
    return path


class Target(Protocol):
    method: str

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered: ...
