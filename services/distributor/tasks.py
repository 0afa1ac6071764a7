"""Celery tasks of the distributor: thin wrappers around services.distributor.service.

celery -A services.distributor.tasks worker -Q distribute
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.signals import worker_process_init

from services.distributor import service
from services.distributor.probe import TlsProber
from services.distributor.targets.base import Target
from services.distributor.targets.directory import DirectoryTarget
from services.distributor.targets.ssh import SshTarget
from services.distributor.targets.webhook import WebhookTarget
from shared import contracts
from shared.clock import SystemClock
from shared.db.session import Database
from shared.logging import configure_logging
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)
RETRYABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
)
MAX_TASK_RETRIES = 8

settings = Settings.from_env()
app = make_celery(settings, "certfleet-distributor")


@dataclass
class Runtime:
    db: Database
    ctx: service.Context
    prober: TlsProber
    publisher: CeleryPublisher


def build_targets(environ: dict[str, str]) -> dict[str, Target]:
    """The push targets. Secrets they need are looked up by name in the distributor's
    environment, captured once here at start-up."""
    return {
        "directory": DirectoryTarget(),
        "ssh": SshTarget(environ=environ),
        "webhook": WebhookTarget(environ=environ),
    }


@functools.cache
def runtime() -> Runtime:
    environ = dict(os.environ)
    clock = SystemClock()
    return Runtime(
        db=Database(settings.database_url),
        ctx=service.Context(build_targets(environ), clock, settings.data_key, environ),
        prober=TlsProber(),
        publisher=CeleryPublisher(app),
    )


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_logging("distributor", settings.log_level)
    runtime.cache_clear()


def _transient_retry(task: Task, exc: Exception) -> Exception:
    return task.retry(exc=exc, countdown=min(2**task.request.retries, 60))  # type: ignore[no-any-return]


@app.task(name=contracts.TASK_DISTRIBUTE_CERTIFICATES, bind=True, max_retries=MAX_TASK_RETRIES)
def distribute_certificates(self: Task, certificate_ids: list[int]) -> int:
    rt = runtime()
    try:
        planned = service.distribute_certificates(rt.db, certificate_ids, rt.ctx.clock)
    except RETRYABLE as exc:
        raise _transient_retry(self, exc) from exc
    for delivery_id in planned:
        rt.publisher.publish(contracts.deliver(delivery_id))
    return len(planned)


@app.task(name=contracts.TASK_DISTRIBUTE_TRUST, bind=True, max_retries=MAX_TASK_RETRIES)
def distribute_trust(self: Task, host_ids: list[int]) -> int:
    rt = runtime()
    try:
        planned = service.distribute_trust(rt.db, host_ids, rt.ctx.clock)
    except RETRYABLE as exc:
        raise _transient_retry(self, exc) from exc
    for delivery_id in planned:
        rt.publisher.publish(contracts.deliver(delivery_id))
    return len(planned)


@app.task(name=contracts.TASK_DELIVER, bind=True, max_retries=MAX_TASK_RETRIES)
def deliver(self: Task, delivery_id: int) -> str:
    rt = runtime()
    try:
        outcome = service.attempt(rt.db, delivery_id, rt.ctx)
    except RETRYABLE as exc:
        raise _transient_retry(self, exc) from exc
    if outcome.retry_in is not None:
        message = contracts.deliver(delivery_id)
        app.send_task(
            message.task,
            kwargs=message.kwargs,
            queue=message.queue,
            countdown=outcome.retry_in.total_seconds(),
        )
    if outcome.probe:
        rt.publisher.publish(contracts.verify(delivery_id))
    return outcome.status


@app.task(name=contracts.TASK_VERIFY, bind=True, max_retries=MAX_TASK_RETRIES)
def verify(self: Task, delivery_id: int) -> str:
    rt = runtime()
    try:
        outcome = service.verify(
            rt.db,
            delivery_id,
            rt.prober,
            rt.ctx.clock,
            dt.timedelta(seconds=settings.probe_delay_s),
        )
    except RETRYABLE as exc:
        raise _transient_retry(self, exc) from exc
    if outcome.retry_in is not None:
        message = contracts.verify(delivery_id)
        app.send_task(
            message.task,
            kwargs=message.kwargs,
            queue=message.queue,
            countdown=outcome.retry_in.total_seconds(),
        )
    return outcome.status
