"""Celery tasks of the expiry watcher, and their beat schedule.

celery -A services.expiry_watcher.tasks worker -Q expiry
celery -A services.expiry_watcher.tasks beat    (LockedScheduler: one active beat)
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from services.expiry_watcher import renewal
from services.expiry_watcher import sweep as sweeping
from shared.clock import SystemClock
from shared.contracts import QUEUE_EXPIRY, TASK_RENEW, TASK_SWEEP
from shared.db.session import Database
from shared.logging import configure_logging
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings, "certfleet-expiry-watcher")
app.conf.beat_scheduler = "services.expiry_watcher.beat:LockedScheduler"
app.conf.beat_schedule = {
    "sweep": {
        "task": TASK_SWEEP,
        "schedule": 60.0,
        "options": {"queue": QUEUE_EXPIRY, "expires": 55},
    },
}


@dataclass
class Runtime:
    db: Database
    publisher: CeleryPublisher
    clock: SystemClock


@functools.cache
def runtime() -> Runtime:
    return Runtime(Database(settings.database_url), CeleryPublisher(app), SystemClock())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_logging("expiry-watcher", settings.log_level)
    runtime.cache_clear()


@app.task(name=TASK_SWEEP, bind=True, acks_late=True)
def sweep(self: Task) -> dict[str, int]:
    """Re-enqueue whatever a lost message left behind. Idempotent: safe to run twice."""
    rt = runtime()
    report = sweeping.sweep(rt.db, rt.publisher.publish, rt.clock)
    if report.total:
        log.info("sweep re-enqueued work", extra={"fields": report.__dict__})
    return dict(report.__dict__)


@app.task(name=TASK_RENEW, bind=True, acks_late=True)
def renew(self: Task) -> dict[str, int]:
    """Start the renewals that are due and allowed now (windows, failover pairs, backoff)."""
    rt = runtime()
    report = renewal.renew_due(rt.db, rt.publisher.publish, rt.clock)
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
