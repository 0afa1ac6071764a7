"""The distributor's service functions on both databases with real targets and a real probe."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from services.distributor import service
from services.distributor.probe import TlsProber
from services.distributor.targets.directory import DirectoryTarget
from services.distributor.targets.ssh import SshTarget
from shared.clock import FixedClock
from shared.db.models import Delivery, Host
from shared.db.session import Database
from tests.factories import (
    ANYWHERE,
    LOOPBACK,
    SSH_KEY_VARIABLE,
    issue_certificate,
    make_host,
    make_root_authority,
    make_site,
)
from tests.ports import free_port
from tests.sshd import ssh_keygen
from tests.tls import tls_server


@dataclass(frozen=True)
class World:
    host_id: int
    client_id: int
    target_dir: Path


@pytest.fixture
def world(database: Database, wall_clock: FixedClock, ca_passphrase: str, tmp_path: Path) -> World:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, wall_clock)
        site = make_site(session, root)
        site.ip_ranges = [*site.ip_ranges, "127.0.0.0/8"]
        host = make_host(session, site, name="rec01")
        host.delivery = {"method": "directory", "settings": {"path": str(tmp_path / "certs")}}
        host.tls_endpoints = [f"127.0.0.1:{free_port()}"]
        client = make_host(session, site, name="client01", roles=["client"])
        client.delivery = {"method": "directory", "settings": {"path": str(tmp_path / "trust")}}
        host.ip_addresses = [*host.ip_addresses, "127.0.0.1"]
        _roots[id(wall_clock)] = tmp_path
        return World(host.id, client.id, tmp_path / "certs" / "rec01")


def context(
    clock: FixedClock, data_key: str | None, environ: dict[str, str] | None = None
) -> service.Context:
    return service.Context(
        {
            "directory": DirectoryTarget([clock_root(clock)]),
            "ssh": SshTarget(environ=environ or {}, policy=LOOPBACK),
        },
        clock,
        data_key,
    )


_roots: dict[int, Path] = {}


def clock_root(clock: FixedClock) -> Path:
    """The delivery root of the test that made `clock` (its tmp_path, see `world`)."""
    return _roots[id(clock)]


def row(database: Database, delivery_id: int) -> Delivery:
    with database.sessions() as session:
        found = session.scalar(select(Delivery).where(Delivery.id == delivery_id))
        assert found is not None
        return found


def test_directory_delivery_writes_a_matching_key_and_chain(
    database: Database, world: World, wall_clock: FixedClock, ca_passphrase: str, data_key: str
) -> None:
    cert_id = issue_certificate(database, wall_clock, world.host_id, ca_passphrase, data_key)
    [delivery_id] = service.distribute_certificates(database, [cert_id], wall_clock)
    assert service.distribute_certificates(database, [cert_id], wall_clock) == []
    outcome = service.attempt(database, delivery_id, context(wall_clock, data_key))
    assert outcome.status == "delivered" and outcome.probe is True
    leaf = x509.load_pem_x509_certificate((world.target_dir / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((world.target_dir / "key.pem").read_bytes(), None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    assert (world.target_dir / "key.pem").stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates((world.target_dir / "chain.pem").read_bytes())
    assert chain[0].subject == leaf.issuer
    assert service.attempt(database, delivery_id, context(wall_clock, data_key)).status == "skipped"


def test_probe_verifies_only_the_issued_certificate(
    database: Database, world: World, wall_clock: FixedClock, ca_passphrase: str, data_key: str
) -> None:
    cert_id = issue_certificate(database, wall_clock, world.host_id, ca_passphrase, data_key)
    [delivery_id] = service.distribute_certificates(database, [cert_id], wall_clock)
    service.attempt(database, delivery_id, context(wall_clock, data_key))
    with tls_server(world.target_dir / "fullchain.pem", world.target_dir / "key.pem") as port:
        with database.session() as session:
            host = session.get(Host, world.host_id)
            assert host is not None
            host.tls_endpoints = [f"127.0.0.1:{port}"]
        # A renewal arrives on disk, but the service still serves the old certificate.
        newer = issue_certificate(database, wall_clock, world.host_id, ca_passphrase, data_key)
        [newer_delivery] = service.distribute_certificates(database, [newer], wall_clock)
        (world.target_dir / "fullchain.pem").rename(world.target_dir / "served-fullchain.pem")
        service.attempt(database, newer_delivery, context(wall_clock, data_key))
        outcome = service.verify(
            database,
            newer_delivery,
            TlsProber(policy=LOOPBACK),
            wall_clock,
            dt.timedelta(seconds=1),
        )
        assert outcome.retry_in == dt.timedelta(seconds=1)
        unbound = row(database, newer_delivery)
        assert (unbound.status, unbound.probe_state) == ("delivered", "mismatch")
        assert unbound.last_error is not None and unbound.last_error.startswith(
            "renewed but not bound"
        )
    with tls_server(world.target_dir / "fullchain.pem", world.target_dir / "key.pem") as port:
        with database.session() as session:
            host = session.get(Host, world.host_id)
            assert host is not None
            host.tls_endpoints = [f"127.0.0.1:{port}"]
        assert (
            service.verify(database, newer_delivery, TlsProber(policy=LOOPBACK), wall_clock).status
            == "verified"
        )
    assert row(database, newer_delivery).probe_state == "match"
    # The first delivery's certificate was superseded before it was probed: never verified.
    assert row(database, delivery_id).status == "delivered"


def test_refused_connection_is_retried_with_backoff(
    database: Database,
    world: World,
    wall_clock: FixedClock,
    ca_passphrase: str,
    data_key: str,
    tmp_path: Path,
) -> None:
    client_key = tmp_path / "client_key"
    ssh_keygen(client_key)
    settings = {
        "host": "127.0.0.1",
        "port": free_port(),  # nothing listens there
        "username": "root",
        "path": "/tmp/x",
        "host_key": ssh_keygen(tmp_path / "host_key"),
        "key_file_env": SSH_KEY_VARIABLE,
    }
    with database.session() as session:
        host = session.get(Host, world.host_id)
        assert host is not None
        host.delivery = {"method": "ssh", "settings": settings}
    cert_id = issue_certificate(database, wall_clock, world.host_id, ca_passphrase, data_key)
    [delivery_id] = service.distribute_certificates(database, [cert_id], wall_clock)
    environ = {SSH_KEY_VARIABLE: str(client_key)}
    outcome = service.attempt(database, delivery_id, context(wall_clock, data_key, environ))
    assert outcome.retry_in is not None
    waiting = row(database, delivery_id)
    assert waiting.status == "pending" and waiting.next_attempt_at is not None
    assert waiting.last_error and "PRIVATE" not in waiting.last_error
    # Not due yet: a redelivered message does nothing.
    assert service.attempt(database, delivery_id, context(wall_clock, data_key)).status == "skipped"


def test_trust_bundle_goes_to_clients_only(
    database: Database, world: World, wall_clock: FixedClock, tmp_path: Path
) -> None:
    planned = service.distribute_trust(database, [world.host_id, world.client_id], wall_clock)
    assert len(planned) == 1
    assert service.distribute_trust(database, [world.client_id], wall_clock) == []
    assert service.attempt(database, planned[0], context(wall_clock, None)).status == "delivered"
    written = (tmp_path / "trust" / "client01" / "ca-bundle.pem").read_bytes()
    assert written.startswith(b"-----BEGIN CERTIFICATE-----")
    assert not (tmp_path / "trust" / "client01" / "key.pem").exists()


def test_a_message_for_a_delivery_this_database_lacks_is_dropped(
    database: Database, wall_clock: FixedClock, data_key: str
) -> None:
    """Another deployment's leftover message on a shared Redis: a log line, no exception."""
    assert service.verify(database, 987654, TlsProber(policy=LOOPBACK), wall_clock).status == (
        "missing"
    )
    assert service.attempt(database, 987654, context_for_missing(wall_clock, data_key)).status == (
        "skipped"
    )


def context_for_missing(clock: FixedClock, data_key: str) -> service.Context:
    return service.Context({"directory": DirectoryTarget(ANYWHERE)}, clock, data_key)
