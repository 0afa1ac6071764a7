"""Task runs counted in the database: buckets, outcomes, and no count lost when many workers
record at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from shared import taskstats
from shared.db.models import TaskDuration, TaskRun
from shared.db.session import Database

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def test_a_run_counts_in_the_first_bucket_not_below_it() -> None:
    assert taskstats.bucket_label(0.0) == "0.05"
    assert taskstats.bucket_label(0.05) == "0.05"
    assert taskstats.bucket_label(0.0500001) == "0.1"
    assert taskstats.bucket_label(300.0) == "300.0"
    assert taskstats.bucket_label(300.1) == "+Inf"
    assert [taskstats.outcome_of(s) for s in ("SUCCESS", "RETRY", "FAILURE", "REVOKED", None)] == [
        "success",
        "retry",
        "failure",
        "failure",
        "failure",
    ]


def test_concurrent_workers_lose_no_count(database: Database) -> None:
    def work(worker: int) -> None:
        for run in range(10):
            outcome = "failure" if run == 9 else "success"
            with database.session() as session:
                at = NOW + dt.timedelta(seconds=worker * 10 + run)
                taskstats.record(session, "certfleet.test", 0.2, outcome, at)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    with database.session() as session:  # a slow worker commits an older success last
        taskstats.record(session, "certfleet.test", 0.2, "success", NOW)
    with database.sessions() as session:
        run = session.get(TaskRun, "certfleet.test")
        assert run is not None
        assert (run.successes, run.retries, run.failures) == (73, 0, 8)
        assert abs(run.seconds_total - 81 * 0.2) < 1e-9
        # The latest run of each outcome, whichever worker committed last.
        assert run.last_success_at == NOW + dt.timedelta(seconds=78)
        assert run.last_failure_at == NOW + dt.timedelta(seconds=79)
        rows = session.execute(select(TaskDuration.le, TaskDuration.count))
        assert {le: count for le, count in rows} == {"0.25": 81}
