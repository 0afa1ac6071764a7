"""Expiry notices end to end: real certificates from the issuer, both databases, a real SMTP
server and a real webhook receiver, and a fixed clock moved day by day."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.expiry_watcher.channels import (
    Channel,
    ChannelFactory,
    ChannelSpec,
    NoticeMessage,
    SmtpRelay,
    make_factory,
)
from services.expiry_watcher.notifications import (
    MAX_ATTEMPTS,
    SendReport,
    due_notices,
    record_and_send,
    scan,
)
from shared import deliveries
from shared.clock import FixedClock
from shared.db.models import (
    Authority,
    Certificate,
    Delivery,
    Event,
    Host,
    IssuanceRequest,
    Notice,
    NotificationChannel,
    Site,
)
from shared.db.session import Database
from tests.factories import (
    LOOPBACK,
    issue_certificate,
    make_host,
    make_request,
    make_root_authority,
    make_site,
)
from tests.ports import free_port
from tests.services.expiry_watcher.test_channels import (  # noqa: F401 - fixtures
    SENDER,
    URL_TOKEN,
    HttpReceiver,
    SmtpSink,
    http_receiver,
    smtp,
    smtp_server,
)

DAY = dt.timedelta(days=1)
HOOK_SECRET = "notice-hook-secret-5a4b3c"


@dataclass
class World:
    database: Database
    clock: FixedClock
    passphrase: str
    data_key: str
    site_id: int
    host_id: int
    certificate_id: int

    def issue(self, host_id: int | None = None) -> int:
        return issue_certificate(
            self.database, self.clock, host_id or self.host_id, self.passphrase, self.data_key
        )

    def not_after(self, certificate_id: int | None = None) -> dt.datetime:
        with self.database.session() as session:
            return session.get_one(Certificate, certificate_id or self.certificate_id).not_after

    def go_to(self, left: dt.timedelta, certificate_id: int | None = None) -> None:
        """Move the clock to `left` before the certificate's expiry."""
        self.clock.advance(self.not_after(certificate_id) - left - self.clock.now())

    def channel(
        self,
        name: str,
        target: str,
        *,
        kind: str = "email",
        thresholds: Sequence[int] = (30, 14, 7, 1, 0),
        site_id: int | None = None,
        settings: dict[str, Any] | None = None,
    ) -> int:
        with self.database.session() as session:
            row = NotificationChannel(
                name=name,
                kind=kind,
                target=target,
                thresholds=list(thresholds),
                site_id=site_id,
                settings=settings or {},
            )
            session.add(row)
            session.flush()
            return row.id

    def ledger(self, channel_id: int | None = None) -> dict[tuple[int, str], str]:
        """(subject_id, notice) -> status, for one channel or all."""
        with self.database.session() as session:
            query = select(Notice)
            if channel_id is not None:
                query = query.where(Notice.channel_id == channel_id)
            return {(n.subject_id, n.notice): n.status for n in session.scalars(query)}

    def set(self, model: Any, row_id: int, **values: Any) -> None:
        with self.database.session() as session:
            session.execute(update(model).where(model.id == row_id).values(**values))


@pytest.fixture
def world(database: Database, clock: FixedClock, ca_passphrase: str, data_key: str) -> World:
    with database.session() as session:
        site = make_site(session, make_root_authority(session, ca_passphrase, clock), "north")
        host = make_host(session, site, name="rec01")
        site_id, host_id = site.id, host.id
    certificate_id = issue_certificate(database, clock, host_id, ca_passphrase, data_key)
    return World(database, clock, ca_passphrase, data_key, site_id, host_id, certificate_id)


def factory_for(world: World, smtp_port: int, environ: dict[str, str] | None = None) -> Any:
    return make_factory(
        SmtpRelay("127.0.0.1", smtp_port, SENDER), environ or {}, world.clock, policy=LOOPBACK
    )


def notice_of(mail: Any) -> str:
    body = mail.message.get_content()
    return next(line for line in body.splitlines() if line.startswith("notice: "))[8:]


# --- thresholds -----------------------------------------------------------------------------


def test_each_threshold_fires_once_per_channel_as_the_days_pass(
    world: World,
    smtp: SmtpSink,  # noqa: F811
    http_receiver: HttpReceiver,  # noqa: F811
) -> None:
    mail = world.channel("ops-mail", "ops@example.com")
    chat = world.channel(
        "chat",
        f"{http_receiver.base_url}/hooks/chat",
        kind="webhook",
        thresholds=[10, 3],
        settings={"allow_http": True},
    )
    factory = factory_for(world, smtp.port)
    end = world.not_after()
    world.go_to(dt.timedelta(days=35, hours=-1))
    arrivals: list[tuple[str, dt.timedelta]] = []
    for day in range(41):
        for _ in range(2 if day % 5 == 0 else 1):
            scan(world.database, world.clock, factory)
        arrivals += [(notice_of(m), end - world.clock.now()) for m in smtp.mails[len(arrivals) :]]
        world.clock.advance(DAY)

    names = [name for name, _ in arrivals]
    assert names == [
        "expires_in_30d",
        "expires_in_14d",
        "expires_in_7d",
        "expires_in_1d",
        "expired",
    ]
    for (name, left), days in zip(arrivals, (30, 14, 7, 1, 0), strict=True):
        assert left <= days * DAY < left + DAY, f"{name} came {left} before expiry, not on day 1"
    for sent in smtp.mails:
        assert "rec01" in sent.message["Subject"]
        assert end.strftime("%Y-%m-%d %H:%M UTC") in sent.message["Subject"]
    assert [h.json()["notice"] for h in http_receiver.hits] == ["expires_in_10d", "expires_in_3d"]
    assert all(h.json()["text"].startswith("[certfleet] rec01: ") for h in http_receiver.hits)
    assert set(world.ledger(mail).values()) == {"sent"} and len(world.ledger(mail)) == 5
    assert set(world.ledger(chat).values()) == {"sent"} and len(world.ledger(chat)) == 2
    with world.database.session() as session:
        kinds = list(session.scalars(select(Event.kind).where(Event.kind.like("notice.%"))))
    assert kinds == ["notice.sent"] * 7


def test_a_certificate_first_seen_late_sends_only_the_most_urgent_threshold(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    mail = world.channel("ops-mail", "ops@example.com")
    factory = factory_for(world, smtp.port)
    world.go_to(dt.timedelta(days=5))
    assert scan(world.database, world.clock, factory) == SendReport(sent=1)
    assert [notice_of(m) for m in smtp.mails] == ["expires_in_7d"]
    cid = world.certificate_id
    assert world.ledger(mail) == {
        (cid, "expires_in_30d"): "skipped",
        (cid, "expires_in_14d"): "skipped",
        (cid, "expires_in_7d"): "sent",
    }
    assert "in 5 days" in smtp.mails[0].message["Subject"]

    world.go_to(-dt.timedelta(days=3))  # straight past 1d and 0
    scan(world.database, world.clock, factory)
    world.clock.advance(DAY)
    with world.database.session() as session:
        assert due_notices(session, world.clock.now(), limit=100) == []
    assert [notice_of(m) for m in smtp.mails] == ["expires_in_7d", "expired"]
    assert world.ledger(mail)[(cid, "expires_in_1d")] == "skipped"


# --- renewal-aware --------------------------------------------------------------------------


def test_no_expires_soon_once_the_renewal_is_issued_for_a_host_without_delivery(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    world.channel("ops-mail", "ops@example.com")
    factory = factory_for(world, smtp.port)
    world.go_to(dt.timedelta(days=20))
    scan(world.database, world.clock, factory)
    assert [notice_of(m) for m in smtp.mails] == ["expires_in_30d"]

    world.issue()  # supersedes the old one; nothing to deliver, so issued is enough
    for _ in range(25):
        world.clock.advance(DAY)
        scan(world.database, world.clock, factory)
    assert world.not_after() < world.clock.now()  # the old one has expired meanwhile
    assert len(smtp.mails) == 1


def test_a_replacement_not_verified_yet_keeps_the_old_certificate_watched(
    world: World,
    smtp: SmtpSink,  # noqa: F811
    tmp_path: Path,
) -> None:
    world.set(
        Host,
        world.host_id,
        delivery={"method": "directory", "settings": {"path": str(tmp_path)}},
        tls_endpoints=["127.0.0.1:8443"],
    )
    world.channel("ops-mail", "ops@example.com")
    factory = factory_for(world, smtp.port)
    world.go_to(dt.timedelta(days=20))
    new_id = world.issue()
    with world.database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [new_id], world.clock.now())

    world.go_to(dt.timedelta(days=13))
    scan(world.database, world.clock, factory)
    assert [notice_of(m) for m in smtp.mails] == ["expires_in_14d"]
    body = smtp.mails[0].message.get_content()
    assert f"replacement_certificate_id: {new_id}" in body and "not verified" in body

    with world.database.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        now = world.clock.now()
        deliveries.mark_delivered(session, delivery, installed=True, actor="t", now=now)
        new_fingerprint = session.get_one(Certificate, new_id).fingerprint
        deliveries.record_probe(session, delivery, {"127.0.0.1:8443": new_fingerprint}, now)
        assert delivery.status == "verified"
    world.go_to(dt.timedelta(days=6))
    scan(world.database, world.clock, factory)
    world.go_to(-DAY)
    scan(world.database, world.clock, factory)
    assert len(smtp.mails) == 1


def test_renewal_in_flight_silences_expires_soon_but_not_its_failure_or_expiry(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    world.channel("ops-mail", "ops@example.com")
    factory = factory_for(world, smtp.port)

    def renewal(attempts: int) -> int:
        with world.database.session() as session:
            request = make_request(session, session.get_one(Host, world.host_id))
            request.updated_at = world.clock.now()
            request_id = request.id
        world.set(
            Certificate,
            world.certificate_id,
            renewal_request_id=request_id,
            renewal_attempts=attempts,
        )
        return request_id

    world.go_to(dt.timedelta(days=20))
    first = renewal(attempts=1)
    world.go_to(dt.timedelta(days=13))
    scan(world.database, world.clock, factory)
    assert smtp.mails == []  # 30d and 14d crossed, but the renewal is on its way

    world.set(
        IssuanceRequest,
        first,
        status="failed",
        reason="the CSR key is too short",
        updated_at=world.clock.now(),
    )
    scan(world.database, world.clock, factory)
    assert sorted(notice_of(m) for m in smtp.mails) == ["expires_in_14d", "renewal_failed"]
    failed = next(m for m in smtp.mails if notice_of(m) == "renewal_failed")
    assert "rec01" in failed.message["Subject"] and "attempt 1" in failed.message["Subject"]
    assert "reason: the CSR key is too short" in failed.message.get_content()

    renewal(attempts=2)  # retried, and in flight again: 7d and 1d stay quiet, expiry does not
    for _ in range(15):
        world.clock.advance(DAY)
        scan(world.database, world.clock, factory)
    assert sorted(notice_of(m) for m in smtp.mails) == [
        "expired",
        "expires_in_14d",
        "renewal_failed",
    ]


# --- event notices --------------------------------------------------------------------------


def test_unbound_and_a_ca_expiring_before_its_leaves_are_told_once(
    world: World,
    smtp: SmtpSink,  # noqa: F811
    tmp_path: Path,
    ca_passphrase: str,
) -> None:
    world.set(
        Host,
        world.host_id,
        delivery={"method": "directory", "settings": {"path": str(tmp_path)}},
        tls_endpoints=["127.0.0.1:8443"],
    )
    with world.database.session() as session:
        other = make_site(session, make_root_authority(session, ca_passphrase, world.clock))
        other_site = other.id
    everywhere = world.channel("all", "all@example.com", thresholds=[])
    north = world.channel("north", "north@example.com", thresholds=[], site_id=world.site_id)
    elsewhere = world.channel("other", "other@example.com", thresholds=[], site_id=other_site)
    factory = factory_for(world, smtp.port)
    with world.database.session() as session:
        [delivery_id] = deliveries.plan_certificates(
            session, [world.certificate_id], world.clock.now()
        )
        delivery = session.get_one(Delivery, delivery_id)
        deliveries.mark_delivered(
            session, delivery, installed=True, actor="t", now=world.clock.now()
        )
        for _ in range(deliveries.MAX_PROBES - 1):
            deliveries.record_probe(
                session, delivery, {"127.0.0.1:8443": "ab" * 32}, world.clock.now()
            )
    scan(world.database, world.clock, factory)
    assert smtp.mails == []  # not the final verdict yet: the services may still be restarting

    with world.database.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        deliveries.record_probe(session, delivery, {"127.0.0.1:8443": "ab" * 32}, world.clock.now())
        authority_id = session.get_one(Site, world.site_id).authority_id
    world.set(Authority, authority_id, not_after=world.not_after() - 10 * DAY)
    for _ in range(2):
        scan(world.database, world.clock, factory)

    got = sorted((m.recipients[0], notice_of(m)) for m in smtp.mails)
    assert got == [
        ("all@example.com", "ca_expires_before_leaves"),
        ("all@example.com", "unbound"),
        ("north@example.com", "ca_expires_before_leaves"),
        ("north@example.com", "unbound"),
    ]
    unbound = next(m for m in smtp.mails if notice_of(m) == "unbound")
    assert "presented_fingerprint: " + "ab" * 32 in unbound.message.get_content()
    ca = next(m for m in smtp.mails if notice_of(m) == "ca_expires_before_leaves")
    assert "before 1 certificate(s) it issued" in ca.message["Subject"]
    assert world.ledger(everywhere) == {
        (delivery_id, "unbound"): "sent",
        (authority_id, "ca_expires_before_leaves"): "sent",
    }
    assert world.ledger(north) == world.ledger(everywhere)
    assert world.ledger(elsewhere) == {}


# --- routing and mutes ----------------------------------------------------------------------


def test_a_site_channel_gets_only_its_sites_notices(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    with world.database.session() as session:
        site = session.get_one(Site, world.site_id)
        south = make_site(session, site.authority, "south", dns_suffixes=["site2.example.com"])
        south_host = make_host(session, south, name="rec02", ip_addresses=[])
        south_id, south_host_id = south.id, south_host.id
    world.issue(south_host_id)
    world.channel("north", "north@example.com", site_id=world.site_id)
    world.channel("south", "south@example.com", site_id=south_id)
    world.channel("all", "all@example.com")
    world.go_to(dt.timedelta(days=5))
    scan(world.database, world.clock, factory_for(world, smtp.port))

    got = sorted((m.recipients[0], m.message["Subject"].split(":")[0]) for m in smtp.mails)
    assert got == [
        ("all@example.com", "[certfleet] rec01"),
        ("all@example.com", "[certfleet] rec02"),
        ("north@example.com", "[certfleet] rec01"),
        ("south@example.com", "[certfleet] rec02"),
    ]


def days_of_mail(world: World, smtp: SmtpSink, factory: ChannelFactory) -> list[str]:  # noqa: F811
    """Scan daily from 35 days before expiry to 5 days after; the notices mailed."""
    world.go_to(dt.timedelta(days=35, hours=-1))
    for _ in range(41):
        scan(world.database, world.clock, factory)
        world.clock.advance(DAY)
    return [notice_of(m) for m in smtp.mails]


def test_a_muted_channel_skips_thresholds_crossed_while_muted(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    """Muted until 10 days before expiry: 30d and 14d are skipped for good, not sent late."""
    mail = world.channel("ops-mail", "ops@example.com")
    world.set(NotificationChannel, mail, muted_until=world.not_after() - 10 * DAY)

    assert days_of_mail(world, smtp, factory_for(world, smtp.port)) == [
        "expires_in_7d",
        "expires_in_1d",
        "expired",
    ]
    cid = world.certificate_id
    assert world.ledger(mail)[(cid, "expires_in_30d")] == "skipped"
    assert world.ledger(mail)[(cid, "expires_in_14d")] == "skipped"


def test_a_muted_site_gets_nothing_until_the_mute_ends_then_only_expired(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    north = world.channel("north", "north@example.com", site_id=world.site_id)
    everywhere = world.channel("all", "all@example.com")
    until = world.not_after() + 2 * DAY + dt.timedelta(hours=12)
    world.set(Site, world.site_id, muted_until=until)

    mailed = days_of_mail(world, smtp, factory_for(world, smtp.port))
    assert mailed == ["expired", "expired"]
    assert {m.recipients[0] for m in smtp.mails} == {"north@example.com", "all@example.com"}
    for sent in smtp.mails:  # at the first daily scan after the mute, not before
        assert until <= parsedate_to_datetime(sent.message["Date"]) < until + DAY
    for channel_id in (north, everywhere):
        ledger = world.ledger(channel_id)
        assert sorted(ledger.values()) == ["sent"] + ["skipped"] * 4
        assert ledger[(world.certificate_id, "expired")] == "sent"


# --- exactly once ---------------------------------------------------------------------------


class SlowChannel:
    """Holds each send for a moment so that two racing scanners overlap."""

    def __init__(self, inner: Channel, sent: list[NoticeMessage]) -> None:
        self.inner, self.sent = inner, sent

    def send(self, notice: NoticeMessage) -> None:
        time.sleep(0.2)
        self.sent.append(notice)
        self.inner.send(notice)


def test_two_scanners_racing_on_the_same_notice_send_it_once(
    world: World,
    smtp: SmtpSink,  # noqa: F811
) -> None:
    world.channel("ops-mail", "ops@example.com")
    world.go_to(dt.timedelta(days=5))
    now = world.clock.now()
    with world.database.session() as session:
        plan = due_notices(session, now, limit=10)
    assert [p.notice for p in plan] == ["expires_in_7d"]
    sent: list[NoticeMessage] = []
    base = factory_for(world, smtp.port)

    def factory(spec: ChannelSpec) -> Channel:
        return SlowChannel(base(spec), sent)

    second = Database(world.database.url)  # another scanner: its own engine and connections
    reports: list[SendReport] = []
    barrier = threading.Barrier(2)

    def race(db: Database) -> None:
        barrier.wait()
        reports.append(record_and_send(db, plan, factory, now))

    try:
        threads = [threading.Thread(target=race, args=(db,)) for db in (world.database, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        second.dispose()
    assert sorted((r.sent, r.not_claimed) for r in reports) == [(0, 1), (1, 0)]
    assert record_and_send(world.database, plan, factory, now) == SendReport(not_claimed=1)
    assert len(sent) == 1 and len(smtp.mails) == 1


def test_a_failing_relay_leaves_notices_pending_and_a_later_scan_sends_them(
    world: World,
) -> None:
    with world.database.session() as session:
        site = session.get_one(Site, world.site_id)
        second_host = make_host(session, site, name="rec02", ip_addresses=["10.1.0.11"]).id
    world.issue(second_host)
    mail = world.channel("ops-mail", "ops@example.com")
    port = free_port()
    factory = factory_for(world, port)
    world.go_to(dt.timedelta(days=5))

    assert scan(world.database, world.clock, factory) == SendReport(retrying=1, deferred=1)
    with world.database.session() as session:
        [row] = session.scalars(select(Notice).where(Notice.status != "skipped"))
        assert (row.status, row.attempts) == ("pending", 1)
        assert (
            row.last_error
            == f"the SMTP server 127.0.0.1:{port} did not answer: ConnectionRefusedError"
        )
    world.clock.advance(dt.timedelta(seconds=30))
    # The first is not due for a retry yet; the deferred one gets its first try.
    assert scan(world.database, world.clock, factory) == SendReport(retrying=1)

    with smtp_server(port) as relay:
        world.clock.advance(dt.timedelta(minutes=1))
        assert scan(world.database, world.clock, factory) == SendReport(sent=2)
        assert scan(world.database, world.clock, factory) == SendReport()
        assert sorted(notice_of(m) for m in relay.mails) == ["expires_in_7d", "expires_in_7d"]
    with world.database.session() as session:
        rows = session.scalars(select(Notice).where(Notice.notice == "expires_in_7d")).all()
        assert [(r.status, r.attempts) for r in rows] == [("sent", 2), ("sent", 2)]
    assert world.ledger(mail)[(world.certificate_id, "expires_in_7d")] == "sent"


def test_a_receiver_that_stays_down_fails_after_five_attempts_and_leaks_no_secret(
    world: World,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/T01/{URL_TOKEN}?token={URL_TOKEN}"
    hook = world.channel(
        "chat",
        url,
        kind="webhook",
        settings={"allow_http": True, "secret_env": "CERTFLEET_SECRET_HOOK"},
    )
    factory = make_factory(
        SmtpRelay(None), {"CERTFLEET_SECRET_HOOK": HOOK_SECRET}, world.clock, policy=LOOPBACK
    )
    world.go_to(dt.timedelta(days=5))
    reports = []
    for wait in (0, 1, 5, 30, 120, 600, 1400):  # minutes, cumulative since the first try
        world.go_to(dt.timedelta(days=5) - dt.timedelta(minutes=wait))
        reports.append(scan(world.database, world.clock, factory))
    assert [r.retrying for r in reports] == [1, 1, 1, 1, 0, 0, 0]
    assert [r.failed for r in reports] == [0, 0, 0, 0, 1, 0, 0]
    with world.database.session() as session:
        row = session.scalars(
            select(Notice).where(Notice.channel_id == hook, Notice.status != "skipped")
        ).one()
        assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
        errors = [
            e.data["error"]
            for e in session.scalars(select(Event).where(Event.kind == "notice.failed"))
        ]
    assert len(errors) == MAX_ATTEMPTS
    for text in [row.last_error or "", *errors]:
        assert text.startswith("the webhook receiver http://127.0.0.1:")
        assert URL_TOKEN not in text and HOOK_SECRET not in text and "/hooks" not in text


def test_a_channel_that_crashes_leaves_the_notice_pending_not_stuck(
    world: World,
) -> None:
    world.channel("ops-mail", "ops@example.com")

    class Broken:
        def send(self, notice: NoticeMessage) -> None:
            raise RuntimeError("secret-ish detail")

    crashing: Callable[[ChannelSpec], Channel] = lambda spec: Broken()  # noqa: E731
    world.go_to(dt.timedelta(days=5))
    assert scan(world.database, world.clock, crashing) == SendReport(retrying=1)
    with world.database.session() as session:
        row = session.scalars(select(Notice).where(Notice.status != "skipped")).one()
        assert row.status == "pending"
        assert row.last_error == "the channel failed unexpectedly: RuntimeError"
