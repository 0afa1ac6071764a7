"""Two beats never both schedule: only the holder of the Redis lock sends; when it stops,
the standby takes over. Real Redis, real Celery schedulers, no sleeping beyond the
schedule's own 0.2 s interval."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from services.expiry_watcher.beat import LOCK_KEY, LockedScheduler
from shared.queue import make_celery
from shared.settings import Settings

QUEUE = "beat-test"


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    url = redis_url.rsplit("/", 1)[0] + "/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    celery = make_celery(Settings(redis_url=url), "beat-test")
    celery.conf.beat_schedule = {
        "ping": {"task": "certfleet.test.ping", "schedule": 0.2, "options": {"queue": QUEUE}}
    }
    yield celery
    client.flushdb()
    client.close()


def run(scheduler: LockedScheduler, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        scheduler.tick()
        time.sleep(0.05)


def sent(app: Celery) -> int:
    with redis.Redis.from_url(app.conf.broker_url) as client:
        return int(client.llen(QUEUE))


def test_only_the_lock_holder_schedules_and_the_standby_takes_over(app: Celery) -> None:
    first = LockedScheduler(app)
    second = LockedScheduler(app)
    run(first, 0.7)
    assert first.holding and sent(app) >= 2
    before = sent(app)
    run(second, 0.7)  # the lock is still the first beat's: nothing more is sent
    assert not second.holding and sent(app) == before
    first.close()  # a beat that stops gives the lock up
    run(second, 0.7)
    assert second.holding and sent(app) > before
    with redis.Redis.from_url(app.conf.broker_url) as client:
        assert client.get(LOCK_KEY) == second.identity.encode()
    second.close()


def test_the_watchers_schedule_drives_sweep_renewal_notices_campaigns_and_crls() -> None:
    from services.expiry_watcher import tasks
    from services.issuer import tasks as issuer_tasks
    from shared import contracts

    schedule = {entry["task"]: entry for entry in tasks.app.conf.beat_schedule.values()}
    own = {
        contracts.TASK_SWEEP,
        contracts.TASK_RENEW,
        contracts.TASK_NOTIFY,
        contracts.TASK_ADVANCE_CAMPAIGNS,
    }
    assert set(schedule) == own | {contracts.TASK_REFRESH_CRLS}
    for name, entry in schedule.items():
        worker = tasks.app if name in own else issuer_tasks.app
        assert name in worker.tasks, name
        queue = contracts.QUEUE_EXPIRY if name in own else contracts.QUEUE_ISSUE
        assert entry["options"]["queue"] == queue
        assert 0 < entry["options"]["expires"] < entry["schedule"]


def test_the_container_healthcheck_follows_the_lock(app: Celery) -> None:
    """`python -m services.expiry_watcher.beat --check` (docker-compose's healthcheck) is
    healthy while a beat holds the lock, active or standby, and not otherwise."""
    env = {**os.environ, "CERTFLEET_REDIS_URL": app.conf.broker_url}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.expiry_watcher.beat", "--check"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    idle = check()
    assert idle.returncode == 1 and "no beat holds the schedule lock" in idle.stderr
    scheduler = LockedScheduler(app=app)
    try:
        assert scheduler.acquire()
        assert check().returncode == 0
    finally:
        scheduler.close()
    assert check().returncode == 1
