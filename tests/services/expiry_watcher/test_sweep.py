"""The sweep recovers everything a lost message would lose: after FLUSHALL, after a worker
died holding a claim, after a lost retry. Real Redis, both databases, a fixed clock."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update

from services.distributor import service as distributor
from services.distributor.targets.directory import DirectoryTarget
from services.expiry_watcher.sweep import SweepLimits, sweep
from services.issuer import service as issuer
from shared import contracts
from shared.clock import FixedClock
from shared.db.models import Authority, Certificate, Delivery, Host, IssuanceRequest
from shared.db.session import Database
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings
from tests.factories import ANYWHERE, make_host, make_request, make_root_authority, make_site


@pytest.fixture
def queue(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def publish(redis_url: str) -> Any:
    return CeleryPublisher(make_celery(Settings(redis_url=redis_url), "sweep-test")).publish


def messages(queue: redis.Redis, name: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in queue.lrange(name, 0, -1):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        out.append((envelope["headers"]["task"], body[1]))
    return out


@pytest.fixture
def hosts(database: Database, clock: FixedClock, ca_passphrase: str, tmp_path: Path) -> list[int]:
    with database.session() as session:
        site = make_site(session, make_root_authority(session, ca_passphrase, clock))
        made = [make_host(session, site, name=f"rec{i}") for i in range(3)]
        for host in made:
            host.delivery = {"method": "directory", "settings": {"path": str(tmp_path / "out")}}
        return [h.id for h in made]


def queue_requests(database: Database, clock: FixedClock, host_ids: list[int]) -> list[int]:
    with database.session() as session:
        ids = []
        for host_id in host_ids:
            row = make_request(session, session.get_one(Host, host_id))
            row.created_at = row.updated_at = clock.now()
            ids.append(row.id)
        return ids


def test_everything_completes_after_redis_lost_all_its_data(
    database: Database,
    clock: FixedClock,
    hosts: list[int],
    queue: redis.Redis,
    publish: Any,
    ca_passphrase: str,
    data_key: str,
    tmp_path: Path,
) -> None:
    ids = queue_requests(database, clock, hosts)
    queue.flushall()  # every message that was on its way is gone
    assert sweep(database, publish, clock).total == 0  # too young: the workers may still come
    clock.advance(dt.timedelta(minutes=3))
    report = sweep(database, publish, clock)
    assert report.requests_requeued == 3
    [(task, payload)] = messages(queue, contracts.QUEUE_ISSUE)
    assert task == contracts.TASK_ISSUE_BATCH and sorted(payload["request_ids"]) == sorted(ids)
    assert sweep(database, publish, clock).requests_requeued == 0  # not again within the grace
    secrets = issuer.Secrets(ca_passphrase, data_key)
    issued = issuer.issue_batch(
        database, payload["request_ids"], signers=issuer.SignerCache(), secrets=secrets, clock=clock
    )
    assert sorted(issued.issued) == sorted(ids)
    queue.flushall()  # the issuer's distribute message is lost too
    clock.advance(dt.timedelta(minutes=3))
    assert sweep(database, publish, clock).certificates_planned == 3
    [(task, payload)] = messages(queue, contracts.QUEUE_DISTRIBUTE)
    assert task == contracts.TASK_DISTRIBUTE_CERTIFICATES
    planned = distributor.distribute_certificates(database, payload["certificate_ids"], clock)
    ctx = distributor.Context({"directory": DirectoryTarget(ANYWHERE)}, clock, data_key)
    assert [distributor.attempt(database, d, ctx).status for d in planned] == ["delivered"] * 3
    clock.advance(dt.timedelta(minutes=3))
    queue.flushall()
    assert sweep(database, publish, clock).total == 0  # nothing left to do
    assert (
        messages(queue, contracts.QUEUE_ISSUE) == messages(queue, contracts.QUEUE_DISTRIBUTE) == []
    )
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Certificate)) == 3
        assert session.scalar(select(func.count()).select_from(Delivery)) == 3
        assert set(session.scalars(select(IssuanceRequest.attempts))) == {1}  # issued once each


def test_a_claim_whose_worker_died_is_handed_back(
    database: Database,
    clock: FixedClock,
    hosts: list[int],
    queue: redis.Redis,
    publish: Any,
    ca_passphrase: str,
    data_key: str,
) -> None:
    [request_id] = queue_requests(database, clock, hosts[:1])
    with database.session() as session:
        assert issuer.claim(session, [request_id], clock.now()) == {request_id: 1}
    # ... and the worker was killed before it stored anything.
    clock.advance(dt.timedelta(minutes=5))
    assert sweep(database, publish, clock).requests_released == 0  # it may still be working
    clock.advance(SweepLimits().stale_signing)
    report = sweep(database, publish, clock)
    assert (report.requests_released, report.requests_requeued) == (1, 1)
    result = issuer.issue_batch(
        database,
        [request_id],
        signers=issuer.SignerCache(),
        secrets=issuer.Secrets(ca_passphrase, data_key),
        clock=clock,
    )
    assert result.issued == [request_id]
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Certificate)) == 1
        assert session.get_one(IssuanceRequest, request_id).attempts == 2


def test_only_due_unleased_deliveries_are_sent_again(
    database: Database,
    clock: FixedClock,
    hosts: list[int],
    queue: redis.Redis,
    publish: Any,
    ca_passphrase: str,
    data_key: str,
) -> None:
    ids = queue_requests(database, clock, hosts)
    result = issuer.issue_batch(
        database,
        ids,
        signers=issuer.SignerCache(),
        secrets=issuer.Secrets(ca_passphrase, data_key),
        clock=clock,
    )
    planned = distributor.distribute_certificates(database, result.certificate_ids, clock)
    with database.session() as session:
        later, leased, due = (session.get_one(Delivery, d) for d in planned)
        later.next_attempt_at = clock.now() + dt.timedelta(hours=1)
        leased.claimed_until = clock.now() + dt.timedelta(hours=1)
    queue.flushall()
    clock.advance(dt.timedelta(minutes=3))
    report = sweep(database, publish, clock)
    assert report.deliveries_resent == 1
    assert messages(queue, contracts.QUEUE_DISTRIBUTE) == [
        (contracts.TASK_DELIVER, {"delivery_id": due.id})
    ]


def test_unplanned_certificates_are_found_behind_many_hosts_without_a_method(
    database: Database,
    clock: FixedClock,
    hosts: list[int],
    queue: redis.Redis,
    publish: Any,
    ca_passphrase: str,
    data_key: str,
) -> None:
    """More certificates of hosts with no delivery method than one run reads, issued first:
    the one certificate whose host has a method is still found."""
    with database.session() as session:
        site = session.get_one(Host, hosts[0]).site
        bare = [make_host(session, site, name=f"plain{i}").id for i in range(5)]
    secrets = issuer.Secrets(ca_passphrase, data_key)
    first = queue_requests(database, clock, bare)
    issuer.issue_batch(database, first, signers=issuer.SignerCache(), secrets=secrets, clock=clock)
    [last] = queue_requests(database, clock, hosts[:1])
    result = issuer.issue_batch(
        database, [last], signers=issuer.SignerCache(), secrets=secrets, clock=clock
    )
    queue.flushall()  # the issuer's distribute messages are lost
    clock.advance(dt.timedelta(minutes=3))
    report = sweep(database, publish, clock, SweepLimits(per_run=3))
    assert report.certificates_planned == 1
    [(task, payload)] = messages(queue, contracts.QUEUE_DISTRIBUTE)
    assert task == contracts.TASK_DISTRIBUTE_CERTIFICATES
    assert payload["certificate_ids"] == result.certificate_ids


def test_an_authority_whose_creation_message_was_lost_is_created(
    database: Database,
    clock: FixedClock,
    queue: redis.Redis,
    publish: Any,
    ca_passphrase: str,
    data_key: str,
) -> None:
    """The API stores a pending authority and publishes its creation; the message is lost.
    The sweep sends it again after the grace period, once; a worker that died while
    generating hands it back after the stale limit."""
    with database.session() as session:
        row = Authority(
            name="rotated-ca",
            kind="root",
            status="pending",
            key_bits=2048,
            validity_days=3650,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        session.add(row)
        session.flush()
        authority_id = row.id
    clock.advance(dt.timedelta(minutes=1))
    assert sweep(database, publish, clock).authorities_resent == 0  # the issuer may be at it
    clock.advance(dt.timedelta(minutes=2))
    assert sweep(database, publish, clock).authorities_resent == 1
    assert messages(queue, contracts.QUEUE_ISSUE) == [
        (contracts.TASK_CREATE_AUTHORITY, {"authority_id": authority_id})
    ]
    assert sweep(database, publish, clock).authorities_resent == 0  # not again within the grace

    with database.session() as session:  # a worker claims it as the issuer does, then dies
        session.execute(
            update(Authority)
            .where(Authority.id == authority_id, Authority.status == "pending")
            .values(status="generating", updated_at=clock.now())
        )
    clock.advance(dt.timedelta(minutes=5))
    assert sweep(database, publish, clock).authorities_released == 0
    clock.advance(SweepLimits().stale_signing)
    report = sweep(database, publish, clock)
    assert (report.authorities_released, report.authorities_resent) == (1, 1)
    secrets = issuer.Secrets(ca_passphrase, data_key)
    assert issuer.create_authority(database, authority_id, secrets=secrets, clock=clock) == "active"
    assert (
        issuer.create_authority(database, authority_id, secrets=secrets, clock=clock) == "skipped"
    )
    clock.advance(dt.timedelta(minutes=30))
    assert sweep(database, publish, clock).total == 0
