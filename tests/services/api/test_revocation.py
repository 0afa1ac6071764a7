"""Revocation over HTTP on both databases: the API revokes and asks the issuer (by ID) for a
fresh CRL, the issuer signs it, the API serves it, and `openssl verify -crl_check` with the
downloaded CRL refuses the revoked leaf."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from services.issuer import service as issuer
from shared import contracts
from shared.db.models import Certificate, Event
from tests import factories
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.services.api.conftest import ApiHarness


def issue(api: ApiHarness, *hosts: str) -> list[dict[str, Any]]:
    response = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": h} for h in hosts]}
    )
    assert response.status_code == 202, response.get_json()
    assert len(api.run_issuer().issued) == len(hosts)
    api.redis.flushdb()  # only what the revocation sends stays on the queues
    certificates = []
    for request in response.get_json()["requests"]:
        done = api.get(f"/api/v1/issuance-requests/{request['id']}").get_json()
        certificates.append(api.get(f"/api/v1/certificates/{done['certificate_id']}").get_json())
    return certificates


def revoke(api: ApiHarness, certificate_id: int, token: str | None = None, **body: Any) -> Any:
    return api.post(f"/api/v1/certificates/{certificate_id}/revoke", token=token, json=body)


def publish_crl(api: ApiHarness, authority_id: int) -> int | None:
    """What the issuer worker does with the publish_crl message, in this process."""
    return issuer.publish_crl(
        api.db,
        authority_id,
        issuer.SignerCache(),
        issuer.Secrets(TEST_CA_PASSPHRASE, TEST_DATA_KEY),
        api.clock,
    )


def messages(api: ApiHarness, task: str) -> list[dict[str, Any]]:
    return [m for m in api.queued_messages() if m["envelope"]["headers"]["task"] == task]


def test_revoke_publish_and_serve_a_crl_that_openssl_honours(
    api: ApiHarness, tmp_path: Path, openssl: Any
) -> None:
    api.apply_inventory()
    revoked, kept = issue(api, "hq-rec01", "hq-rec02")
    authority_id = revoked["authority_id"]
    crl_url = f"/api/v1/authorities/{authority_id}/crl"
    # Signed when the authority was made: present, and empty, before any revocation.
    first = api.get(crl_url, token="")
    assert first.status_code == 200
    assert len(x509.load_der_x509_crl(first.data)) == 0

    response = revoke(api, revoked["id"], reason="keyCompromise")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["certificate"]["status"] == "revoked"
    assert body["certificate"]["revocation_reason"] == "keyCompromise"
    assert body["certificate"]["revoked_at"] is not None
    assert body["renewal_request"] is None and body["queued"] is True

    [message] = messages(api, contracts.TASK_PUBLISH_CRL)
    assert message["body"][1] == {"authority_id": authority_id}
    for secret in (b"BEGIN", TEST_CA_PASSPHRASE.encode(), TEST_DATA_KEY.encode()):
        assert secret not in message["raw"]
    assert messages(api, contracts.TASK_ISSUE_BATCH) == []
    with api.db.session() as session:
        event = session.scalars(select(Event).where(Event.kind == "certificate.revoked")).one()
        assert event.actor.startswith("token:") and event.subject_id == revoked["id"]
        assert event.data["reason"] == "keyCompromise"
        site_id, host_id = event.site_id, event.host_id
        row = session.get(Certificate, revoked["id"])
        assert row is not None and (site_id, host_id) == (row.host.site_id, row.host_id)

    assert publish_crl(api, authority_id) == 2  # number 1 was signed with the authority
    served = api.get(crl_url, token="")  # public, like the CA certificate
    assert served.status_code == 200 and served.mimetype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(served.data)
    entry = crl.get_revoked_certificate_by_serial_number(int(revoked["serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(int(kept["serial"], 16)) is None

    trust = tmp_path / "trust.pem"
    trust.write_bytes(api.get("/api/v1/trust-bundle", token="").data)
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(api.get(crl_url, token="", query_string={"format": "pem"}).data)
    for certificate, verdict in ((revoked, "certificate revoked"), (kept, None)):
        der = api.get(f"/api/v1/certificates/{certificate['id']}/der").data
        leaf = tmp_path / f"{certificate['id']}.pem"
        leaf.write_bytes(
            x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        )
        result = openssl("verify", "-crl_check", "-CAfile", trust, "-CRLfile", crl_file, leaf)
        if verdict is None:
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            assert result.returncode != 0 and verdict in result.stdout + result.stderr


def test_the_crl_is_served_as_der_or_pem_with_cache_headers(api: ApiHarness) -> None:
    api.apply_inventory()
    [certificate] = issue(api, "hq-rec01")
    authority_id = certificate["authority_id"]
    url = f"/api/v1/authorities/{authority_id}/crl"
    assert publish_crl(api, authority_id) == 2  # number 1 was signed with the authority
    der = api.get(url, token="")
    assert der.headers["Vary"] == "Accept"
    assert der.cache_control.public and 0 < der.cache_control.max_age <= 300
    assert der.last_modified is not None
    pem = api.get(url, token="", query_string={"format": "pem"})
    accepted = api.get(url, token="", headers={"Accept": "application/x-pem-file"})
    assert pem.mimetype == accepted.mimetype == "application/x-pem-file"
    assert pem.data == accepted.data and pem.data.startswith(b"-----BEGIN X509 CRL-----")
    assert x509.load_pem_x509_crl(pem.data) == x509.load_der_x509_crl(der.data)
    assert der.headers["ETag"] != pem.headers["ETag"]
    unchanged = api.get(url, token="", headers={"If-None-Match": der.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert api.get(url, token="", query_string={"format": "p7b"}).status_code == 422
    # A new CRL is a new representation: the old ETag no longer matches.
    assert revoke(api, certificate["id"]).status_code == 200
    assert publish_crl(api, authority_id) == 3
    fresh = api.get(url, token="", headers={"If-None-Match": der.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != der.headers["ETag"]
    [entry] = list(x509.load_der_x509_crl(fresh.data))
    assert not any(isinstance(e.value, x509.CRLReason) for e in entry.extensions)  # unspecified
    assert api.get("/api/v1/authorities/99999/crl", token="").status_code == 404


def test_revocation_refusals(api: ApiHarness) -> None:
    api.apply_inventory()
    hq, aarhus_cert = issue(api, "hq-rec01", "aar-rec01")
    auditor = api.token("auditor")
    aarhus = api.token("operator", site="branch-aarhus")
    assert revoke(api, hq["id"], token=auditor).status_code == 403
    assert revoke(api, hq["id"], token=aarhus).status_code == 404
    unknown = revoke(api, hq["id"], reason="stolen")
    assert unknown.status_code == 422 and "reason" in unknown.get_json()["errors"]["json"]
    hold = revoke(api, hq["id"], reason="certificateHold")
    assert hold.status_code == 422 and "un-revoke" in hold.get_json()["message"]
    assert revoke(api, 99999).status_code == 404
    assert api.queued_messages() == []  # nothing refused reached the queue
    assert api.get(f"/api/v1/certificates/{hq['id']}").get_json()["status"] == "active"

    assert revoke(api, aarhus_cert["id"], token=aarhus, reason="superseded").status_code == 200
    assert revoke(api, hq["id"]).status_code == 200
    again = revoke(api, hq["id"], reason="keyCompromise")
    assert again.status_code == 409 and again.get_json()["code"] == "conflict"
    with api.db.session() as session:
        kinds = session.scalars(select(Event.kind).where(Event.kind == "certificate.revoked"))
        assert len(list(kinds)) == 2
    [expired] = issue(api, "hq-rec02")
    with api.db.session() as session:
        session.execute(
            update(Certificate)
            .where(Certificate.id == expired["id"])
            .values(not_after=api.clock.now() - dt.timedelta(seconds=1))
        )
    assert revoke(api, expired["id"]).status_code == 409


def test_revoke_and_renew_reuses_the_renewal_path(api: ApiHarness) -> None:
    api.apply_inventory()
    [first] = issue(api, "hq-rec01")
    [second] = issue(api, "hq-rec01")  # supersedes the first
    superseded = revoke(api, first["id"], renew=True)
    assert (
        superseded.status_code == 409 and "renew its successor" in superseded.get_json()["message"]
    )
    assert api.get(f"/api/v1/certificates/{first['id']}").get_json()["status"] == "superseded"

    response = revoke(api, second["id"], reason="keyCompromise", renew=True)
    assert response.status_code == 200, response.get_json()
    renewal = response.get_json()["renewal_request"]
    assert renewal["status"] == "queued" and renewal["host"] == "hq-rec01"
    [queued] = messages(api, contracts.TASK_ISSUE_BATCH)
    assert queued["body"][1] == {"request_ids": [renewal["id"]]}
    assert len(messages(api, contracts.TASK_PUBLISH_CRL)) == 1
    assert api.run_issuer().issued == [renewal["id"]]
    done = api.get(f"/api/v1/issuance-requests/{renewal['id']}").get_json()
    fresh = api.get(f"/api/v1/certificates/{done['certificate_id']}").get_json()
    assert fresh["status"] == "active" and fresh["serial"] != second["serial"]
    assert api.get(f"/api/v1/certificates/{second['id']}").get_json()["status"] == "revoked"
    assert revoke(api, first["id"]).status_code == 200  # a superseded one, without renew


def test_a_compromised_host_held_key_is_not_renewed_from_its_old_csr(api: ApiHarness) -> None:
    api.apply_inventory()
    csr = factories.make_csr(factories.rsa_key(), ["hq-rec02.hq.vms.nordbank.example"])
    response = api.post("/api/v1/issuance-requests", json={"host": "hq-rec02", "csr": csr})
    assert response.status_code == 202
    api.run_issuer()
    certificate_id = api.get(response.headers["Location"]).get_json()["certificate_id"]
    refused = revoke(api, certificate_id, reason="keyCompromise", renew=True)
    assert refused.status_code == 409 and "CSR for a new key" in refused.get_json()["message"]
    assert revoke(api, certificate_id, reason="keyCompromise").status_code == 200
