"""A limit on failed bearer-token authentications, counted per client address in Redis.

A fixed window per address: the first failure starts a window of `window_s` seconds (INCR
and EXPIRE NX in one MULTI, so the count never lives without its expiry), later failures add
to it. Once `limit` failures are counted, every request from that address that needs a
token is refused with 429 and Retry-After until the window ends, even one with a valid
token: the usual choice, so that a guesser learns nothing from its guesses while locked out.
A success neither resets nor touches any counter. Redis is shared by every API worker, so
the count is too.

The address is `request.remote_addr`: behind a reverse proxy that is the proxy's, so one
misbehaving client locks out everyone behind it; X-Forwarded-For is not trusted, because any
client can write it.

If Redis cannot be reached, the limiter fails open: it logs a warning and lets the request
through to normal authentication. An outage must not lock everyone out or turn into 500s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
import redis.exceptions

from shared.errors import TooManyRequests

log = logging.getLogger(__name__)

KEY_PREFIX = "certfleet:auth-failures:"
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class FailureLimiter:
    redis_client: redis.Redis
    limit: int
    window_s: int

    def check(self, address: str) -> None:
        """Raise TooManyRequests if `address` has used up its failures in this window."""
        key = KEY_PREFIX + address
        try:
            with self.redis_client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.ttl(key)
                count, ttl = pipe.execute()
        except REDIS_ERRORS as exc:
            _fail_open(exc)
            return
        if count is not None and int(count) >= self.limit:
            raise TooManyRequests(
                "too many failed authentications from this address; retry later",
                retry_after=ttl if ttl > 0 else self.window_s,
            )

    def failed(self, address: str) -> None:
        """Count one failure; the first of a window starts it."""
        key = KEY_PREFIX + address
        try:
            with self.redis_client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
                pipe.execute()
        except REDIS_ERRORS as exc:
            _fail_open(exc)


def _fail_open(exc: BaseException) -> None:
    log.warning(
        "auth failure limiter unavailable; not limiting",
        extra={"fields": {"error": type(exc).__name__}},
    )
