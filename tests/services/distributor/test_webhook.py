"""The webhook target against a real HTTPS receiver on loopback (see conftest.receiver)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from services.distributor.targets.base import Bundle, TargetError
from services.distributor.targets.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookTarget,
    sign,
    verify_signature,
)
from shared.clock import FixedClock
from shared.destinations import DestinationPolicy
from tests.ports import free_port
from tests.services.distributor.conftest import (
    WEBHOOK_SECRET,
    BundleFactory,
    Receiver,
    ReceiverPki,
)

SECRET_VARIABLE = "CERTFLEET_SECRET_TEST_WEBHOOK"
CA_VARIABLE = "CERTFLEET_SECRET_TEST_WEBHOOK_CA"
LOOPBACK = DestinationPolicy.build(["127.0.0.0/8"])


@pytest.fixture
def target(wall_clock: FixedClock, receiver_pki: ReceiverPki) -> WebhookTarget:
    environ = {SECRET_VARIABLE: WEBHOOK_SECRET, CA_VARIABLE: str(receiver_pki.ca_file)}
    return WebhookTarget(environ=environ, policy=LOOPBACK, clock=wall_clock, timeout=5)


def settings_for(receiver: Receiver, status: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "url": receiver.url(status),
        "secret_env": SECRET_VARIABLE,
        "ca_file_env": CA_VARIABLE,
        **extra,
    }


def deliver_error(target: WebhookTarget, bundle: Bundle, settings: dict[str, Any]) -> TargetError:
    with pytest.raises(TargetError) as caught:
        target.deliver(bundle, settings)
    error = caught.value
    # Whatever went wrong, the message names neither the secret nor the key.
    for text in (error.message, str(error), repr(error)):
        assert WEBHOOK_SECRET not in text
        assert bundle.key_pem is None or bundle.key_pem.decode() not in text
    return error


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_posts_the_bundle_as_signed_json(
    target: WebhookTarget, receiver: Receiver, bundle: Bundle, wall_clock: FixedClock
) -> None:
    result = target.deliver(bundle, settings_for(receiver))

    assert not result.installed
    assert "204" in result.detail
    [request] = receiver.received
    assert bundle.certificate_pem is not None and bundle.chain_pem is not None
    assert request.signature_valid
    assert request.headers[TIMESTAMP_HEADER] == str(int(wall_clock.now().timestamp()))
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "host": bundle.host_name,
        "kind": "certificate",
        "fingerprint": bundle.fingerprint,
        "certificate_pem": bundle.certificate_pem.decode(),
        "chain_pem": bundle.chain_pem.decode(),
        "trust_pem": bundle.trust_pem.decode(),
    }


def test_the_key_is_sent_only_when_asked(
    target: WebhookTarget, receiver: Receiver, make_bundle: BundleFactory
) -> None:
    with_key, without_key = make_bundle(), make_bundle(with_key=False)
    target.deliver(with_key, settings_for(receiver, include_key=True))
    target.deliver(without_key, settings_for(receiver, include_key=True))
    target.deliver(with_key, settings_for(receiver))

    bodies = [json.loads(r.body) for r in receiver.received]
    assert with_key.key_pem is not None
    assert bodies[0]["key_pem"] == with_key.key_pem.decode()
    assert "key_pem" not in bodies[1]
    assert "key_pem" not in bodies[2]
    assert all(r.signature_valid for r in receiver.received)


def test_a_trust_bundle_has_null_certificate_fields(
    target: WebhookTarget, receiver: Receiver, make_bundle: BundleFactory
) -> None:
    trust = make_bundle(kind="trust")
    target.deliver(trust, settings_for(receiver, include_key=True))

    body = json.loads(receiver.received[0].body)
    assert body["kind"] == "trust"
    assert body["certificate_pem"] is None and body["chain_pem"] is None
    assert body["trust_pem"] == trust.trust_pem.decode()
    assert "key_pem" not in body


def test_verify_signature_rejects_tampering_other_secrets_and_old_timestamps(
    target: WebhookTarget, receiver: Receiver, bundle: Bundle, wall_clock: FixedClock
) -> None:
    target.deliver(bundle, settings_for(receiver))
    [request] = receiver.received
    timestamp, header = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
    now = wall_clock.now()

    assert header == sign(WEBHOOK_SECRET, timestamp, request.body)
    assert verify_signature(WEBHOOK_SECRET, timestamp, request.body, header, now)
    tampered = request.body.replace(b'"kind":"certificate"', b'"kind":"trust"')
    assert tampered != request.body
    assert not verify_signature(WEBHOOK_SECRET, timestamp, tampered, header, now)
    assert not verify_signature("another-secret", timestamp, request.body, header, now)
    assert not verify_signature(WEBHOOK_SECRET, str(int(timestamp) + 1), request.body, header, now)
    late = now + dt.timedelta(seconds=301)
    assert not verify_signature(WEBHOOK_SECRET, timestamp, request.body, header, late)
    assert verify_signature(WEBHOOK_SECRET, timestamp, request.body, header, late, tolerance=400)
    assert not verify_signature(WEBHOOK_SECRET, "", request.body, header, now)
    assert not verify_signature(WEBHOOK_SECRET, timestamp, request.body, "sha256=00", now)
    assert not verify_signature(WEBHOOK_SECRET, timestamp, request.body, "sha256=é", now)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (400, False), (404, False), (302, False)],
)
def test_answers_map_to_retryable_or_permanent(
    target: WebhookTarget, receiver: Receiver, bundle: Bundle, status: int, retryable: bool
) -> None:
    error = deliver_error(target, bundle, settings_for(receiver, status, include_key=True))

    assert error.retryable is retryable
    assert str(status) in error.message
    assert len(receiver.received) == 1  # a redirect is not followed


def test_plain_http_is_refused(target: WebhookTarget, receiver: Receiver, bundle: Bundle) -> None:
    settings = settings_for(receiver, url=receiver.url().replace("https://", "http://"))

    error = deliver_error(target, bundle, settings)

    assert not error.retryable
    assert "https" in error.message
    assert receiver.received == []


def test_a_receiver_the_ca_file_does_not_vouch_for_is_permanent(
    target: WebhookTarget, receiver: Receiver, bundle: Bundle
) -> None:
    settings = settings_for(receiver)
    del settings["ca_file_env"]  # the system trust store does not know the test CA

    error = deliver_error(target, bundle, settings)

    assert not error.retryable
    assert "TLS" in error.message
    assert receiver.received == []


def test_nothing_listening_is_retryable(target: WebhookTarget, bundle: Bundle) -> None:
    settings = {"url": f"https://127.0.0.1:{free_port()}/hook", "secret_env": SECRET_VARIABLE}

    assert deliver_error(target, bundle, settings).retryable


def test_a_silent_receiver_times_out_and_is_retryable(
    target: WebhookTarget, bundle: Bundle, silent_port: int
) -> None:
    settings = {
        "url": f"https://127.0.0.1:{silent_port}/hook",
        "secret_env": SECRET_VARIABLE,
        "timeout": 0.3,
    }

    error = deliver_error(target, bundle, settings)

    assert error.retryable
    assert "timed out" in error.message


def test_messages_name_the_url_without_its_query_or_credentials(
    target: WebhookTarget, receiver: Receiver, bundle: Bundle
) -> None:
    url = receiver.url(500).replace("https://", "https://user:pw@") + "?token=abc123"

    error = deliver_error(target, bundle, settings_for(receiver, url=url))

    assert error.retryable
    assert f"{receiver.url(500)} answered 500" in error.message
    assert "abc123" not in error.message and "pw" not in error.message


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"secret_env": None}, "secret_env"),
        ({"secret_env": "CERTFLEET_SECRET_TEST_UNSET"}, "CERTFLEET_SECRET_TEST_UNSET"),
        ({"secret_env": "CERTFLEET_DATA_KEY"}, "CERTFLEET_SECRET_"),
        ({"url": None}, "url"),
        ({"url": "https://127.0.0.1:notaport/"}, "url"),
        ({"ca_file_env": "CERTFLEET_SECRET_TEST_NO_CA"}, "CERTFLEET_SECRET_TEST_NO_CA"),
        ({"ca_file": "/etc/ssl/certs/ca.pem"}, "ca_file"),  # a path of the distributor
        ({"timeout": "5"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"include_key": "yes"}, "include_key"),
    ],
)
def test_bad_settings_are_permanent(
    target: WebhookTarget,
    receiver: Receiver,
    bundle: Bundle,
    settings: dict[str, Any],
    words: str,
) -> None:
    merged = {k: v for k, v in {**settings_for(receiver), **settings}.items() if v is not None}

    error = deliver_error(target, bundle, merged)

    assert not error.retryable
    assert words in error.message
    assert receiver.received == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "169.254.169.254", "[::1]", "[fe80::1]", "224.0.0.1"]
)
def test_loopback_link_local_metadata_and_multicast_are_refused_by_default(
    wall_clock: FixedClock, receiver: Receiver, bundle: Bundle, host: str
) -> None:
    target = WebhookTarget(environ={SECRET_VARIABLE: WEBHOOK_SECRET}, clock=wall_clock)
    settings = {
        "url": f"https://{host}:{receiver.url().split(':')[2]}",
        "secret_env": SECRET_VARIABLE,
    }
    error = deliver_error(target, bundle, settings)
    assert not error.retryable
    assert "does not connect to" in error.message
    assert receiver.received == []
