"""`make test-fast` collects the suite without what needs PostgreSQL, sshd or whole stacks,
and keeps the rest (each database test still runs on SQLite)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
ON_POSTGRESQL = re.compile(r"([\[-])postgresql([\]-])")  # the db_url parameter's id


def sqlite_twin(match: re.Match[str]) -> str:
    return f"{match.group(1)}sqlite{match.group(2)}"


def collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_the_fast_tier_leaves_out_postgresql_sshd_and_stacks() -> None:
    fast = collected("--fast", "tests/shared", "tests/services/distributor", "tests/e2e")
    full = collected("tests/shared", "tests/services/distributor", "tests/e2e")
    assert fast and set(fast) < set(full)
    assert not [t for t in fast if ON_POSTGRESQL.search(t) or t.startswith("tests/e2e/")]
    # every SSH delivery test talks to the real sshd
    assert not [t for t in fast if t.startswith("tests/services/distributor/test_ssh.py")]
    on_sqlite = {
        ON_POSTGRESQL.sub(sqlite_twin, t)
        for t in full
        if ON_POSTGRESQL.search(t) and not t.startswith("tests/e2e/")
    }
    assert on_sqlite & set(full) <= set(fast)  # the SQLite twin of each PostgreSQL case stays
