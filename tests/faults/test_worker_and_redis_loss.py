"""Nothing lost, nothing issued twice: the issuer killed with SIGKILL in the middle of a batch
of thousands, and Redis restarted with its data gone mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import RestartableRedis, logs, start_fleet, wait_until

pytestmark = pytest.mark.faults

REQUESTS = 3000


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    tmp_path: Path, pg_database: str, own_redis: RestartableRedis
) -> None:
    stack, fleet = start_fleet(tmp_path, pg_database, own_redis.url, REQUESTS)
    with stack:
        ids = fleet.submit(sorted(fleet.csrs))
        fleet.wait_for("a fifth issued", lambda s: s.get("issued", 0) >= REQUESTS // 5, 120)
        killed = stack.processes["issuer"].pid
        stack.kill("issuer")  # SIGKILL to the worker and its pool, mid-batch
        killed_at = fleet.statuses()
        assert killed_at.get("issued", 0) < REQUESTS, "killed too late to prove anything"
        wait_until(lambda: stack.processes["issuer"].pid != killed, "the issuer restarted")
        fleet.wait_for("every request settled", lambda s: set(s) == {"issued"}, 240)
        fleet.assert_each_issued_once(ids)
        assert "sweep re-enqueued work" in logs(stack) or killed_at.get("signing", 0) == 0


def test_redis_restarted_empty_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, pg_database: str, own_redis: RestartableRedis
) -> None:
    stack, fleet = start_fleet(tmp_path, pg_database, own_redis.url, REQUESTS)
    with stack:
        ids = fleet.submit(sorted(fleet.csrs))
        fleet.wait_for("a fifth issued", lambda s: s.get("issued", 0) >= REQUESTS // 5, 120)
        own_redis.kill()  # every queued message is gone with it
        lost = fleet.statuses()
        assert lost.get("issued", 0) < REQUESTS
        own_redis.start()
        fleet.wait_for("every request settled", lambda s: set(s) == {"issued"}, 240)
        fleet.assert_each_issued_once(ids)
        assert "sweep re-enqueued work" in logs(stack)
