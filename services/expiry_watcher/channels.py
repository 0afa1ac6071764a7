"""Where notices go: email over SMTP, or a JSON webhook that Slack, Teams and most on-prem
chat servers accept (its `text` field is the one-line summary they display).

A channel is built per NotificationChannel row (its `target` and `settings`) by the factory
that `make_factory` returns, and raises ChannelError with `retryable` telling the caller
whether a later scan can help. Messages of ChannelError name a server as host[:port] only:
never a URL path or query (a Slack or Teams incoming-webhook URL carries its token there),
never a secret, never an answer's body.

Webhook settings (plain JSON on the channel row; a secret is named, never stored there):
    secret_env  optional: a CERTFLEET_SECRET_* variable of the watcher holding an HMAC secret;
                the body is then signed exactly as the distributor's webhook target signs
                (X-Certfleet-Timestamp and X-Certfleet-Signature, see
                shared.webhooks.verify_signature for receivers)
    allow_http  false (default); true accepts a plain http:// target, for an on-prem chat
                server on a trusted network without TLS. The notice then travels in clear.
    ca_file     optional absolute path of a CA file to verify the receiver with
    timeout     optional seconds (default: the factory's)
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from shared.clock import Clock, SystemClock
from shared.delivery_settings import ENV_NAME, SECRET_ENV_PREFIX
from shared.destinations import DestinationPolicy
from shared.notices import recipients_of
from shared.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PostFailed,
    post,
    redacted_url,
    retryable_status,
    sign,
)

MAX_TIMEOUT = 120.0
WEBHOOK_SETTINGS = frozenset({"secret_env", "allow_http", "ca_file", "timeout"})


@dataclass(frozen=True)
class NoticeMessage:
    """One notice, ready for any channel: `subject` is a one-line summary, `text` the plain
    body, `data` the same facts as JSON values (never a key, PEM or secret)."""

    subject: str
    text: str
    data: Mapping[str, Any] = field(default_factory=dict)


class ChannelError(Exception):
    """A notice that did not go out. The message names no secret and no URL path."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Channel(Protocol):
    def send(self, notice: NoticeMessage) -> None: ...


@dataclass(frozen=True)
class ChannelSpec:
    """The plain values of a NotificationChannel row that a channel needs."""

    id: int
    name: str
    kind: str
    target: str
    settings: Mapping[str, Any] = field(default_factory=dict)


ChannelFactory = Callable[[ChannelSpec], Channel]


class EmailChannel:
    """Plain-text mail through one SMTP relay (no authentication: the relay trusts the
    watcher's address). `starttls` upgrades the connection and verifies the relay's
    certificate against the system trust store."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout: float,
        starttls: bool = False,
        *,
        recipients: Sequence[str],
        clock: Clock | None = None,
    ) -> None:
        if not recipients:
            raise ChannelError("the email channel has no recipients", retryable=False)
        self.host, self.port, self.sender = host, port, sender
        self.timeout, self.starttls = timeout, starttls
        self.recipients = list(recipients)
        self._clock: Clock = clock or SystemClock()

    def message(self, notice: NoticeMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Subject"] = notice.subject
        mail["Date"] = format_datetime(self._clock.now())
        mail["Message-ID"] = make_msgid(domain="certfleet")
        mail.set_content(notice.text)
        return mail

    def send(self, notice: NoticeMessage) -> None:
        where = f"{self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                refused = smtp.send_message(self.message(notice))
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(
                f"the SMTP server {where} refused every recipient", retryable=False
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(
                f"the SMTP server {where} does not offer STARTTLS", retryable=False
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"the SMTP server {where} answered {exc.smtp_code}",
                retryable=400 <= exc.smtp_code < 500,
            ) from exc
        except ssl.SSLError as exc:
            raise ChannelError(
                f"TLS with the SMTP server {where} failed: {type(exc).__name__}", retryable=False
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(
                f"the SMTP server {where} did not answer: {type(exc).__name__}", retryable=True
            ) from exc
        if refused:
            # Some recipients got it; retrying would send the others a duplicate.
            raise ChannelError(
                f"the SMTP server {where} refused {len(refused)} of "
                f"{len(self.recipients)} recipients",
                retryable=False,
            )


class WebhookChannel:
    """POST `{"text": <subject>, **data}` as JSON (UTF-8, keys sorted). 2xx is success;
    408, 429, 5xx, timeouts and connection errors are retryable; everything else (other 4xx,
    redirects, which are not followed, TLS verification failures) is permanent."""

    def __init__(
        self,
        environ: Mapping[str, str],
        clock: Clock,
        *,
        url: str,
        settings: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        policy: DestinationPolicy | None = None,
    ) -> None:
        """`environ` holds the watcher's CERTFLEET_SECRET_* variables, where secret_env is
        looked up; `policy` says which receivers may be reached."""
        self._environ, self._clock = environ, clock
        self._policy = policy or DestinationPolicy()
        self.settings: Mapping[str, Any] = settings or {}
        unknown = sorted(set(self.settings) - WEBHOOK_SETTINGS)
        if unknown:
            raise ChannelError(f"unknown webhook settings {unknown}", retryable=False)
        self.url = _checked_url(url, allow_http=self.settings.get("allow_http") is True)
        self.timeout = _checked_timeout(self.settings.get("timeout", timeout))
        self._session = session or requests.Session()

    def body(self, notice: NoticeMessage) -> bytes:
        payload = {**notice.data, "text": notice.subject}
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()

    def send(self, notice: NoticeMessage) -> None:
        body = self.body(notice)
        headers = {"Content-Type": "application/json"}
        secret = self._secret()
        if secret is not None:
            timestamp = str(int(self._clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        where = redacted_url(self.url)
        try:
            status = post(
                self._session,
                self.url,
                body,
                headers,
                timeout=self.timeout,
                verify=self._verify(),
                where=where,
                policy=self._policy,
            )
        except PostFailed as exc:
            raise ChannelError(exc.message, retryable=exc.retryable) from exc
        if not 200 <= status < 300:
            raise ChannelError(
                f"the webhook receiver {where} answered {status}",
                retryable=retryable_status(status),
            )

    def _secret(self) -> str | None:
        variable = self.settings.get("secret_env")
        if variable is None:
            return None
        if not isinstance(variable, str) or not ENV_NAME.match(variable):
            raise ChannelError(
                f"secret_env must name a {SECRET_ENV_PREFIX}* variable", retryable=False
            )
        secret = self._environ.get(variable, "")
        if not secret:
            raise ChannelError(
                f"the variable {variable} (secret_env) is not set on the expiry watcher",
                retryable=False,
            )
        return secret

    def _verify(self) -> str | bool:
        ca_file = self.settings.get("ca_file")
        if ca_file is None:
            return True
        if not isinstance(ca_file, str) or not os.path.isabs(ca_file):
            raise ChannelError("ca_file must be an absolute path", retryable=False)
        if not os.path.isfile(ca_file):
            raise ChannelError(f"ca_file {ca_file} is not a file on the watcher", retryable=False)
        return ca_file


def _checked_url(url: str, *, allow_http: bool) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ChannelError("the webhook target is not a valid URL", retryable=False) from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise ChannelError(
            f"the webhook target must be https:// (or http:// with allow_http), "
            f"not {redacted_url(url)}",
            retryable=False,
        )
    return url


def _checked_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ChannelError("timeout must be a positive number of seconds", retryable=False)
    return float(min(value, MAX_TIMEOUT))


@dataclass(frozen=True)
class SmtpRelay:
    """The watcher's SMTP settings (from shared.settings.Settings); host None: no email."""

    host: str | None
    port: int = 25
    sender: str | None = None
    starttls: bool = False


class _Unavailable:
    """A channel that cannot be built: every send fails with the same permanent error."""

    def __init__(self, error: ChannelError) -> None:
        self.error = error

    def send(self, notice: NoticeMessage) -> None:
        raise self.error


def make_factory(
    smtp: SmtpRelay,
    environ: Mapping[str, str],
    clock: Clock,
    *,
    timeout: float = 10.0,
    session: requests.Session | None = None,
    policy: DestinationPolicy | None = None,
) -> ChannelFactory:
    """What record_and_send needs: a Channel for each channel row. A row that cannot be
    turned into a channel (no SMTP relay configured, an http:// target without allow_http...)
    gives a channel whose sends fail permanently, so the ledger shows why."""

    def build(spec: ChannelSpec) -> Channel:
        try:
            if spec.kind == "email":
                if not smtp.host or not smtp.sender:
                    raise ChannelError(
                        "email needs CERTFLEET_SMTP_HOST and CERTFLEET_SMTP_FROM on the watcher",
                        retryable=False,
                    )
                return EmailChannel(
                    smtp.host,
                    smtp.port,
                    smtp.sender,
                    timeout,
                    smtp.starttls,
                    recipients=recipients_of(spec.target),
                    clock=clock,
                )
            if spec.kind == "webhook":
                return WebhookChannel(
                    environ,
                    clock,
                    url=spec.target,
                    settings=spec.settings,
                    timeout=timeout,
                    session=session,
                    policy=policy,
                )
            raise ChannelError(f"unknown channel kind {spec.kind!r}", retryable=False)
        except ChannelError as exc:
            return _Unavailable(exc)

    return build
