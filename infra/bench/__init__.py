"""`make bench`: throughput, latency and scan-cost figures of certfleet, each measured in the
same run as the in-process reference it is compared with, on this machine.

Run with `python -m infra.bench --help` (from the repository root)."""
