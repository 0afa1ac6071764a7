"""Waking clients that wait for an issuance request to finish.

After its commit the issuer publishes each finished request's ID on that request's own Redis
channel; an API call that long-polls (`GET /issuance-requests/{id}?wait=`) subscribes to the
channel, reads the row, and if the row is not finished yet waits for the wake-up, then reads
the row again. Only the ID travels: the database says what happened. A lost wake-up (Redis
restarted, an issuer killed between commit and publish) costs the waiter its timeout, never a
wrong answer."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

import redis

log = logging.getLogger(__name__)

FINISHED_STATUSES = frozenset({"issued", "failed"})
MAX_WAIT_S = 30.0
# One blocking read at most this long, so that a waiter notices its deadline.
READ_SLICE_S = 1.0


def channel(request_id: int) -> str:
    return f"certfleet:issuance-request:{request_id}:finished"


def announce_finished(client: redis.Redis, request_ids: Iterable[int]) -> None:
    """Wake whoever waits for these requests. Best effort: a Redis error is logged, not
    raised, because the requests are already committed and waiters fall back to a timeout."""
    ids = list(request_ids)
    if not ids:
        return
    try:
        with client.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.publish(channel(request_id), "finished")
            pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("could not wake waiting clients", extra={"fields": {"error": str(exc)}})


class Wakeup:
    """A confirmed subscription to one request's channel, opened before the caller reads the
    row, so a wake-up published between that read and the wait is not missed."""

    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self._pubsub = pubsub

    def wait(self, timeout: float) -> bool:
        """Until the wake-up arrives (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, READ_SLICE_S)
            )
            if message is not None:
                return True
        return False


@contextlib.contextmanager
def subscribed(client: redis.Redis, request_id: int) -> Iterator[Wakeup]:
    pubsub = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
    try:
        pubsub.subscribe(channel(request_id))
        # The confirmation says Redis holds the subscription: from here no wake-up is lost.
        confirmed = pubsub.get_message(timeout=READ_SLICE_S)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise redis.exceptions.ConnectionError("no subscription confirmation from Redis")
        yield Wakeup(pubsub)
    finally:
        pubsub.close()
