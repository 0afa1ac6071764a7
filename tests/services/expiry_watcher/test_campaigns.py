"""Campaigns driven by the watcher on both databases with an injectable clock: rate, per-site
concurrency, maintenance windows, failover pairs, pause/resume/cancel, self-pausing on
failures, and a CA rotation whose order is enforced step by step. The issuer and the
distributor run in process on the same database; nothing sleeps."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import select

from services.distributor import service as distributor
from services.distributor.targets.directory import DirectoryTarget
from services.expiry_watcher.campaigns import AUTHORITY_RESEND, advance
from services.issuer import service as issuer
from shared import campaigns, contracts
from shared.authorities import trust_anchors
from shared.bundles import trust_bundle_pem
from shared.clock import FixedClock
from shared.db.models import (
    Authority,
    Campaign,
    CampaignItem,
    Certificate,
    Event,
    Host,
    IssuanceRequest,
    Site,
)
from shared.db.session import Database
from shared.errors import Conflict, ValidationFailed
from shared.issuance import renewal_request
from shared.pki.export import fingerprint_sha256
from tests.factories import ANYWHERE, issue_certificate, make_host, make_root_authority, make_site

CLOSED_WINDOW = {"start": "01:00", "end": "02:00", "timezone": "UTC", "days": ["sun"]}


@dataclass
class Fleet:
    database: Database
    clock: FixedClock
    secrets: issuer.Secrets
    authority: str
    published: list[contracts.Message] = field(default_factory=list)

    def publish(self, message: contracts.Message) -> None:
        self.published.append(message)

    def advance(self) -> Any:
        return advance(self.database, self.publish, self.clock)

    def issue_published(self) -> list[int]:
        """Run the issuer on every issue_batch message published so far, as its worker would."""
        ids = [
            i
            for m in self.published
            if m.task == contracts.TASK_ISSUE_BATCH
            for i in m.kwargs["request_ids"]
        ]
        self.published = [m for m in self.published if m.task != contracts.TASK_ISSUE_BATCH]
        if not ids:
            return []
        result = issuer.issue_batch(
            self.database, ids, signers=issuer.SignerCache(), secrets=self.secrets, clock=self.clock
        )
        return list(result.certificate_ids)

    def create(self, **spec: Any) -> int:
        spec.setdefault("name", "test campaign")
        spec.setdefault("kind", campaigns.RENEW)
        with self.database.session() as session:
            campaign, messages = campaigns.create(
                session, campaigns.CampaignSpec.from_json(spec), actor="test", now=self.clock.now()
            )
        for message in messages:
            self.publish(message)
        return campaign.id

    def steer(self, campaign_id: int, action: str, **kwargs: Any) -> None:
        with self.database.session() as session:
            campaign = session.get_one(Campaign, campaign_id)
            campaigns.steer(session, campaign, action, actor="test", now=self.clock.now(), **kwargs)

    def campaign(self, campaign_id: int) -> Campaign:
        with self.database.sessions() as session:
            return session.get_one(Campaign, campaign_id)

    def items(self, campaign_id: int, status: str | None = None) -> list[str]:
        """Host names of the campaign's items (in `status`), sorted."""
        with self.database.sessions() as session:
            query = (
                select(Host.name)
                .join(CampaignItem, CampaignItem.host_id == Host.id)
                .where(CampaignItem.campaign_id == campaign_id)
            )
            if status is not None:
                query = query.where(CampaignItem.status == status)
            return sorted(session.scalars(query))

    def counts(self, campaign_id: int) -> dict[str, int]:
        with self.database.sessions() as session:
            return campaigns.counts(session, [campaign_id])[campaign_id]


@pytest.fixture
def fleet(database: Database, clock: FixedClock, ca_passphrase: str, data_key: str) -> Fleet:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock, name="old root")
        north = make_site(session, root, name="north")
        south = make_site(session, root, name="south")
        south.maintenance_window = CLOSED_WINDOW
        for n in range(1, 5):
            make_host(session, north, name=f"n-rec0{n}")
        make_host(session, north, name="n-fo01", roles=["failover"]).failover_for = ["n-rec01"]
        make_host(session, south, name="s-rec01")
        host_ids = list(session.scalars(select(Host.id).order_by(Host.id)))
    for host_id in host_ids:
        issue_certificate(database, clock, host_id, ca_passphrase, data_key)
    return Fleet(database, clock, issuer.Secrets(ca_passphrase, data_key), "old root")


def test_an_unthrottled_renewal_starts_all_it_may_at_once(fleet: Fleet) -> None:
    """rate_per_minute None: no rate, but still the per-site limit, the windows and the
    failover pairs."""
    campaign_id = fleet.create(
        selector={"authority": fleet.authority},
        rate_per_minute=None,
        per_site_concurrency=100,
    )
    assert fleet.campaign(campaign_id).rate_per_minute is None
    fleet.advance()
    # Every north host but the failover of n-rec01 (not together with it); south is closed.
    assert fleet.items(campaign_id, "queued") == ["n-rec01", "n-rec02", "n-rec03", "n-rec04"]
    fleet.issue_published()
    fleet.advance()
    assert fleet.items(campaign_id, "queued") == ["n-fo01"]


def test_a_renewal_keeps_to_the_rate_the_per_site_limit_and_the_windows(fleet: Fleet) -> None:
    campaign_id = fleet.create(
        selector={"authority": fleet.authority}, rate_per_minute=3, per_site_concurrency=2
    )
    assert fleet.counts(campaign_id)["total"] == 6
    fleet.advance()
    # Two in flight at north (the per-site limit); south's window is closed.
    assert len(fleet.items(campaign_id, "queued")) == 2
    assert all(h.startswith("n-") for h in fleet.items(campaign_id, "queued"))
    fleet.advance()
    assert len(fleet.items(campaign_id, "queued")) == 2, "no third host while two are in flight"

    assert len(fleet.issue_published()) == 2
    fleet.advance()  # both issued (hosts without delivery method: finished); one more fits the rate
    assert len(fleet.items(campaign_id, "issued")) == 2
    assert len(fleet.items(campaign_id, "queued")) == 1
    fleet.issue_published()
    fleet.advance()
    assert len(fleet.items(campaign_id, "queued")) == 0, "3 started within the minute"

    fleet.clock.advance(dt.timedelta(seconds=61))
    fleet.advance()
    assert len(fleet.items(campaign_id, "queued")) == 2
    fleet.issue_published()
    fleet.advance()
    assert fleet.items(campaign_id, "pending") == ["s-rec01"]
    assert fleet.campaign(campaign_id).finished_at is None

    # Sunday 01:00 UTC: south's window opens.
    now = fleet.clock.now()
    sunday = now + dt.timedelta(days=(6 - now.weekday()) % 7 or 7)
    fleet.clock.advance(sunday.replace(hour=1, minute=30) - now)
    fleet.advance()
    assert fleet.items(campaign_id, "queued") == ["s-rec01"]
    fleet.issue_published()
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert (campaign.status, campaign.finished_at) == ("completed", fleet.clock.now())
    assert fleet.counts(campaign_id)["issued"] == 6
    with fleet.database.sessions() as session:
        renewed = session.scalars(
            select(IssuanceRequest).where(IssuanceRequest.campaign_id == campaign_id)
        ).all()
        assert len(renewed) == 6 and all(r.status == "issued" for r in renewed)
        active = session.scalars(select(Certificate).where(Certificate.status == "active")).all()
        assert {c.request_id for c in active} == {r.id for r in renewed}


def test_a_recording_server_and_its_failover_never_start_together(fleet: Fleet) -> None:
    campaign_id = fleet.create(selector={"hosts": ["n-rec01", "n-fo01"]}, per_site_concurrency=5)
    fleet.advance()
    first = fleet.items(campaign_id, "queued")
    assert len(first) == 1
    fleet.advance()
    assert fleet.items(campaign_id, "queued") == first, "the partner waits while one is renewed"
    fleet.issue_published()
    fleet.advance()
    assert len(fleet.items(campaign_id, "queued")) == 1
    assert fleet.items(campaign_id, "queued") != first


def test_pause_resume_and_cancel(fleet: Fleet) -> None:
    campaign_id = fleet.create(selector={"sites": ["north"]}, per_site_concurrency=1)
    fleet.steer(campaign_id, "pause")
    fleet.advance()
    assert fleet.counts(campaign_id)["pending"] == 5
    with pytest.raises(Conflict):
        fleet.steer(campaign_id, "pause")
    fleet.steer(campaign_id, "resume")
    with pytest.raises(Conflict, match="already running"):
        fleet.steer(campaign_id, "resume")
    fleet.advance()
    assert fleet.counts(campaign_id)["queued"] == 1
    fleet.steer(campaign_id, "cancel")
    counts = fleet.counts(campaign_id)
    assert (counts["cancelled"], counts["queued"]) == (4, 1)
    fleet.advance()
    assert fleet.campaign(campaign_id).finished_at is None, "the host in flight is still watched"
    fleet.issue_published()
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert campaign.status == "cancelled" and campaign.finished_at is not None
    assert fleet.counts(campaign_id)["issued"] == 1
    with pytest.raises(Conflict):
        fleet.steer(campaign_id, "resume")


def test_repeated_failures_pause_the_campaign_and_resume_retries_them(fleet: Fleet) -> None:
    with fleet.database.session() as session:
        for host in session.scalars(select(Host).where(Host.name.like("n-rec0%"))):
            host.dns_names = [f"{host.name}.elsewhere.example"]  # outside the site's policy
    campaign_id = fleet.create(
        selector={"sites": ["north"]}, per_site_concurrency=5, max_failures=2
    )
    fleet.advance()
    fleet.issue_published()
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert campaign.status == "paused" and "failed hosts" in (campaign.reason or "")
    failed = fleet.counts(campaign_id)["failed"]
    assert failed >= 2
    fleet.advance()
    assert fleet.issue_published() == [], "a paused campaign starts nothing"

    with fleet.database.session() as session:
        for host in session.scalars(select(Host).where(Host.name.like("n-rec0%"))):
            host.dns_names = [host.name]
    fleet.steer(campaign_id, "resume", retry_failed=True)
    for _ in range(4):
        fleet.advance()
        fleet.issue_published()
    fleet.advance()
    assert fleet.campaign(campaign_id).status == "completed"
    assert fleet.counts(campaign_id)["failed"] == 0
    assert fleet.counts(campaign_id)["issued"] == 5


def test_a_certificate_already_renewing_is_followed_not_renewed_twice(fleet: Fleet) -> None:
    with fleet.database.session() as session:
        certificate = session.scalars(
            select(Certificate).join(Host).where(Host.name == "n-rec02")
        ).one()
        running = renewal_request(session, certificate, actor="test", now=fleet.clock.now()).id
    campaign_id = fleet.create(selector={"hosts": ["n-rec02"]})
    fleet.advance()
    assert fleet.issue_published() == [], "the host is busy: the campaign waits, starts nothing"
    assert fleet.items(campaign_id, "pending") == ["n-rec02"]
    fleet.publish(contracts.issue_batch([running]))
    [successor] = fleet.issue_published()
    fleet.advance()  # the renewal that was running counts for the campaign
    fleet.advance()
    assert fleet.campaign(campaign_id).status == "completed"
    with fleet.database.sessions() as session:
        item = session.scalars(
            select(CampaignItem).where(CampaignItem.campaign_id == campaign_id)
        ).one()
        assert (item.status, item.new_certificate_id) == ("issued", successor)
        campaign_requests = select(IssuanceRequest.id).where(
            IssuanceRequest.campaign_id == campaign_id
        )
        assert session.scalar(campaign_requests) is None


def test_bad_selectors_are_refused_naming_what_is_wrong(fleet: Fleet) -> None:
    with pytest.raises(ValidationFailed, match="empty"):
        fleet.create(selector={})
    with pytest.raises(ValidationFailed) as unknown:
        fleet.create(selector={"sites": ["north", "atlantis"], "hosts": ["nobody"]})
    assert unknown.value.errors == {"sites": ["unknown: atlantis"], "hosts": ["unknown: nobody"]}
    with pytest.raises(ValidationFailed, match="matches no active certificate"):
        fleet.create(selector={"sites": ["north"], "expiring_within_days": 1})
    with pytest.raises(ValidationFailed, match="not allowed"):
        fleet.create(kind=campaigns.ROTATE, selector={"authority": "old root", "hosts": ["x"]})
    with pytest.raises(ValidationFailed, match="authority must be a name"):
        fleet.create(selector={"authority": 7})
    with fleet.database.session() as session:
        session.add(Site(name="east", authority_id=authority(fleet, "old root").id))
        other = make_root_authority(session, fleet.secrets.ca_passphrase or "", fleet.clock)
        session.scalars(select(Site).where(Site.name == "east")).one().authority_id = other.id
    rotation = {
        "name": "r",
        "kind": campaigns.ROTATE,
        "selector": {"authority": "old root", "sites": ["east"]},
    }
    with (
        fleet.database.session() as session,
        pytest.raises(ValidationFailed, match="no selected site"),
    ):
        campaigns.dry_run(session, campaigns.CampaignSpec.from_json(rotation), fleet.clock.now())
    with pytest.raises(ValidationFailed, match="no selected site"):
        fleet.create(**rotation)
    with fleet.database.sessions() as session:
        assert session.scalar(select(Campaign.id)) is None


def test_the_dry_run_lists_per_site_and_stores_nothing(fleet: Fleet) -> None:
    with fleet.database.session() as session:
        plan = campaigns.dry_run(
            session,
            campaigns.CampaignSpec.from_json(
                {"name": "x", "kind": "renew", "selector": {"all": True}}
            ),
            fleet.clock.now(),
        )
    assert plan["total"] == 6
    assert [(s["site"], s["certificates"]) for s in plan["sites"]] == [("north", 5), ("south", 1)]
    with fleet.database.sessions() as session:
        assert session.scalar(select(Campaign.id)) is None


# --- CA rotation ---------------------------------------------------------------------------


@dataclass
class Clients:
    ids: list[int]
    directory: Path

    def bundle(self, name: str) -> list[str]:
        """Fingerprints of the CA certificates a client received."""
        data = (self.directory / name / "ca-bundle.pem").read_bytes()
        return [fingerprint_sha256(c) for c in x509.load_pem_x509_certificates(data)]


@pytest.fixture
def clients(fleet: Fleet, tmp_path: Path) -> Clients:
    with fleet.database.session() as session:
        north = session.scalars(select(Site).where(Site.name == "north")).one()
        ids = []
        for name in ("client01", "client02"):
            host = make_host(session, north, name=name, roles=["client"])
            host.delivery = {"method": "directory", "settings": {"path": str(tmp_path / "trust")}}
            ids.append(host.id)
    return Clients(ids, tmp_path / "trust")


def deliver_trust(fleet: Fleet, host_id: int) -> None:
    """What the distributor's workers do for a distribute_trust message, for one client."""
    for delivery_id in distributor.distribute_trust(fleet.database, [host_id], fleet.clock):
        context = distributor.Context({"directory": DirectoryTarget(ANYWHERE)}, fleet.clock)
        assert distributor.attempt(fleet.database, delivery_id, context).status == "delivered"


def fingerprints(fleet: Fleet) -> set[str]:
    with fleet.database.sessions() as session:
        return {fingerprint_sha256(c) for c in trust_anchors(session)}


def authority(fleet: Fleet, name: str) -> Authority:
    with fleet.database.sessions() as session:
        return session.scalars(select(Authority).where(Authority.name == name)).one()


def phases(fleet: Fleet, campaign_id: int) -> list[str]:
    with fleet.database.sessions() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.kind == "campaign.phase", Event.subject_id == campaign_id)
            .order_by(Event.id)
        )
        return [r.data["phase"] for r in rows]


def test_a_ca_rotation_runs_its_steps_in_order(
    fleet: Fleet,
    clients: Clients,
    openssl: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    old = authority(fleet, "old root")
    campaign_id = fleet.create(
        kind=campaigns.ROTATE,
        selector={"authority": "old root"},
        ack_share=0.5,
        per_site_concurrency=10,
        new_authority={"name": "new root"},
    )
    new = authority(fleet, "new root")
    assert new.status == "pending" and fleet.campaign(campaign_id).phase == "create_authority"
    assert contracts.create_authority(new.id) in fleet.published

    # 1. Nothing moves until the new CA exists; a lost creation message is sent again.
    fleet.advance()
    assert fleet.campaign(campaign_id).phase == "create_authority"
    fleet.published.clear()
    fleet.clock.advance(AUTHORITY_RESEND + dt.timedelta(seconds=1))
    fleet.advance()
    assert fleet.published == [contracts.create_authority(new.id)]
    assert (
        issuer.create_authority(fleet.database, new.id, secrets=fleet.secrets, clock=fleet.clock)
        == "active"
    )

    # 2. Both CAs go to every client; no leaf changes before enough clients hold them.
    fleet.advance()
    assert fleet.campaign(campaign_id).phase == "trust"
    assert contracts.distribute_trust(clients.ids) in fleet.published
    assert fingerprints(fleet) == {old.fingerprint, authority(fleet, "new root").fingerprint}
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert campaign.phase == "trust" and "0 of 2 clients" in (campaign.reason or "")
    assert authority(fleet, "old root").status == "active"
    assert fleet.issue_published() == []

    deliver_trust(fleet, clients.ids[0])
    assert set(clients.bundle("client01")) == fingerprints(fleet)

    # 3. Half the clients hold the bundle: the sites switch and every old leaf is re-issued.
    fleet.advance()
    assert fleet.campaign(campaign_id).phase == "reissue"
    assert authority(fleet, "old root").status == "retiring"
    assert fleet.counts(campaign_id)["total"] == 6
    new_ids = fleet.issue_published()
    assert len(new_ids) == 4, "north minus a failover partner; south waits for its window"
    with fleet.database.sessions() as session:
        leaf = session.get_one(Certificate, new_ids[0])
        assert leaf.authority_id == new.id
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(trust_bundle_pem(session))
        (tmp_path / "leaf.pem").write_text(leaf.certificate_pem)
    assert openssl("verify", "-CAfile", str(bundle), str(tmp_path / "leaf.pem")).returncode == 0

    fleet.advance()  # the partner's turn
    assert len(fleet.issue_published()) == 1
    fleet.advance()
    assert fleet.campaign(campaign_id).phase == "reissue", "south is still on the old CA"
    assert old.fingerprint in fingerprints(fleet)

    # 4. The last old leaf renewed: the old CA is retired and leaves the trust bundle.
    now = fleet.clock.now()
    sunday = now + dt.timedelta(days=(6 - now.weekday()) % 7 or 7)
    fleet.clock.advance(sunday.replace(hour=1, minute=30) - now)
    fleet.advance()
    fleet.issue_published()
    fleet.published.clear()
    fleet.advance()
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert (campaign.status, campaign.phase) == ("completed", "done")
    assert authority(fleet, "old root").status == "retired"
    assert fingerprints(fleet) == {authority(fleet, "new root").fingerprint}
    assert contracts.distribute_trust(clients.ids) in fleet.published
    assert phases(fleet, campaign_id) == ["trust", "reissue", "retire", "done"]
    with fleet.database.sessions() as session:
        assert (
            session.scalar(
                select(Certificate.id).where(
                    Certificate.authority_id == old.id, Certificate.status == "active"
                )
            )
            is None
        )


def test_a_rotation_with_a_failed_reissue_keeps_the_old_ca_trusted(
    fleet: Fleet, clients: Clients
) -> None:
    campaign_id = fleet.create(
        kind=campaigns.ROTATE,
        selector={"authority": "old root", "sites": ["north"]},
        ack_share=0.0,
        per_site_concurrency=10,
        max_failures=100,
    )
    new_id = fleet.campaign(campaign_id).new_authority_id
    assert new_id is not None
    issuer.create_authority(fleet.database, new_id, secrets=fleet.secrets, clock=fleet.clock)
    with fleet.database.session() as session:
        host = session.scalars(select(Host).where(Host.name == "n-rec03")).one()
        host.dns_names = ["n-rec03.elsewhere.example"]
    fleet.advance()
    fleet.advance()
    assert fleet.campaign(campaign_id).phase == "reissue"
    for _ in range(3):  # a failover pair takes two turns
        fleet.issue_published()
        fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert campaign.status == "paused" and "could not be re-issued" in (campaign.reason or "")
    # South still issues from the old CA, and n-rec03 still serves one of its leaves.
    assert authority(fleet, "old root").status == "active"
    with pytest.raises(Conflict, match="already rotating"):
        fleet.create(kind=campaigns.ROTATE, selector={"authority": "old root"})

    with fleet.database.session() as session:
        host = session.scalars(select(Host).where(Host.name == "n-rec03")).one()
        host.dns_names = ["n-rec03"]
    fleet.steer(campaign_id, "resume", retry_failed=True)
    fleet.advance()
    fleet.issue_published()
    fleet.advance()
    fleet.advance()
    campaign = fleet.campaign(campaign_id)
    assert (campaign.status, campaign.phase) == ("completed", "done")
    assert "south" in (campaign.reason or ""), "the old CA is kept for the site still using it"
    assert authority(fleet, "old root").status == "active"
