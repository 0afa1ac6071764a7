"""Celery tasks of the distributor: thin wrappers around services.distributor.service.

celery -A services.distributor.tasks worker -Q distribute
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
from shared import contracts, taskstats
from shared.clock import SystemClock
from shared.db.session import Database
from shared.delivery_settings import secret_environ
from shared.logging import configure_logging
from shared.queue import make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
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


def build_targets(environ: dict[str, str]) -> dict[str, Target]:
    """The push targets. Secrets they need are looked up by name among the distributor's
    CERTFLEET_SECRET_* variables (`environ` holds no others), captured once at start-up."""
    policy = settings.destinations
    return {
        "directory": DirectoryTarget(settings.delivery_limits.directory_roots),
        "ssh": SshTarget(environ=environ, policy=policy),
        "webhook": WebhookTarget(environ=environ, policy=policy),
    }


@functools.cache
def runtime() -> Runtime:
    environ = secret_environ(os.environ)
    clock = SystemClock()
    return Runtime(
        db=Database(settings.database_url),
        ctx=service.Context(build_targets(environ), clock, settings.data_key, environ),
        prober=TlsProber(policy=settings.destinations),
    )


# Every run counted in the database, for /metrics (see shared.taskstats).
taskstats.instrument(app, lambda: runtime().db, SystemClock())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_logging("distributor", settings.log_level)
    runtime.cache_clear()


def _run(task: Task, work: Callable[[], T]) -> T:
    """Run one service call; a transient database or Redis error retries the task."""
    try:
        return work()
    except RETRYABLE as exc:
        raise task.retry(exc=exc, countdown=min(2**task.request.retries, 60)) from exc


def _send(message: contracts.Message, after: dt.timedelta | None = None) -> None:
    countdown = after.total_seconds() if after is not None else None
    app.send_task(message.task, kwargs=message.kwargs, queue=message.queue, countdown=countdown)


@app.task(name=contracts.TASK_DISTRIBUTE_CERTIFICATES, bind=True, max_retries=MAX_TASK_RETRIES)
def distribute_certificates(self: Task, certificate_ids: list[int]) -> int:
    rt = runtime()
    planned = _run(
        self, lambda: service.distribute_certificates(rt.db, certificate_ids, rt.ctx.clock)
    )
    for delivery_id in planned:
        _send(contracts.deliver(delivery_id))
    return len(planned)


@app.task(name=contracts.TASK_DISTRIBUTE_TRUST, bind=True, max_retries=MAX_TASK_RETRIES)
def distribute_trust(self: Task, host_ids: list[int]) -> int:
    rt = runtime()
    planned = _run(self, lambda: service.distribute_trust(rt.db, host_ids, rt.ctx.clock))
    for delivery_id in planned:
        _send(contracts.deliver(delivery_id))
    return len(planned)


@app.task(name=contracts.TASK_DELIVER, bind=True, max_retries=MAX_TASK_RETRIES)
def deliver(self: Task, delivery_id: int) -> str:
    rt = runtime()
    outcome = _run(self, lambda: service.attempt(rt.db, delivery_id, rt.ctx))
    if outcome.retry_in is not None:
        _send(contracts.deliver(delivery_id), after=outcome.retry_in)
    if outcome.probe:
        _send(contracts.verify(delivery_id))
    return outcome.status


@app.task(name=contracts.TASK_VERIFY, bind=True, max_retries=MAX_TASK_RETRIES)
def verify(self: Task, delivery_id: int) -> str:
    rt = runtime()
    delay = dt.timedelta(seconds=settings.probe_delay_s)
    outcome = _run(self, lambda: service.verify(rt.db, delivery_id, rt.prober, rt.ctx.clock, delay))
    if outcome.retry_in is not None:
        _send(contracts.verify(delivery_id), after=outcome.retry_in)
    return outcome.status
