"""Fuzz every operation of the OpenAPI spec with schemathesis: no 5xx, and every response
matches the spec (a documented status, a body that fits its schema, the declared content type).

The app is the real one, called in process over WSGI, on a fresh SQLite database and a real
private Redis. The fuzz runs on SQLite only, to keep within the suite's time budget; the API
tests run every route on PostgreSQL as well. A small fleet is seeded first (the example
inventory, two certificates, a CRL, an enrolled agent, a channel, a campaign) and schemathesis
dictionaries steer part of the generated IDs and names at it, so that cases get past the 404s
into the code behind them.

Generation is derandomized: a CI failure reproduces locally, and its report carries a curl
command. One test function loops over the operations itself, so that the case count it asserts
is the whole run's, whatever pytest-xdist does with the other tests.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from services.issuer import service as issuer
from shared import deliveries
from shared.clock import FixedClock
from tests import factories
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.services.api.conftest import ApiHarness, running_api
from tests.services.api.test_agent import agent_csr, enroll, enrollment_token

# Redis DB of this module's own, on the process's private server.
REDIS_DB = 11
MIN_CASES = 1000
# Share of operations that must answer 2xx at least once: a guard against a fuzz that passes
# vacuously because every case stops at a 401, 404 or 429.
MIN_REACHED = 0.8
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
# Agent endpoints refuse every token but a host agent's (even admin's), so they get one.
AGENT_PATHS = ("/api/v1/agent/bundle", "/api/v1/agent/ack")
SEEDED_IDS = [1, 2, 3]


@dataclass
class Seeded:
    harness: ApiHarness
    agent_token: str
    enrollment_tokens: list[str]
    csr: str
    delivery_ids: list[int]


@dataclass
class Tally:
    cases: int = 0
    statuses: dict[str, collections.Counter[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def seeded(
    sqlite_url: str, redis_url: str, tmp_path: Path, wall_clock: FixedClock
) -> Iterator[Seeded]:
    own_redis = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    with running_api(sqlite_url, own_redis, tmp_path, wall_clock) as harness:
        yield seed(harness)


def seed(api: ApiHarness) -> Seeded:
    """Rows for IDs 1-3 of most nouns: sites, hosts, certificates (one with a server-held key,
    one an agent's), a CRL, a pending agent delivery, a channel and a running campaign."""
    api.apply_inventory()
    issued = api.post("/api/v1/issuance-requests", json={"host": "hq-rec01"})
    assert issued.status_code == 202, issued.get_json()
    agent_token = enroll(api, "aar-rec01")
    signed = api.run_issuer()
    assert len(signed.certificate_ids) == 2, signed
    with api.db.session() as session:
        deliveries.plan_certificates(session, signed.certificate_ids, api.clock.now())
        session.commit()
    secrets = issuer.Secrets(TEST_CA_PASSPHRASE, TEST_DATA_KEY)
    assert (
        issuer.publish_crl(api.db, 1, issuer.SignerCache(), secrets, api.clock) == 2
    )  # 1 was signed by `certfleet init`
    channel = api.post(
        "/api/v1/notification-channels",
        json={"name": "ops-mail", "kind": "email", "target": "ops@example.com"},
    )
    assert channel.status_code == 201, channel.get_json()
    campaign = api.post(
        "/api/v1/campaigns",
        json={"name": "hq", "selector": {"sites": ["hq-copenhagen"]}, "respect_windows": False},
    )
    assert campaign.status_code == 201, campaign.get_json()
    return Seeded(
        harness=api,
        agent_token=agent_token,
        enrollment_tokens=[enrollment_token(api, "sto-rec01") for _ in range(3)],
        csr=agent_csr(factories.rsa_key()),
        delivery_ids=[d["id"] for d in api.get("/api/v1/deliveries").get_json()["items"]],
    )


def fuzz_config(seeded: Seeded) -> schemathesis.Config:
    """Dictionaries: part of the generated integers are seeded IDs, part of the names are
    seeded sites and hosts; now and then a live enrollment secret, a real CSR, the agent's
    delivery."""
    sites = ["hq-copenhagen", "branch-aarhus", "branch-stockholm"]
    hosts = ["hq-rec01", "hq-rec02", "aar-rec01", "sto-rec01", "hq-ops-client01"]
    some = 0.4
    return schemathesis.Config.from_dict(
        {
            "dictionaries": {
                "ids": {"values": SEEDED_IDS},
                "sites": {"values": sites},
                "hosts": {"values": hosts},
                "enrollment": {"values": seeded.enrollment_tokens},
                "csr": {"values": [seeded.csr]},
                "deliveries": {"values": seeded.delivery_ids},
            },
            "generation": {"dictionaries": {"integer": {"dictionary": "ids", "probability": some}}},
            "parameters": {
                "body.site": {"dictionary": "sites", "probability": some},
                "body.host": {"dictionary": "hosts", "probability": some},
                "body.requests[*].host": {"dictionary": "hosts", "probability": some},
                "query.site": {"dictionary": "sites", "probability": some},
                "query.host": {"dictionary": "hosts", "probability": some},
                "body.enrollment_token": {"dictionary": "enrollment", "probability": some},
                "body.csr": {"dictionary": "csr", "probability": some},
                "body.delivery_id": {"dictionary": "deliveries", "probability": some},
            },
        }
    )


def has_inputs(operation: Any) -> bool:
    """Parameters or a body to make invalid; the bearer header we always send is not one."""
    names = {p.name for p in operation.iter_parameters()} - {"Authorization"}
    return bool(names) or bool(operation.body)


def fuzz_operation(operation: Any, mode: GenerationMode, token: str, tally: Tally) -> None:
    label = f"{operation.label} [{mode.value}]"
    strategy = operation.as_strategy(
        generation_mode=mode, headers={"Authorization": f"Bearer {token}"}
    )
    statuses = tally.statuses.setdefault(operation.label, collections.Counter())

    # No shrinking: the app keeps state between cases, so a shrunk replay would be flaky.
    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        tally.cases += 1
        try:
            response = case.call_and_validate(checks=CHECKS)
        except FailureGroup as exc:
            tally.failures.setdefault(label, str(exc))
            return
        statuses[response.status_code] += 1

    try:
        run()
    except Exception as exc:  # a generation or transport error: report it with the label
        tally.failures.setdefault(label, f"{type(exc).__name__}: {exc}")


def ordered(operations: list[Any]) -> list[Any]:
    """The agent's first, while its seeded delivery is pending (a revocation or renewal
    fuzzed later supersedes it); DELETEs last, so that the seeded rows outlive the rest."""
    return sorted(
        operations, key=lambda op: (op.method.upper() == "DELETE", op.path not in AGENT_PATHS)
    )


def test_every_operation_answers_within_its_spec(seeded: Seeded) -> None:
    api = seeded.harness
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/openapi.json", api.app, config=fuzz_config(seeded)
    )
    operations = ordered([result.ok() for result in schema.get_all_operations()])
    tally = Tally()
    for operation in operations:
        token = seeded.agent_token if operation.path in AGENT_PATHS else api.admin_token
        fuzz_operation(operation, GenerationMode.POSITIVE, token, tally)
        # An operation without parameters or body has nothing to make invalid.
        if has_inputs(operation):
            fuzz_operation(operation, GenerationMode.NEGATIVE, token, tally)
    report = "\n\n".join(f"== {label}\n{text}" for label, text in tally.failures.items())
    assert not tally.failures, f"{len(tally.failures)} operation(s) failed:\n\n{report}"
    assert tally.cases >= MIN_CASES, f"only {tally.cases} cases over {len(operations)} operations"
    unreached = {
        label: dict(counts)
        for label, counts in tally.statuses.items()
        if not any(200 <= status < 300 for status in counts)
    }
    assert len(unreached) <= (1 - MIN_REACHED) * len(operations), f"never a 2xx: {unreached}"
