"""The resource commands (sites, hosts, authorities, tokens, requests, events, channels, one
certificate, the trust bundle) run in-process against the real API served over HTTP, on
SQLite and PostgreSQL; their JSON output is the API's, and their errors one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography import x509

from services.cli.main import cli
from tests.services.api.test_certificates import issue_all
from tests.services.api.test_revocation import publish_crl
from tests.services.cli.conftest import ServedApi


def run(served: ServedApi, *args: str, token: str | None = None) -> Any:
    result = served.cli("-o", "json", *args, token=token)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sites_and_hosts_by_name_or_id(served: ServedApi) -> None:
    served.harness.apply_inventory()
    sites = run(served, "sites", "list")
    assert {s["name"] for s in sites} == {"hq-copenhagen", "branch-aarhus", "branch-stockholm"}
    aarhus = run(served, "sites", "show", "branch-aarhus")
    assert aarhus == run(served, "sites", "show", str(aarhus["id"]))
    hosts = run(served, "hosts", "list", "--site", "branch-aarhus")
    assert sorted(h["name"] for h in hosts) == ["aar-rec01", "aar-rec02"]
    assert run(served, "hosts", "show", "aar-rec02")["site"] == "branch-aarhus"

    refused = served.cli("sites", "delete", "branch-aarhus", "--yes")
    assert (
        refused.exit_code == 1 and "error:" in refused.output and "Traceback" not in refused.output
    )
    served.cli("hosts", "delete", "aar-rec01", "--yes")
    served.cli("hosts", "delete", "aar-rec02", "--yes")
    gone = served.cli("sites", "delete", "branch-aarhus", "--yes")
    assert gone.exit_code == 0, gone.output
    assert "branch-aarhus" not in {s["name"] for s in run(served, "sites", "list")}
    missing = served.cli("hosts", "show", "no-such-host")
    assert missing.exit_code == 1 and "no host named 'no-such-host'" in missing.output

    muted = run(served, "sites", "mute", "branch-stockholm", "--hours", "24")
    assert muted["muted_until"]
    assert run(served, "sites", "mute", "branch-stockholm", "--hours", "0")["muted_until"] is None


def test_authorities_tokens_and_the_trust_bundle(served: ServedApi, tmp_path: Path) -> None:
    [root] = run(served, "authorities", "list")
    assert run(served, "authorities", "show", str(root["id"]))["name"] == root["name"]
    pem = tmp_path / "root.pem"
    served.cli("authorities", "certificate", str(root["id"]), "--out", str(pem))
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    assert certificate.subject.rfc4514_string().endswith(root["name"])
    crl_path = tmp_path / "root.crl"
    first = served.cli("authorities", "crl", str(root["id"]), "--out", str(crl_path))
    assert first.exit_code == 0, first.output  # signed when `certfleet init` made the CA
    assert len(x509.load_der_x509_crl(crl_path.read_bytes())) == 0
    assert publish_crl(served.harness, root["id"]) == 2
    served.cli("authorities", "crl", str(root["id"]), "--out", str(crl_path))
    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(certificate.public_key())  # type: ignore[arg-type]
    bundle = tmp_path / "bundle.pem"
    served.cli("trust", "bundle", "--out", str(bundle))
    assert x509.load_pem_x509_certificates(bundle.read_bytes())[0] == certificate
    pending = run(served, "authorities", "create", "Second Root", "--key-bits", "2048")
    assert pending["status"] in ("pending", "generating", "active")

    created = run(served, "tokens", "create", "ci", "--role", "auditor")
    secret = created["token"]
    assert run(served, "sites", "list", token=secret) == []
    assert "ci" in {t["name"] for t in run(served, "tokens", "list")}
    assert run(served, "tokens", "revoke", str(created["id"]))["revoked_at"]
    refused = served.cli("sites", "list", token=secret)
    assert refused.exit_code == 1 and "token" in refused.output


def test_requests_events_certificates_and_channels(served: ServedApi) -> None:
    served.harness.apply_inventory()
    [issued] = issue_all(served.harness, ["hq-rec01"])
    requests = run(served, "requests", "list", "--status", "issued")
    assert [r["id"] for r in requests] == [issued["id"]]
    shown = run(served, "requests", "show", str(issued["id"]), "--wait", "1")
    assert shown["status"] == "issued"

    certificate_id = str(issued["certificate_id"])
    certificate = run(served, "certs", "show", certificate_id)
    assert certificate["host"] == "hq-rec01" and certificate["status"] == "active"
    revoked = run(
        served, "certs", "revoke", certificate_id, "--reason", "superseded", "--no-renew", "--yes"
    )
    assert revoked["certificate"]["status"] == "revoked"
    assert revoked["certificate"]["revocation_reason"] == "superseded"
    assert revoked["renewal_request"] is None
    assert run(served, "certs", "show", certificate_id)["status"] == "revoked"

    kinds = [e["kind"] for e in run(served, "events", "--kind", "certificate.", "--limit", "5")]
    assert kinds[0] == "certificate.revoked" and "certificate.issued" in kinds
    assert len(run(served, "events", "--limit", "3")) == 3

    channel = run(
        served,
        "channels",
        "create",
        "ops",
        "--kind",
        "email",
        "--target",
        "ops@example.com",
        "--threshold",
        "30",
        "--threshold",
        "7",
    )
    assert channel["thresholds"] == [30, 7]
    assert [c["name"] for c in run(served, "channels", "list")] == ["ops"]
    assert run(served, "channels", "mute", str(channel["id"]), "--hours", "2")["muted_until"]


def test_tables_and_completion(served: ServedApi) -> None:
    served.harness.apply_inventory()
    table = served.cli("hosts", "list")
    assert table.exit_code == 0 and "hq-mgmt01" in table.output and "{" not in table.output
    script = CliRunner().invoke(cli, ["completion", "bash"])
    assert script.exit_code == 0 and "_CERTFLEET_COMPLETE=bash_complete" in script.output


def test_filters_that_name_nothing_say_so(served: ServedApi) -> None:
    """An unknown host or site in a filter is an error, not an empty table that reads as
    "none"; a host of another site looks the same to a scoped token."""
    served.harness.apply_inventory()
    for args in (
        ("deliveries", "--host", "no-such-host"),
        ("certs", "list", "--host", "no-such-host"),
        ("certs", "list", "--site", "no-such-site"),
        ("hosts", "list", "--site", "no-such-site"),
        ("events", "--host", "no-such-host"),
    ):
        result = served.cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "does not exist" in result.output and "Traceback" not in result.output, args
    aarhus = served.harness.token("operator", site="branch-aarhus")
    other = served.cli("certs", "list", "--host", "hq-rec01", token=aarhus)
    unknown = served.cli("certs", "list", "--host", "no-such-host", token=aarhus)
    assert other.exit_code == unknown.exit_code == 1
    assert other.output.replace("hq-rec01", "X") == unknown.output.replace("no-such-host", "X")
    assert run(served, "certs", "list", "--host", "aar-rec01", token=aarhus) == []


def test_an_export_that_cannot_be_written_is_one_line_and_not_recorded(
    served: ServedApi, tmp_path: Path
) -> None:
    served.harness.apply_inventory()
    [certificate] = issue_all(served.harness, ["hq-rec01"])
    missing = tmp_path / "missing" / "dir" / "a.pem"
    result = served.cli("export", str(certificate["id"]), "--out", str(missing))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
    assert "does not exist" in result.output
    onto_a_directory = served.cli("export", str(certificate["id"]), "--out", str(tmp_path))
    assert onto_a_directory.exit_code == 2 and "is a directory" in onto_a_directory.output
    events = served.harness.get(
        "/api/v1/events", query_string={"kind": "certificate.exported"}
    ).get_json()["items"]
    assert events == []
    written = served.cli("export", str(certificate["id"]), "--out", str(tmp_path / "a.pem"))
    assert written.exit_code == 0 and (tmp_path / "a.pem").read_bytes().startswith(b"-----BEGIN")
