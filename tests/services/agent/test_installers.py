"""The agent's installers on real files and real certificates. The Windows installer's
PowerShell cannot run here: its preparation (PFX, password file, CA files, script) is
checked, and so is how it reads the script's result line."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from services.agent.installers import (
    AgentBundle,
    InstallFailed,
    LinuxInstaller,
    WindowsInstaller,
    parse_result,
)
from shared.pki.ca import IssuedCa
from shared.pki.export import fingerprint_sha256, to_pem
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests import factories


def bundle_for(
    key, intermediate: IssuedCa, root: IssuedCa, kind: str = "certificate"
) -> AgentBundle:  # type: ignore[no-untyped-def]
    leaf = sign_server_certificate(
        key.public_key(),
        SubjectNames(("rec01.site1.example.com", "rec01")),
        intermediate,
        now=factories.FIXED_NOW + dt.timedelta(days=1),
        validity_days=397,
        profile=XPROTECT_SERVER,
    )
    return AgentBundle(
        delivery_id=7,
        kind=kind,
        fingerprint=fingerprint_sha256(leaf),
        trust_pem=to_pem(root.certificate),
        certificate_pem=to_pem(leaf) if kind == "certificate" else None,
        chain_pem=to_pem(intermediate.certificate) + to_pem(root.certificate)
        if kind == "certificate"
        else None,
        host={
            "name": "rec01",
            "roles": ["recording"],
            "platform": "windows",
            "tls_endpoints": ["rec01.site1.example.com:7563"],
        },
    )


def test_linux_install_writes_files_with_modes_then_reloads(
    tmp_path: Path, intermediate_ca: IssuedCa, root_ca: IssuedCa
) -> None:
    key = factories.rsa_key()
    marker = tmp_path / "reloaded"
    installer = LinuxInstaller(
        tmp_path / "tls", reload_command=f"test -s {tmp_path}/tls/cert.pem && touch {marker}"
    )
    assert installer.install(bundle_for(key, intermediate_ca, root_ca), key) == "installed"
    assert marker.exists()
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "tls").iterdir()}
    assert files == {
        "key.pem": 0o600,
        "cert.pem": 0o644,
        "chain.pem": 0o644,
        "fullchain.pem": 0o644,
        "ca-bundle.pem": 0o644,
    }
    written = serialization.load_pem_private_key((tmp_path / "tls" / "key.pem").read_bytes(), None)
    assert written.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_linux_install_refuses_a_certificate_for_another_key_and_reports_reload_failure(
    tmp_path: Path, intermediate_ca: IssuedCa, root_ca: IssuedCa
) -> None:
    key, other = factories.rsa_key(), factories.rsa_key()
    with pytest.raises(InstallFailed, match="not for this agent's key"):
        LinuxInstaller(tmp_path / "a").install(bundle_for(other, intermediate_ca, root_ca), key)
    assert not (tmp_path / "a" / "key.pem").exists()
    failing = LinuxInstaller(tmp_path / "b", reload_command="echo nope >&2; exit 3")
    with pytest.raises(InstallFailed, match="exited 3: nope"):
        failing.install(bundle_for(key, intermediate_ca, root_ca), key)


def test_linux_trust_only_bundle(
    tmp_path: Path, intermediate_ca: IssuedCa, root_ca: IssuedCa
) -> None:
    marker = tmp_path / "trusted"
    installer = LinuxInstaller(tmp_path / "t", trust_command=f"touch {marker}")
    installer.install(
        bundle_for(factories.rsa_key(), intermediate_ca, root_ca, kind="trust"), factories.rsa_key()
    )
    assert (tmp_path / "t" / "ca-bundle.pem").read_bytes() == to_pem(root_ca.certificate)
    assert marker.exists() and not (tmp_path / "t" / "key.pem").exists()


def test_windows_preparation(tmp_path: Path, intermediate_ca: IssuedCa, root_ca: IssuedCa) -> None:
    key = factories.rsa_key()
    bundle = bundle_for(key, intermediate_ca, root_ca)
    installer = WindowsInstaller(tmp_path / "win", previous_thumbprint="AB" * 20)
    script_path = installer.prepare(bundle, key)
    directory = tmp_path / "win"
    password = (directory / "certfleet.pfx.password").read_text()
    assert stat.S_IMODE((directory / "certfleet.pfx.password").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "certfleet.pfx").stat().st_mode) == 0o600
    loaded_key, leaf, chain = pkcs12.load_key_and_certificates(
        (directory / "certfleet.pfx").read_bytes(), password.encode()
    )
    assert loaded_key is not None and leaf is not None and len(chain) == 2
    script = script_path.read_text(encoding="utf-8-sig")
    thumbprint = leaf.fingerprint(hashes.SHA1()).hex().upper()
    assert thumbprint in script and "AB" * 20 in script
    assert password not in script  # read from the file at run time, never embedded
    assert "StreamingMedia" in script and "ServerConfigurator" in script
    assert (directory / "certfleet-ca-0.cer").exists()


def test_result_line_parsing() -> None:
    out = 'certfleet: bound\ncertfleet-result: {"status":"installed","thumbprint":"AB"}\n'
    assert parse_result(out) == {"status": "installed", "thumbprint": "AB"}
    assert parse_result("certfleet-result: not json") == {}
    assert parse_result("") == {}
