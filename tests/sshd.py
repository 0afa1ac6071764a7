"""A real OpenSSH server on loopback for the tests that deliver over SSH."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class SshServer:
    port: int
    username: str
    host_key: str  # the server's "ssh-ed25519 AAAA..." line
    client_key: Path  # accepted by the server
    stranger_key: Path  # a valid key the server does not know
    stranger_host_key: str  # another server's host key line
    log: Path


def ssh_keygen(path: Path, key_type: str = "ed25519") -> str:
    """A new key pair at `path`; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "certfleet-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


def _sshd_version() -> tuple[int, int]:
    result = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _sshd_config(workdir: Path, port: int, username: str) -> Path:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {workdir / 'host_ed25519'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {username}",
        "UseDNS no",
        "MaxStartups 100",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if _sshd_version() >= (9, 8):
        # Otherwise the wrong-key tests would get 127.0.0.1 penalised for the rest of the run.
        lines.append("PerSourcePenalties no")
    config = workdir / f"sshd_config.{port}"
    config.write_text("\n".join(lines) + "\n")
    return config


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _start_sshd(workdir: Path, username: str) -> tuple[subprocess.Popen[bytes], int]:
    log = workdir / "sshd.log"
    for _attempt in range(5):
        port = free_port()
        config = _sshd_config(workdir, port, username)
        with log.open("ab") as stderr:
            process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ssh(port):
                return process, port
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait()
    pytest.fail(
        f"sshd did not start; its log ends with:\n{log.read_text(errors='replace')[-2000:]}"
    )


@contextmanager
def running_sshd(workdir: Path) -> Iterator[SshServer]:
    """A real OpenSSH server on 127.0.0.1 that accepts one client key for the current user."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.fail(f"{SSHD} or ssh-keygen not found: apt-get install openssh-server")
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    username = getpass.getuser()
    host_key = ssh_keygen(workdir / "host_ed25519")
    client_public = ssh_keygen(workdir / "client_ed25519")
    (workdir / "authorized_keys").write_text(client_public + "\n")
    ssh_keygen(workdir / "stranger_ed25519")
    stranger_host_key = ssh_keygen(workdir / "other_host_ed25519")
    process, port = _start_sshd(workdir, username)
    try:
        yield SshServer(
            port=port,
            username=username,
            host_key=host_key,
            client_key=workdir / "client_ed25519",
            stranger_key=workdir / "stranger_ed25519",
            stranger_host_key=stranger_host_key,
            log=workdir / "sshd.log",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
