"""Automatic renewal on both databases with an injectable clock: due points, maintenance
windows, failover pairs never in one batch, retries measured in hours."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from services.expiry_watcher.renewal import renew_due
from services.issuer import service as issuer
from shared import contracts
from shared.clock import FixedClock
from shared.db.models import Certificate, Host, IssuanceRequest
from shared.db.session import Database
from shared.renewal import MaintenanceWindow
from tests.factories import (
    make_csr,
    make_host,
    make_request,
    make_root_authority,
    make_site,
    rsa_key,
)

WINDOW = {"start": "01:00", "end": "04:00", "timezone": "Europe/Copenhagen"}


@dataclass
class Fleet:
    ids: dict[str, int]
    published: list[contracts.Message]
    secrets: issuer.Secrets

    def publish(self, message: contracts.Message) -> None:
        self.published.append(message)


@pytest.fixture
def fleet(database: Database, clock: FixedClock, ca_passphrase: str, data_key: str) -> Fleet:
    with database.session() as session:
        site = make_site(session, make_root_authority(session, ca_passphrase, clock))
        site.maintenance_window = WINDOW
        rec01 = make_host(session, site, name="rec01", roles=["recording"])
        make_host(session, site, name="fo01", roles=["failover", "recording"]).failover_for = [
            "rec01"
        ]
        rec02 = make_host(session, site, name="rec02", roles=["recording"])
        requests = [
            make_request(session, h).id for h in session.scalars(select(Host).order_by(Host.id))
        ]
        # rec02 holds its own key: its renewals must come from the same CSR.
        make_request(
            session, rec02, csr_pem=make_csr(rsa_key(), [f"rec02.{site.dns_suffixes[0]}", "rec02"])
        )
        requests = [
            r.id for r in session.scalars(select(IssuanceRequest).order_by(IssuanceRequest.id))
        ]
        ids = {"rec01": rec01.id}
    fleet = Fleet(ids, [], issuer.Secrets(ca_passphrase, data_key))
    issue(database, clock, fleet, requests)
    return fleet


def issue(database: Database, clock: FixedClock, fleet: Fleet, request_ids: list[int]) -> Any:
    return issuer.issue_batch(
        database, request_ids, signers=issuer.SignerCache(), secrets=fleet.secrets, clock=clock
    )


def move_to(clock: FixedClock, when: dt.datetime) -> None:
    clock.advance(when - clock.now())


def closed_after(window: MaintenanceWindow, instant: dt.datetime) -> dt.datetime:
    """The first whole hour after `instant` at which the window is closed."""
    closed = instant + dt.timedelta(hours=1)
    while window.is_open(closed):
        closed += dt.timedelta(hours=1)
    return closed


def started_hosts(database: Database, request_ids: list[int]) -> list[str]:
    with database.sessions() as session:
        rows = session.scalars(select(IssuanceRequest).where(IssuanceRequest.id.in_(request_ids)))
        return sorted(r.host.name for r in rows)


def test_renewals_wait_for_the_window_and_never_take_a_failover_pair_together(
    database: Database, clock: FixedClock, fleet: Fleet
) -> None:
    assert renew_due(database, fleet.publish, clock).started == []  # nothing is due yet
    with database.sessions() as session:
        due = max(
            c.renewal_due_at for c in session.scalars(select(Certificate)) if c.renewal_due_at
        )
    window = MaintenanceWindow.from_json(WINDOW)
    assert window is not None
    move_to(clock, closed_after(window, due))
    report = renew_due(database, fleet.publish, clock)
    assert report.started == [] and report.waiting_for_window == 3
    move_to(clock, window.next_opening(clock.now()) + dt.timedelta(minutes=10))
    report = renew_due(database, fleet.publish, clock)
    first = started_hosts(database, report.started)
    assert len(first) == 2 and "rec02" in first and ({"rec01", "fo01"} & set(first))
    assert report.held_back == 1
    # One message for the renewal from rec02's CSR, one for the server-held key.
    assert sorted(m.kwargs["request_ids"] for m in fleet.published) == sorted(
        [[r] for r in report.started]
    )
    # While the first of the pair is being renewed, its partner waits.
    assert renew_due(database, fleet.publish, clock).started == []
    issue(database, clock, fleet, report.started)
    second = started_hosts(database, renew_due(database, fleet.publish, clock).started)
    assert len(second) == 1 and second[0] in {"rec01", "fo01"} and second[0] not in first
    with database.sessions() as session:
        rec02 = [c for c in session.scalars(select(Certificate)) if c.host.name == "rec02"]
        renewal = session.get_one(
            IssuanceRequest,
            next(
                r
                for r in report.started
                if session.get_one(IssuanceRequest, r).host.name == "rec02"
            ),
        )
        original = session.get_one(
            IssuanceRequest, next(c for c in rec02 if c.key_source == "csr").request_id
        )
        assert renewal.csr_pem == original.csr_pem  # the host keeps its key


def test_a_failed_renewal_is_retried_within_hours(
    database: Database, clock: FixedClock, fleet: Fleet
) -> None:
    with database.session() as session:
        session.get_one(Host, fleet.ids["rec01"]).site.maintenance_window = None  # always open
    with database.sessions() as session:
        latest = max(
            c.renewal_due_at for c in session.scalars(select(Certificate)) if c.renewal_due_at
        )
    move_to(clock, latest + dt.timedelta(minutes=1))
    first = renew_due(database, fleet.publish, clock).started
    request_id, others = first[0], first[1:]
    with database.session() as session:  # the host's names stopped matching the site policy
        request = session.get_one(IssuanceRequest, request_id)
        host_id, names = request.host_id, list(request.host.dns_names)
        request.host.dns_names = ["renamed.elsewhere.example"]
        cert_id = session.scalars(
            select(Certificate.id).where(
                Certificate.host_id == host_id, Certificate.status == "active"
            )
        ).one()
    assert issue(database, clock, fleet, [request_id]).failed == [request_id]
    issue(database, clock, fleet, others)

    def run() -> Any:
        """One watcher run, then the issuer finishes what the run started (a partner left in
        flight would rightly hold the host back)."""
        report = renew_due(database, fleet.publish, clock)
        issue(database, clock, fleet, report.started)
        return report

    def started_for_host(report: Any) -> bool:
        with database.sessions() as session:
            return any(
                session.get_one(IssuanceRequest, r).host_id == host_id for r in report.started
            )

    report = run()
    assert report.failures_recorded == 1 and not started_for_host(report)
    with database.sessions() as session:
        cert = session.get_one(Certificate, cert_id)
        assert cert.renewal_attempts == 1
        assert cert.next_renewal_at == clock.now() + dt.timedelta(hours=1)
    assert run().failures_recorded == 0  # counted once
    with database.session() as session:
        session.get_one(Host, host_id).dns_names = names
    clock.advance(dt.timedelta(minutes=30))
    assert not started_for_host(run())  # the retry is an hour away, not a whole period
    clock.advance(dt.timedelta(minutes=31))
    assert started_for_host(run())


def test_a_certificate_that_cannot_be_renewed_does_not_stop_the_others(
    database: Database, clock: FixedClock, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """rec02's key is held by the host and the CSR it was issued from is gone: it is logged
    and skipped, and the run renews the rest."""
    with database.session() as session:
        rec02 = next(
            c
            for c in session.scalars(select(Certificate).where(Certificate.status == "active"))
            if c.host.name == "rec02"
        )
        session.get_one(IssuanceRequest, rec02.request_id).csr_pem = None
        lost = rec02.id
        due = max(
            c.renewal_due_at for c in session.scalars(select(Certificate)) if c.renewal_due_at
        )
    window = MaintenanceWindow.from_json(WINDOW)
    assert window is not None
    opened = window.next_opening(closed_after(window, due))
    move_to(clock, opened + dt.timedelta(minutes=10))  # early in a window, not near its end
    report = renew_due(database, fleet.publish, clock)
    started = started_hosts(database, report.started)
    assert "rec02" not in started and len(started) == 1  # one of the failover pair
    assert any(
        r.getMessage() == "certificate not renewed"
        and getattr(r, "fields", {}).get("certificate_id") == lost
        for r in caplog.records
    )


def test_a_site_whose_stored_window_cannot_be_read_waits_and_the_others_renew(
    database: Database, clock: FixedClock, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """A window stored before the API checked windows (`days: []`) holds back its own site,
    logged with the site's name; a second site's due certificate renews in the same run."""
    with database.session() as session:
        first = session.get_one(Host, fleet.ids["rec01"]).site
        first.maintenance_window = {**WINDOW, "days": []}
        other = make_site(session, first.authority, name="other", dns_suffixes=["other.test"])
        request = make_request(session, make_host(session, other, name="oth01"))
        request_id, bad_site = request.id, first.name
    issue(database, clock, fleet, [request_id])
    with database.session() as session:
        due = max(
            c.renewal_due_at for c in session.scalars(select(Certificate)) if c.renewal_due_at
        )
    move_to(clock, due + dt.timedelta(minutes=1))
    report = renew_due(database, fleet.publish, clock)
    assert started_hosts(database, report.started) == ["oth01"]
    assert report.waiting_for_window == 3
    unreadable = [r for r in caplog.records if "window unreadable" in r.getMessage()]
    assert len(unreadable) == 1  # once per run, not once per certificate
    assert getattr(unreadable[0], "fields", {}).get("site") == bad_site
    assert "never renew" in getattr(unreadable[0], "fields", {}).get("error", "")


def test_renewal_messages_carry_the_configured_batch_size(
    database: Database, clock: FixedClock, ca_passphrase: str, data_key: str
) -> None:
    """CERTFLEET_ISSUE_BATCH_SIZE reaches the watcher: three renewals from CSRs go out as
    messages of at most two requests, and at most `per_site_limit` start per run."""
    key = rsa_key()
    with database.session() as session:
        site = make_site(session, make_root_authority(session, ca_passphrase, clock))
        requests = []
        for i in range(4):
            host = make_host(session, site, name=f"rec{i}", roles=["recording"])
            names = [f"rec{i}.{site.dns_suffixes[0]}", f"rec{i}"]
            requests.append(make_request(session, host, csr_pem=make_csr(key, names)).id)
    fleet = Fleet({}, [], issuer.Secrets(ca_passphrase, data_key))
    issue(database, clock, fleet, requests)
    with database.session() as session:
        due = max(
            c.renewal_due_at for c in session.scalars(select(Certificate)) if c.renewal_due_at
        )
    move_to(clock, due + dt.timedelta(minutes=1))
    report = renew_due(database, fleet.publish, clock, per_site_limit=3, batch_size=2)
    assert len(report.started) == 3
    assert sorted(len(m.kwargs["request_ids"]) for m in fleet.published) == [1, 2]
