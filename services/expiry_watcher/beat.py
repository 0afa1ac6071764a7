"""A beat scheduler that schedules only while it holds a Redis lock, so that two beats
(a standby, or one started by mistake) never both send the periodic tasks.

The lock is a plain Redis key with a TTL, set with NX and extended on every tick by its
holder only; a beat that dies loses it after `LOCK_TTL`, and the standby takes over."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

import redis
from celery.beat import Scheduler

from shared.contracts import BEAT_LOCK_KEY
from shared.queue import redis_client
from shared.settings import Settings

log = logging.getLogger(__name__)

LOCK_KEY = BEAT_LOCK_KEY
LOCK_TTL_S = 30
STANDBY_SLEEP_S = 5.0


class LockedScheduler(Scheduler):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        options = self.app.conf.broker_transport_options or {}
        self.redis = redis_client(
            self.app.conf.broker_url, options.get("master_name"), socket_timeout=5
        )
        self.holding = False
        # Redis evaluates this atomically: extend only a lock that is still ours.
        self._extend = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
        )

    def acquire(self) -> bool:
        ttl_ms = LOCK_TTL_S * 1000
        try:
            if self.holding and self._extend(keys=[LOCK_KEY], args=[self.identity, ttl_ms]):
                return True
            self.holding = bool(self.redis.set(LOCK_KEY, self.identity, nx=True, px=ttl_ms))
        except redis.RedisError:
            self.holding = False
        if not self.holding:
            log.debug("beat is standby: another beat holds the lock")
        return self.holding

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.acquire():
            return STANDBY_SLEEP_S
        # Never sleep past the lock's expiry, or the standby would take over.
        return float(min(super().tick(*args, **kwargs), LOCK_TTL_S / 3))

    def close(self) -> None:
        if self.holding:
            try:
                if self.redis.get(LOCK_KEY) == self.identity.encode():
                    self.redis.delete(LOCK_KEY)
            except redis.RedisError:
                pass
        super().close()


def check() -> int:
    """`python -m services.expiry_watcher.beat --check`, a container healthcheck: 0 while
    some beat holds the lock (this one, or the one a standby waits for), 1 otherwise."""
    settings = Settings.from_env()
    try:
        client = redis_client(settings.redis_url, settings.redis_sentinel_master, socket_timeout=5)
        holder = client.get(LOCK_KEY)
    except redis.RedisError as exc:
        print(f"redis unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    if holder is None:
        print("no beat holds the schedule lock", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m services.expiry_watcher.beat --check")
    sys.exit(check())
