"""The issuer's Celery tasks, end to end: a real worker process, the private Redis, a SQLite
file shared between this process and the worker, and messages sent by the publisher the API
uses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from shared import contracts, waiting
from shared.clock import FixedClock
from shared.db.models import Authority, Certificate, IssuanceRequest, TaskRun
from shared.db.session import Database
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings
from tests.factories import (
    make_csr,
    make_host,
    make_pending_authority,
    make_request,
    make_root_authority,
    make_site,
    rsa_key,
)

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 30
WORKER_ARGV = (
    f"celery -A services.issuer.tasks worker -Q {contracts.QUEUE_ISSUE} --pool solo "
    f"--loglevel INFO --without-gossip --without-mingle --without-heartbeat "
    f"--hostname issuer-test-{os.getpid()}@localhost"
).split()


def wait_until(condition: Callable[[], bool], what: str, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        if worker.poll() is not None:
            pytest.fail(f"the worker exited ({worker.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {DEADLINE_S}s waiting for {what}")


def task_run(database: Database, task: str) -> TaskRun | None:
    with database.sessions() as session:
        return session.get(TaskRun, task)


def woken(pubsub: redis.client.PubSub, count: int) -> set[str]:
    """The channels of the next `count` wake-ups (shared.waiting) the subscription gets."""
    channels: set[str] = set()
    deadline = time.monotonic() + DEADLINE_S
    while len(channels) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is not None:
            assert message["data"] == b"finished"
            channels.add(message["channel"].decode())
    return channels


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def worker_env(
    sqlite_url: str, redis_url: str, ca_passphrase: str, data_key: str, tmp_path: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env.update(
        CERTFLEET_DATABASE_URL=sqlite_url,
        CERTFLEET_REDIS_URL=redis_url,
        CERTFLEET_CA_KEY_PASSPHRASE=ca_passphrase,
        CERTFLEET_DATA_KEY=data_key,
        CERTFLEET_VAR_DIR=str(tmp_path / "var"),
        CERTFLEET_LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Start `celery -A services.issuer.tasks worker -Q issue` when the test asks for it."""
    started: list[subprocess.Popen[str]] = []
    log_path = tmp_path / "worker.log"

    def start() -> subprocess.Popen[str]:
        log = log_path.open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", *WORKER_ARGV],
            cwd=REPO,
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if log_path.exists():
        sys.stderr.write(log_path.read_text()[-4000:])


@pytest.fixture
def publisher(redis_url: str) -> Iterator[CeleryPublisher]:
    """The publisher the API uses, on its own Celery app (the sender never imports tasks)."""
    app = make_celery(Settings(redis_url=redis_url), "issuer-test-publisher")
    try:
        yield CeleryPublisher(app)
    finally:
        app.close()


def decode_queued(raw: bytes) -> tuple[dict[str, Any], list[Any]]:
    """kombu's Redis envelope: JSON whose base64 `body` holds [args, kwargs, embed]."""
    envelope = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["content-type"] == "application/json"
    return envelope, json.loads(base64.b64decode(envelope["body"]))


@pytest.fixture
def world(sqlite_database: Database, ca_passphrase: str) -> tuple[int, list[int]]:
    """A root, a site, a host and two queued requests (server-side key, CSR). The worker signs
    with the system clock, so the CA starts at the real current time."""
    clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    with sqlite_database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        host = make_host(
            session,
            make_site(session, root),
            name="rec01",
            dns_names=["rec01.site1.example.com", "rec01"],
        )
        csr = make_csr(rsa_key(), ["rec01.site1.example.com"])
        return root.id, [make_request(session, host).id, make_request(session, host, csr).id]


def test_queued_message_carries_only_ids(
    world: tuple[int, list[int]],
    redis_client: redis.Redis,
    publisher: CeleryPublisher,
    ca_passphrase: str,
    data_key: str,
) -> None:
    _, ids = world
    publisher.publish(contracts.issue_batch(ids))

    [raw] = redis_client.lrange(contracts.QUEUE_ISSUE, 0, -1)
    assert isinstance(raw, bytes)
    envelope, body = decode_queued(raw)
    assert envelope["headers"]["task"] == contracts.TASK_ISSUE_BATCH
    args, kwargs, embed = body
    assert args == []
    assert kwargs == {"request_ids": ids}
    assert all(not value for value in embed.values())  # no callbacks, chains or chords
    assert envelope["headers"]["kwargsrepr"] == repr({"request_ids": ids})
    everything = raw.decode() + json.dumps(body)
    for secret in (ca_passphrase, data_key, "BEGIN", "PRIVATE KEY", "CERTIFICATE REQUEST"):
        assert secret not in everything


def test_worker_issues_ignores_redelivery_and_gives_up_on_permanent_errors(
    world: tuple[int, list[int]],
    sqlite_database: Database,
    redis_client: redis.Redis,
    publisher: CeleryPublisher,
    start_worker: Callable[[], subprocess.Popen[str]],
    ca_passphrase: str,
) -> None:
    root_id, ids = world
    wakeups = redis_client.pubsub(ignore_subscribe_messages=True)
    wakeups.subscribe(*[waiting.channel(i) for i in ids])
    publisher.publish(contracts.issue_batch(ids))
    worker = start_worker()

    wait_until(
        lambda: request_statuses(sqlite_database, ids) == ["issued", "issued"],
        "both requests to be issued",
        worker,
    )
    # Clients long-polling for the requests are woken, after the commit.
    assert woken(wakeups, 2) == {waiting.channel(i) for i in ids}
    with sqlite_database.sessions() as session:
        rows = session.scalars(select(Certificate).order_by(Certificate.id)).all()
        assert [r.key_source for r in rows] == ["server", "csr"]
        assert [r.status for r in rows] == ["superseded", "active"]
        assert {r.authority_id for r in rows} == {root_id}

    # A duplicate message (a redelivery) must not issue again; the solo pool runs tasks in
    # order, so once the authority task after it is done, the duplicate has been handled.
    publisher.publish(contracts.issue_batch(ids))
    with sqlite_database.session() as session:
        pending_id = make_pending_authority(
            session, FixedClock(dt.datetime.now(dt.UTC)), name="worker-made root"
        ).id
    publisher.publish(contracts.create_authority(pending_id))

    # A permanent (non-retryable) error: the task gives the request up with a readable reason.
    with sqlite_database.session() as session:
        clock = FixedClock(dt.datetime.now(dt.UTC))
        broken_root = make_root_authority(session, ca_passphrase, clock)
        broken_root.certificate_pem = (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        doomed = make_request(session, make_host(session, make_site(session, broken_root))).id
    wakeups.subscribe(waiting.channel(doomed))
    publisher.publish(contracts.issue_batch([doomed]))

    wait_until(
        lambda: authority_status(sqlite_database, pending_id) == "active",
        "the authority to be created",
        worker,
    )
    wait_until(
        lambda: request_statuses(sqlite_database, [doomed]) == ["failed"],
        "the request with a broken CA to be given up",
        worker,
    )
    with sqlite_database.sessions() as session:
        reason = session.get(IssuanceRequest, doomed).reason  # type: ignore[union-attr]
    assert reason == "internal error while signing; see issuer logs"
    assert woken(wakeups, 1) == {waiting.channel(doomed)}  # failed is finished too
    wakeups.close()
    # The worker counted its runs in the database, for /metrics (shared.taskstats).
    wait_until(
        lambda: task_run(sqlite_database, contracts.TASK_CREATE_AUTHORITY) is not None,
        "the authority task's run to be recorded",
        worker,
    )
    issued = task_run(sqlite_database, contracts.TASK_ISSUE_BATCH)
    assert issued is not None and issued.successes >= 2 and issued.failures == 0
    assert issued.last_success_at is not None and issued.seconds_total > 0
    with sqlite_database.sessions() as session:
        assert len(session.scalars(select(Certificate)).all()) == 2
        attempts = session.scalars(
            select(IssuanceRequest.attempts).where(IssuanceRequest.id.in_(ids))
        ).all()
        assert attempts == [1, 1]
    assert redis_client.llen(contracts.QUEUE_ISSUE) == 0


def request_statuses(db: Database, ids: list[int]) -> list[str]:
    with db.sessions() as session:
        rows = session.scalars(
            select(IssuanceRequest).where(IssuanceRequest.id.in_(ids)).order_by(IssuanceRequest.id)
        ).all()
        return [r.status for r in rows]


def authority_status(db: Database, authority_id: int) -> str | None:
    with db.sessions() as session:
        authority = session.get(Authority, authority_id)
        return authority.status if authority else None
