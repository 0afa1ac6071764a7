"""Leaves verify with the real OpenSSL CLI, from a root and from an intermediate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from shared.pki.ca import IssuedCa, create_root_ca
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from tests.factories import FIXED_NOW, openssl_verify, rsa_key

DNS = "rec01.site1.example.com"
IP = "10.1.0.10"
AT = FIXED_NOW


def _leaf(issuer: IssuedCa) -> x509.Certificate:
    return sign_server_certificate(
        rsa_key().public_key(),
        SubjectNames((DNS, "rec01"), (ipaddress.ip_address(IP),)),
        issuer,
        now=FIXED_NOW,
        validity_days=397,
        profile=XPROTECT_SERVER,
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize(
    "extra",
    [(), ("-purpose", "sslserver"), ("-x509_strict",)],
    ids=["plain", "sslserver", "strict"],
)
def test_leaf_from_root_verifies(tmp_path: Path, root_ca: IssuedCa, extra: tuple[str, ...]) -> None:
    result = openssl_verify(tmp_path, _leaf(root_ca), root_ca.certificate, (), *extra, at=AT)
    _assert_ok(result)


@pytest.mark.parametrize(
    "extra",
    [(), ("-purpose", "sslserver"), ("-x509_strict",)],
    ids=["plain", "sslserver", "strict"],
)
def test_leaf_from_intermediate_verifies(
    tmp_path: Path, root_ca: IssuedCa, intermediate_ca: IssuedCa, extra: tuple[str, ...]
) -> None:
    result = openssl_verify(
        tmp_path,
        _leaf(intermediate_ca),
        root_ca.certificate,
        [intermediate_ca.certificate],
        *extra,
        at=AT,
    )
    _assert_ok(result)


def test_hostname_and_ip_checks(tmp_path: Path, root_ca: IssuedCa) -> None:
    leaf = _leaf(root_ca)
    _assert_ok(
        openssl_verify(tmp_path, leaf, root_ca.certificate, (), "-verify_hostname", DNS, at=AT)
    )
    _assert_ok(openssl_verify(tmp_path, leaf, root_ca.certificate, (), "-verify_ip", IP, at=AT))
    wrong = openssl_verify(
        tmp_path,
        leaf,
        root_ca.certificate,
        (),
        "-verify_hostname",
        "rec02.site1.example.com",
        at=AT,
    )
    assert wrong.returncode != 0
    assert "hostname mismatch" in wrong.stdout + wrong.stderr


def test_leaf_from_intermediate_fails_without_the_intermediate(
    tmp_path: Path, root_ca: IssuedCa, intermediate_ca: IssuedCa
) -> None:
    result = openssl_verify(tmp_path, _leaf(intermediate_ca), root_ca.certificate, at=AT)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_leaf_fails_against_another_root(tmp_path: Path, root_ca: IssuedCa) -> None:
    stranger = create_root_ca("stranger", now=FIXED_NOW, key_bits=2048, validity_days=30)
    result = openssl_verify(tmp_path, _leaf(root_ca), stranger.certificate, at=AT)
    assert result.returncode != 0


def test_leaf_is_rejected_after_it_expires(tmp_path: Path, root_ca: IssuedCa) -> None:
    leaf = _leaf(root_ca)
    late = leaf.not_valid_after_utc + dt.timedelta(seconds=1)
    result = openssl_verify(tmp_path, leaf, root_ca.certificate, at=late)
    assert result.returncode != 0
    assert "certificate has expired" in result.stdout + result.stderr
