"""A renewal campaign over existing certificates, driven by the real engine
(services.expiry_watcher.campaigns.advance) and signed by real issuer workers.

The certificates are COPY-loaded (infra.bench.fleetdata, one generation per host, none due)
together with the issued requests they came from, each with the host's real CSR, so that
every renewal is a CSR renewal as an agent-held key's would be. The issuer and the
distributor run as processes; this process plays the watcher's beat, calling advance every
`tick` seconds (the beat's schedule is every 15 s, which caps dispatch at PENDING_SCAN items
per run: see the report).

Two runs on the same fleet:
- unthrottled (rate_per_minute null; per_site_concurrency 1,000):
  seconds from the first advance to the last renewal request issued, and to the campaign
  completed;
- throttled (e.g. 600/min): renewals issued per minute over whole minutes from the first
  advance, while the campaign keeps running."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from infra.bench import env, fleetdata
from infra.bench.raw import cores
from services.expiry_watcher.campaigns import advance
from shared.campaigns import CampaignSpec, create
from shared.clock import SystemClock
from shared.db.session import Database
from shared.queue import CeleryPublisher, make_celery

HOSTS_PER_SITE = 500
MAX_PER_SITE = 1000


@dataclass(frozen=True)
class CampaignRun:
    items: int
    create_seconds: float
    issued_seconds: float | None  # first advance -> last request issued
    completed_seconds: float | None  # first advance -> campaign finished
    issued: int
    rate_per_minute: int | None
    window_seconds: float | None = None
    issued_in_window: int | None = None
    advances: list[tuple[float, int]] = field(default_factory=list)  # (seconds, started)

    @property
    def achieved_per_minute(self) -> float | None:
        if self.window_seconds is None or self.issued_in_window is None:
            return None
        return self.issued_in_window / (self.window_seconds / 60)


@dataclass(frozen=True)
class CampaignResult:
    certificates: int
    load_seconds: float
    unthrottled: CampaignRun
    throttled: CampaignRun | None


def campaign(
    work: Path,
    certificates: int,
    *,
    ca_bits: int,
    rate: int,
    window: float,
    tick: float,
    timeout: float,
) -> CampaignResult:
    with env.private_redis(work / "redis") as redis_url, env.fresh_database("camp") as db_url:
        inst = env.install(work, db_url, redis_url, ca_bits=ca_bits, concurrency=cores())
        started = time.perf_counter()
        env.add_sites_and_hosts(db_url, inst.authority_id, certificates, HOSTS_PER_SITE)
        csrs = env.csrs_for(range(certificates), env.host_key(), cores())
        fleetdata.load_certificates(db_url, inst.authority_id, generations=1, overdue=0, csrs=csrs)
        load_seconds = time.perf_counter() - started
        db = Database(inst.db_url)
        publisher = CeleryPublisher(make_celery(inst.settings, "certfleet-bench"))
        try:
            env.start(inst.stack, ["issuer", "distributor"])
            env.wait_consuming(redis_url, "issue", cores())
            fast = _run(db, publisher, "unthrottled", None, tick=tick, timeout=timeout)
            slow = None
            if window > 0:
                slow = _run(db, publisher, "throttled", rate, tick=tick, window=window)
        finally:
            inst.stack.stop()
            db.dispose()
    return CampaignResult(certificates, load_seconds, fast, slow)


def _run(
    db: Database,
    publisher: CeleryPublisher,
    name: str,
    rate: int | None,
    *,
    tick: float,
    timeout: float = 0,
    window: float = 0,
) -> CampaignRun:
    """Create a campaign over every active certificate and advance it until its requests are
    all issued (timeout) or for `window` seconds (then it is left unfinished)."""
    clock = SystemClock()
    spec = CampaignSpec(
        name=name,
        kind="renew",
        selector={"all": True},
        rate_per_minute=rate,
        per_site_concurrency=MAX_PER_SITE,
        respect_windows=False,
        max_failures=100_000,
    )
    t = time.perf_counter()
    with db.session() as session:
        row, _messages = create(session, spec, actor="bench", now=clock.now())
        campaign_id = row.id
    create_seconds = time.perf_counter() - t
    first = time.time()
    deadline = first + (window or timeout)
    advances: list[tuple[float, int]] = []
    while True:
        tick_started = time.time()
        report = advance(db, publisher.publish, clock)
        advances.append((round(time.time() - tick_started, 3), len(report.started)))
        state = _state(db, campaign_id)
        if state["finished_at"] is not None or time.time() >= deadline:
            break
        time.sleep(max(0.0, tick - (time.time() - tick_started)))
    if window:
        return CampaignRun(
            state["items"],
            create_seconds,
            None,
            None,
            state["issued"],
            rate,
            window,
            _issued_before(db, campaign_id, first + window),
        )
    done = state["issued"] == state["items"]
    return CampaignRun(
        state["items"],
        create_seconds,
        state["last_issued"].timestamp() - first if done and state["last_issued"] else None,
        state["finished_at"].timestamp() - first if state["finished_at"] else None,
        state["issued"],
        rate,
        advances=advances,
    )


def _state(db: Database, campaign_id: int) -> dict[str, Any]:
    with psycopg.connect(env.libpq_url(db.url)) as conn:
        items, finished_at = conn.execute(
            "SELECT (SELECT count(*) FROM campaign_items WHERE campaign_id = %s), finished_at"
            " FROM campaigns WHERE id = %s",
            (campaign_id, campaign_id),
        ).fetchone()  # type: ignore[misc]
        issued, last = conn.execute(
            "SELECT count(*), max(updated_at) FROM issuance_requests"
            " WHERE campaign_id = %s AND status = 'issued'",
            (campaign_id,),
        ).fetchone()  # type: ignore[misc]
    return {"items": items, "finished_at": finished_at, "issued": issued, "last_issued": last}


def _issued_before(db: Database, campaign_id: int, until: float) -> int:
    with psycopg.connect(env.libpq_url(db.url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM issuance_requests WHERE campaign_id = %s AND status = 'issued'"
            " AND updated_at < to_timestamp(%s)",
            (campaign_id, until),
        ).fetchone()
    return int(row[0]) if row else 0
