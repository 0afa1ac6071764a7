"""`certfleet trust install-command`: the one-liner names the address clients reach, pins the
bundle's SHA-256 as the API serves it, and (the Linux one, run for real with bash, curl and
sha256sum) installs the bundle only when what it fetched is that bundle."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import requests
from cryptography import x509
from flask import Flask, Response

from shared.authorities import generate_material
from shared.db.models import Authority
from shared.windows import LINUX_TRUST_FILE
from tests import factories
from tests.services.api.conftest import serving
from tests.services.api.test_certificates import issue_all
from tests.services.cli.conftest import ServedApi


def bundle_of(served: ServedApi) -> bytes:
    return requests.get(served.url + "/api/v1/trust-bundle", timeout=10).content


def test_the_command_names_the_public_address_and_pins_the_bundle(
    served: ServedApi, tmp_path: Path
) -> None:
    refused = served.cli("trust", "install-command")
    assert refused.exit_code == 1
    assert "only this machine reaches" in refused.output and "--url" in refused.output
    assert "Traceback" not in refused.output

    public = "https://certfleet.example.com:8443"
    bundle = bundle_of(served)
    digest = hashlib.sha256(bundle).hexdigest()
    for platform in ("windows", "linux"):
        made = served.cli("trust", "install-command", "--platform", platform, "--url", public)
        assert made.exit_code == 0, made.output
        line = made.stdout.strip()
        assert "\n" not in line
        assert f"{public}/api/v1/trust-bundle" in line and "127.0.0.1" not in line
        assert digest in line
    # The notes (stderr) give each CA's fingerprint as openssl prints it.
    pem = tmp_path / "bundle.pem"
    pem.write_bytes(bundle)
    shown = factories.openssl("x509", "-in", pem, "-noout", "-fingerprint", "-sha256")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().split("=", 1)[1] in made.stderr
    assert digest in made.stderr

    for bad in ("ftp://x", "https://x?y=1", "https://x/a'b c", "no-scheme"):
        answer = served.cli("trust", "install-command", "--url", bad)
        assert answer.exit_code == 1 and "Traceback" not in answer.output, bad


def runnable(line: str, target: Path) -> str:
    """The Linux one-liner with its two privileged steps pointed at a scratch file: the
    fetch, the fingerprint check and the install are the real commands."""
    install = f'sudo install -m 0644 "$f" {LINUX_TRUST_FILE}'
    assert line.count(install) == 1 and line.count("sudo update-ca-certificates") == 1
    return line.replace(install, f'install -m 0644 "$f" {target}').replace(
        "sudo update-ca-certificates", "true"
    )


def run_line(line: str, scratch: Path) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], "TMPDIR": str(scratch)}
    return subprocess.run(
        ["bash", "-c", line], env=environ, capture_output=True, text=True, timeout=60
    )


def test_the_linux_one_liner_installs_only_the_pinned_bundle(
    served: ServedApi, tmp_path: Path
) -> None:
    served.harness.apply_inventory()
    [issued] = issue_all(served.harness, ["hq-rec01"])
    leaf = tmp_path / "leaf.pem"
    chain = served.harness.get(f"/api/v1/certificates/{issued['certificate_id']}/pem").data
    factories.write_pem(leaf, x509.load_pem_x509_certificates(chain)[0])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "ca-certificates" / "certfleet.crt"
    target.parent.mkdir()

    made = served.cli("trust", "install-command", "--platform", "linux", "--url", served.url)
    assert made.exit_code == 0, made.output
    line = runnable(made.stdout.strip(), target)
    done = run_line(line, scratch)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == bundle_of(served)
    assert target.stat().st_mode & 0o777 == 0o644
    verified = factories.openssl("verify", "-CAfile", target, "-purpose", "sslserver", leaf)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert list(scratch.iterdir()) == []  # the temporary file is gone

    # Someone between the client and the API answers with their own CA: nothing installed.
    forged = Flask("forged")
    their_ca = factories.openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "/dev/null",
        "-subj", "/CN=certfleet root CA", "-days", "30",
    )  # fmt: skip
    assert their_ca.returncode == 0 and x509.load_pem_x509_certificate(their_ca.stdout.encode())
    forged.add_url_rule(
        "/api/v1/trust-bundle", "bundle", lambda: Response(their_ca.stdout, mimetype="text/plain")
    )
    with serving(forged) as attacker:
        pinned = served.cli("trust", "install-command", "--platform", "linux", "--url", attacker)
        assert pinned.exit_code == 0, pinned.output
        refused = run_line(runnable(pinned.stdout.strip(), target), scratch)
    assert refused.returncode != 0
    assert "not the one this command was made for" in refused.stderr
    assert target.read_bytes() == bundle_of(served)  # the good bundle is left as it was
    assert list(scratch.iterdir()) == []

    # A CA added since the command was printed changes the bundle: the old command refuses.
    made_ca = served.harness.post(
        "/api/v1/authorities", json={"name": "Second Root", "key_bits": 2048}
    )
    assert made_ca.status_code in (201, 202), made_ca.get_json()
    with served.harness.db.session() as session:
        second = session.get(Authority, made_ca.get_json()["id"])
        assert second is not None
        generate_material(
            session,
            second,
            passphrase=served.harness.settings.ca_key_passphrase or "",
            now=served.harness.clock.now(),
        )
    assert bundle_of(served) != target.read_bytes()
    stale = run_line(line, scratch)
    assert stale.returncode != 0 and "not the one" in stale.stderr
