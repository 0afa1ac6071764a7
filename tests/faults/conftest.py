"""Fault tests: the whole stack (gunicorn API, Celery issuer, distributor, expiry watcher and
its beat) as real processes on a fresh PostgreSQL database, with a Redis of their own, while a
test kills a worker, wipes Redis or cuts the database off. The sweep runs every 2 s with short
grace periods so that recovery happens within the test; nothing is mocked."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from infra import local
from services.cli import admin
from services.cli.stack import Stack
from shared.clock import SystemClock
from shared.db.migrate import upgrade
from shared.db.models import Authority, Certificate, Host, IssuanceRequest, Site
from shared.db.session import Database
from shared.settings import Settings
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY, _start_redis
from tests.factories import make_csr
from tests.ports import free_port

SUFFIX = "fault.example"
SWEEP = {
    "CERTFLEET_SWEEP_INTERVAL": "2",
    "CERTFLEET_SWEEP_GRACE": "5",
    "CERTFLEET_SWEEP_STALE_SIGNING": "10",
}


class RestartableRedis:
    """A redis-server of the test's own that can die and come back empty on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process, self.port = _start_redis(workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def start(self) -> None:
        self.process, _ = _start_redis(self.workdir, self.port)

    def stop(self) -> None:
        local.stop(self.process)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with local.fresh_database(pg_admin_url, "certfleet_fault") as url:
        yield url


@dataclass
class Fleet:
    """A running stack and a site of `hosts` hosts, each with a CSR ready to submit."""

    stack: Stack
    db: Database
    token: str
    csrs: dict[str, str]

    def post(self, path: str, body: Any, timeout: float = 120) -> requests.Response:
        return requests.post(
            self.stack.url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

    def submit(self, hosts: list[str]) -> list[int]:
        """One bulk request for these hosts; returns the request IDs."""
        body = {"requests": [{"host": h, "csr": self.csrs[h]} for h in hosts]}
        response = self.post("/api/v1/issuance-requests/bulk", body)
        assert response.status_code == 202, response.text[:500]
        return [r["id"] for r in response.json()["requests"]]

    def statuses(self) -> dict[str, int]:
        with self.db.sessions() as session:
            rows = session.execute(
                select(IssuanceRequest.status, func.count()).group_by(IssuanceRequest.status)
            )
            return {status: count for status, count in rows}

    def wait_for(self, what: str, done: Callable[[dict[str, int]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.statuses()):
                return
            time.sleep(0.2)
        pytest.fail(f"{what} did not happen within {timeout:.0f}s: {self.statuses()}")

    def assert_each_issued_once(self, request_ids: list[int]) -> None:
        """Every request issued, by exactly one certificate, and nothing else issued."""
        with self.db.sessions() as session:
            requests_ = session.execute(
                select(IssuanceRequest.id, IssuanceRequest.status, IssuanceRequest.certificate_id)
            ).all()
            assert sorted(r.id for r in requests_) == sorted(request_ids)
            assert {r.status for r in requests_} == {"issued"}, self.statuses()
            per_request = dict(
                session.execute(
                    select(Certificate.request_id, func.count()).group_by(Certificate.request_id)
                ).all()
            )
            assert per_request == dict.fromkeys(request_ids, 1)
            linked = dict(session.execute(select(Certificate.id, Certificate.request_id)).all())
            assert all(linked[r.certificate_id] == r.id for r in requests_)


def start_fleet(
    work: Path,
    database_url: str,
    redis_url: str,
    hosts: int,
    *,
    extra_env: dict[str, str] | None = None,
    db_url_for_setup: str | None = None,
) -> tuple[Stack, Fleet]:
    """Migrate, init, register the hosts directly in the database, and build the stack (not
    started). `db_url_for_setup` bypasses a proxy in `database_url` for the set-up."""
    bind = f"127.0.0.1:{free_port()}"
    env = {
        "CERTFLEET_DATABASE_URL": database_url,
        "CERTFLEET_REDIS_URL": redis_url,
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_DATA_KEY": TEST_DATA_KEY,
        "CERTFLEET_VAR_DIR": str(work / "var"),
        "CERTFLEET_API_BIND": bind,
        "CERTFLEET_ISSUE_BATCH_SIZE": "50",
        **SWEEP,
        **(extra_env or {}),
    }
    setup_url = Settings.from_env(
        {**env, "CERTFLEET_DATABASE_URL": db_url_for_setup or database_url}
    )
    upgrade(setup_url.database_url)
    result = admin.init(setup_url, SystemClock(), ca_name="Fault Root", key_bits=2048)
    assert result.admin_token is not None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = [f"h{i:05d}" for i in range(hosts)]
    db = Database(setup_url.database_url)
    with db.session() as session:
        authority = session.scalars(select(Authority)).one()
        site = Site(name="fault", authority_id=authority.id, dns_suffixes=[SUFFIX])
        session.add(site)
        session.flush()
        session.add_all(
            Host(site_id=site.id, name=n, dns_names=[f"{n}.{SUFFIX}"], roles=["recording"])
            for n in names
        )
    csrs = {n: make_csr(key, [f"{n}.{SUFFIX}"]) for n in names}
    stack = Stack(env, bind, work / "logs", worker_concurrency=2, ready_timeout=180)
    return stack, Fleet(stack, db, result.admin_token, csrs)


def wait_until(done: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.1)


def logs(stack: Stack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(stack.log_dir.glob("*.log")))
