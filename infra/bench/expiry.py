"""The expiry watcher's scans over a large certificates table on PostgreSQL.

The rows are COPY-loaded (infra.bench.fleetdata: 4 generations per host, 0.5 % of hosts
overdue) with one global webhook channel, so that due_notices has a route to plan for. The
scans run in a child process of their own, whose peak RSS (VmHWM) is the figure:
- renewal: services.expiry_watcher.renewal.renew_due, the beat's task body, which runs
  due_certificates (timed alone first) and stores the chosen renewal requests;
- notices: services.expiry_watcher.notifications.due_notices with the watcher's limit
  (DEFAULT_LIMIT, as scan() calls it); and, in a second child, a full pass (no limit) that
  shows what planning every due notice at once costs;
- operator reads, in a third child: one /metrics scrape and the dashboard's overview."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra.bench import env, fleetdata
from shared import contracts
from shared.clock import SystemClock

HOSTS_PER_SITE = 500
GENERATIONS = 4
OVERDUE = 0.005


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _watcher_scans(db_url: str) -> dict[str, Any]:
    from services.expiry_watcher import notifications, renewal
    from shared.db.session import Database

    db = Database(db_url)
    clock = SystemClock()
    messages: list[contracts.Message] = []
    baseline = vm_hwm_mb()
    out: dict[str, Any] = {}
    with db.session() as session:
        t = time.perf_counter()
        out["due_certificates"] = len(renewal.due_certificates(session, clock.now(), 500))
        out["due_certificates_s"] = time.perf_counter() - t
    with db.session() as session:
        t = time.perf_counter()
        planned = notifications.due_notices(session, clock.now(), limit=notifications.DEFAULT_LIMIT)
        out["due_notices_s"] = time.perf_counter() - t
        out["due_notices"] = len(planned)
    t = time.perf_counter()
    report = renewal.renew_due(db, messages.append, clock)
    out["renew_due_s"] = time.perf_counter() - t
    out["renewals_started"] = len(report.started)
    out["baseline_rss_mb"] = baseline
    out["peak_rss_mb"] = vm_hwm_mb()
    db.dispose()
    return out


def _full_notice_pass(db_url: str) -> dict[str, Any]:
    from services.expiry_watcher import notifications
    from shared.db.session import Database

    db = Database(db_url)
    with db.session() as session:
        t = time.perf_counter()
        planned = notifications.due_notices(session, SystemClock().now(), limit=10**9)
        seconds = time.perf_counter() - t
    db.dispose()
    return {"notices": len(planned), "seconds": seconds, "peak_rss_mb": vm_hwm_mb()}


def _operator_reads(db_url: str) -> dict[str, Any]:
    """What an operator's tools read from the same table: one /metrics scrape (rendered to
    Prometheus' text) and the dashboard's overview, for an admin."""
    import redis
    from prometheus_client import generate_latest
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from services.api.auth import Principal
    from services.api.dashboard import service as dashboard
    from services.api.metrics import service as metrics
    from shared.db.session import Database
    from shared.settings import Settings

    db = Database(db_url)
    now = SystemClock().now()
    # No Redis runs here: the queue depths are left out, as /metrics does without Redis.
    gone = redis.Redis(port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    out: dict[str, Any] = {}
    admin = Principal(0, "bench", "admin", None)
    with db.session() as session:
        t = time.perf_counter()
        snapshot = metrics.snapshot(session, gone, now, Settings().metrics_leaf_cap, admin)
        text = generate_latest(snapshot)
        out["metrics_s"] = time.perf_counter() - t
        out["metrics_bytes"] = len(text)
    with db.session() as session:
        t = time.perf_counter()
        sites = dashboard.sites(session, admin, now)
        timeline = dashboard.timeline(session, admin, now)
        out["overview_s"] = time.perf_counter() - t
        out["overview_sites"] = len(sites)
        out["timeline_certificates"] = sum(timeline.weeks) + timeline.overdue
    out["peak_rss_mb"] = vm_hwm_mb()
    db.dispose()
    return out


def in_child(function: Any, *args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(function, args)
    return result


@dataclass(frozen=True)
class ScanResult:
    rows: int
    load_seconds: float
    scans: dict[str, Any]
    full_pass: dict[str, Any]
    operator: dict[str, Any]

    @property
    def seconds(self) -> float:
        return float(self.scans["renew_due_s"] + self.scans["due_notices_s"])


def expiry_scan(work: Path, rows: int, *, ca_bits: int) -> ScanResult:
    hosts = max(1, rows // GENERATIONS)
    with env.fresh_database("scan") as db_url:
        # No stack runs here: the Redis URL is never used (renew_due's messages are collected).
        inst = env.install(work, db_url, "redis://127.0.0.1:1/0", ca_bits=ca_bits, concurrency=1)
        started = time.perf_counter()
        env.add_sites_and_hosts(db_url, inst.authority_id, hosts, HOSTS_PER_SITE)
        _add_channel(db_url)
        count = fleetdata.load_certificates(
            db_url, inst.authority_id, generations=GENERATIONS, overdue=OVERDUE
        )
        load_seconds = time.perf_counter() - started
        scans = in_child(_watcher_scans, db_url)
        full = in_child(_full_notice_pass, db_url)
        operator = in_child(_operator_reads, db_url)
    return ScanResult(count, load_seconds, scans, full, operator)


def _add_channel(db_url: str) -> None:
    with psycopg.connect(env.libpq_url(db_url)) as conn:
        conn.execute(
            "INSERT INTO notification_channels (name, kind, target, settings, thresholds,"
            " enabled, created_at) VALUES ('ops', 'webhook', 'https://hooks.bench.example/x',"
            " '{}', %s, true, %s)",
            (json.dumps([30, 14, 7, 1, 0]), dt.datetime.now(dt.UTC)),
        )
