"""`certfleet stack run` must never leave a worker behind: an orphaned issuer would keep
taking messages from the queue for a database that no longer exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from services.cli.stack import MAX_RESTARTS, Stack
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.ports import free_port


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


SECRETS = ("CERTFLEET_CA_KEY_PASSPHRASE", "CERTFLEET_DATA_KEY", "CERTFLEET_SECRET_TEST_HOOK")
SERVICE_OF = {
    "gunicorn": "api",
    "services.issuer.tasks": "issuer",
    "services.distributor.tasks": "distributor",
    "worker": "expiry-watcher",
    "beat": "beat",
}


def secrets_by_service(pids: set[int]) -> dict[str, set[str]]:
    """Which of SECRETS each service process was started with (from /proc/<pid>/environ)."""
    found: dict[str, set[str]] = {}
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [a.decode() for a in argv]
        name = next(
            s for key, s in SERVICE_OF.items() if key in words or any(key in w for w in words)
        )
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if b"=" in e}
        found[name] = names & set(SECRETS)
    return found


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stack_run_stops_its_services(
    how: str, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    bind = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CERTFLEET_DATABASE_URL": sqlite_url,
        "CERTFLEET_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/7",
        "CERTFLEET_API_BIND": bind,
        "CERTFLEET_VAR_DIR": str(tmp_path),
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_DATA_KEY": TEST_DATA_KEY,
        "CERTFLEET_SECRET_TEST_HOOK": "hook-secret-value",
    }
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "stack", "run", "--concurrency", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://{bind}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail("the stack did not become ready")
        services = children_of(supervisor.pid)
        assert len(services) == 5  # gunicorn, issuer, distributor, expiry watcher, beat
        assert secrets_by_service(services) == {
            "api": {"CERTFLEET_DATA_KEY"},
            "issuer": {"CERTFLEET_CA_KEY_PASSPHRASE", "CERTFLEET_DATA_KEY"},
            "distributor": {"CERTFLEET_DATA_KEY", "CERTFLEET_SECRET_TEST_HOOK"},
            "expiry-watcher": {"CERTFLEET_SECRET_TEST_HOOK"},
            "beat": set(),
        }
        assert mode_of(tmp_path / "logs") == 0o700
        database = Path(sqlite_url.removeprefix("sqlite:///"))
        for path in (database, database.with_name(database.name + "-wal")):
            if path.exists():
                assert mode_of(path) == 0o600, path
        supervisor.send_signal(getattr(signal, how))
        supervisor.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(p) for p in services):
            time.sleep(0.2)
        assert not [p for p in services if alive(p)], "a service outlived `stack run`"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{bind}/healthz", timeout=2)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


class ShortLived(Stack):
    """A stack of one service that exits at once with code 3."""

    def commands(self) -> dict[str, list[str]]:
        return {"svc": [sys.executable, "-c", "import sys; sys.exit(3)"]}


def test_a_service_that_exits_is_restarted_until_it_crash_loops(tmp_path: Path) -> None:
    stack = ShortLived({}, "127.0.0.1:1", tmp_path / "logs")
    stack.start()
    try:
        pids = set()
        for _ in range(MAX_RESTARTS):
            pids.add(stack.processes["svc"].pid)
            stack.processes["svc"].wait(timeout=30)
            assert stack.supervise_once() == ["svc"]
        stack.processes["svc"].wait(timeout=30)
        assert stack.supervise_once() == [], "the sixth exit within a minute is a crash loop"
        assert stack.failed == {"svc"}
        assert len(pids) == MAX_RESTARTS
        log = (tmp_path / "logs" / "svc.log").read_text()
        assert log.count("svc exited with 3; restarting") == MAX_RESTARTS
    finally:
        stack.stop(timeout=5)


def test_a_second_stack_on_a_taken_address_fails_clearly(tmp_path: Path) -> None:
    import socket as socket_module

    from services.cli.client import CliError

    with socket_module.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        stack = Stack({}, bind, tmp_path / "logs", worker_concurrency=1, supervise=False)
        with pytest.raises(CliError, match="cannot listen on"):
            stack.__enter__()
        assert stack.processes == {}  # nothing was started
