"""Scale-out: two issuer processes, each with its own pool, consume the same queue against
one PostgreSQL database. Every batch is also sent a second time, shifted by half a batch, so
that the two processes race for the same requests; each request must still be issued by
exactly one certificate."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from services.cli.stack import Stack
from shared.contracts import QUEUE_ISSUE, chunked, issue_batch
from shared.queue import CeleryPublisher, make_celery
from shared.settings import Settings
from tests.faults.conftest import RestartableRedis, start_fleet, wait_until

pytestmark = pytest.mark.faults

REQUESTS = 1500
BATCH = 50


@dataclass
class TwoIssuers(Stack):
    """The API and two issuer workers with node names of their own."""

    def commands(self) -> dict[str, list[str]]:
        commands = super().commands()
        second = list(commands["issuer"])
        second[second.index("--hostname") + 1] = f"issue-second-{os.getpid()}@%h"
        return {"api": commands["api"], "issuer": commands["issuer"], "issuer-2": second}


def batch_totals(log: Path) -> dict[str, int]:
    """issued / failed / skipped summed over a worker's `batch done` lines."""
    totals = {"issued": 0, "failed": 0, "skipped": 0}
    for line in log.read_text(errors="replace").splitlines():
        if '"batch done"' not in line:
            continue
        entry = json.loads(line[line.index("{") :])
        for key in totals:
            totals[key] += int(entry[key])
    return totals


def test_two_issuer_processes_on_one_queue_issue_each_request_once(
    tmp_path: Path, pg_database: str, own_redis: RestartableRedis
) -> None:
    base, fleet = start_fleet(
        tmp_path,
        pg_database,
        own_redis.url,
        REQUESTS,
        extra_env={"CERTFLEET_ISSUE_BATCH_SIZE": str(BATCH)},
    )
    stack = TwoIssuers(base.env, base.bind, base.log_dir, worker_concurrency=2, ready_timeout=180)
    fleet.stack = stack
    publisher = CeleryPublisher(make_celery(Settings.from_env(dict(base.env)), "test"))
    with stack:
        ids = fleet.submit(sorted(fleet.csrs))  # the API sends batches of BATCH
        for chunk in chunked(ids[BATCH // 2 :], BATCH):  # and the same IDs again, shifted
            publisher.publish(issue_batch(chunk))
        fleet.wait_for("every request settled", lambda s: set(s) == {"issued"}, 240)
        # The duplicates may still wait in the queue: let the workers take and ack them all.
        queue = redis.Redis.from_url(own_redis.url)
        wait_until(
            lambda: queue.llen(QUEUE_ISSUE) == 0 and queue.hlen("unacked") == 0,
            "the issue queue drained",
            timeout=60,
        )
        fleet.assert_each_issued_once(ids)

    first = batch_totals(stack.log_dir / "issuer.log")
    second = batch_totals(stack.log_dir / "issuer-2.log")
    assert first["issued"] > 0 and second["issued"] > 0, (first, second)  # both did work
    assert first["issued"] + second["issued"] == REQUESTS
    assert first["failed"] + second["failed"] == 0
    # Each request sent twice was claimed once: its other message skipped it (the sweep may
    # have sent a slow one a third time, hence at least).
    assert first["skipped"] + second["skipped"] >= REQUESTS - BATCH // 2
