"""How the agent puts a bundle in place on its host.

Linux: files (key 0600) in an install directory, then an optional reload command.
Windows: a PFX made locally from the agent's own key (its password in a 0600 file that the
generated script deletes), the CA files, and the generated PowerShell script that imports,
grants the service account key access, binds the XProtect certificate groups, probes and
rolls back on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.bundles import KEY_MODE, PUBLIC_MODE
from shared.pki.export import to_pfx
from shared.windows import InstallPlan, render_install_script, render_trust_script

RESULT_PREFIX = "certfleet-result:"


class InstallFailed(Exception):
    """The bundle could not be installed; the message goes back in the acknowledgement."""


@dataclass(frozen=True)
class AgentBundle:
    delivery_id: int
    kind: str
    fingerprint: str
    trust_pem: bytes
    certificate_pem: bytes | None
    chain_pem: bytes | None
    host: dict[str, Any]

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> AgentBundle:
        def raw(name: str) -> bytes | None:
            value = payload.get(name)
            return value.encode() if value else None

        return cls(
            payload["delivery_id"],
            payload["kind"],
            payload["fingerprint"],
            payload["trust_pem"].encode(),
            raw("certificate_pem"),
            raw("chain_pem"),
            payload["host"],
        )


class Installer(Protocol):
    def install(self, bundle: AgentBundle, key: rsa.RSAPrivateKey) -> str: ...


def write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Write beside the target with the final mode from the start, then rename over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_command(command: str, timeout: float) -> None:
    try:
        result = subprocess.run(  # noqa: S602 - the operator's own reload command
            command, shell=True, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallFailed(f"the reload command timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-300:]
        raise InstallFailed(f"the reload command exited {result.returncode}: {tail}")


@dataclass
class LinuxInstaller:
    directory: Path
    reload_command: str | None = None
    trust_command: str | None = None
    timeout: float = 120.0

    def install(self, bundle: AgentBundle, key: rsa.RSAPrivateKey) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.directory / "ca-bundle.pem", bundle.trust_pem, PUBLIC_MODE)
        if bundle.kind == "trust":
            if self.trust_command:
                run_command(self.trust_command, self.timeout)
            return "trust bundle installed"
        assert bundle.certificate_pem is not None and bundle.chain_pem is not None
        check_key_matches(bundle.certificate_pem, key)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # The key first, so that a reader never sees a new certificate with an old key.
        write_atomic(self.directory / "key.pem", key_pem, KEY_MODE)
        write_atomic(self.directory / "chain.pem", bundle.chain_pem, PUBLIC_MODE)
        write_atomic(
            self.directory / "fullchain.pem", bundle.certificate_pem + bundle.chain_pem, PUBLIC_MODE
        )
        write_atomic(self.directory / "cert.pem", bundle.certificate_pem, PUBLIC_MODE)
        if self.reload_command:
            run_command(self.reload_command, self.timeout)
        return "installed"


@dataclass
class WindowsInstaller:
    """Prepares the PFX, CA files and script in `directory`, then runs PowerShell on them."""

    directory: Path
    powershell: Sequence[str] = ("powershell.exe", "-NoProfile", "-ExecutionPolicy", "Bypass")
    previous_thumbprint: str | None = None
    timeout: float = 600.0
    last_script: Path | None = field(default=None, init=False)

    def prepare(self, bundle: AgentBundle, key: rsa.RSAPrivateKey) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        cas = x509.load_pem_x509_certificates(bundle.trust_pem)
        ca_paths = []
        for index, ca in enumerate(cas):
            path = self.directory / f"certfleet-ca-{index}.cer"
            write_atomic(path, ca.public_bytes(serialization.Encoding.DER), PUBLIC_MODE)
            ca_paths.append(str(path))
        if bundle.kind == "trust":
            script = render_trust_script(tuple(ca_paths))
        else:
            assert bundle.certificate_pem is not None and bundle.chain_pem is not None
            leaf = check_key_matches(bundle.certificate_pem, key)
            password = secrets.token_urlsafe(24)
            pfx_path = self.directory / "certfleet.pfx"
            password_path = self.directory / "certfleet.pfx.password"
            chain = x509.load_pem_x509_certificates(bundle.chain_pem)
            write_atomic(
                pfx_path,
                to_pfx(leaf, key, chain, password, f"certfleet {bundle.host['name']}"),
                KEY_MODE,
            )
            write_atomic(password_path, password.encode(), KEY_MODE)
            plan = InstallPlan(
                pfx_path=str(pfx_path),
                pfx_password_path=str(password_path),
                thumbprint=leaf.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Windows' thumbprint
                old_thumbprint=self.previous_thumbprint,
                ca_certificate_paths=tuple(ca_paths),
                roles=tuple(bundle.host.get("roles", ())),
                probe_endpoints=tuple(split(ep) for ep in bundle.host.get("tls_endpoints", ())),
            )
            script = render_install_script(plan)
        path = self.directory / "certfleet-install.ps1"
        write_atomic(path, script.encode("utf-8-sig"), KEY_MODE)
        self.last_script = path
        return path

    def install(self, bundle: AgentBundle, key: rsa.RSAPrivateKey) -> str:
        script = self.prepare(bundle, key)
        try:
            result = subprocess.run(
                [*self.powershell, "-File", str(script)],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallFailed(f"PowerShell could not run the install script: {exc}") from exc
        outcome = parse_result(result.stdout)
        if result.returncode != 0 or outcome.get("status") != "installed":
            raise InstallFailed(
                f"the install script ended {outcome.get('status', 'without a result')} "
                f"(exit {result.returncode})"
            )
        self.previous_thumbprint = outcome.get("thumbprint") or self.previous_thumbprint
        return "installed"


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                parsed = json.loads(line[len(RESULT_PREFIX) :])
            except ValueError:
                return {}
            return parsed if isinstance(parsed, dict) else {}
    return {}


def split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def check_key_matches(certificate_pem: bytes, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """Refuse a certificate that is not for this agent's key (it could never serve TLS)."""
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if hashlib.sha256(ours).digest() != hashlib.sha256(theirs).digest():
        raise InstallFailed("the delivered certificate is not for this agent's key")
    return leaf
