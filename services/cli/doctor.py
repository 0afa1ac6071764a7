"""`certfleet doctor`: is this deployment healthy? Each check says ok, warn or fail, with
what to do about it. It reads the database and Redis named by CERTFLEET_* (as the services
do) and asks the workers over the broker, so it runs on any machine that can reach them."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis
import requests
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from celery import Celery
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.cli import local_secrets
from services.cli.common import emit, err_console, friendly_errors
from shared.clock import Clock, SystemClock, days_left
from shared.contracts import (
    BEAT_LOCK_KEY,
    QUEUE_DISTRIBUTE,
    QUEUE_EXPIRY,
    QUEUE_ISSUE,
    periodic_tasks,
)
from shared.db.migrate import alembic_config
from shared.db.models import Authority, TaskRun
from shared.db.session import Database
from shared.queue import make_celery, redis_client
from shared.settings import Settings

OK, WARN, FAIL = "ok", "warn", "fail"
CA_FAIL_DAYS = 30
CA_WARN_DAYS = 180
CLOCK_WARN_S = 1.0
CLOCK_FAIL_S = 5.0
# A periodic task is stale after missing this many runs in a row.
STALE_RUNS = 3
WORKER_COMMANDS = {
    QUEUE_ISSUE: "celery -A services.issuer.tasks worker --queues issue",
    QUEUE_DISTRIBUTE: "celery -A services.distributor.tasks worker --queues distribute",
    QUEUE_EXPIRY: "celery -A services.expiry_watcher.tasks worker --queues expiry",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    def as_row(self) -> dict[str, str]:
        return asdict(self)


def run_all(settings: Settings, clock: Clock, app: Celery, api_url: str | None) -> list[Check]:
    """Every check, in the order an operator would look; a check that cannot run (its
    dependency is down) is reported as failed, and the rest still run."""
    checks: list[Check] = []
    db = Database(settings.database_url)
    client = redis_client(
        settings.redis_url,
        settings.redis_sentinel_master,
        socket_timeout=3,
        socket_connect_timeout=3,
    )
    try:
        checks.append(guarded("database", lambda: [database(db)]))
        reachable = guarded("redis", lambda: [redis_reachable(client)])
        checks.append(reachable)
        if reachable.status == FAIL:  # workers and beat are seen through Redis only
            checks += [
                Check(n, FAIL, "not checked: Redis is unreachable") for n in ("workers", "beat")
            ]
        else:
            checks += guarded_many("workers", lambda: workers(app))
            checks += guarded_many("issuer secrets", lambda: issuer_secrets(app))
            checks.append(guarded("beat", lambda: [beat(client)]))
        with db.sessions() as session:
            now = clock.now()
            checks += guarded_many("periodic tasks", lambda: periodic(session, settings, now))
            checks += guarded_many("authorities", lambda: authorities(session, now))
            checks += guarded_many("clock", lambda: clocks(session, client, clock))
        if api_url:
            checks.append(guarded("api", lambda: [api(api_url)]))
    finally:
        client.close()
        db.dispose()
    return checks


def guarded(name: str, check: Callable[[], list[Check]]) -> Check:
    return guarded_many(name, check)[0]


def guarded_many(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    try:
        return check()
    except Exception as exc:  # a check that cannot run is a finding, not a crash
        return [Check(name, FAIL, f"could not check: {type(exc).__name__}: {short(exc)}")]


def short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def database(db: Database) -> Check:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()
    where = db.engine.url.render_as_string(hide_password=True)
    if current != head:
        return Check(
            "database", FAIL, f"{where}: schema at {current}, code expects {head}: certfleet init"
        )
    return Check("database", OK, f"{where}, schema {current}")


def redis_reachable(client: redis.Redis) -> Check:
    client.ping()
    detail = f"redis {client.info('server').get('redis_version', '?')}"
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
    except redis.exceptions.ResponseError:  # CONFIG is often disabled on managed Redis
        appendonly = None
    if appendonly == "no":
        return Check(
            "redis",
            WARN,
            f"{detail} without appendonly: after a restart queued work waits for the sweep",
        )
    return Check("redis", OK, detail)


def workers(app: Celery, timeout: float = 2.0) -> list[Check]:
    """Which workers consume each queue, as they answer a broadcast ping."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    consumers: dict[str, list[str]] = {queue: [] for queue in WORKER_COMMANDS}
    for worker, infos in replies.items():
        for info in infos:
            name = str(info.get("name"))
            if name in consumers:
                consumers[name].append(worker)
    checks = []
    for queue, names in consumers.items():
        label = f"workers: {queue}"
        if names:
            checks.append(Check(label, OK, f"{len(names)}: {', '.join(sorted(names))}"))
        else:
            start = WORKER_COMMANDS[queue]
            checks.append(Check(label, FAIL, f"no worker consumes '{queue}'; start: {start}"))
    return checks


def issuer_secrets(app: Celery, timeout: float = 3.0) -> list[Check]:
    """Ask every issuer (remote control, services.issuer.tasks.certfleet_secrets) whether it
    can open the CA keys and hold server-held keys: a missing or wrong secret fails every
    request, so the doctor must say so rather than "0 failed"."""
    replies: list[dict[str, Any]] = (
        app.control.broadcast("certfleet_secrets", reply=True, timeout=timeout) or []
    )
    issuers = {
        worker: reply
        for answer in replies
        for worker, reply in answer.items()
        if isinstance(reply, dict) and "problems" in reply
    }
    if not issuers:
        return [Check("issuer secrets", WARN, "no issuer answered; see workers: issue")]
    checks = []
    for worker, reply in sorted(issuers.items()):
        problems = [str(p) for p in reply["problems"]]
        if problems:
            checks.append(Check(f"issuer secrets: {worker}", FAIL, "; ".join(problems)))
        else:
            checks.append(
                Check(f"issuer secrets: {worker}", OK, "opens every CA key; holds the data key")
            )
    return checks


def beat(client: redis.Redis) -> Check:
    holder = client.get(BEAT_LOCK_KEY)
    if holder is None:
        return Check(
            "beat",
            FAIL,
            "no beat holds the schedule: sweeps, renewals and notices do not run;"
            " start: celery -A services.expiry_watcher.tasks beat",
        )
    name = holder.decode(errors="replace") if isinstance(holder, bytes) else str(holder)
    return Check("beat", OK, f"scheduling: {name}")


def periodic(session: Session, settings: Settings, now: dt.datetime) -> list[Check]:
    """Each periodic task's last success against its interval."""
    rows = session.execute(select(TaskRun.task, TaskRun.last_success_at))
    last = {task: when for task, when in rows}
    checks = []
    for p in periodic_tasks(settings.sweep_interval_s):
        name = f"task: {p.name}"
        when = last.get(p.task)
        allowed = dt.timedelta(seconds=p.every * STALE_RUNS + 60)
        if when is None:
            checks.append(Check(name, WARN, f"has never succeeded (runs every {p.every:.0f}s)"))
        elif now - when > allowed:
            ago = (now - when).total_seconds()
            checks.append(
                Check(name, FAIL, f"last success {ago:.0f}s ago; it runs every {p.every:.0f}s")
            )
        else:
            checks.append(Check(name, OK, f"last success {when:%Y-%m-%d %H:%M:%S} UTC"))
    return checks


def authorities(session: Session, now: dt.datetime) -> list[Check]:
    rows = session.execute(
        select(Authority.name, Authority.status, Authority.not_after)
        .where(Authority.status.in_(("active", "retiring")))
        .order_by(Authority.id)
    )
    checks = []
    for name, status, not_after in rows:
        label = f"CA {name}"
        if not_after is None:
            checks.append(Check(label, FAIL, f"{status} without a certificate"))
            continue
        days = days_left(not_after, now)
        detail = f"{status}, expires {not_after:%Y-%m-%d} ({days} days left)"
        if days < CA_FAIL_DAYS:
            checks.append(
                Check(label, FAIL, f"{detail}: rotate it now (certfleet campaign rotate-ca)")
            )
        elif days < CA_WARN_DAYS:
            checks.append(Check(label, WARN, f"{detail}: plan its rotation"))
        else:
            checks.append(Check(label, OK, detail))
    if not checks:
        checks.append(Check("authorities", FAIL, "no active CA: certfleet init"))
    return checks


def clocks(session: Session, client: redis.Redis, clock: Clock) -> list[Check]:
    """This machine's clock against the database's and Redis': a certificate signed by a fast
    clock is not yet valid for its clients, and expiry is judged by these clocks."""
    checks = []
    sources: list[tuple[str, Callable[[], dt.datetime | None]]] = [
        ("database", lambda: database_time(session)),
        ("redis", lambda: redis_time(client)),
    ]
    for source, read in sources:
        before = clock.now()
        other = read()
        after = clock.now()
        if other is None:
            continue
        mine = before + (after - before) / 2
        skew = (mine - other).total_seconds()
        detail = f"this machine is {abs(skew):.2f}s {'ahead of' if skew > 0 else 'behind'} {source}"
        status = FAIL if abs(skew) > CLOCK_FAIL_S else WARN if abs(skew) > CLOCK_WARN_S else OK
        checks.append(Check(f"clock: {source}", status, detail))
    return checks


def database_time(session: Session) -> dt.datetime | None:
    """The database server's clock; None on SQLite, whose clock is this machine's."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    value = session.scalar(select(func.now()))
    return value if isinstance(value, dt.datetime) else None


def redis_time(client: redis.Redis) -> dt.datetime:
    seconds, micros = client.time()
    return dt.datetime.fromtimestamp(seconds + micros / 1e6, dt.UTC)


def api(url: str) -> Check:
    started = time.monotonic()
    response = requests.get(url.rstrip("/") + "/readyz", timeout=5)
    took = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return Check(
            "api", FAIL, f"{url}/readyz answered {response.status_code}: {response.text[:200]}"
        )
    return Check("api", OK, f"{url} ready ({took:.0f} ms)")


def worst(checks: Iterable[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def summary(checks: Sequence[Check]) -> str:
    counts = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
    return f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed"


@click.command()
@click.option("--no-api", is_flag=True, help="skip the API readiness check")
@click.pass_context
@friendly_errors
def doctor(ctx: click.Context, no_api: bool) -> None:
    """Check a deployment: database and schema, Redis, a worker on every queue, the beat,
    the periodic tasks' last success, CA expiry and clock skew. Exit code 1 if any fails."""
    settings = Settings.from_env(local_secrets.merged(os.environ))
    app = make_celery(settings, "certfleet-doctor")
    try:
        checks = run_all(settings, SystemClock(), app, None if no_api else ctx.obj["api_url"])
    finally:
        app.close()
    emit(ctx, [c.as_row() for c in checks], ["name", "status", "detail"], "certfleet doctor")
    if ctx.obj["output"] != "json":
        err_console.print(summary(checks))
    if worst(checks) == FAIL:
        sys.exit(1)
