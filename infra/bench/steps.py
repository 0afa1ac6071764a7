"""One function per step: measure, then add the figures (with their references and targets)
to the report. The csr, keygen and latency steps share one running stack."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.bench import campaign, cli, expiry, issuance, raw
from infra.bench.report import Figure, Report, Target

if TYPE_CHECKING:
    from infra.bench.run import Scale

MiB = "MB"


@dataclass
class Context:
    work: Path
    scale: Scale
    ca_bits: int
    campaign_rate: int
    campaign_tick: float
    report: Report
    raw_sign: raw.RawResult | None = None
    _fleet: issuance.Fleet | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def fleet(self) -> issuance.Fleet:
        if self._fleet is None:
            hosts = max(
                self.scale.csr_requests, self.scale.keygen_requests, self.scale.latency_samples
            )
            self._fleet = self._stack.enter_context(
                issuance.running_fleet(self.work / "issuance", hosts, ca_bits=self.ca_bits)
            )
        return self._fleet

    def close_fleet(self) -> None:
        self._stack.close()
        self._fleet = None


def step_raw(ctx: Context) -> None:
    result = raw.raw_sign(ctx.scale.raw_sign, ca_bits=ctx.ca_bits)
    ctx.raw_sign = result
    ctx.report.details["raw_sign"] = asdict(result)
    ctx.report.add(
        Figure(
            "raw_sign",
            f"1 raw CSR->cert sign, {result.processes} procs, CA {ctx.ca_bits}",
            result.rate,
            "certs/s",
        )
    )


def step_csr(ctx: Context) -> None:
    if ctx.raw_sign is None:
        step_raw(ctx)
    assert ctx.raw_sign is not None
    fleet = ctx.fleet()
    n = ctx.scale.csr_requests
    result = issuance.bulk_issue(fleet, range(n), with_csr=True, timeout=max(600, n))
    ctx.report.details["csr_issuance"] = {**asdict(result), "rate": result.rate}
    ctx.report.add(
        Figure(
            "csr_issuance",
            f"2 CSR issuance e2e, {n:,} req (PostgreSQL)",
            result.rate,
            "certs/s",
            ctx.raw_sign.rate,
            "raw sign (1)",
            Target("min_ratio", 0.6),
        ),
        Figure("csr_accept", "  of which bulk POSTs accepted", n / result.post_seconds, "req/s"),
    )


def step_keygen(ctx: Context) -> None:
    fleet = ctx.fleet()
    reference = raw.raw_keygen(ctx.scale.raw_keygen)
    n = ctx.scale.keygen_requests
    result = issuance.bulk_issue(fleet, range(n), with_csr=False, timeout=max(600, n * 2))
    ctx.report.details["raw_keygen"] = asdict(reference)
    ctx.report.details["keygen_issuance"] = {**asdict(result), "rate": result.rate}
    ctx.report.add(
        Figure(
            "raw_keygen",
            f"  raw RSA-2048 keygen, {reference.processes} procs",
            reference.rate,
            "keys/s",
        ),
        Figure(
            "keygen_issuance",
            f"3 server-keygen issuance e2e, {n:,} req",
            result.rate,
            "certs/s",
            reference.rate,
            "raw keygen",
            Target("min_ratio", 0.85),
        ),
    )


def step_latency(ctx: Context) -> None:
    fleet = ctx.fleet()
    result = issuance.latency(fleet, range(ctx.scale.latency_samples))
    p50, p99 = result.percentile(50) * 1000, result.percentile(99) * 1000
    ctx.report.details["latency_ms"] = [round(s * 1000, 2) for s in result.samples]
    count = len(result.samples)
    ctx.report.add(
        Figure(
            "latency_p50",
            f"4 latency p50, {count} samples at idle",
            p50,
            "ms",
            target=Target("max", 15),
        ),
        Figure(
            "latency_p99",
            f"4 latency p99, {count} samples at idle",
            p99,
            "ms",
            target=Target("max", 50),
        ),
    )


def step_scan(ctx: Context) -> None:
    ctx.close_fleet()
    details: dict[str, Any] = {}
    for rows in ctx.scale.scan_rows:
        result = expiry.expiry_scan(ctx.work / f"scan-{rows}", rows, ca_bits=ctx.ca_bits)
        details[str(rows)] = asdict(result)
        scans, full = result.scans, result.full_pass
        ctx.report.add(
            Figure(
                f"scan_{rows}_s",
                f"5 expiry scan {rows:,} certs: renew_due + due_notices",
                result.seconds,
                "s",
                target=Target("max", 2),
            ),
            Figure(
                f"scan_{rows}_rss",
                f"5 expiry scan {rows:,} certs: peak RSS",
                scans["peak_rss_mb"],
                MiB,
                target=Target("max", 300),
            ),
            Figure(
                f"scan_{rows}_full_s",
                f"  full notice pass, {full['notices']:,} notices (no limit)",
                full["seconds"],
                "s",
            ),
            Figure(
                f"scan_{rows}_full_rss", "  full notice pass: peak RSS", full["peak_rss_mb"], MiB
            ),
            Figure(
                f"metrics_{rows}_s",
                f"  /metrics scrape, {rows:,} certs",
                result.operator["metrics_s"],
                "s",
            ),
            Figure(
                f"overview_{rows}_s",
                f"  dashboard overview, {rows:,} certs",
                result.operator["overview_s"],
                "s",
            ),
        )
    ctx.report.details["scan"] = details


def step_campaign(ctx: Context) -> None:
    ctx.close_fleet()
    n = ctx.scale.campaign_certificates
    result = campaign.campaign(
        ctx.work / "campaign",
        n,
        ca_bits=ctx.ca_bits,
        rate=ctx.campaign_rate,
        window=ctx.scale.campaign_window_s,
        tick=ctx.campaign_tick,
        timeout=max(900, n / 5),
    )
    ctx.report.details["campaign"] = asdict(result)
    fast = result.unthrottled
    if fast.issued_seconds is None:
        ctx.report.not_measured["campaign_unthrottled"] = (
            f"{fast.issued} of {fast.items} issued before the timeout"
        )
    else:
        ctx.report.add(
            Figure(
                "campaign_s",
                f"6 campaign {n:,} certs unthrottled: all issued",
                fast.issued_seconds,
                "s",
                target=Target("max", 60),
            ),
            Figure(
                "campaign_rate",
                "  unthrottled issue rate",
                fast.items / fast.issued_seconds,
                "certs/s",
            ),
        )
    slow = result.throttled
    if slow is not None and slow.achieved_per_minute is not None:
        ctx.report.add(
            Figure(
                "campaign_throttled",
                f"6 campaign at {slow.rate_per_minute}/min, {slow.window_seconds:.0f} s: issued",
                slow.achieved_per_minute,
                "/min",
                slow.rate_per_minute,
                f"{slow.rate_per_minute}/min",
                Target("within", 0.05),
            ),
        )
    elif slow is None:
        ctx.report.not_measured["campaign_throttled"] = "this scale has no rate-limited window"


def step_cli(ctx: Context) -> None:
    result = cli.cli_startup(ctx.scale.cli_runs)
    ctx.report.details["cli"] = asdict(result)
    ctx.report.add(
        Figure(
            "cli_help_cpu",
            f"7 `certfleet --help` CPU, median of {result.runs}",
            result.help_cpu_s,
            "s",
            result.eager_cpu_s,
            "every command imported",
            Target("max", 0.3),
        ),
        Figure("cli_help_wall", "  `certfleet --help` wall", result.help_wall_s, "s"),
        Figure("cli_bare_cpu", "  bare `python -c pass` CPU", result.bare_cpu_s, "s"),
    )


STEPS: dict[str, Callable[[Context], None]] = {
    "raw": step_raw,
    "csr": step_csr,
    "keygen": step_keygen,
    "latency": step_latency,
    "scan": step_scan,
    "campaign": step_campaign,
    "cli": step_cli,
}
