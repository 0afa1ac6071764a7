"""certfleet-agent: the small program on each server or client.

    certfleet-agent enroll --api https://certfleet:8080 --enrollment-token cfe_… \
        --state-dir /var/lib/certfleet-agent
    certfleet-agent run --state-dir /var/lib/certfleet-agent --install-dir /etc/xprotect-tls \
        --reload-command 'systemctl reload my-service'

`enroll` makes the host's RSA key and a CSR (the key never leaves the host) and trades the
one-time enrolment token for a host-scoped agent token. `run` polls for bundles, installs
them, and acknowledges with the fingerprint it installed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.agent.installers import (
    AgentBundle,
    Installer,
    InstallFailed,
    LinuxInstaller,
    WindowsInstaller,
    write_atomic,
)
from shared.bundles import KEY_MODE
from shared.logging import configure_logging

log = logging.getLogger("certfleet.agent")
KEY_BITS = 2048


class AgentError(Exception):
    """Printed as one line; the agent exits 1."""


@dataclass(frozen=True)
class State:
    directory: Path

    @property
    def key_path(self) -> Path:
        return self.directory / "key.pem"

    @property
    def token_path(self) -> Path:
        return self.directory / "agent.token"

    @property
    def config_path(self) -> Path:
        return self.directory / "agent.json"

    def load(self) -> tuple[dict[str, Any], str, rsa.RSAPrivateKey]:
        try:
            config = json.loads(self.config_path.read_text())
            token = self.token_path.read_text().strip()
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise AgentError(
                f"not enrolled (no usable state in {self.directory}): run enroll"
            ) from exc
        assert isinstance(key, rsa.RSAPrivateKey)
        return config, token, key


@dataclass
class Api:
    url: str
    token: str | None = None
    verify: str | bool = True
    timeout: float = 30.0

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = requests.request(
                method,
                self.url.rstrip("/") + path,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise AgentError(f"cannot reach {self.url}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text[:200])
            except ValueError:
                message = response.text[:200]
            raise AgentError(f"{method} {path}: {response.status_code} {message}")
        return response


def make_csr(key: rsa.RSAPrivateKey) -> str:
    """No names: the server puts the host's registered names in the certificate."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def enroll(state: State, api: Api, enrollment_token: str) -> dict[str, Any]:
    state.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    result = api.call(
        "POST",
        "/api/v1/agent/enroll",
        json={"enrollment_token": enrollment_token, "csr": make_csr(key)},
    ).json()
    write_atomic(state.key_path, key_pem, KEY_MODE)
    write_atomic(state.token_path, result["agent_token"].encode(), KEY_MODE)
    config = {"api_url": api.url, "host": result["host"], "verify": api.verify}
    write_atomic(state.config_path, json.dumps(config).encode(), KEY_MODE)
    return {"host": result["host"], "request_id": result["request_id"]}


def cycle(api: Api, installer_for: Any, key: rsa.RSAPrivateKey) -> int:
    """Install every waiting bundle; return how many were handled."""
    handled = 0
    while True:
        response = api.call("GET", "/api/v1/agent/bundle")
        if response.status_code == 204:
            return handled
        bundle = AgentBundle.from_api(response.json())
        installer: Installer = installer_for(bundle)
        try:
            detail = installer.install(bundle, key)
        except InstallFailed as exc:
            log.warning("install failed", extra={"fields": {"delivery": bundle.delivery_id}})
            api.call(
                "POST",
                "/api/v1/agent/ack",
                json={"delivery_id": bundle.delivery_id, "status": "failed", "error": str(exc)},
            )
        else:
            log.info(detail, extra={"fields": {"delivery": bundle.delivery_id}})
            api.call(
                "POST",
                "/api/v1/agent/ack",
                json={
                    "delivery_id": bundle.delivery_id,
                    "status": "installed",
                    "fingerprint": bundle.fingerprint,
                },
            )
        handled += 1


@click.group()
def agent() -> None:
    """certfleet host agent."""
    configure_logging("agent", os.environ.get("CERTFLEET_AGENT_LOG_LEVEL", "INFO"))


@agent.command("enroll")
@click.option("--api", "api_url", required=True, help="certfleet API URL")
@click.option("--enrollment-token", envvar="CERTFLEET_ENROLLMENT_TOKEN", required=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False), help="trust for the API's TLS"
)
def enroll_command(
    api_url: str, enrollment_token: str, state_dir: Path, ca_file: str | None
) -> None:
    """Make this host's key and CSR and enrol with a one-time token."""
    try:
        result = enroll(State(state_dir), Api(api_url, verify=ca_file or True), enrollment_token)
    except AgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"enrolled as {result['host']}; certificate request {result['request_id']} queued")


@agent.command("run")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--install-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--reload-command", help="Linux: run after new files are in place")
@click.option("--trust-command", help="Linux: run after a new trust bundle is in place")
@click.option("--platform", type=click.Choice(["auto", "linux", "windows"]), default="auto")
@click.option("--interval", type=click.FloatRange(0.05, 86400), default=60.0, show_default=True)
@click.option("--once", is_flag=True, help="handle what is waiting, then exit")
def run_command(
    state_dir: Path,
    install_dir: Path,
    reload_command: str | None,
    trust_command: str | None,
    platform: str,
    interval: float,
    once: bool,
) -> None:
    """Poll for bundles, install them and acknowledge."""
    try:
        config, token, key = State(state_dir).load()
    except AgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    api = Api(config["api_url"], token, verify=config.get("verify", True))
    linux = LinuxInstaller(install_dir, reload_command, trust_command)
    windows = WindowsInstaller(install_dir)

    def installer_for(bundle: AgentBundle) -> Installer:
        chosen = bundle.host.get("platform", "linux") if platform == "auto" else platform
        return windows if chosen == "windows" else linux

    while True:
        try:
            cycle(api, installer_for, key)
        except AgentError as exc:
            if once or " 401 " in str(exc):
                click.echo(f"error: {exc}", err=True)
                sys.exit(1)
            log.warning("cycle failed", extra={"fields": {"error": str(exc)}})
        if once:
            return
        time.sleep(interval)


if __name__ == "__main__":
    agent()
