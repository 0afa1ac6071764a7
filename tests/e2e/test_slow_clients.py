"""A handful of clients that send their request headers a byte at a time (slowloris) must not
make /healthz or the API unreachable: the API's gunicorn (services.api.serving: gevent
workers) alone, and behind the reverse proxy of docker-compose and Kubernetes (nginx with
infra/nginx/certfleet.conf.template). Bounded: 60 connections, a byte each per half second,
for at most a few seconds, all on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.cli import admin
from shared.clock import SystemClock
from shared.settings import Settings
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.ports import free_port

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "nginx" / "certfleet.conf.template"
SLOW_CLIENTS = 60
ANSWER_WITHIN_S = 2.0


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


@contextlib.contextmanager
def api_server(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, str]]:
    """gunicorn with the API's own settings file; its URL and an admin token."""
    bind = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CERTFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'certfleet.db'}",
        "CERTFLEET_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/9",
        "CERTFLEET_VAR_DIR": str(tmp_path / "var"),
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_DATA_KEY": TEST_DATA_KEY,
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("CERTFLEET_")})
    token = admin.init(settings, SystemClock(), ca_name="Slow Root", key_bits=2048).admin_token
    assert token is not None
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-c", "python:services.api.serving"),
            *("--bind", bind, "--workers", "2", "services.api.app:create_app()"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://{bind}/healthz")
        yield f"http://{bind}", token
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def slow_clients(host: str, port: int, seconds: float) -> Iterator[list[socket.socket]]:
    """SLOW_CLIENTS connections that send a header line a byte every half second."""
    sockets = []
    for _ in range(SLOW_CLIENTS):
        conn = socket.create_connection((host, port), timeout=5)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        sockets.append(conn)
    stop = threading.Event()

    def trickle() -> None:
        deadline = time.monotonic() + seconds
        while not stop.wait(0.5) and time.monotonic() < deadline:
            for conn in sockets:
                with contextlib.suppress(OSError):
                    conn.send(b"a")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # every slow connection has reached the server
        yield sockets
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in sockets:
            conn.close()


def answers_promptly(base: str, token: str) -> list[float]:
    took = []
    for path in ("/healthz", "/api/v1/sites", "/healthz", "/api/v1/sites"):
        started = time.monotonic()
        response = requests.get(
            base + path, headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_WITHIN_S
        )
        assert response.status_code == 200, (path, response.status_code)
        took.append(time.monotonic() - started)
    return took


def test_slow_header_clients_do_not_stall_the_api(tmp_path: Path, redis_url: str) -> None:
    with api_server(tmp_path, redis_url) as (base, token):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with slow_clients(host, int(port), seconds=6):
            took = answers_promptly(base, token)
    assert max(took) < ANSWER_WITHIN_S, took


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_behind_the_reverse_proxy_too(tmp_path: Path, redis_url: str) -> None:
    listen = free_port()
    with api_server(tmp_path, redis_url) as (base, token):
        upstream = base.removeprefix("http://")
        server = (
            TEMPLATE.read_text()
            .replace("${UPSTREAM_API}", upstream)
            .replace("${LISTEN_PORT}", f"127.0.0.1:{listen}")
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
            "events { worker_connections 512; }\n"
            f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/body;\n"
            f"proxy_temp_path {tmp_path}/proxy;\n{server}\n}}\n"
        )
        nginx = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proxied = f"http://127.0.0.1:{listen}"
            wait_for(proxied + "/healthz", timeout=20)
            with slow_clients("127.0.0.1", listen, seconds=6):
                took = answers_promptly(proxied, token)
            too_big = requests.put(
                proxied + "/api/v1/inventory",
                data=b"x" * (9 * 1024 * 1024),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=30,
            )
            assert too_big.status_code == 413
        finally:
            nginx.terminate()
            nginx.wait(timeout=20)
    assert max(took) < ANSWER_WITHIN_S, took
