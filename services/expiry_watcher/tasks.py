"""Celery tasks of the expiry watcher, and their beat schedule.

celery -A services.expiry_watcher.tasks worker -Q expiry
celery -A services.expiry_watcher.tasks beat    (LockedScheduler: one active beat)
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from services.expiry_watcher import campaigns, notifications, renewal
from services.expiry_watcher import sweep as sweeping
from services.expiry_watcher.channels import ChannelFactory, SmtpRelay, make_factory
from shared import taskstats
from shared.clock import SystemClock
from shared.contracts import (
    TASK_ADVANCE_CAMPAIGNS,
    TASK_NOTIFY,
    TASK_RENEW,
    TASK_SWEEP,
    periodic_tasks,
)
from shared.db.session import Database
from shared.delivery_settings import secret_environ
from shared.logging import configure_logging
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings, "certfleet-expiry-watcher")
app.conf.beat_scheduler = "services.expiry_watcher.beat:LockedScheduler"
# Each entry expires before the next one is due: a backlog of missed runs is not replayed.
app.conf.beat_schedule = {
    p.name: {
        "task": p.task,
        "schedule": p.every,
        "options": {"queue": p.queue, "expires": p.every * 0.9},
    }
    for p in periodic_tasks(settings.sweep_interval_s)
}


@dataclass
class Runtime:
    db: Database
    publisher: CeleryPublisher
    clock: SystemClock
    channels: ChannelFactory


@functools.cache
def runtime() -> Runtime:
    clock = SystemClock()
    relay = SmtpRelay(
        settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_starttls
    )
    return Runtime(
        Database(settings.database_url),
        CeleryPublisher(app),
        clock,
        make_factory(relay, secret_environ(os.environ), clock, policy=settings.destinations),
    )


# Every run counted in the database, for /metrics (see shared.taskstats).
taskstats.instrument(app, lambda: runtime().db, SystemClock())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_logging("expiry-watcher", settings.log_level)
    runtime.cache_clear()


@app.task(name=TASK_SWEEP, bind=True, acks_late=True)
def sweep(self: Task) -> dict[str, int]:
    """Re-enqueue whatever a lost message left behind. Idempotent: safe to run twice."""
    rt = runtime()
    limits = sweeping.SweepLimits(
        grace=dt.timedelta(seconds=settings.sweep_grace_s),
        stale_signing=dt.timedelta(seconds=settings.sweep_stale_signing_s),
    )
    report = sweeping.sweep(rt.db, rt.publisher.publish, rt.clock, limits)
    if report.total:
        log.info("sweep re-enqueued work", extra={"fields": report.__dict__})
    return dict(report.__dict__)


@app.task(name=TASK_RENEW, bind=True, acks_late=True)
def renew(self: Task) -> dict[str, int]:
    """Start the renewals that are due and allowed now (windows, failover pairs, backoff)."""
    rt = runtime()
    report = renewal.renew_due(
        rt.db,
        rt.publisher.publish,
        rt.clock,
        per_site_limit=settings.renew_per_site,
        limit=settings.renew_scan_limit,
        batch_size=settings.issue_batch_size,
    )
    if report.started or report.failures_recorded:
        log.info(
            "renewals",
            extra={"fields": {"started": len(report.started), "failed": report.failures_recorded}},
        )
    return {
        "started": len(report.started),
        "waiting": report.waiting_for_window,
        "held_back": report.held_back,
        "failures": report.failures_recorded,
    }


@app.task(name=TASK_NOTIFY, bind=True, acks_late=True)
def notify(self: Task) -> dict[str, int]:
    """Send the expiry notices that are due, each once (the ledger decides)."""
    rt = runtime()
    report = notifications.scan(rt.db, rt.clock, rt.channels)
    counts = dict(report.__dict__)
    if any(counts.values()):
        log.info("notices", extra={"fields": counts})
    return counts


@app.task(name=TASK_ADVANCE_CAMPAIGNS, bind=True, acks_late=True)
def advance_campaigns(self: Task) -> dict[str, int]:
    """Move every unfinished campaign along: progress, phases, and the next hosts."""
    rt = runtime()
    report = campaigns.advance(
        rt.db, rt.publisher.publish, rt.clock, batch_size=settings.issue_batch_size
    )
    for change in report.phases:
        log.info("campaign phase", extra={"fields": {"change": change}})
    return {
        "campaigns": report.campaigns,
        "started": len(report.started),
        "finished_items": report.finished_items,
    }
