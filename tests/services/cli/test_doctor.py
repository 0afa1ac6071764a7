"""`certfleet doctor` against a real database and Redis with nothing else running: every
missing piece is a failure with the command that fixes it. (tests/e2e/test_stack.py runs it
against the whole running stack, where it passes.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import update

from infra.local import free_port
from services.cli import admin
from services.cli.main import cli
from shared import taskstats
from shared.clock import SystemClock
from shared.contracts import BEAT_LOCK_KEY, TASK_SWEEP
from shared.db.migrate import alembic_config
from shared.db.models import Authority
from shared.db.session import Database
from shared.settings import Settings
from tests.conftest import TEST_CA_PASSPHRASE


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    result = CliRunner().invoke(cli, ["-o", "json", "doctor", "--no-api"], env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.exit_code, checks


@pytest.fixture
def deployment(sqlite_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = {
        "CERTFLEET_DATABASE_URL": sqlite_url,
        "CERTFLEET_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/7",
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_VAR_DIR": str(tmp_path / "var"),
    }
    admin.init(Settings.from_env(env), SystemClock(), ca_name="Doctor Root", key_bits=2048)
    client = redis.Redis.from_url(env["CERTFLEET_REDIS_URL"])
    client.flushdb()
    client.close()
    return env


def test_doctor_names_what_is_missing(deployment: dict[str, str]) -> None:
    code, checks = doctor(deployment)
    assert code == 1
    status = {name: c["status"] for name, c in checks.items()}
    head = ScriptDirectory.from_config(alembic_config(deployment["CERTFLEET_DATABASE_URL"]))
    assert status["database"] == "ok"
    assert f"schema {head.get_current_head()}" in checks["database"]["detail"]
    assert status["redis"] in ("ok", "warn")
    for queue in ("issue", "distribute", "expiry"):
        assert status[f"workers: {queue}"] == "fail"
        assert f"--queues {queue}" in checks[f"workers: {queue}"]["detail"]
    assert status["beat"] == "fail" and "beat" in checks["beat"]["detail"]
    assert status["task: sweep"] == "warn"  # never ran yet
    assert status["CA Doctor Root"] == "ok"
    assert status["clock: redis"] == "ok"
    assert "api" not in status


def test_doctor_fails_a_stale_task_and_a_ca_about_to_expire(deployment: dict[str, str]) -> None:
    db = Database(deployment["CERTFLEET_DATABASE_URL"])
    now = dt.datetime.now(dt.UTC)
    with db.session() as session:
        taskstats.record(session, TASK_SWEEP, 0.1, "success", now - dt.timedelta(days=2))
        session.execute(update(Authority).values(not_after=now + dt.timedelta(days=20)))
    db.dispose()
    client = redis.Redis.from_url(deployment["CERTFLEET_REDIS_URL"])
    client.set(BEAT_LOCK_KEY, "beat-host:123:1", px=30_000)
    try:
        code, checks = doctor(deployment)
    finally:
        client.delete(BEAT_LOCK_KEY)
        client.close()
    assert code == 1
    assert checks["beat"]["status"] == "ok" and "beat-host:123" in checks["beat"]["detail"]
    sweep: dict[str, Any] = checks["task: sweep"]
    assert sweep["status"] == "fail" and "it runs every 60s" in sweep["detail"]
    ca = checks["CA Doctor Root"]
    assert ca["status"] == "fail" and "rotate-ca" in ca["detail"]


def test_doctor_reports_an_unreachable_redis_without_crashing(deployment: dict[str, str]) -> None:
    gone = {**deployment, "CERTFLEET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    code, checks = doctor(gone)
    assert code == 1
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "fail" and "could not check" in checks["redis"]["detail"]
    assert checks["workers"]["detail"] == "not checked: Redis is unreachable"


def test_doctor_fails_an_issuer_that_cannot_use_its_secrets(deployment: dict[str, str]) -> None:
    """The issuer runs, so the queue has a worker, yet every request would fail: a wrong CA
    passphrase and no data key. The doctor asks the issuer itself and says what to fix."""
    import os
    import subprocess
    import sys
    import time

    env = {
        **os.environ,
        **deployment,
        "CERTFLEET_CA_KEY_PASSPHRASE": "not-the-passphrase-0123",
        "CERTFLEET_DATA_KEY": "",
    }
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "services.issuer.tasks", "worker"),
            *("--queues", "issue", "--concurrency", "1", "--pool", "solo"),
            *("--hostname", f"doctor-issuer-{os.getpid()}@%h", "--without-gossip"),
            "--without-mingle",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            _, checks = doctor(deployment)
            found = [c for name, c in checks.items() if name.startswith("issuer secrets: ")]
            if found or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert len(found) == 1, checks
    [check] = found
    assert check["status"] == "fail"
    assert "cannot open the key of authority 'Doctor Root'" in check["detail"]
    assert "CERTFLEET_DATA_KEY is not set on the issuer" in check["detail"]
    assert "not-the-passphrase" not in json.dumps(checks)
