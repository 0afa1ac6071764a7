"""The first hour, as the README tells it: in a fresh shell at a fresh copy of the repository,
its setup block (activate, `certfleet init`, `certfleet stack run`) and then, in a second
fresh shell, its walkthrough block, with nothing set but what the test must own (the Redis
it started and a free port for the API: the machine's own Redis and port 8080 are not the
test's). No secret, database, token or URL is given: init makes and stores them."""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
READY_S = 240.0


def block(marker: str) -> str:
    return README.split(f"<!-- {marker} -->\n```sh\n", 1)[1].split("```", 1)[0]


def fresh_shell(home: Path, redis_url: str, bind: str) -> dict[str, str]:
    """What a new login shell has, plus the two addresses the test owns."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CERTFLEET_REDIS_URL": redis_url,
        "CERTFLEET_API_BIND": bind,
    }


class Shell:
    """A bash running a script in the background, its output read as it comes."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output = b""

    def wait_for(self, text: str, timeout: float) -> None:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {timeout:.0f} s:\n{self.output.decode()[-4000:]}"
            if selector.select(min(left, 1.0)):
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"exited ({self.process.wait()}):\n{self.output.decode()[-4000:]}"
                self.output += chunk

    def stop(self) -> None:
        """Ctrl-C, as the README says."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh copy of what the README's commands touch: the example files and the virtualenv
    `make venv` made (linked); no var/ yet."""
    work = tmp_path / "certfleet"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (work / ".venv").symlink_to(Path(sys.prefix))
    assert (work / ".venv" / "bin" / "activate").exists(), "tests run from make venv's .venv"
    return work


@pytest.fixture
def stack_shell(
    checkout: Path, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Shell, dict[str, str]]]:
    home = tmp_path / "home"
    home.mkdir()
    environ = fresh_shell(home, redis_url.rsplit("/", 1)[0] + "/7", f"127.0.0.1:{free_port()}")
    shell = Shell(block("setup"), checkout, environ)
    try:
        shell.wait_for("api at ", READY_S)
        yield shell, environ
    finally:
        shell.stop()


def test_the_first_hour_as_the_readme_tells_it(
    checkout: Path, stack_shell: tuple[Shell, dict[str, str]]
) -> None:
    shell, environ = stack_shell
    setup = shell.output.decode()
    assert "var/secrets.env" in setup  # init says where it put the secrets
    secrets_file = checkout / "var" / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((checkout / "var").stat().st_mode) == 0o700

    walkthrough = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n. .venv/bin/activate\n" + block("walkthrough")],
        cwd=checkout,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = walkthrough.stdout + walkthrough.stderr
    assert walkthrough.returncode == 0, out[-6000:]
    assert "Traceback" not in out and "0 failed" in out  # the doctor's last line

    pfx = (checkout / "out" / "hq-mgmt01.pfx").read_bytes()
    key, certificate, _ = pkcs12.load_key_and_certificates(pfx, b"a long export password")
    assert key is not None and certificate is not None
    bundle = (checkout / "out" / "certfleet-ca.pem").read_bytes()
    assert x509.load_pem_x509_certificates(bundle)
    # The one-liner pins the bundle the API serves.
    api = "http://" + environ["CERTFLEET_API_BIND"]
    served = requests.get(api + "/api/v1/trust-bundle", timeout=10).content
    assert served == bundle and hashlib.sha256(bundle).hexdigest() in walkthrough.stdout
    # What the walkthrough wrote is where git ignores it; nothing else lands in the tree.
    assert {p.name for p in checkout.iterdir()} == {"examples", ".venv", "var", "out"}
    for written in ("out/hq-mgmt01.pfx", "out/certfleet-ca.pem", "var/secrets.env"):
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", written])
        assert ignored.returncode == 0, f"{written} is not ignored by git"
