"""`make bench`: run the steps, print one table, write results/<timestamp>.json and
results/latest.json.

Steps (--steps, comma-separated; default all):
  raw       in-process CSR check + build + sign on every core (the reference of `csr`)
  csr       CSR issuance through the stack (bulk API -> Redis -> issuer -> PostgreSQL)
  keygen    server-side keygen issuance through the stack vs raw RSA-2048 keygen on every core
  latency   one request at idle: POST, then poll until issued; p50 / p99
  scan      the expiry watcher's scans over 1,000,000 and 100,000 certificates
  campaign  a renewal campaign over 100,000 certificates, unthrottled and rate-limited
  cli       `certfleet --help` start-up CPU vs the same with every command imported

--scale: full (the issue's counts), small (1/20, a few minutes), tiny (a smoke test)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cryptography

from infra.bench import raw
from infra.bench.report import Figure, Report, Target
from infra.bench.steps import STEPS, Context

ALL_STEPS = ("raw", "csr", "keygen", "latency", "scan", "campaign", "cli")


@dataclass(frozen=True)
class Scale:
    name: str
    raw_sign: int
    raw_keygen: int
    csr_requests: int
    keygen_requests: int
    latency_samples: int
    scan_rows: tuple[int, ...]
    campaign_certificates: int
    campaign_window_s: float
    cli_runs: int


SCALES = {
    "full": Scale("full", 4000, 600, 20_000, 2_000, 200, (1_000_000, 100_000), 100_000, 120, 30),
    "small": Scale("small", 400, 40, 1_000, 100, 50, (50_000, 5_000), 5_000, 60, 15),
    "tiny": Scale("tiny", 40, 4, 50, 4, 5, (2_000,), 100, 0, 5),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--steps", default=",".join(ALL_STEPS))
    parser.add_argument("--ca-bits", type=int, default=3072, help="CA key size (default 3072)")
    parser.add_argument("--campaign-rate", type=int, default=600, help="throttled rate per min")
    parser.add_argument("--campaign-tick", type=float, default=1.0, help="seconds per advance")
    parser.add_argument("--results", type=Path, default=None, help="directory for the JSON")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and work files")
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.steps) - set(ALL_STEPS))
    if unknown:
        parser.error(f"unknown steps: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scale = SCALES[args.scale]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="certfleet-bench-"))
    report = Report(
        meta={
            "started_at": stamp,
            "scale": scale.name,
            "steps": args.steps,
            "cores": raw.cores(),
            "loadavg_start": os.getloadavg(),
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "ca_bits": args.ca_bits,
            "work_dir": str(work) if args.keep_work else None,
        }
    )
    ctx = Context(work, scale, args.ca_bits, args.campaign_rate, args.campaign_tick, report)
    started = time.monotonic()
    try:
        for name in ALL_STEPS:
            if name in args.steps:
                _run_step(name, STEPS[name], ctx, report)
    finally:
        ctx.close_fleet()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report.meta["loadavg_end"] = os.getloadavg()
    report.meta["seconds"] = round(time.monotonic() - started, 1)
    print(report.table())
    path = report.write(stamp, args.results) if args.results else report.write(stamp)
    print(
        f"\n{scale.name} scale, {report.meta['seconds']:.0f} s; load average "
        f"{report.meta['loadavg_start'][0]:.1f} -> {report.meta['loadavg_end'][0]:.1f} "
        f"on {report.meta['cores']} cores; written to {path}"
    )
    return 0


def _run_step(name: str, step: Callable[[Context], None], ctx: Context, report: Report) -> None:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t = time.monotonic()
    try:
        step(ctx)
    except Exception as exc:
        report.not_measured[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc()
    print(f"[bench] {name} done in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)


__all__ = ["Figure", "Target", "main"]
