"""Bearer-token authentication and role checks.

Roles: admin (everything), operator (sites, hosts, issuance; optionally scoped to one site),
auditor (read-only; optionally scoped to one site). What each may read and change is decided
by shared.access; this module only turns a bearer token into its Principal.
Failed authentications are counted per client address (services.api.limits), and each token's
use is an audit Event at most once per clock hour.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.api.context import ApiRuntime, runtime
from services.api.limits import FailureLimiter
from shared import events
from shared.access import ROLE_RANK, Principal
from shared.db.models import ApiToken, Host
from shared.errors import Forbidden, Unauthorized
from shared.tokens import find_token

F = TypeVar("F", bound=Callable[..., Any])

TOUCH_INTERVAL = dt.timedelta(minutes=1)
__all__ = ["ROLE_RANK", "Principal", "principal", "requires", "requires_agent"]


def authenticate() -> Principal:
    """The request's bearer token as a Principal."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        failure_limiter(runtime()).check(request.remote_addr or "unknown")
        raise Unauthorized("a bearer token is required")
    return authenticate_secret(secret.strip())


def authenticate_secret(secret: str) -> Principal:
    """A token's secret, from a header or the dashboard's cookie, as a Principal. A client
    address locked out by too many bad tokens gets 429 here, whatever it sends (see
    services.api.limits)."""
    rt = runtime()
    limiter = failure_limiter(rt)
    address = request.remote_addr or "unknown"
    limiter.check(address)
    token = find_token(rt.session(), secret)
    if token is None:
        limiter.failed(address)
        raise Unauthorized("the token is not valid")
    who = Principal(token.id, token.name, token.role, token.site_id, token.host_id)
    touch(rt.session(), token, who, rt.clock.now())
    return who


def failure_limiter(rt: ApiRuntime) -> FailureLimiter:
    return FailureLimiter(
        rt.redis_client, rt.settings.auth_fail_limit, rt.settings.auth_fail_window_s
    )


def touch(session: Session, token: ApiToken, who: Principal, now: dt.datetime) -> None:
    """Keep last_used_at within TOUCH_INTERVAL of the truth, and record `token.used` for the
    first use in each clock hour: one Event per token and hour, however busy the token is.
    The hour's Event is claimed with a conditional update, so two workers never both write it.
    The Event names the token by ID, name and prefix, never by its secret."""
    last = token.last_used_at
    hour = now.replace(minute=0, second=0, microsecond=0)
    if last is not None and last >= hour:
        if now - last > TOUCH_INTERVAL:
            token.last_used_at = now
            session.commit()
        return
    claimed = session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token.id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < hour),
        )
        .values(last_used_at=now)
        .returning(ApiToken.id)
        .execution_options(synchronize_session=False)
    ).first()
    if claimed is not None:
        site_id = token.site_id
        if token.host_id is not None:
            site_id = session.scalar(select(Host.site_id).where(Host.id == token.host_id))
        events.record(
            session,
            "token.used",
            who.actor,
            at=now,
            site_id=site_id,
            host_id=token.host_id,
            subject=("api_token", token.id),
            prefix=token.prefix,
            role=token.role,
        )
    session.commit()


def principal() -> Principal:
    current = g.get("principal")
    if current is None:
        current = authenticate()
        g.principal = current
    return current


def requires(role: str) -> Callable[[F], F]:
    """Authenticate, and refuse tokens below `role`."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal().require_role(role)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def requires_agent(view: F) -> F:
    """Only a host's agent token; everything else (even admin) is refused here, so that an
    agent endpoint always acts for exactly one host."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        who = principal()
        if who.role != "agent" or who.host_id is None:
            raise Forbidden("this endpoint is for host agents")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
