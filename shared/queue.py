"""Celery wiring shared by every service: one app factory, and a publisher the API uses to
send contract messages without importing any worker code."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlparse

import redis
from celery import Celery
from kombu import Queue
from redis.sentinel import Sentinel

from shared.contracts import QUEUE_DISTRIBUTE, QUEUE_EXPIRY, QUEUE_ISSUE, Message
from shared.settings import Settings, broker_url, sentinel_nodes


def make_celery(settings: Settings, name: str) -> Celery:
    app = Celery(name, broker=broker_url(settings.redis_url))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s - 30),
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Retries wait up to an hour (ETA tasks); a shorter visibility timeout would have Redis
        # hand a waiting task to a second worker.
        broker_transport_options={
            "visibility_timeout": max(settings.task_time_limit_s * 4, 7200),
            **(
                {"master_name": settings.redis_sentinel_master}
                if is_sentinel(settings.redis_url)
                else {}
            ),
        },
        task_queues=[Queue(QUEUE_ISSUE), Queue(QUEUE_DISTRIBUTE), Queue(QUEUE_EXPIRY)],
        enable_utc=True,
    )
    return app


def is_sentinel(url: str) -> bool:
    return urlparse(url).scheme == "sentinel"


def redis_client(url: str, master: str | None = None, **kwargs: Any) -> redis.Redis:
    """A client of the Redis that `url` names: directly, or with a `sentinel://` URL the
    current master that the Sentinels report for `master` (found again after a failover)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    if not master:
        raise ValueError("a sentinel:// URL needs the master's name")
    nodes = sentinel_nodes(url)
    timeouts = {
        k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel = Sentinel(nodes.addresses, **timeouts)  # type: ignore[no-untyped-call, unused-ignore]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        master, db=nodes.db, password=nodes.password, **kwargs
    )
    return client


class Publisher(Protocol):
    def publish(self, message: Message) -> None: ...


class CeleryPublisher:
    """Sends contract messages by task name; the sender never imports the receiver."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def publish(self, message: Message) -> None:
        self._app.send_task(message.task, kwargs=message.kwargs, queue=message.queue)
