"""End to end distribution: API, issuer and distributor processes over a real Redis deliver
to a real OpenSSH server, a real directory and a real agent process; real TLS services are
reloaded with what was delivered, and the distributor's probe proves they present it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from services.cli import admin
from services.cli.stack import Stack
from shared.clock import SystemClock
from shared.db.migrate import upgrade
from shared.pki.ca import create_root_ca
from shared.pki.export import pem_chain
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from shared.settings import Settings
from tests import factories
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.factories import SSH_KEY_VARIABLE
from tests.ports import free_port
from tests.sshd import SshServer
from tests.tls import handshake

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
DEADLINE = 90.0


@dataclass
class Service:
    """A TLS service process serving fullchain.pem + key.pem from `directory`."""

    directory: Path
    port: int
    pidfile: Path
    process: subprocess.Popen[bytes]

    def reload(self) -> None:
        os.kill(self.process.pid, signal.SIGHUP)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Fleet:
    stack: Stack
    env: dict[str, str]
    token: str
    work: Path
    services: dict[str, Service]

    def cli(self, *args: str, program: str = "services.cli.main", check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "-m", program, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(
            self.stack.url + path,
            params=params,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def deliveries(self, host: str) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/deliveries", host=host)["items"])

    def wait_for(
        self, host: str, what: Callable[[dict[str, Any]], bool], label: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.deliveries(host)
            for delivery in seen:
                if what(delivery):
                    return delivery
            time.sleep(0.2)
        logs = "".join(
            p.read_text(errors="replace")[-3000:] for p in self.stack.log_dir.glob("*.log")
        )
        pytest.fail(f"{host}: never {label}; deliveries: {json.dumps(seen, indent=1)}\n{logs}")


def placeholder_certificate(directory: Path) -> None:
    """What the service presents before certfleet delivers: a certificate of another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    other = create_root_ca("previous CA", now=SystemClock().now(), key_bits=2048, validity_days=30)
    key = factories.rsa_key()
    leaf = sign_server_certificate(
        key.public_key(),
        SubjectNames(("old.lab.example",)),
        other,
        now=SystemClock().now(),
        validity_days=30,
        profile=XPROTECT_SERVER,
    )
    (directory / "fullchain.pem").write_bytes(pem_chain(leaf, [other.certificate]))
    factories.write_key(directory / "key.pem", key)


def start_service(directory: Path, work: Path, name: str) -> Service:
    placeholder_certificate(directory)
    port, pidfile = free_port(), work / f"{name}.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.tls_service", str(directory), str(port), str(pidfile)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pidfile.exists(), f"{name} did not start"
    return Service(directory, port, pidfile, process)


def inventory(work: Path, sshd: SshServer, services: dict[str, Service]) -> dict[str, Any]:
    def host(
        name: str, service: str | None, delivery: dict[str, Any], roles: list[str]
    ) -> dict[str, Any]:
        return {
            "name": name,
            "site": "lab",
            "dns_names": [f"{name}.lab.example", name],
            "ip_addresses": ["127.0.0.1"],
            "roles": roles,
            "platform": "linux",
            "tls_endpoints": [services[service].endpoint] if service else [],
            "delivery": delivery,
        }

    return {
        # Every lab host answers on loopback: the admin lets them share that address.
        "shared_names": ["127.0.0.1"],
        "sites": [{"name": "lab", "dns_suffixes": ["lab.example"], "ip_ranges": ["127.0.0.0/8"]}],
        "hosts": [
            host(
                "lab-ssh",
                "ssh",
                {
                    "method": "ssh",
                    "settings": {
                        "host": "127.0.0.1",
                        "port": sshd.port,
                        "username": sshd.username,
                        "path": str(services["ssh"].directory),
                        "host_key": sshd.host_key,
                        "key_file_env": SSH_KEY_VARIABLE,
                        "reload_command": f"kill -HUP $(cat {services['ssh'].pidfile})",
                    },
                },
                ["recording"],
            ),
            host(
                "lab-dir",
                "dir",
                {
                    "method": "directory",
                    "settings": {"path": str(work / "dir-target"), "layout": "host"},
                },
                ["mobile"],
            ),
            host("lab-agent", "agent", {"method": "none"}, ["recording"]),
            host(
                "lab-client",
                None,
                {
                    "method": "directory",
                    "settings": {"path": str(work / "client-trust"), "layout": "host"},
                },
                ["client"],
            ),
        ],
    }


@pytest.fixture(scope="module")
def fleet(
    redis_url: str, sshd: SshServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    bind = f"127.0.0.1:{free_port()}"
    env = {
        "CERTFLEET_DATABASE_URL": f"sqlite:///{work / 'certfleet.db'}",
        "CERTFLEET_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/6",
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_DATA_KEY": TEST_DATA_KEY,
        "CERTFLEET_VAR_DIR": str(work / "var"),
        "CERTFLEET_API_BIND": bind,
        "CERTFLEET_API_URL": f"http://{bind}",
        "CERTFLEET_PROBE_DELAY": "0.5",
        "CERTFLEET_DELIVERY_ROOTS": str(work),
        "CERTFLEET_OUTBOUND_ALLOW": "127.0.0.0/8",
        SSH_KEY_VARIABLE: str(sshd.client_key),
    }
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    token = admin.init(settings, SystemClock(), ca_name="Lab Root", key_bits=2048).admin_token
    assert token is not None
    services = {
        "ssh": start_service(work / "ssh-remote", work, "ssh"),
        "dir": start_service(work / "dir-target" / "lab-dir", work, "dir"),
        "agent": start_service(work / "agent-install", work, "agent"),
    }
    (work / "inventory.json").write_text(json.dumps(inventory(work, sshd, services)))
    stack = Stack(env, bind, work / "logs", worker_concurrency=2, ready_timeout=180)
    try:
        with stack:
            fleet = Fleet(stack, env, token, work, services)
            fleet.cli("apply", "-f", str(work / "inventory.json"))
            yield fleet
    finally:
        for service in services.values():
            service.process.kill()
            service.process.wait()


def presented(fleet: Fleet, service: str, name: str) -> str:
    trust = fleet.work / "trust.pem"
    trust.write_bytes(requests.get(fleet.stack.url + "/api/v1/trust-bundle", timeout=10).content)
    der = handshake(fleet.services[service].port, trust, name)
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


def test_ssh_delivery_is_installed_reloaded_and_verified(fleet: Fleet) -> None:
    fleet.cli("issue", "lab-ssh", "--wait")
    verified = fleet.wait_for("lab-ssh", lambda d: d["status"] == "verified", "verified")
    assert verified["method"] == "ssh" and verified["probe_state"] == "match"
    cert = fleet.api(f"/api/v1/certificates/{verified['certificate_id']}")
    assert presented(fleet, "ssh", "lab-ssh.lab.example") == cert["fingerprint"]
    remote = fleet.services["ssh"].directory
    assert stat.S_IMODE((remote / "key.pem").stat().st_mode) == 0o600
    assert not list(remote.glob("*.tmp-*"))
    table = fleet.cli("deliveries", "--host", "lab-ssh")
    assert "verified" in table and "ssh" in table


def test_directory_delivery_is_renewed_but_not_bound_until_the_service_reloads(
    fleet: Fleet,
) -> None:
    fleet.cli("issue", "lab-dir", "--wait")
    unbound = fleet.wait_for(
        "lab-dir", lambda d: d["state"] == "renewed but not bound", "seen unbound"
    )
    assert unbound["status"] == "delivered" and unbound["probe_state"] == "mismatch"
    assert "renewed but not bound" in (unbound["last_error"] or "")
    fleet.services["dir"].reload()  # what the host's operator (or its service) does
    verified = fleet.wait_for("lab-dir", lambda d: d["status"] == "verified", "verified")
    cert = fleet.api(f"/api/v1/certificates/{verified['certificate_id']}")
    assert presented(fleet, "dir", "lab-dir.lab.example") == cert["fingerprint"]


def test_agent_enrolls_installs_and_is_verified(fleet: Fleet) -> None:
    output = fleet.cli("agent", "enroll-token", "lab-agent")
    secret = output.strip().splitlines()[-1]
    state = fleet.work / "agent-state"
    fleet.cli(
        "enroll",
        "--api",
        fleet.stack.url,
        "--enrollment-token",
        secret,
        "--state-dir",
        str(state),
        program="services.agent.main",
    )
    assert stat.S_IMODE((state / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "agent.token").stat().st_mode) == 0o600
    run = (
        "run",
        "--state-dir",
        str(state),
        "--install-dir",
        str(fleet.services["agent"].directory),
        "--reload-command",
        f"kill -HUP $(cat {fleet.services['agent'].pidfile})",
        "--once",
    )
    deadline = time.monotonic() + DEADLINE
    while not any(d["status"] in ("installed", "verified") for d in fleet.deliveries("lab-agent")):
        assert time.monotonic() < deadline, fleet.deliveries("lab-agent")
        fleet.cli(*run, program="services.agent.main")
        time.sleep(0.2)
    verified = fleet.wait_for("lab-agent", lambda d: d["status"] == "verified", "verified")
    cert = fleet.api(f"/api/v1/certificates/{verified['certificate_id']}")
    assert cert["key_source"] == "csr"  # the key never left the host
    assert presented(fleet, "agent", "lab-agent.lab.example") == cert["fingerprint"]
    again = fleet.cli(
        "--token", (state / "agent.token").read_text().strip(), "certs", "list", check=False
    )
    assert "Traceback" not in again


def test_client_receives_the_trust_bundle(fleet: Fleet) -> None:
    delivered = fleet.wait_for("lab-client", lambda d: d["status"] == "delivered", "delivered")
    assert delivered["kind"] == "trust" and delivered["method"] == "directory"
    bundle = (fleet.work / "client-trust" / "lab-client" / "ca-bundle.pem").read_bytes()
    assert bundle == requests.get(fleet.stack.url + "/api/v1/trust-bundle", timeout=10).content


def test_no_secret_reaches_logs_or_queues(fleet: Fleet) -> None:
    logs = b"".join(p.read_bytes() for p in fleet.stack.log_dir.glob("*.log"))
    assert b"delivery" in logs or b"deliver" in logs
    for secret in (
        TEST_CA_PASSPHRASE.encode(),
        TEST_DATA_KEY.encode(),
        b"PRIVATE KEY",
        fleet.token.encode(),
    ):
        assert secret not in logs, secret
