"""`certfleet --help` start-up (issue 14): CPU seconds of a fresh interpreter running the
CLI's help, against the same interpreter importing every command first (what it did before
commands were loaded lazily) and against bare `python -c pass`."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HELP = "from services.cli.main import cli; cli(['--help'])"
# every command imported before the listing: the eager CLI's start-up
EAGER = (
    "from services.cli.main import LAZY, cli\n"
    "for lazy in LAZY.values(): lazy.load()\n"
    "cli(['--help'])"
)
BARE = "pass"


@dataclass(frozen=True)
class CliResult:
    runs: int
    help_cpu_s: float  # medians
    help_wall_s: float
    eager_cpu_s: float
    bare_cpu_s: float


def _run(code: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running `code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "100"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def cli_startup(runs: int) -> CliResult:
    _run(HELP)  # warm the page cache and the bytecode caches
    _run(EAGER)
    samples: dict[str, list[tuple[float, float]]] = {"help": [], "eager": [], "bare": []}
    for _ in range(runs):  # interleaved, so a noisy moment costs each the same
        samples["help"].append(_run(HELP))
        samples["eager"].append(_run(EAGER))
        samples["bare"].append(_run(BARE))

    def median(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    return CliResult(
        runs=runs,
        help_cpu_s=median("help", 0),
        help_wall_s=median("help", 1),
        eager_cpu_s=median("eager", 0),
        bare_cpu_s=median("bare", 0),
    )
