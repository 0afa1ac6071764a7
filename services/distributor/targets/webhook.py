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

import json
from collections.abc import Mapping
from typing import Any

import requests

from services.distributor.targets.base import (
    Bundle,
    Delivered,
    TargetError,
    named_file,
    named_secret,
    parse_settings,
)
from shared.clock import Clock, SystemClock
from shared.destinations import DestinationPolicy
from shared.webhooks import (
    SIGNATURE_HEADER,
    SIGNATURE_PREFIX,
    TIMESTAMP_HEADER,
    PostFailed,
    post,
    redacted_url,
    retryable_status,
    sign,
    verify_signature,
)

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "PostFailed",
    "WebhookTarget",
    "payload",
    "post",
    "retryable_status",
    "sign",
    "verify_signature",
]


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


class WebhookTarget:
    method = "webhook"

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        policy: DestinationPolicy | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        """`environ` holds the distributor's CERTFLEET_SECRET_* variables, where secret_env
        and ca_file_env are looked up; `policy` says which receivers may be reached."""
        self._environ: Mapping[str, str] = environ if environ is not None else {}
        self._policy = policy or DestinationPolicy()
        self._clock: Clock = clock or SystemClock()
        self.timeout = timeout
        self._session = session or requests.Session()

    def deliver(self, bundle: Bundle, settings: Mapping[str, Any]) -> Delivered:
        config = parse_settings(self.method, settings)
        url = config["url"]
        secret = named_secret(self._environ, config["secret_env"], "secret_env")
        verify: str | bool = True
        if "ca_file_env" in config:
            verify = named_file(self._environ, config["ca_file_env"], "ca_file_env")
        timeout = float(config.get("timeout") or self.timeout)
        body = payload(bundle, config["include_key"])
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        where = redacted_url(url, with_path=True)
        try:
            status = post(
                self._session,
                url,
                body,
                headers,
                timeout=timeout,
                verify=verify,
                where=where,
                policy=self._policy,
            )
        except PostFailed as exc:
            raise TargetError(exc.message, retryable=exc.retryable) from exc
        if 200 <= status < 300:
            return Delivered(installed=False, detail=f"{where} answered {status}")
        note = "; redirects are not followed" if 300 <= status < 400 else ""
        raise TargetError(
            f"the webhook receiver {where} answered {status}{note}",
            retryable=retryable_status(status),
        )
