"""Throw-away local services for the tests and the benchmarks: a private redis-server and a
fresh PostgreSQL database, so that neither depends on the state of the machine's own."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

REDIS_SERVER = "/usr/bin/redis-server"
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def libpq_url(sqlalchemy_url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix, as psycopg.connect() wants it."""
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def start_redis(
    workdir: Path, port: int | None = None, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server without persistence, on a free port or on `port` (a restart), with
    `extra` options (e.g. --replicaof). Retried if another process takes the port between
    choosing and binding it; RuntimeError if it never starts."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    for _attempt in range(5):
        chosen = port or free_port()
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if _answers(process, chosen):
            return process, chosen
        if process.poll() is None:
            process.kill()
        process.wait()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not start; its log ends with:\n{tail}")


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Our server answers, not another one that took the port between bind and start."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                return bool(client.info("server")["process_id"] == process.pid)
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = libpq_url(admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
