"""Issuance through the running stack on PostgreSQL: bulk API (calls of BULK_MAX requests) ->
Redis -> issuer workers -> rows committed `issued`; and the latency of one request at idle.

One fleet serves the three issuance steps: hosts are registered with COPY, each with a real
CSR for its own DNS name (all signed by one RSA key, as tests/faults/conftest.py does), and
the whole stack runs as `certfleet stack run` would start it."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

from infra.bench import env
from infra.bench.raw import cores

# The API commits and enqueues a bulk call as a whole, so the issuer starts on a call's
# requests only when the call returns: calls of 500 keep both sides busy (5000 left the
# issuer idle for the first call's 3 s; measured 606 vs 434 certs/s over 3000 requests).
BULK_MAX = 500
POLL_S = 0.25
HOSTS_PER_SITE = 1000


@dataclass
class Fleet:
    installation: env.Installation
    csrs: list[str]
    redis_url: str
    http: requests.Session

    @property
    def url(self) -> str:
        return self.installation.stack.url

    def post(self, path: str, body: Any, timeout: float = 300) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=timeout)

    def conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(env.libpq_url(self.installation.db_url), autocommit=True)


@contextlib.contextmanager
def running_fleet(work: Path, hosts: int, *, ca_bits: int) -> Iterator[Fleet]:
    """A fresh database and Redis, `hosts` hosts with CSRs, and the whole stack running."""
    with env.private_redis(work / "redis") as redis_url, env.fresh_database("issue") as db_url:
        inst = env.install(work, db_url, redis_url, ca_bits=ca_bits, concurrency=cores())
        env.add_sites_and_hosts(db_url, inst.authority_id, hosts, HOSTS_PER_SITE)
        csrs = env.csrs_for(range(hosts), env.host_key(), cores())
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {inst.token}"
        try:
            env.start(inst.stack, list(inst.stack.commands()))
            env.wait_consuming(redis_url, "issue", cores())
            yield Fleet(inst, csrs, redis_url, http)
        finally:
            inst.stack.stop()
            http.close()


@dataclass(frozen=True)
class Throughput:
    count: int
    seconds: float  # first POST -> last request issued (its committed updated_at)
    post_seconds: float  # first POST -> last bulk response
    failed: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def bulk_issue(fleet: Fleet, hosts: range, *, with_csr: bool, timeout: float) -> Throughput:
    """POST the hosts' requests in chunks of BULK_MAX, then wait until every one is issued."""
    with fleet.conn() as conn:
        before = conn.execute("SELECT coalesce(max(id), 0) FROM issuance_requests").fetchone()
    first_id = int(before[0]) if before else 0
    items = [
        {"host": env.host_name(i), **({"csr": fleet.csrs[i]} if with_csr else {})} for i in hosts
    ]
    started = time.time()
    for offset in range(0, len(items), BULK_MAX):
        response = fleet.post(
            "/api/v1/issuance-requests/bulk", {"requests": items[offset : offset + BULK_MAX]}
        )
        if response.status_code != 202:
            raise RuntimeError(f"bulk POST: {response.status_code} {response.text[:300]}")
    posted = time.time()
    deadline = posted + timeout
    with fleet.conn() as conn:
        while True:
            done, failed, last = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'issued'),"
                " count(*) FILTER (WHERE status = 'failed'),"
                " max(updated_at) FILTER (WHERE status IN ('issued', 'failed'))"
                " FROM issuance_requests WHERE id > %s",
                (first_id,),
            ).fetchone()  # type: ignore[misc]
            if done + failed >= len(items):
                break
            if time.time() > deadline:
                raise TimeoutError(f"{done} of {len(items)} issued after {timeout:.0f}s")
            time.sleep(POLL_S)
    return Throughput(done, last.timestamp() - started, posted - started, failed)


@dataclass(frozen=True)
class Latency:
    samples: list[float]  # seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.samples)
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


def latency(fleet: Fleet, hosts: range, *, pause: float = 0.05, timeout: float = 30) -> Latency:
    """POST one request with a CSR, then GET it with a long poll until it is `issued`."""
    samples: list[float] = []
    for i in hosts:
        time.sleep(pause)  # idle between samples: nothing else queued
        started = time.perf_counter()
        response = fleet.post(
            "/api/v1/issuance-requests", {"host": env.host_name(i), "csr": fleet.csrs[i]}
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST: {response.status_code} {response.text[:300]}")
        location = fleet.url + f"/api/v1/issuance-requests/{response.json()['id']}?wait=10"
        while True:
            status = fleet.http.get(location, timeout=30).json()["status"]
            if status == "issued":
                break
            if status == "failed" or time.perf_counter() - started > timeout:
                raise RuntimeError(f"request for {env.host_name(i)} ended {status}")
        samples.append(time.perf_counter() - started)
    return Latency(samples)
