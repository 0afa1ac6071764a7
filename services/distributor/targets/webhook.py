"""The webhook target: POST a host's bundle as signed JSON to a receiver over HTTPS.

Settings (plain JSON from the inventory; the HMAC secret is named, never stored there):
    url          https:// URL of the receiver (plain http is refused)
    secret_env   name of the distributor's environment variable holding the HMAC secret
    include_key  false (default); true adds key_pem when certfleet holds the host's key
    ca_file      optional CA file on the distributor to verify the receiver with (default:
                 the system's trust store)
    timeout      optional seconds for connecting and for the answer (default: the target's)

The request body is JSON (UTF-8, keys sorted):
    {"host", "kind", "fingerprint", "certificate_pem", "chain_pem", "trust_pem"[, "key_pem"]}
with null for what the bundle lacks (a trust bundle has no certificate). Two headers sign it:
    X-Certfleet-Timestamp: <Unix seconds>
    X-Certfleet-Signature: sha256=<hex HMAC-SHA256 with the secret over "<timestamp>." + body>
A receiver recomputes the HMAC over the raw body bytes exactly as received (before parsing the
JSON), compares in constant time and rejects a timestamp far from its clock, which stops
replays: `verify_signature` does all three. Redirects are not followed, so the bundle goes
only to the configured receiver.

Any 2xx answer is a delivery (`installed` is false: what the receiver does next is not seen).
4xx is permanent except 408 and 429; 5xx, timeouts and connection errors are retryable. A
receiver that fails TLS verification is permanent (the trust settings must change). Messages
name the URL without its query or credentials, and never the secret, the key or the answer's
body (which might echo the request).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from services.distributor.targets.base import Bundle, Delivered, TargetError
from services.distributor.targets.directory import flag
from shared.clock import Clock, SystemClock

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


def post(
    session: requests.Session,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    verify: bool | str,
    where: str,
) -> tuple[int, str]:
    """POST `body` without following redirects; return the status and reason. A TLS failure
    is permanent (the trust settings must change), timeouts and refused connections are
    retryable. Shared by the webhook target and the webhook notification channel."""
    try:
        with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=timeout,
            verify=verify,
            allow_redirects=False,
        ) as response:
            return response.status_code, response.reason or ""
    except requests.exceptions.SSLError as exc:
        raise PostFailed(
            f"TLS with the webhook receiver {where} failed (is ca_file right?)", retryable=False
        ) from exc
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
        raise PostFailed(
            f"the webhook receiver {where} did not answer: {type(exc).__name__}", retryable=True
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


def payload(bundle: Bundle, include_key: bool) -> bytes:
    def text(value: bytes | None) -> str | None:
        return value.decode() if value is not None else None

    body: dict[str, str | None] = {
        "host": bundle.host_name,
        "kind": bundle.kind,
        "fingerprint": bundle.fingerprint,
        "certificate_pem": text(bundle.certificate_pem),
        "chain_pem": text(bundle.chain_pem),
        "trust_pem": text(bundle.trust_pem),
    }
    if include_key and bundle.key_pem is not None:
        body["key_pem"] = text(bundle.key_pem)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def safe_url(url: str) -> str:
    """The URL for messages: no credentials, no query (either may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookTarget:
    method = "webhook"

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        """`environ` is the distributor's environment, where secret_env is looked up."""
        self._environ: Mapping[str, str] = environ if environ is not None else {}
        self._clock: Clock = clock or SystemClock()
        self.timeout = timeout
        self._session = session or requests.Session()

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered:
        url = self._url(settings)
        secret = self._secret(settings)
        verify = self._verify(settings)
        timeout = self._timeout(settings)
        body = payload(bundle, flag(settings, "include_key"))
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        where = safe_url(url)
        try:
            status, reason = post(
                self._session, url, body, headers, timeout=timeout, verify=verify, where=where
            )
        except PostFailed as exc:
            raise TargetError(exc.message, retryable=exc.retryable) from exc
        if 200 <= status < 300:
            return Delivered(installed=False, detail=f"{where} answered {status}")
        retryable = retryable_status(status)
        if 300 <= status < 400:
            reason = f"{reason}; redirects are not followed".lstrip("; ")
        raise TargetError(
            f"the webhook receiver {where} answered {status} {reason}".rstrip(),
            retryable=retryable,
        )

    def _url(self, settings: Mapping[str, Any]) -> str:
        url = settings.get("url")
        if not isinstance(url, str) or not url:
            raise TargetError("the webhook target needs a url", retryable=False)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise TargetError("the webhook url is not a valid URL", retryable=False) from exc
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise TargetError(
                f"the webhook url must be https://, not {safe_url(url)}", retryable=False
            )
        return url

    def _secret(self, settings: Mapping[str, Any]) -> str:
        variable = settings.get("secret_env")
        if not isinstance(variable, str) or not variable:
            raise TargetError(
                "the webhook target needs secret_env: the receiver must be able to check "
                "who sent the bundle",
                retryable=False,
            )
        secret = self._environ.get(variable, "")
        if not secret:
            raise TargetError(
                f"the variable {variable} (secret_env) is not set on the distributor",
                retryable=False,
            )
        return secret

    def _verify(self, settings: Mapping[str, Any]) -> str | bool:
        ca_file = settings.get("ca_file")
        if ca_file is None:
            return True
        if not isinstance(ca_file, str) or not os.path.isabs(ca_file):
            raise TargetError("ca_file must be an absolute path", retryable=False)
        if not os.path.isfile(ca_file):
            raise TargetError(
                f"ca_file {ca_file} is not a file on the distributor", retryable=False
            )
        return ca_file

    def _timeout(self, settings: Mapping[str, Any]) -> float:
        value = settings.get("timeout", self.timeout)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TargetError("timeout must be a number of seconds", retryable=False)
        if not 0 < value <= MAX_TIMEOUT:
            raise TargetError(
                f"timeout must be between 0 and {MAX_TIMEOUT:.0f} seconds", retryable=False
            )
        return float(value)
