"""Wake-ups for long polls, on a real Redis: a waiter hears its own request's wake-up only,
and a Redis that is gone costs the waiter its timeout, never an error."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.local import free_port
from shared import waiting


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        connection.close()


def test_a_waiter_is_woken_by_its_own_request_only(client: redis.Redis) -> None:
    with waiting.subscribed(client, 41) as wakeup:
        waiting.announce_finished(client, [40, 42])
        started = time.monotonic()
        assert wakeup.wait(0.3) is False
        assert time.monotonic() - started >= 0.3

        later = threading.Timer(0.2, waiting.announce_finished, (client, [7, 41]))
        later.start()
        started = time.monotonic()
        assert wakeup.wait(5) is True
        assert 0.15 <= time.monotonic() - started < 5
        later.join()


def test_announcing_to_a_missing_redis_logs_instead_of_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with caplog.at_level(logging.WARNING, logger="shared.waiting"):
        waiting.announce_finished(gone, [1, 2])
    assert "could not wake waiting clients" in caplog.text
    with pytest.raises(redis.exceptions.ConnectionError), waiting.subscribed(gone, 1):
        pass
