"""Run the API and the issuer as separate local processes (for `make run`, the demo and the
end-to-end tests). Each process reads its own settings from the environment it is given."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import requests

from services.cli.client import CliError
from shared.delivery_settings import SECRET_ENV_PREFIX
from shared.files import private_dir

PR_SET_PDEATHSIG = 1
CA_PASSPHRASE = "CERTFLEET_CA_KEY_PASSPHRASE"
DATA_KEY = "CERTFLEET_DATA_KEY"
# Which secrets each service gets, as in docker-compose.yml and the k8s manifests: the CA
# passphrase only the issuer; the data key the processes that make or open server-held keys;
# CERTFLEET_SECRET_* (delivery and notice secrets) only the workers that send things out.
SECRETS_OF = {
    "api": {DATA_KEY},
    "issuer": {CA_PASSPHRASE, DATA_KEY},
    "distributor": {DATA_KEY, SECRET_ENV_PREFIX},
    "expiry-watcher": {SECRET_ENV_PREFIX},
    "beat": set(),
}


def service_environment(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """`env` less every secret the service `name` does not use."""
    # "issuer-2" is a second issuer; a service not listed gets no secret.
    allowed = SECRETS_OF.get(re.sub(r"-\d+$", "", name), set())
    out = {}
    for key, value in env.items():
        if key in (CA_PASSPHRASE, DATA_KEY) and key not in allowed:
            continue
        if key.startswith(SECRET_ENV_PREFIX) and SECRET_ENV_PREFIX not in allowed:
            continue
        out[key] = value
    return out


SUPERVISE_INTERVAL_S = 0.5
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the supervisor dies, so that no
    orphaned worker keeps consuming the queue for a database that is gone."""
    # Not Linux: stop() still ends the children on a normal exit.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Stack:
    env: Mapping[str, str]
    bind: str
    log_dir: Path
    worker_concurrency: int = 2
    ready_timeout: float = 60.0
    api_workers: int = 2
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Restart a service that exits (as docker's `restart: unless-stopped` does): a Celery
    # worker can die on a broker connection loss. More than MAX_RESTARTS exits of one service
    # within RESTART_WINDOW_S is a crash loop: it is left down and `failed` names it.
    supervise: bool = True
    restarts: dict[str, list[float]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}"

    def commands(self) -> dict[str, list[str]]:
        api = [
            *("gunicorn", "-c", "python:services.api.serving"),
            *("--bind", self.bind, "--workers", str(self.api_workers)),
            "services.api.app:create_app()",
        ]
        return {
            "api": [sys.executable, "-m", *api],
            "issuer": self.celery_worker("services.issuer.tasks", "issue"),
            "distributor": self.celery_worker("services.distributor.tasks", "distribute"),
            "expiry-watcher": self.celery_worker("services.expiry_watcher.tasks", "expiry"),
            "beat": [
                *(sys.executable, "-m", "celery", "-A", "services.expiry_watcher.tasks", "beat"),
                *("--loglevel", "INFO"),
            ],
        }

    def celery_worker(self, module: str, queue: str) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", module, "worker", "--queues", queue),
            *("--concurrency", str(self.worker_concurrency)),
            *("--hostname", f"{queue}-{os.getpid()}@%h", "--loglevel", "INFO"),
            *("--without-gossip", "--without-mingle"),
        ]

    def start(self) -> None:
        self.check_port_free()
        private_dir(self.log_dir)
        for name in self.commands():
            self.spawn(name)

    def check_port_free(self) -> None:
        """Another process (a second `stack run`) on the API's address would answer our
        readiness check for us: refuse to start instead of claiming to run."""
        host, _, port = self.bind.rpartition(":")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As gunicorn does: connections of a stack just stopped may linger in TIME_WAIT,
            # which does not stop a new listener; a listening socket still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), int(port)))
            except OSError as exc:
                raise CliError(
                    f"cannot listen on {self.bind}: {exc.strerror or exc} (is another stack "
                    "running? set CERTFLEET_API_BIND to another address)"
                ) from exc

    def spawn(self, name: str) -> None:
        """Start one of the processes (again), appending to its log."""
        env = service_environment(name, {**os.environ, **self.env, "CERTFLEET_API_BIND": self.bind})
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.commands()[name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process and everything it started (a Celery worker's pool), and wait."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise CliError(
                        f"{name} exited with {process.returncode}; see {self.log_dir / name}.log"
                    )
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet, or busy starting
            time.sleep(0.2)
        raise CliError(f"the API did not become ready within {timeout:.0f}s")

    def supervise_once(self) -> list[str]:
        """Restart every service that exited, unless it is crash-looping; return their names."""
        restarted: list[str] = []
        now = time.monotonic()
        for name, process in list(self.processes.items()):
            if process.poll() is None or name in self.failed or self._stopping.is_set():
                continue
            recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                self.failed.add(name)
                continue
            self.restarts[name] = [*recent, now]
            with (self.log_dir / f"{name}.log").open("a") as log:
                log.write(f"certfleet stack: {name} exited with {process.returncode}; restarting\n")
            self.spawn(name)
            restarted.append(name)
        return restarted

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            self.supervise_once()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to each leader only: gunicorn and Celery then stop their own workers after
        the current request or task (a signal to the whole group would kill a Celery pool
        process mid-task). Whatever is left after `timeout` is killed."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of its group
            process.wait()
        self.processes.clear()

    def __enter__(self) -> Stack:
        self.start()
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._stopping.clear()
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
