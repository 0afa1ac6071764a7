"""What a request needs from its process: the database session, the publisher, the clock,
the settings. Built once in create_app; routes reach it through `runtime()` only."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app, g
from sqlalchemy.orm import Session

from shared.clock import Clock
from shared.db.session import Database
from shared.queue import Publisher
from shared.settings import Settings


@dataclass
class ApiRuntime:
    settings: Settings
    db: Database
    publisher: Publisher
    clock: Clock
    redis_client: redis.Redis

    def session(self) -> Session:
        """The request's session, opened on first use and closed at teardown."""
        session = g.get("db_session")
        if session is None:
            session = self.db.sessions()
            g.db_session = session
        return session


def runtime() -> ApiRuntime:
    rt = current_app.extensions["certfleet"]
    assert isinstance(rt, ApiRuntime)
    return rt


def close_session(exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()
