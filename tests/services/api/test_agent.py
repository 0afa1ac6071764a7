"""Host agents over HTTP: one-time enrolment, a host-scoped token, pull, acknowledge."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select

from shared import deliveries
from shared.bundles import fingerprint_of, trust_bundle_pem
from shared.db.models import Delivery, Event, Host
from tests import factories
from tests.services.api.conftest import ApiHarness


def enrollment_token(api: ApiHarness, host: str, **extra: Any) -> str:
    response = api.post("/api/v1/agent/enrollment-tokens", json={"host": host, **extra})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["enrollment_token"])


def enroll(api: ApiHarness, host: str, key: Any = None) -> str:
    """Enrol an agent for `host` the way certfleet-agent does; returns its token."""
    response = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={
            "enrollment_token": enrollment_token(api, host),
            "csr": agent_csr(key or factories.rsa_key()),
        },
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["agent_token"])


def agent_csr(key: Any) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def plan_for_issued(api: ApiHarness) -> list[int]:
    """What the issuer and distributor do: sign what is queued, then plan its deliveries."""
    result = api.run_issuer()
    with api.db.session() as session:
        return deliveries.plan_certificates(session, result.certificate_ids, api.clock.now())


def test_enroll_pull_and_acknowledge(api: ApiHarness) -> None:
    api.apply_inventory()
    secret = enrollment_token(api, "hq-rec01")
    key = factories.rsa_key()
    enrolled = api.post(
        "/api/v1/agent/enroll", token="", json={"enrollment_token": secret, "csr": agent_csr(key)}
    )
    assert enrolled.status_code == 201, enrolled.get_json()
    body = enrolled.get_json()
    agent = body["agent_token"]
    assert body["host"] == "hq-rec01"
    again = api.post(
        "/api/v1/agent/enroll", token="", json={"enrollment_token": secret, "csr": agent_csr(key)}
    )
    assert again.status_code == 401  # one use only
    assert plan_for_issued(api) == []  # agent deliveries wait for the pull, nothing to push
    bundle = api.get("/api/v1/agent/bundle", token=agent)
    assert bundle.status_code == 200, bundle.get_json()
    payload = bundle.get_json()
    leaf = x509.load_pem_x509_certificate(payload["certificate_pem"].encode())
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert leaf.fingerprint(hashes.SHA256()).hex() == payload["fingerprint"]
    assert payload["host"]["name"] == "hq-rec01" and payload["host"]["roles"] == ["recording"]
    assert "PRIVATE KEY" not in bundle.get_data(as_text=True)
    listed = api.get("/api/v1/deliveries", query_string={"host": "hq-rec01"}).get_json()["items"]
    assert [(d["method"], d["status"]) for d in listed] == [("agent", "delivered")]
    wrong = api.post(
        "/api/v1/agent/ack",
        token=agent,
        json={
            "delivery_id": payload["delivery_id"],
            "status": "installed",
            "fingerprint": "0" * 64,
        },
    )
    assert wrong.status_code == 409
    api.redis.delete("distribute")
    ack = api.post(
        "/api/v1/agent/ack",
        token=agent,
        json={
            "delivery_id": payload["delivery_id"],
            "status": "installed",
            "fingerprint": payload["fingerprint"],
        },
    )
    assert ack.status_code == 200 and ack.get_json()["status"] == "installed"
    assert api.redis.llen("distribute") == 1  # hq-rec01 has a TLS endpoint: probe it
    assert api.get("/api/v1/agent/bundle", token=agent).status_code == 204
    repeat = api.post(
        "/api/v1/agent/ack",
        token=agent,
        json={
            "delivery_id": payload["delivery_id"],
            "status": "installed",
            "fingerprint": payload["fingerprint"],
        },
    )
    assert repeat.status_code == 409
    with api.db.session() as session:
        kinds = set(session.scalars(select(Event.kind)))
    assert {
        "agent.enrollment_created",
        "agent.enrolled",
        "delivery.planned",
        "delivery.delivered",
        "delivery.installed",
    } <= kinds


def test_agent_token_reaches_only_its_own_host(api: ApiHarness) -> None:
    api.apply_inventory()
    agent = enroll(api, "aar-rec01")
    for path in (
        "/api/v1/sites",
        "/api/v1/hosts",
        "/api/v1/certificates",
        "/api/v1/deliveries",
        "/api/v1/authorities",
        "/api/v1/tokens",
    ):
        assert api.get(path, token=agent).status_code == 403, path
    assert (
        api.post("/api/v1/issuance-requests", token=agent, json={"host": "aar-rec01"}).status_code
        == 403
    )
    assert (
        api.post(
            "/api/v1/agent/enrollment-tokens", token=agent, json={"host": "aar-rec01"}
        ).status_code
        == 403
    )
    # An admin token is no agent: the agent endpoints act for exactly one host.
    assert api.get("/api/v1/agent/bundle").status_code == 403
    other = enroll(api, "aar-rec02")
    plan_for_issued(api)
    other_bundle = api.get("/api/v1/agent/bundle", token=other).get_json()
    stolen = api.post(
        "/api/v1/agent/ack",
        token=agent,
        json={
            "delivery_id": other_bundle["delivery_id"],
            "status": "installed",
            "fingerprint": other_bundle["fingerprint"],
        },
    )
    assert stolen.status_code == 404


def test_enrollment_refusals(api: ApiHarness) -> None:
    api.apply_inventory()
    expired = enrollment_token(api, "hq-rec02", valid_hours=1)
    api.clock.advance(dt.timedelta(hours=2))
    refused = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={"enrollment_token": expired, "csr": agent_csr(factories.rsa_key())},
    )
    assert refused.status_code == 401
    unknown = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={"enrollment_token": "cfe_nope", "csr": agent_csr(factories.rsa_key())},
    )
    assert unknown.status_code == 401
    weak = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={
            "enrollment_token": enrollment_token(api, "hq-rec02"),
            "csr": agent_csr(factories.rsa_key(1024)),
        },
    )
    assert weak.status_code == 422
    aarhus = api.token("operator", site="branch-aarhus")
    assert (
        api.post(
            "/api/v1/agent/enrollment-tokens", token=aarhus, json={"host": "hq-rec02"}
        ).status_code
        == 404
    )
    assert api.post("/api/v1/agent/enrollment-tokens", json={"host": "ghost"}).status_code == 404


def test_superseded_certificate_is_never_handed_out(api: ApiHarness) -> None:
    api.apply_inventory()
    key = factories.rsa_key()
    enrolled = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={"enrollment_token": enrollment_token(api, "sto-rec01"), "csr": agent_csr(key)},
    )
    agent = enrolled.get_json()["agent_token"]
    plan_for_issued(api)
    first = api.get("/api/v1/agent/bundle", token=agent).get_json()
    # A renewal lands before the agent acknowledges the first one.
    with api.db.session() as session:
        host = session.scalar(select(Host).where(Host.name == "sto-rec01"))
        assert host is not None
        factories.make_request(session, host, csr_pem=agent_csr(key))
    plan_for_issued(api)
    second = api.get("/api/v1/agent/bundle", token=agent).get_json()
    assert second["fingerprint"] != first["fingerprint"]
    with api.db.session() as session:
        old = session.get(Delivery, first["delivery_id"])
        assert old is not None and old.status == "failed" and "superseded" in (old.last_error or "")


def test_client_receives_the_trust_bundle_through_its_agent(api: ApiHarness) -> None:
    api.apply_inventory()
    agent = enroll(api, "hq-ops-client01")
    with api.db.session() as session:
        client = session.scalar(select(Host).where(Host.name == "hq-ops-client01"))
        fingerprint = fingerprint_of(trust_bundle_pem(session))
        assert deliveries.plan_trust(session, [client], fingerprint, api.clock.now()) == []
        assert deliveries.plan_trust(session, [client], fingerprint, api.clock.now()) == []  # once
    plan_for_issued(api)  # the enrolment's own certificate comes before the trust bundle
    bundles = []
    while (response := api.get("/api/v1/agent/bundle", token=agent)).status_code == 200:
        bundle = response.get_json()
        bundles.append(bundle)
        api.post(
            "/api/v1/agent/ack",
            token=agent,
            json={
                "delivery_id": bundle["delivery_id"],
                "status": "installed",
                "fingerprint": bundle["fingerprint"],
            },
        )
    trust = [b for b in bundles if b["kind"] == "trust"]
    assert len(trust) == 1 and trust[0]["certificate_pem"] is None
    assert trust[0]["trust_pem"] == api.get("/api/v1/trust-bundle", token="").get_data(as_text=True)
    push = api.post("/api/v1/trust-bundle/distribute", json={})
    assert push.status_code == 202 and push.get_json() == {"hosts": 1, "queued": True}
