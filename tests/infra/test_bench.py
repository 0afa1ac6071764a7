"""`make bench` at its smallest scale, for its two cheap steps: the harness runs the real
stack (private redis-server, a fresh PostgreSQL database) and writes the JSON it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_writes_figures(tmp_path: Path, pg_admin_url: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.bench",
            "--scale",
            "tiny",
            "--steps",
            "raw,latency,cli",
            "--results",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "CERTFLEET_BENCH_PG_ADMIN_URL": pg_admin_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["not_measured"] == {}, latest["not_measured"]
    figures = {f["key"]: f for f in latest["figures"]}
    assert set(figures) == {
        "raw_sign",
        "latency_p50",
        "latency_p99",
        "cli_help_cpu",
        "cli_help_wall",
        "cli_bare_cpu",
    }
    # the lazy CLI's help costs less CPU than the same with every command imported
    assert 0 < figures["cli_help_cpu"]["value"] < figures["cli_help_cpu"]["reference"]
    assert figures["cli_help_cpu"]["target"] == "<= 0.3 s"
    assert latest["details"]["cli"]["runs"] == 5
    assert figures["raw_sign"]["value"] > 0
    assert 0 < figures["latency_p50"]["value"] <= figures["latency_p99"]["value"]
    assert figures["latency_p50"]["target"] == "<= 15 ms"
    assert figures["latency_p50"]["passed"] in (True, False)
    assert len(latest["details"]["latency_ms"]) == 5
    assert latest["meta"]["scale"] == "tiny"
    assert len(list(tmp_path.glob("2*.json"))) == 1
    assert "latency p50" in result.stdout
