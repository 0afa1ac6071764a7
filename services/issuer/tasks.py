"""Celery tasks of the issuer: thin wrappers that load by ID, call the service, and map
exceptions to retry or failure. Run with:

    celery -A services.issuer.tasks worker -Q issue
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.exceptions
from celery import Task
from celery.signals import task_postrun, task_prerun, worker_process_init
from celery.worker.control import inspect_command

from services.issuer import service
from shared import taskstats, waiting
from shared.clock import SystemClock
from shared.contracts import (
    MAX_IDS_PER_MESSAGE,
    TASK_CREATE_AUTHORITY,
    TASK_ISSUE_BATCH,
    TASK_PUBLISH_CRL,
    TASK_REFRESH_CRLS,
    chunked,
    distribute_certificates,
    distribute_trust,
)
from shared.db.session import Database
from shared.logging import bind, configure_logging, unbind
from shared.pki.profiles import CrlProfile
from shared.queue import CeleryPublisher, make_celery, redis_client
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors worth another try: the database or Redis went away for a moment.
RETRYABLE: tuple[type[Exception], ...] = (*service.TRANSIENT, redis.exceptions.ConnectionError)
MAX_RETRIES = 8

settings = Settings.from_env()
app = make_celery(settings, "certfleet-issuer")


@dataclass
class Runtime:
    db: Database
    signers: service.SignerCache
    secrets: service.Secrets
    clock: SystemClock
    publisher: CeleryPublisher
    crl_profile: CrlProfile
    redis: redis.Redis  # wakes API calls that wait for a request (shared.waiting)


@functools.cache
def runtime() -> Runtime:
    """Per-process state, built after the fork so no connection is shared between children."""
    return Runtime(
        db=Database(settings.database_url),
        signers=service.SignerCache(),
        secrets=service.Secrets(settings.ca_key_passphrase, settings.data_key),
        clock=SystemClock(),
        publisher=CeleryPublisher(app),
        crl_profile=CrlProfile(validity_days=settings.crl_validity_days),
        redis=redis_client(
            settings.redis_url,
            settings.redis_sentinel_master,
            socket_timeout=2,
            socket_connect_timeout=2,
        ),
    )


# Every run counted in the database, for /metrics (see shared.taskstats).
taskstats.instrument(app, lambda: runtime().db, SystemClock())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_logging("issuer", settings.log_level)
    runtime.cache_clear()


_log_tokens: dict[str, Any] = {}


@task_prerun.connect
def _bind_task(task_id: str, task: Task, **_: Any) -> None:
    _log_tokens[task_id] = bind(task_id=task_id, task=task.name)


@task_postrun.connect
def _unbind_task(task_id: str, **_: Any) -> None:
    token = _log_tokens.pop(task_id, None)
    if token is not None:
        unbind(token)


def run_or_give_up(
    task: Task, work: Callable[[], T], give_up: Callable[[str], None], what: str
) -> T:
    """Run `work`: retry transient errors with backoff; when retries run out, or on any other
    error, record a terminal failure through `give_up` and re-raise."""
    try:
        return work()
    except RETRYABLE as exc:
        if task.request.retries >= MAX_RETRIES:
            give_up("the database stayed unreachable")
            raise
        log.warning("transient error, retrying", extra={"fields": {"error": type(exc).__name__}})
        raise task.retry(exc=exc, countdown=min(2**task.request.retries, 60)) from exc
    except Exception:
        log.exception(f"{what} failed")
        give_up(f"internal error while {what}; see issuer logs")
        raise


@app.task(name=TASK_ISSUE_BATCH, bind=True, max_retries=MAX_RETRIES, acks_late=True)
def issue_batch(self: Task, request_ids: list[int]) -> dict[str, int]:
    rt = runtime()
    result = run_or_give_up(
        self,
        lambda: service.issue_batch(
            rt.db, request_ids, signers=rt.signers, secrets=rt.secrets, clock=rt.clock
        ),
        lambda reason: _give_up(rt, request_ids, reason),
        "issuing",
    )
    waiting.announce_finished(rt.redis, [*result.issued, *result.failed])
    # After the commit: the distributor plans deliveries for what was just issued (a host
    # without a delivery method gives it nothing to do).
    for chunk in chunked(result.to_distribute, MAX_IDS_PER_MESSAGE):
        rt.publisher.publish(distribute_certificates(chunk))
    return {
        "issued": len(result.issued),
        "failed": len(result.failed),
        "skipped": len(result.skipped),
    }


def _give_up(rt: Runtime, request_ids: list[int], reason: str) -> None:
    service.give_up(rt.db, request_ids, reason, rt.clock)
    waiting.announce_finished(rt.redis, request_ids)


@app.task(name=TASK_CREATE_AUTHORITY, bind=True, max_retries=MAX_RETRIES, acks_late=True)
def create_authority(self: Task, authority_id: int) -> str:
    rt = runtime()
    status = run_or_give_up(
        self,
        lambda: service.create_authority(
            rt.db, authority_id, secrets=rt.secrets, clock=rt.clock, crl_profile=rt.crl_profile
        ),
        lambda reason: service.fail_authority(rt.db, authority_id, reason, rt.clock),
        "creating the CA",
    )
    if status == "active":
        # The trust bundle changed: every client must get the new one.
        for chunk in chunked(service.client_host_ids(rt.db), MAX_IDS_PER_MESSAGE):
            rt.publisher.publish(distribute_trust(chunk))
    return status


@app.task(name=TASK_PUBLISH_CRL, bind=True, max_retries=MAX_RETRIES, acks_late=True)
def publish_crl(self: Task, authority_id: int) -> int | None:
    rt = runtime()
    return run_or_give_up(
        self,
        lambda: service.publish_crl(
            rt.db, authority_id, rt.signers, rt.secrets, rt.clock, rt.crl_profile
        ),
        lambda reason: service.crl_failed(rt.db, authority_id, reason, rt.clock),
        "publishing the CRL",
    )


@app.task(name=TASK_REFRESH_CRLS, bind=True, max_retries=MAX_RETRIES, acks_late=True)
def refresh_crls(self: Task) -> list[int]:
    """For the beat: every CRL that is due, in one run (failures are per authority)."""
    rt = runtime()
    return run_or_give_up(
        self,
        lambda: service.refresh_due_crls(rt.db, rt.signers, rt.secrets, rt.clock, rt.crl_profile),
        lambda _reason: None,
        "refreshing CRLs",
    )


@inspect_command()
def certfleet_secrets(state: Any) -> dict[str, Any]:
    """Remote control (`certfleet doctor`): can this issuer open the CA keys and hold
    server-held host keys? Problems by name and remedy, never a secret's value."""
    rt = runtime()
    return {"problems": service.secret_problems(rt.db, rt.secrets)}
