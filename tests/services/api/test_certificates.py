"""Certificates over HTTP, checked by real verifiers: openssl verify, a TLS handshake with
host-name checking against the trust bundle, and the PFX loaded back."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import select, text

from shared.db.models import Event
from tests import factories
from tests.services.api.conftest import ApiHarness
from tests.tls import handshake, tls_server

PFX_PASSWORD = "correct horse battery"


def issue_all(api: ApiHarness, names: list[str]) -> list[dict[str, Any]]:
    response = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": n} for n in names]}
    )
    assert response.status_code == 202, response.get_json()
    result = api.run_issuer()
    assert len(result.issued) == len(names), result
    return [
        api.get(f"/api/v1/issuance-requests/{r['id']}").get_json()
        for r in response.get_json()["requests"]
    ]


def test_pem_chain_verifies_and_serves_tls_with_hostname_checking(
    api: ApiHarness, tmp_path: Path, openssl: Any
) -> None:
    api.apply_inventory()
    [request] = issue_all(api, ["hq-mobile01"])
    cert_id = request["certificate_id"]
    bundle = api.get("/api/v1/trust-bundle", token="")
    assert bundle.status_code == 200
    trust = tmp_path / "trust.pem"
    trust.write_bytes(bundle.data)
    chain = api.get(f"/api/v1/certificates/{cert_id}/pem")
    assert chain.mimetype == "application/pem-certificate-chain"
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(chain.data)
    leaf_file = tmp_path / "leaf.pem"
    certs = x509.load_pem_x509_certificates(chain.data)
    leaf_file.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    der = api.get(f"/api/v1/certificates/{cert_id}/der")
    assert der.mimetype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.data) == certs[0]
    verified = openssl("verify", "-CAfile", trust, "-purpose", "sslserver", leaf_file)
    assert verified.returncode == 0, verified.stderr
    # The key is server-held: take it from the PFX, then serve TLS with it.
    pfx = api.post(f"/api/v1/certificates/{cert_id}/pfx", json={"password": PFX_PASSWORD})
    assert pfx.status_code == 200 and pfx.mimetype == "application/x-pkcs12"
    key, leaf, extra = pkcs12.load_key_and_certificates(pfx.data, PFX_PASSWORD.encode())
    assert key is not None and leaf == certs[0] and extra == certs[1:]
    key_file = tmp_path / "key.pem"
    factories.write_key(key_file, key)  # type: ignore[arg-type]
    with tls_server(chain_file, key_file) as port:
        presented = handshake(port, trust, "mobile.nordbank-mobile.example.com")
        assert (
            x509.load_der_x509_certificate(presented).fingerprint(hashes.SHA256()).hex()
            == api.get(f"/api/v1/certificates/{cert_id}").get_json()["fingerprint"]
        )
        handshake(port, trust, "10.10.1.30")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(port, trust, "hq-rec01.hq.vms.nordbank.example")


def test_pfx_is_windows_legacy_and_openssl_reads_it(
    api: ApiHarness, tmp_path: Path, openssl: Any
) -> None:
    api.apply_inventory()
    [request] = issue_all(api, ["hq-rec01"])
    cert_id = request["certificate_id"]
    pfx = api.post(
        f"/api/v1/certificates/{cert_id}/pfx",
        json={"password": PFX_PASSWORD, "friendly_name": "XProtect rec01"},
    )
    path = tmp_path / "rec01.pfx"
    path.write_bytes(pfx.data)
    info = openssl(
        "pkcs12", "-in", path, "-info", "-noout", "-passin", f"pass:{PFX_PASSWORD}", "-legacy"
    )
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr
    assert "MAC: sha1" in info.stderr
    assert "Iteration 50000" in info.stderr
    wrong = openssl(
        "pkcs12", "-in", path, "-info", "-noout", "-passin", "pass:wrong-password", "-legacy"
    )
    assert wrong.returncode != 0
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(pfx.data, b"wrong-password")
    loaded = pkcs12.load_pkcs12(pfx.data, PFX_PASSWORD.encode())
    assert loaded.cert is not None and loaded.cert.friendly_name == b"XProtect rec01"
    assert PFX_PASSWORD not in pfx.get_data(as_text=False).decode("latin-1")
    with api.db.session() as session:
        kinds = [e.kind for e in session.scalars(select(Event).where(Event.subject_id == cert_id))]
    assert "certificate.exported" in kinds


def test_pfx_refusals(api: ApiHarness) -> None:
    api.apply_inventory()
    csr = factories.make_csr(factories.rsa_key(), ["hq-rec02.hq.vms.nordbank.example"])
    response = api.post("/api/v1/issuance-requests", json={"host": "hq-rec02", "csr": csr})
    assert response.status_code == 202
    api.run_issuer()
    cert_id = api.get(response.headers["Location"]).get_json()["certificate_id"]
    host_held = api.post(f"/api/v1/certificates/{cert_id}/pfx", json={"password": PFX_PASSWORD})
    assert host_held.status_code == 409 and "held by the host" in host_held.get_json()["message"]
    assert (
        api.post(f"/api/v1/certificates/{cert_id}/pfx", json={"password": "short"}).status_code
        == 422
    )
    auditor = api.token("auditor")
    assert (
        api.post(
            f"/api/v1/certificates/{cert_id}/pfx", token=auditor, json={"password": PFX_PASSWORD}
        ).status_code
        == 403
    )
    assert (
        api.post("/api/v1/certificates/99999/pfx", json={"password": PFX_PASSWORD}).status_code
        == 404
    )


def test_list_filters_and_cursor_pagination(api: ApiHarness) -> None:
    api.apply_inventory()
    names = ["hq-rec01", "hq-rec02", "aar-rec01", "aar-rec02", "sto-rec01"]
    issue_all(api, names)
    issue_all(api, ["hq-rec01"])  # supersedes the first hq-rec01 certificate
    seen: list[int] = []
    cursor = None
    while True:
        page = api.get(
            "/api/v1/certificates",
            query_string={"limit": 2, **({"cursor": cursor} if cursor else {})},
        ).get_json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 6
    active = api.get("/api/v1/certificates", query_string={"status": "active"}).get_json()["items"]
    assert sorted(c["host"] for c in active) == sorted(names)
    superseded = api.get("/api/v1/certificates", query_string={"status": "superseded"}).get_json()[
        "items"
    ]
    assert [c["host"] for c in superseded] == ["hq-rec01"]
    assert superseded[0]["superseded_by_id"] == next(
        c["id"] for c in active if c["host"] == "hq-rec01"
    )
    aarhus = api.get("/api/v1/certificates", query_string={"site": "branch-aarhus"}).get_json()[
        "items"
    ]
    assert sorted(c["host"] for c in aarhus) == ["aar-rec01", "aar-rec02"]
    by_host = api.get("/api/v1/certificates", query_string={"host": "sto-rec01"}).get_json()[
        "items"
    ]
    assert [c["host"] for c in by_host] == ["sto-rec01"]
    soon = (api.clock.now() + dt.timedelta(days=30)).isoformat()
    later = (api.clock.now() + dt.timedelta(days=400)).isoformat()
    assert (
        api.get("/api/v1/certificates", query_string={"expires_before": soon}).get_json()["items"]
        == []
    )
    assert (
        len(
            api.get("/api/v1/certificates", query_string={"expires_before": later}).get_json()[
                "items"
            ]
        )
        == 6
    )
    naive = (api.clock.now() + dt.timedelta(days=400)).replace(tzinfo=None).isoformat()
    assert (
        len(
            api.get("/api/v1/certificates", query_string={"expires_before": naive}).get_json()[
                "items"
            ]
        )
        == 6
    )
    assert (
        api.get("/api/v1/certificates", query_string={"expires_before": "soon"}).status_code == 422
    )
    assert api.get("/api/v1/certificates", query_string={"cursor": "garbage!"}).status_code == 422
    assert api.get("/api/v1/certificates", query_string={"limit": 5000}).status_code == 422
    operator = api.token("operator", site="branch-stockholm")
    scoped = api.get("/api/v1/certificates", token=operator).get_json()["items"]
    assert [c["host"] for c in scoped] == ["sto-rec01"]
    other = next(c for c in active if c["host"] == "hq-rec02")
    assert api.get(f"/api/v1/certificates/{other['id']}", token=operator).status_code == 404
    assert api.get(f"/api/v1/certificates/{other['id']}/pem", token=operator).status_code == 404


def test_server_keys_are_encrypted_at_rest(api: ApiHarness) -> None:
    api.apply_inventory()
    issue_all(api, ["hq-rec01"])
    with api.db.session() as session:
        keys = [row[0] for row in session.execute(text("SELECT encrypted_key FROM certificates"))]
        ca_keys = [row[0] for row in session.execute(text("SELECT encrypted_key FROM authorities"))]
    for blob in keys + ca_keys:
        data = bytes(blob)
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert b"BEGIN PRIVATE KEY" not in data and b"BEGIN RSA PRIVATE KEY" not in data


def test_authorities_and_trust_bundle(api: ApiHarness) -> None:
    from services.issuer import service as issuer
    from tests.conftest import TEST_CA_PASSPHRASE

    [root] = api.get("/api/v1/authorities").get_json()
    assert root["status"] == "active" and root["kind"] == "root"
    created = api.post(
        "/api/v1/authorities",
        json={"name": "Sub CA", "kind": "intermediate", "parent": "Test Root", "key_bits": 2048},
    )
    assert created.status_code == 202
    body = created.get_json()
    assert body["status"] == "pending"
    assert [m["body"][1] for m in api.queued_messages()] == [{"authority_id": body["id"]}]
    status = issuer.create_authority(
        api.db, body["id"], secrets=issuer.Secrets(TEST_CA_PASSPHRASE), clock=api.clock
    )
    assert status == "active"
    sub = api.get(f"/api/v1/authorities/{body['id']}").get_json()
    assert sub["status"] == "active" and sub["parent_id"] == root["id"]
    pem = api.get(f"/api/v1/authorities/{body['id']}/certificate.pem", token="")
    sub_cert = x509.load_pem_x509_certificate(pem.data)
    assert sub_cert.fingerprint(hashes.SHA256()).hex() == sub["fingerprint"]
    bundle = x509.load_pem_x509_certificates(api.get("/api/v1/trust-bundle", token="").data)
    assert [c.fingerprint(hashes.SHA256()).hex() for c in bundle] == [root["fingerprint"]]
    assert api.post("/api/v1/authorities", json={"name": "Sub CA"}).status_code == 409
    assert (
        api.post("/api/v1/authorities", json={"name": "Orphan", "kind": "intermediate"}).status_code
        == 422
    )
    assert (
        api.post("/api/v1/authorities", json={"name": "Weak", "key_bits": 1024}).status_code == 422
    )
    operator = api.token("operator")
    assert api.post("/api/v1/authorities", token=operator, json={"name": "X"}).status_code == 403


def test_renew_now_reuses_a_host_held_key_and_is_not_doubled(api: ApiHarness) -> None:
    api.apply_inventory()
    csr = factories.make_csr(factories.rsa_key(), ["hq-rec02.hq.vms.nordbank.example"])
    issued = api.post("/api/v1/issuance-requests", json={"host": "hq-rec02", "csr": csr})
    api.run_issuer()
    cert_id = api.get(issued.headers["Location"]).get_json()["certificate_id"]
    renewal = api.post(f"/api/v1/certificates/{cert_id}/renew")
    assert renewal.status_code == 202 and renewal.get_json()["key_source"] == "csr"
    again = api.post(f"/api/v1/certificates/{cert_id}/renew")
    assert again.get_json()["id"] == renewal.get_json()["id"]  # already on its way
    api.run_issuer()
    new_id = api.get(renewal.headers["Location"]).get_json()["certificate_id"]
    old, new = (api.get(f"/api/v1/certificates/{i}").get_json() for i in (cert_id, new_id))
    assert old["status"] == "superseded" and new["status"] == "active"
    assert api.post(f"/api/v1/certificates/{cert_id}/renew").status_code == 409
    auditor = api.token("auditor")
    assert api.post(f"/api/v1/certificates/{new_id}/renew", token=auditor).status_code == 403
