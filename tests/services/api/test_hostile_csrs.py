"""Every case of tests.hostile_csrs, sent to all three routes that take a CSR: the single and
bulk issuance requests and the agent's enrolment. Each gets a 4xx with the one error shape,
none leaves a request behind, none spends the enrolment token, and no answer repeats a key."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from shared.db.models import AgentEnrollment, IssuanceRequest
from tests import factories
from tests.hostile_csrs import HOST, corpus
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_agent import agent_csr, enrollment_token

MIN_CASES = 60


def rows(api: ApiHarness) -> int:
    with api.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(IssuanceRequest)) or 0)


def test_every_hostile_csr_is_refused_on_every_route(api: ApiHarness) -> None:
    api.apply_inventory()
    cases = corpus()
    assert len(cases) >= MIN_CASES
    secret = enrollment_token(api, HOST)
    statuses: Counter[int] = Counter()
    for label, csr in cases:
        answers = {
            "single": api.post("/api/v1/issuance-requests", json={"host": HOST, "csr": csr}),
            "bulk": api.post(
                "/api/v1/issuance-requests/bulk", json={"requests": [{"host": HOST, "csr": csr}]}
            ),
            "enroll": api.post(
                "/api/v1/agent/enroll", token="", json={"enrollment_token": secret, "csr": csr}
            ),
        }
        for route, answer in answers.items():
            assert 400 <= answer.status_code < 500, (label, route, answer.get_json())
            assert answer.status_code != 401, (label, route, answer.get_json())  # token unspent
            text = answer.get_data(as_text=True)
            assert "PRIVATE KEY" not in text and "BEGIN" not in text, (label, route)
            statuses[answer.status_code] += 1
    assert rows(api) == 0
    with api.db.session() as session:
        assert session.scalar(select(AgentEnrollment.used_at)) is None
    assert set(statuses) <= {413, 422}, statuses
    # The same token and host still work with a sound CSR: nothing above was half-done.
    sound = api.post(
        "/api/v1/agent/enroll",
        token="",
        json={"enrollment_token": secret, "csr": agent_csr(factories.rsa_key())},
    )
    assert sound.status_code == 201, sound.get_json()


def test_what_is_wrong_is_said(api: ApiHarness) -> None:
    """The messages name the problem, not just "does not verify"."""
    api.apply_inventory()
    expected = {
        "SHA-1 signed": "SHA1",
        "MD5 signed (raw)": "MD5",
        "exponent 3": "exponent",
        "modulus with factor 997": "small prime factor",
        "RSA 1024": "RSA 1024",
        "modulus of 16384 bits": "at most 8192",
        "version 2 (v2)": "version",
        "EC P-256": "must be RSA",
        "whitespace only": "empty",
        "CN not UTF-8": "cannot be decoded",
    }
    found = dict(corpus())
    for label, words in expected.items():
        answer = api.post("/api/v1/issuance-requests", json={"host": HOST, "csr": found[label]})
        assert answer.status_code == 422, (label, answer.get_json())
        assert words in answer.get_json()["message"], (label, answer.get_json())
    empty = api.post("/api/v1/issuance-requests", json={"host": HOST, "csr": ""})
    assert empty.status_code == 422  # not a silent switch to a server-held key
    assert rows(api) == 0
