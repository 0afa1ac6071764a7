"""The notification channels against real servers: an aiosmtpd SMTP server and HTTP(S)
webhook receivers on loopback. The SMTP sink and the plain-HTTP receiver are fixtures that
test_notifications.py imports too."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.distributor.targets.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.expiry_watcher.channels import (
    ChannelError,
    ChannelSpec,
    EmailChannel,
    NoticeMessage,
    SmtpRelay,
    WebhookChannel,
    make_factory,
)
from shared.clock import FixedClock, SystemClock
from tests.factories import FIXED_NOW, LOOPBACK
from tests.ports import free_port
from tests.services.distributor.conftest import (  # noqa: F401 - fixtures
    WEBHOOK_SECRET,
    Receiver,
    receiver,
    receiver_pki,
)

SENDER = "certfleet@example.com"
URL_TOKEN = "XyZ-url-token-0042"

NOTICE = NoticeMessage(
    "[certfleet] rec01: the certificate expires on 2027-12-30 12:00 UTC (in 7 days)",
    "rec01: the certificate expires on 2027-12-30 12:00 UTC (in 7 days).\n\nhost: rec01\n",
    {"notice": "expires_in_7d", "host": "rec01", "certificate_id": 7, "days_left": 7},
)


# --- a real SMTP server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    """An aiosmtpd handler that keeps every accepted message; `refuse` lists recipients to
    answer 550, `data_reply` replaces the answer to DATA (e.g. a 451)."""

    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    data_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(port: int) -> Iterator[SmtpSink]:
    sink = SmtpSink(port)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_server(free_port()) as sink:
        yield sink


def email_channel(port: int, *recipients: str) -> EmailChannel:
    return EmailChannel(
        "127.0.0.1",
        port,
        SENDER,
        5.0,
        recipients=list(recipients) or ["ops@example.com"],
        clock=FixedClock(FIXED_NOW),
    )


# --- a plain-HTTP webhook receiver ------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers with the status that ends the path (/…/500), else 204; keeps every request."""

    base_url: str
    hits: list[Hit] = field(default_factory=list)


class _HttpHandler(BaseHTTPRequestHandler):
    state: HttpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.state.hits.append(Hit(self.path, dict(self.headers), body))
        last = self.path.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]
        self.send_response(int(last) if last.isdigit() and len(last) == 3 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
    state = HttpReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_HttpHandler,), {"state": state})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- email ----------------------------------------------------------------------------------


def test_email_reaches_every_recipient_with_subject_and_body(smtp: SmtpSink) -> None:
    email_channel(smtp.port, "ops@example.com", "nvr-team@example.org").send(NOTICE)

    [mail] = smtp.mails
    assert mail.sender == SENDER
    assert mail.recipients == ["ops@example.com", "nvr-team@example.org"]
    assert mail.message["Subject"] == NOTICE.subject
    assert mail.message["To"] == "ops@example.com, nvr-team@example.org"
    assert mail.message["Date"] == "Sat, 28 Nov 2026 12:00:00 +0000"
    assert mail.message.get_content().replace("\r\n", "\n").strip() == NOTICE.text.strip()


def test_email_to_a_server_that_is_not_listening_is_retryable() -> None:
    port = free_port()
    with pytest.raises(ChannelError) as caught:
        email_channel(port).send(NOTICE)
    assert caught.value.retryable
    assert caught.value.message == (
        f"the SMTP server 127.0.0.1:{port} did not answer: ConnectionRefusedError"
    )


def test_refused_recipients_are_permanent_and_partial_refusal_is_not_repeated(
    smtp: SmtpSink,
) -> None:
    smtp.refuse = {"gone@example.com", "left@example.com"}
    with pytest.raises(ChannelError) as everyone:
        email_channel(smtp.port, "gone@example.com", "left@example.com").send(NOTICE)
    assert not everyone.value.retryable
    assert "refused every recipient" in everyone.value.message

    with pytest.raises(ChannelError) as some:
        email_channel(smtp.port, "ops@example.com", "gone@example.com").send(NOTICE)
    assert not some.value.retryable  # ops@ has it: a retry would send it twice
    assert "refused 1 of 2 recipients" in some.value.message
    assert [m.recipients for m in smtp.mails] == [["ops@example.com"]]


def test_a_4xx_answer_is_retryable_and_a_5xx_is_not(smtp: SmtpSink) -> None:
    smtp.data_reply = "451 4.3.0 try again later"
    with pytest.raises(ChannelError) as temporary:
        email_channel(smtp.port).send(NOTICE)
    assert temporary.value.retryable
    assert temporary.value.message == f"the SMTP server 127.0.0.1:{smtp.port} answered 451"

    smtp.data_reply = "554 5.6.0 rejected"
    with pytest.raises(ChannelError) as permanent:
        email_channel(smtp.port).send(NOTICE)
    assert not permanent.value.retryable
    assert smtp.mails == []


def test_starttls_against_a_server_without_it_is_permanent(smtp: SmtpSink) -> None:
    channel = EmailChannel("127.0.0.1", smtp.port, SENDER, 5.0, True, recipients=["a@b.example"])
    with pytest.raises(ChannelError) as caught:
        channel.send(NOTICE)
    assert not caught.value.retryable
    assert "STARTTLS" in caught.value.message
    assert smtp.mails == []


def test_the_factory_builds_email_channels_only_with_a_relay(smtp: SmtpSink) -> None:
    spec = ChannelSpec(1, "ops-mail", "email", "ops@example.com, nvr@example.com")
    clock = FixedClock(FIXED_NOW)
    make_factory(SmtpRelay("127.0.0.1", smtp.port, SENDER), {}, clock, policy=LOOPBACK)(spec).send(
        NOTICE
    )
    assert smtp.mails[0].recipients == ["ops@example.com", "nvr@example.com"]

    unconfigured = make_factory(SmtpRelay(None), {}, clock, policy=LOOPBACK)(spec)
    with pytest.raises(ChannelError) as caught:
        unconfigured.send(NOTICE)
    assert not caught.value.retryable
    assert "CERTFLEET_SMTP_HOST" in caught.value.message
    assert len(smtp.mails) == 1


# --- webhooks -------------------------------------------------------------------------------


def test_https_webhook_posts_text_and_fields_signed_like_the_distributor(
    receiver: Receiver,  # noqa: F811
) -> None:
    channel = WebhookChannel(
        {"CERTFLEET_SECRET_HOOK": WEBHOOK_SECRET},
        SystemClock(),  # the receiver checks the timestamp against the real clock
        url=receiver.url(),
        settings={"secret_env": "CERTFLEET_SECRET_HOOK", "ca_file": str(receiver.ca_file)},
        policy=LOOPBACK,
    )
    channel.send(NOTICE)

    [hit] = receiver.received
    assert hit.signature_valid
    body = json.loads(hit.body)
    assert body == {**NOTICE.data, "text": NOTICE.subject}
    assert WEBHOOK_SECRET not in hit.body.decode()
    assert abs(int(hit.headers[TIMESTAMP_HEADER]) - time.time()) < 60


def test_https_webhook_with_an_untrusted_certificate_is_permanent(
    receiver: Receiver,  # noqa: F811
) -> None:
    channel = WebhookChannel({}, SystemClock(), url=receiver.url(), policy=LOOPBACK)
    with pytest.raises(ChannelError) as caught:
        channel.send(NOTICE)
    assert not caught.value.retryable
    assert caught.value.message.startswith(f"TLS with the webhook receiver {receiver.base_url}")
    assert receiver.received == []


def test_plain_http_needs_allow_http_and_is_then_unsigned_without_secret_env(
    http_receiver: HttpReceiver,
) -> None:
    url = f"{http_receiver.base_url}/hooks/T01/{URL_TOKEN}"
    spec = ChannelSpec(3, "chat", "webhook", url)
    refused = make_factory(SmtpRelay(None), {}, SystemClock(), policy=LOOPBACK)(spec)
    with pytest.raises(ChannelError) as caught:
        refused.send(NOTICE)
    assert not caught.value.retryable
    assert URL_TOKEN not in caught.value.message
    assert http_receiver.hits == []

    allowed = ChannelSpec(3, "chat", "webhook", url, {"allow_http": True})
    make_factory(SmtpRelay(None), {}, SystemClock(), policy=LOOPBACK)(allowed).send(NOTICE)
    [hit] = http_receiver.hits
    assert hit.path == f"/hooks/T01/{URL_TOKEN}"
    assert hit.json()["text"] == NOTICE.subject
    assert hit.json()["notice"] == "expires_in_7d"
    assert SIGNATURE_HEADER not in hit.headers


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (404, False)])
def test_webhook_answers_sort_into_retryable_and_permanent_without_the_url_path(
    http_receiver: HttpReceiver, status: int, retryable: bool
) -> None:
    channel = WebhookChannel(
        {"CERTFLEET_SECRET_HOOK": WEBHOOK_SECRET},
        SystemClock(),
        url=f"{http_receiver.base_url}/hooks/{URL_TOKEN}/{status}?key={URL_TOKEN}",
        settings={"allow_http": True, "secret_env": "CERTFLEET_SECRET_HOOK"},
        policy=LOOPBACK,
    )
    with pytest.raises(ChannelError) as caught:
        channel.send(NOTICE)
    assert caught.value.retryable is retryable
    assert (
        caught.value.message == f"the webhook receiver {http_receiver.base_url} answered {status}"
    )
    assert len(http_receiver.hits) == 1


def test_webhook_that_does_not_answer_is_retryable_and_a_missing_secret_is_not() -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/{URL_TOKEN}"
    down = WebhookChannel(
        {}, SystemClock(), url=url, settings={"allow_http": True}, policy=LOOPBACK
    )
    with pytest.raises(ChannelError) as caught:
        down.send(NOTICE)
    assert caught.value.retryable
    assert URL_TOKEN not in caught.value.message

    unsigned = WebhookChannel(
        {},
        SystemClock(),
        url=url,
        settings={"allow_http": True, "secret_env": "CERTFLEET_SECRET_NOT_SET"},
        policy=LOOPBACK,
    )
    with pytest.raises(ChannelError) as missing:
        unsigned.send(NOTICE)
    assert not missing.value.retryable
    assert "CERTFLEET_SECRET_NOT_SET" in missing.value.message
