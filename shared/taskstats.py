"""How the workers' tasks fare: runs by outcome, a duration histogram and the last success of
every task, kept in the database.

Prometheus needs these right however many worker processes and machines run a task. A
counter in each Celery child process would be one of many, each reset when the child is
replaced. Rows in the database add up every process's runs, and the API's /metrics reads
them, so one scrape of any API worker gives the whole fleet. A run costs two upserts in one
short transaction; an issue task signs up to 100 certificates, so this is small beside it."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from sqlalchemy import Table, case, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.clock import Clock
from shared.db.models import TaskDuration, TaskRun
from shared.db.session import Database

log = logging.getLogger(__name__)

# Upper bounds in seconds: a sweep or a batch of 100 signatures takes well under a second, a
# delivery over SSH a few seconds, a campaign step or a CRL for a big CA up to minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OUTCOMES = ("success", "retry", "failure")


def bucket_label(seconds: float) -> str:
    """The bucket a run of `seconds` counts in: the first bound not below it."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return le_label(bound)
    return "+Inf"


def le_label(bound: float) -> str:
    return repr(float(bound))


def outcome_of(state: str | None) -> str:
    """Celery's final state of a run as one of OUTCOMES."""
    if state == "SUCCESS":
        return "success"
    if state == "RETRY":
        return "retry"
    return "failure"


def record(session: Session, task: str, seconds: float, outcome: str, now: dt.datetime) -> None:
    """Count one run of `task` in the caller's transaction."""
    assert outcome in OUTCOMES, outcome
    column = {"success": "successes", "retry": "retries", "failure": "failures"}[outcome]
    runs: Any = TaskRun.__table__
    first = {
        "task": task,
        "successes": 0,
        "retries": 0,
        "failures": 0,
        "seconds_total": seconds,
        "last_success_at": now if outcome == "success" else None,
        "last_failure_at": now if outcome == "failure" else None,
        column: 1,
    }
    changes: dict[str, Any] = {
        column: runs.c[column] + 1,
        "seconds_total": runs.c.seconds_total + seconds,
    }
    latest = {"success": "last_success_at", "failure": "last_failure_at"}.get(outcome)
    if latest is not None:  # workers commit out of order: keep the latest, not the last
        changes[latest] = case(
            (or_(runs.c[latest].is_(None), runs.c[latest] < now), now), else_=runs.c[latest]
        )
    _upsert(session, runs, first, ["task"], changes)
    durations: Any = TaskDuration.__table__
    _upsert(
        session,
        durations,
        {"task": task, "le": bucket_label(seconds), "count": 1},
        ["task", "le"],
        {"count": durations.c.count + 1},
    )


def _upsert(
    session: Session,
    table: Table,
    values: dict[str, Any],
    keys: list[str],
    changes: dict[str, Any],
) -> None:
    """INSERT, or on a key conflict UPDATE: one statement, so concurrent workers never lose
    a count (PostgreSQL and SQLite both have ON CONFLICT)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))


def instrument(app: Celery, database: Callable[[], Database], clock: Clock) -> None:
    """Record every run of `app`'s tasks in the database that `database()` gives in the
    running process. A failure to record is logged and never fails the task."""
    started: dict[str, float] = {}

    def on_prerun(task_id: str, task: Any, **_: Any) -> None:
        if task.app is app:
            started[task_id] = time.monotonic()

    def on_postrun(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
        began = started.pop(task_id, None)
        if began is None or task.app is not app:
            return
        seconds = time.monotonic() - began
        try:
            with database().session() as session:
                record(session, task.name, seconds, outcome_of(state), clock.now())
        except Exception as exc:
            log.warning(
                "could not record a task run",
                extra={"fields": {"task": task.name, "error": type(exc).__name__}},
            )

    task_prerun.connect(on_prerun, weak=False)
    task_postrun.connect(on_postrun, weak=False)
