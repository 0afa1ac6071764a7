"""End to end: the API (gunicorn) and the issuer (celery worker) run as separate processes
over a real Redis, on SQLite and on PostgreSQL, driven through HTTP by the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy.engine import make_url

from infra.local import fresh_database
from services.cli import admin
from services.cli.stack import Stack
from shared.clock import SystemClock
from shared.db.migrate import upgrade
from shared.settings import Settings
from tests import factories
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY, libpq_url
from tests.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
INVENTORY = ROOT / "examples" / "inventory.yaml"
SERVERS = 10  # hosts of the example inventory that are not client-only
PFX_PASSWORD = "e2e pfx password"


@dataclass
class Running:
    stack: Stack
    env: dict[str, str]
    var_dir: Path
    token: str

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.token}"}
        return requests.request(
            method, self.stack.url + path, headers=headers, timeout=30, **kwargs
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    work = tmp_path_factory.mktemp(f"e2e-{request.param}")
    with contextlib.ExitStack() as cleanup:
        if request.param == "sqlite":
            database_url = f"sqlite:///{work / 'certfleet.db'}"
        else:
            admin_url = request.getfixturevalue("pg_admin_url")
            database_url = cleanup.enter_context(fresh_database(admin_url, "certfleet_e2e"))
        bind = f"127.0.0.1:{free_port()}"
        env = {
            "CERTFLEET_DATABASE_URL": database_url,
            "CERTFLEET_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/5",
            "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
            "CERTFLEET_DATA_KEY": TEST_DATA_KEY,
            "CERTFLEET_VAR_DIR": str(work / "var"),
            "CERTFLEET_API_BIND": bind,
            "CERTFLEET_API_URL": f"http://{bind}",
            "CERTFLEET_ISSUE_BATCH_SIZE": "4",
        }
        settings = Settings.from_env(env)
        upgrade(settings.database_url)
        result = admin.init(settings, SystemClock(), ca_name="E2E Root", key_bits=2048)
        assert result.admin_token is not None
        stack = Stack(env, bind, work / "logs", worker_concurrency=2, ready_timeout=180)
        with stack:
            yield Running(stack, env, work / "var", result.admin_token)


def test_doctor_passes_on_the_running_stack(running: Running) -> None:
    """Every service of the stack is seen: the workers answer on their queues, the beat holds
    its lock, the API is ready."""
    result = running.cli("-o", "json", "doctor", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("database", "beat", "api", "CA E2E Root", "clock: redis"):
        assert checks[name]["status"] == "ok", checks[name]
    for queue in ("issue", "distribute", "expiry"):
        assert checks[f"workers: {queue}"]["status"] == "ok", checks[f"workers: {queue}"]


def test_the_readme_walkthrough_runs_as_written(running: Running, tmp_path: Path) -> None:
    """The README's walkthrough block, run by bash with `set -euo pipefail` from a copy of the
    repository's examples: every command there works as printed, on both databases (with
    only what the README sets: tests/e2e/test_first_hour.py)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough -->\n```sh\n", 1)[1].split("```", 1)[0]
    assert block.count("certfleet ") >= 12
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + block)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={
            **os.environ,
            **running.env,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CERTFLEET_TOKEN": running.token,
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pfx = (tmp_path / "out" / "hq-mgmt01.pfx").read_bytes()
    key, certificate, _ = pkcs12.load_key_and_certificates(pfx, b"a long export password")
    assert key is not None and certificate is not None
    assert "hq-mgmt01.hq.vms.nordbank.example" in certificate.subject.rfc4514_string()
    assert x509.load_pem_x509_certificates((tmp_path / "out" / "certfleet-ca.pem").read_bytes())
    assert "Import-Certificate" in result.stdout or "certutil" in result.stdout
    assert "dry run" in result.stdout.lower() or "would" in result.stdout.lower()


def test_init_saved_the_admin_token_privately(running: Running) -> None:
    token_file = running.var_dir / "admin.token"
    assert token_file.read_text().strip() == running.token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    again = running.cli("init")
    assert "kept existing authority 'E2E Root'" in again.stdout
    assert "already exists" in again.stdout
    assert token_file.read_text().strip() == running.token


def test_apply_issue_list_and_verify_through_the_stack(
    running: Running, tmp_path: Path, openssl: Any
) -> None:
    applied = running.cli("apply", "-f", str(INVENTORY))
    assert (
        "hosts: 11 created" in applied.stdout
        or "hosts: 0 created, 0 updated, 11 unchanged" in applied.stdout
    )
    issued = running.cli("issue", "--all", "--wait", "--timeout", "120")
    assert f"queued {SERVERS} issuance request(s)" in issued.stdout
    listed = json.loads(running.cli("-o", "json", "certs", "list", "--status", "active").stdout)
    assert len({c["host"] for c in listed}) == SERVERS
    assert "hq-ops-client01" not in {c["host"] for c in listed}
    trust = tmp_path / "trust.pem"
    trust.write_bytes(requests.get(running.stack.url + "/api/v1/trust-bundle", timeout=10).content)
    for cert in listed:
        pem = tmp_path / f"{cert['host']}.pem"
        running.cli("export", str(cert["id"]), "--format", "pem", "--out", str(pem))
        chain = x509.load_pem_x509_certificates(pem.read_bytes())
        leaf = tmp_path / f"{cert['host']}-leaf.pem"
        leaf.write_bytes(
            pem.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
        )
        verified = openssl("verify", "-CAfile", trust, "-purpose", "sslserver", leaf)
        assert verified.returncode == 0, (cert["host"], verified.stderr)
        assert len(chain) == 2
    table = running.cli("certs", "list", "--site", "branch-stockholm").stdout
    assert "sto-rec01" in table and "sto-rec02" in table and "hq-rec01" not in table


def test_pfx_export_through_the_cli(running: Running, tmp_path: Path) -> None:
    running.cli("apply", "-f", str(INVENTORY))
    running.cli("issue", "hq-mgmt01", "--wait")
    [cert] = json.loads(
        running.cli(
            "-o", "json", "certs", "list", "--host", "hq-mgmt01", "--status", "active"
        ).stdout
    )
    out = tmp_path / "mgmt.pfx"
    running.cli(
        "export",
        str(cert["id"]),
        "--format",
        "pfx",
        "--out",
        str(out),
        env={"CERTFLEET_PFX_PASSWORD": PFX_PASSWORD},
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key, leaf, chain = pkcs12.load_key_and_certificates(out.read_bytes(), PFX_PASSWORD.encode())
    assert key is not None and leaf is not None and len(chain) == 1
    assert leaf.subject.rfc4514_string() == "CN=hq-mgmt01.hq.vms.nordbank.example"


def test_csr_issuance_over_http_and_idempotent_replay(running: Running) -> None:
    running.cli("apply", "-f", str(INVENTORY))
    csr = factories.make_csr(
        factories.rsa_key(), ["aar-rec01.aar.vms.nordbank.example", "aar-rec01"], ["10.20.2.11"]
    )
    headers = {"Idempotency-Key": f"e2e-{secrets.token_hex(4)}"}
    first = running.api(
        "POST", "/api/v1/issuance-requests", json={"host": "aar-rec01", "csr": csr}, headers=headers
    )
    assert first.status_code == 202
    replay = running.api(
        "POST", "/api/v1/issuance-requests", json={"host": "aar-rec01", "csr": csr}, headers=headers
    )
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    location = first.headers["Location"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = running.api("GET", location).json()
        if state["status"] in ("issued", "failed"):
            break
        time.sleep(0.1)
    assert state["status"] == "issued", state
    cert = running.api("GET", f"/api/v1/certificates/{state['certificate_id']}").json()
    assert cert["key_source"] == "csr"
    assert cert["dns_names"] == ["aar-rec01.aar.vms.nordbank.example", "aar-rec01"]
    active = running.api(
        "GET", "/api/v1/certificates", params={"host": "aar-rec01", "status": "active"}
    )
    assert [c["id"] for c in active.json()["items"]] == [cert["id"]]


def test_cli_errors_are_readable(running: Running, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  - name: x\n    site: nowhere\n    dns_names: [x.example]\n")
    result = running.cli("apply", "-f", str(bad), check=False)
    assert result.returncode == 1
    assert "nothing was applied" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr
    unreachable = running.cli(
        "--api-url", f"http://127.0.0.1:{free_port()}", "certs", "list", check=False
    )
    assert unreachable.returncode == 1 and "cannot reach the certfleet API" in unreachable.stderr
    wrong = running.cli("--token", "cf_wrong", "certs", "list", check=False)
    assert wrong.returncode == 1 and "not valid" in wrong.stderr


# The DER header of an unencrypted PKCS#8 RSA key (version 0, rsaEncryption), as hex.
PKCS8_RSA_HEADER = "020100300d06092a864886f70d0101010500"


class RedisMonitor:
    """Every command the Redis server receives while it runs (MONITOR), as text."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        try:
            with self.client.monitor() as monitor:
                self.monitor = monitor
                for command in monitor.listen():
                    self.seen.append(str(command.get("command", "")))
        except (redis.RedisError, OSError, ValueError, AttributeError):
            return  # closed by stop()

    def __enter__(self) -> RedisMonitor:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not hasattr(self, "monitor") and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.5)  # let the last replies arrive
        self.monitor.connection.disconnect()
        self.thread.join(timeout=10)


def database_dump(url: str) -> str:
    """The whole database as text: what a backup or a stolen dump holds."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database or "") as conn:
            return "\n".join(conn.iterdump())
    return subprocess.run(
        ["pg_dump", "--data-only", libpq_url(url)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def test_no_secret_reaches_logs_queue_messages_or_a_database_dump(
    running: Running, tmp_path: Path
) -> None:
    running.cli("apply", "-f", str(INVENTORY))
    with RedisMonitor(running.env["CERTFLEET_REDIS_URL"]) as monitor:
        running.cli("issue", "--site", "branch-aarhus", "--wait")
        [cert] = json.loads(
            running.cli(
                "-o", "json", "certs", "list", "--host", "aar-rec01", "--status", "active"
            ).stdout
        )
        pfx = tmp_path / "aar-rec01.pfx"
        running.cli(
            *("export", str(cert["id"]), "--format", "pfx", "--out", str(pfx)),
            env={"CERTFLEET_PFX_PASSWORD": PFX_PASSWORD},
        )
    messages = "\n".join(monitor.seen)
    assert "issue_batch" in messages and "LPUSH" in messages.upper()  # the capture works
    logs = b"".join(p.read_bytes() for p in running.stack.log_dir.glob("*.log")).decode()
    assert "batch done" in logs  # the task logs exist and say something
    dump = database_dump(running.env["CERTFLEET_DATABASE_URL"])
    assert "BEGIN CERTIFICATE" in dump or "aar-rec01" in dump
    secrets_ = (TEST_CA_PASSPHRASE, TEST_DATA_KEY, running.token, PFX_PASSWORD, "PRIVATE KEY")
    for where, text in (("logs", logs), ("redis", messages), ("dump", dump)):
        for secret in secrets_:
            assert secret not in text, (where, secret)
        assert PKCS8_RSA_HEADER not in text.lower(), (where, "an unencrypted key")


def test_renew_now_and_expiry_report_through_the_cli(running: Running) -> None:
    running.cli("apply", "-f", str(INVENTORY))
    running.cli("issue", "sto-rec02", "--wait")
    [cert] = json.loads(
        running.cli(
            "-o", "json", "certs", "list", "--host", "sto-rec02", "--status", "active"
        ).stdout
    )
    renewed = running.cli("certs", "renew", str(cert["id"]), "--wait")
    assert "renewal request" in renewed.stdout and "sto-rec02" in renewed.stdout
    [new] = json.loads(
        running.cli(
            "-o", "json", "certs", "list", "--host", "sto-rec02", "--status", "active"
        ).stdout
    )
    assert new["id"] != cert["id"]
    report = json.loads(
        running.cli("-o", "json", "report", "expiry", "--within-days", "400").stdout
    )
    assert new["id"] in {c["id"] for c in report["certificates"]}
    assert cert["id"] not in {c["id"] for c in report["certificates"]}  # superseded
    table = running.cli("report", "expiry", "--within-days", "400").stdout
    assert "branch-stockholm" in table and "sto-rec02" in table
