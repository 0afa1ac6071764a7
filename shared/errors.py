"""Domain errors shared by every service.

Errors are data: each carries a stable machine `code`, a human `message` and optional
field-level `errors`. They import no framework; the API maps them to HTTP statuses in one
handler and the workers sort them into retryable and permanent ones.
"""

from __future__ import annotations

from typing import Any


class CertfleetError(Exception):
    """Base class. `message` must never contain a key, passphrase or token."""

    code = "error"

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class ConfigError(CertfleetError):
    code = "configuration_error"


class ValidationFailed(CertfleetError):
    """Input that is well-formed but not acceptable (bad CSR, name outside policy...)."""

    code = "validation_error"


class NotFound(CertfleetError):
    code = "not_found"


class Conflict(CertfleetError):
    code = "conflict"


class Forbidden(CertfleetError):
    code = "forbidden"


class Unauthorized(CertfleetError):
    code = "unauthorized"


class Unavailable(CertfleetError):
    """A dependency (database, Redis) cannot be reached; the caller may retry later."""

    code = "unavailable"


class TooManyRequests(CertfleetError):
    """The caller has failed too often; it may try again after `retry_after` seconds."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutOfScope(NotFound):
    """A site-owned row outside the token's site: answered as if it did not exist."""


class PolicyViolation(ValidationFailed):
    code = "policy_violation"


class CsrRejected(ValidationFailed):
    code = "csr_rejected"


class KeyUnavailable(CertfleetError):
    """A private key cannot be used: wrong passphrase, missing data key, or host-held key."""

    code = "key_unavailable"
