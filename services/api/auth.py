"""Bearer-token authentication and role checks.

Roles: admin (everything), operator (sites, hosts, issuance; optionally scoped to one site),
auditor (read-only). Scope checks take a site ID so that every route asks the same question.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, request

from services.api.context import runtime
from shared.errors import Forbidden, Unauthorized
from shared.tokens import find_token

F = TypeVar("F", bound=Callable[..., Any])

TOUCH_INTERVAL = dt.timedelta(minutes=1)
# Agent tokens rank below every role: they pass only `requires_agent`.
ROLE_RANK = {"agent": -1, "auditor": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    site_id: int | None
    host_id: int | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"

    def can_read_site(self, site_id: int | None) -> bool:
        if self.role == "agent":
            return False
        return self.role != "operator" or self.site_id is None or self.site_id == site_id

    def can_write_site(self, site_id: int | None) -> bool:
        if self.role == "admin":
            return True
        return self.role == "operator" and (self.site_id is None or self.site_id == site_id)

    def require_read(self, site_id: int | None) -> None:
        if not self.can_read_site(site_id):
            raise Forbidden("this token is scoped to another site")

    def require_write(self, site_id: int | None) -> None:
        if self.role == "auditor":
            raise Forbidden("auditor tokens are read-only")
        if not self.can_write_site(site_id):
            raise Forbidden("this token is scoped to another site")


def authenticate() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("a bearer token is required")
    rt = runtime()
    token = find_token(rt.session(), secret.strip())
    if token is None:
        raise Unauthorized("the token is not valid")
    now = rt.clock.now()
    if token.last_used_at is None or now - token.last_used_at > TOUCH_INTERVAL:
        token.last_used_at = now
        rt.session().commit()
    return Principal(token.id, token.name, token.role, token.site_id, token.host_id)


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
            who = principal()
            if ROLE_RANK[who.role] < ROLE_RANK[role]:
                raise Forbidden(f"this needs the {role} role")
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
