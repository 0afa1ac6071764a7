"""Signed JSON over HTTPS, for the distributor's webhook target and the expiry watcher's
webhook notice channel alike: signing, verifying (for receivers), redacting the receiver's
URL for messages, and one POST that obeys the outbound destination policy
(shared.destinations) and never follows a redirect.

The signature: X-Certfleet-Timestamp: <Unix seconds>, and X-Certfleet-Signature:
sha256=<hex HMAC-SHA256 with the secret over "<timestamp>." + body>. A receiver recomputes it
over the raw body, compares in constant time and rejects a timestamp far from its clock:
`verify_signature` does all three.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

from shared.destinations import DestinationPolicy, DestinationRefused

TIMESTAMP_HEADER = "X-Certfleet-Timestamp"
SIGNATURE_HEADER = "X-Certfleet-Signature"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE = 300
MAX_TIMEOUT = 300.0
RETRYABLE_CLIENT_ERRORS = (408, 429)


class PostFailed(Exception):
    """The POST got no HTTP answer. The message names the receiver as `where` only."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def redacted_url(url: str, *, with_path: bool = False) -> str:
    """A receiver's URL as messages, logs and pages show it: scheme, host and port, and the
    path only if asked; never credentials or the query (either may hold a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path if with_path else ''}"


def post(
    session: requests.Session,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    verify: bool | str,
    where: str,
    policy: DestinationPolicy,
) -> int:
    """POST `body` without following redirects; return the status. The URL's host
    must resolve to addresses the policy allows (else a permanent failure). A TLS failure
    is permanent (the trust settings must change), timeouts and refused connections are
    retryable. Errors are categories: nothing the receiver said is repeated."""
    parts = urlsplit(url)
    try:
        policy.resolve(parts.hostname or "", parts.port or 443)
    except DestinationRefused as exc:
        raise PostFailed(exc.message, retryable=exc.category == "unresolvable") from exc
    try:
        with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=timeout,
            verify=verify,
            allow_redirects=False,
        ) as response:
            return int(response.status_code)
    except requests.exceptions.SSLError as exc:
        raise PostFailed(
            f"TLS with the webhook receiver {where} failed (is its CA trusted?)", retryable=False
        ) from exc
    except requests.exceptions.Timeout as exc:
        raise PostFailed(f"the webhook receiver {where}: timed out", retryable=True) from exc
    except requests.exceptions.ConnectionError as exc:
        raise PostFailed(
            f"the webhook receiver {where}: refused or unreachable", retryable=True
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise PostFailed(
            f"the request to the webhook receiver {where} failed: {type(exc).__name__}",
            retryable=False,
        ) from exc


def retryable_status(status: int) -> bool:
    """A non-2xx answer worth trying again: 5xx, 408 and 429."""
    return status >= 500 or status in RETRYABLE_CLIENT_ERRORS


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The X-Certfleet-Signature value for `body` sent at `timestamp` (Unix seconds)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    header: str,
    now: dt.datetime | float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """For receivers: true when `header` (X-Certfleet-Signature) signs the raw `body` with
    `timestamp` (X-Certfleet-Timestamp) and that timestamp is within `tolerance` seconds of
    `now` (an aware datetime or Unix seconds)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    current = now.timestamp() if isinstance(now, dt.datetime) else float(now)
    if abs(current - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", errors="replace"))
