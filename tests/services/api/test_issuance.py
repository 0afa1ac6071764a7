"""Issuance requests over HTTP: accepted, queued by ID, refused with the right 4xx."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from cryptography.hazmat.primitives.asymmetric import ec
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from infra.local import free_port
from shared import waiting
from shared.db.models import IssuanceRequest
from tests import factories
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.services.api.conftest import ApiHarness

MGMT_NAMES = ["hq-mgmt01.hq.vms.nordbank.example", "hq-mgmt01"]


def request_count(api: ApiHarness) -> int:
    with api.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(IssuanceRequest)) or 0)


def issue(api: ApiHarness, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/api/v1/issuance-requests", json=body, headers=headers)


def test_csr_request_is_accepted_queued_by_id_and_issued(api: ApiHarness) -> None:
    api.apply_inventory()
    csr = factories.make_csr(factories.rsa_key(), MGMT_NAMES, ["10.10.1.10"])
    response = issue(api, {"host": "hq-mgmt01", "csr": csr})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["key_source"] == "csr"
    assert response.headers["Location"].endswith(f"/api/v1/issuance-requests/{body['id']}")
    messages = api.queued_messages()
    assert [m["body"][1] for m in messages] == [{"request_ids": [body["id"]]}]
    for message in messages:
        assert b"BEGIN" not in message["raw"]
        assert TEST_CA_PASSPHRASE.encode() not in message["raw"]
        assert TEST_DATA_KEY.encode() not in message["raw"]
    assert api.run_issuer().issued == [body["id"]]
    done = api.get(response.headers["Location"]).get_json()
    assert done["status"] == "issued" and done["certificate_id"]


def test_idempotency_key_replays_and_conflicts(api: ApiHarness) -> None:
    api.apply_inventory()
    first = issue(api, {"host": "hq-rec01"}, key="k-1")
    assert first.status_code == 202
    replay = issue(api, {"host": "hq-rec01"}, key="k-1")
    assert replay.status_code == 200
    assert replay.get_json()["id"] == first.get_json()["id"]
    assert request_count(api) == 1
    # A replay of a still-queued request re-enqueues it (its message may have been lost).
    assert len(api.queued_messages()) == 2
    conflict = issue(api, {"host": "hq-rec02"}, key="k-1")
    assert conflict.status_code == 409 and conflict.get_json()["code"] == "conflict"


def test_bad_csrs_are_refused_before_anything_is_stored(api: ApiHarness) -> None:
    api.apply_inventory()
    good = factories.make_csr(factories.rsa_key(), MGMT_NAMES)
    lines = good.splitlines()
    body_lines = lines[1:-1]
    raw = "".join(body_lines)
    tampered_b64 = raw[:-12] + ("A" if raw[-12] != "A" else "B") + raw[-11:]
    tampered = "\n".join(
        [lines[0], *[tampered_b64[i : i + 64] for i in range(0, len(tampered_b64), 64)], lines[-1]]
    )
    weak = factories.make_csr(factories.rsa_key(1024), MGMT_NAMES)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_csr = factories.make_csr(ec_key, MGMT_NAMES)
    outside = factories.make_csr(factories.rsa_key(), ["hq-mgmt01.evil.example"])
    unregistered = factories.make_csr(factories.rsa_key(), ["hq-rec01.hq.vms.nordbank.example"])
    cases = {
        "garbage": (
            "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----",
            "csr_rejected",
        ),
        "bad signature": (tampered, "csr_rejected"),
        "rsa 1024": (weak, "csr_rejected"),
        "ec key": (ec_csr, "csr_rejected"),
        "outside policy": (outside, "policy_violation"),
        "not this host's name": (unregistered, "policy_violation"),
    }
    for label, (csr, code) in cases.items():
        response = issue(api, {"host": "hq-mgmt01", "csr": csr})
        assert response.status_code == 422, label
        assert response.get_json()["code"] == code, (label, response.get_json())
    assert "1024" in issue(api, {"host": "hq-mgmt01", "csr": weak}).get_json()["message"]
    assert request_count(api) == 0
    assert api.queued_messages() == []


def test_unknown_host_and_bad_validity(api: ApiHarness) -> None:
    api.apply_inventory()
    assert issue(api, {"host": "no-such-host"}).status_code == 404
    assert issue(api, {"host_id": 99999}).status_code == 404
    too_long = issue(api, {"host": "hq-rec01", "validity_days": 826})
    assert too_long.status_code == 422
    assert "validity_days" in too_long.get_json()["errors"]["json"]
    both = issue(api, {"host": "hq-rec01", "host_id": 1})
    assert both.status_code == 422
    assert request_count(api) == 0


def test_operator_of_another_site_cannot_request(api: ApiHarness) -> None:
    api.apply_inventory()
    aarhus = api.token("operator", site="branch-aarhus")
    refused = api.post("/api/v1/issuance-requests", token=aarhus, json={"host": "hq-rec01"})
    assert refused.status_code == 404
    own = api.post("/api/v1/issuance-requests", token=aarhus, json={"host": "aar-rec01"})
    assert own.status_code == 202
    other_id = issue(api, {"host": "hq-rec01"}).get_json()["id"]
    assert api.get(f"/api/v1/issuance-requests/{other_id}", token=aarhus).status_code == 404


def test_bulk_is_all_or_nothing_and_batched(api: ApiHarness) -> None:
    api.apply_inventory()
    names = [
        "hq-rec01",
        "hq-rec02",
        "aar-rec01",
        "aar-rec02",
        "sto-rec01",
        "sto-rec02",
        "hq-recfo01",
        "hq-mgmt01",
        "hq-event01",
        "hq-mobile01",
        "hq-rec01",
        "hq-rec02",
    ]
    malformed = [{"host": n} for n in names] + [{"host": "hq-rec01", "validity_days": 0}]
    refused = api.post("/api/v1/issuance-requests/bulk", json={"requests": malformed})
    assert refused.status_code == 422
    assert "validity_days" in refused.get_json()["errors"]["json"]["requests"]["12"]
    mixed = [{"host": n} for n in names] + [{"host": "ghost"}, {"host": "sto-rec01", "csr": "junk"}]
    refused = api.post("/api/v1/issuance-requests/bulk", json={"requests": mixed})
    assert refused.status_code == 422
    errors = refused.get_json()["errors"]
    assert set(errors) == {"12", "13"} and "ghost" in errors["12"]
    assert request_count(api) == 0
    accepted = api.post(
        "/api/v1/issuance-requests/bulk",
        json={"requests": [{"host": n} for n in names]},
        headers={"Idempotency-Key": "bulk-1"},
    )
    assert accepted.status_code == 202
    assert accepted.get_json()["count"] == len(names)
    bodies = [m["body"][1]["request_ids"] for m in api.queued_messages()]
    assert sorted(len(b) for b in bodies) == [2, 10]  # issue_batch_size=10
    assert sorted(i for b in bodies for i in b) == sorted(
        r["id"] for r in accepted.get_json()["requests"]
    )
    replay = api.post(
        "/api/v1/issuance-requests/bulk",
        json={"requests": [{"host": n} for n in names]},
        headers={"Idempotency-Key": "bulk-1"},
    )
    assert [r["id"] for r in replay.get_json()["requests"]] == [
        r["id"] for r in accepted.get_json()["requests"]
    ]
    assert request_count(api) == len(names)
    too_many = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": "hq-rec01"}] * 51}
    )
    assert too_many.status_code == 422 and "at most 50" in too_many.get_json()["message"]


def test_listing_requests_by_ids_for_progress(api: ApiHarness) -> None:
    api.apply_inventory()
    ids = [issue(api, {"host": n}).get_json()["id"] for n in ("hq-rec01", "hq-rec02", "aar-rec01")]
    listed = api.get(
        "/api/v1/issuance-requests", query_string={"ids": f"{ids[0]},{ids[2]}"}
    ).get_json()
    assert [r["id"] for r in listed["items"]] == [ids[0], ids[2]]
    api.run_issuer()
    issued = api.get("/api/v1/issuance-requests", query_string={"status": "issued"}).get_json()
    assert sorted(r["id"] for r in issued["items"]) == sorted(ids)
    assert api.get("/api/v1/issuance-requests", query_string={"ids": "1,x"}).status_code == 422


def test_long_poll_answers_when_the_issuer_finishes(api: ApiHarness) -> None:
    """GET ?wait= holds the answer until the issuer's wake-up, then reads the row again."""
    api.apply_inventory()
    location = issue(api, {"host": "hq-rec01"}).headers["Location"]

    def issuer() -> None:
        time.sleep(0.3)
        waiting.announce_finished(api.redis, api.run_issuer().issued)

    worker = threading.Thread(target=issuer)
    worker.start()
    started = time.monotonic()
    done = api.get(f"{location}?wait=10")
    elapsed = time.monotonic() - started
    worker.join()
    assert done.status_code == 200
    assert done.get_json()["status"] == "issued" and done.get_json()["certificate_id"]
    assert 0.3 <= elapsed < 5


def test_long_poll_times_out_with_the_row_as_it_stands(api: ApiHarness) -> None:
    api.apply_inventory()
    location = issue(api, {"host": "hq-rec01"}).headers["Location"]
    started = time.monotonic()
    pending = api.get(f"{location}?wait=0.4")
    assert pending.status_code == 200 and pending.get_json()["status"] == "queued"
    assert time.monotonic() - started >= 0.4
    for bad in ("31", "-1", "soon"):
        refused = api.get(f"{location}?wait={bad}")
        assert refused.status_code == 422, bad
    # Without Redis there is nothing to wait for: the row comes back at once.
    runtime = api.app.extensions["certfleet"]
    live = runtime.redis_client
    runtime.redis_client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        started = time.monotonic()
        unwaited = api.get(f"{location}?wait=10")
        assert unwaited.status_code == 200 and unwaited.get_json()["status"] == "queued"
        assert time.monotonic() - started < 5
    finally:
        runtime.redis_client = live
