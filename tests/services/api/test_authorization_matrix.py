"""The authorization matrix, generated from the OpenAPI spec: every operation, called by every
kind of principal (admin, unscoped operator, operator of site A, operator of site B, auditor,
a host agent, no token), aimed at objects of site B.

- No operation exists that the matrix does not list (a new route fails here until its rule
  is written down), and the matrix lists no operation that does not exist.
- No token: 401, but for the public routes. An agent token: 403, but for the agent's own.
- An auditor reads and never writes; an unscoped operator does all but the admin's work.
- The operator of site A gets 403 or 404 for every object of site B, and nothing it can read
  (listings, the dashboard's pages, /metrics) names anything of site B.
- The admin and the operator of site B read every object of site B.

Writes are sent only by the principals that must be refused (the functional tests perform
them), so the fleet is the same for every row of the matrix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from shared.db.models import Host, Site
from tests import factories
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_agent import agent_csr, enroll, enrollment_token
from tests.services.api.test_dashboard import sign_in

A, B = "hq-copenhagen", "branch-aarhus"
A_HOST, B_HOST = "hq-rec01", "aar-rec01"
PUBLIC, AGENT, AUDITOR, OPERATOR, ADMIN = "public", "agent", "auditor", "operator", "admin"


@dataclass
class Fleet:
    api: ApiHarness
    ids: dict[str, int]
    tokens: dict[str, str | None]
    enrollment: str
    b_names: set[str]


@dataclass(frozen=True)
class Rule:
    """Who may call an operation; `owned` when it acts on (or lists) site-owned rows, so that
    a token of another site must be refused or see nothing of them."""

    role: str
    owned: bool = True
    # A write that a scoped token may make, acting on its own site only (and so allowed).
    own_site_only: bool = False
    path: Callable[[Fleet], str] | None = None
    body: Callable[[Fleet], Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def p(template: str) -> Callable[[Fleet], str]:
    return lambda f: template.format(**f.ids)


MATRIX: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(PUBLIC, owned=False),
    ("GET", "/readyz"): Rule(PUBLIC, owned=False),
    ("GET", "/metrics"): Rule(AUDITOR),
    ("GET", "/api/v1/trust-bundle"): Rule(PUBLIC, owned=False),
    ("POST", "/api/v1/trust-bundle/distribute"): Rule(OPERATOR, own_site_only=True),
    ("GET", "/api/v1/authorities"): Rule(AUDITOR, owned=False),
    ("POST", "/api/v1/authorities"): Rule(ADMIN, owned=False, body=lambda f: {"name": "X"}),
    ("GET", "/api/v1/authorities/{authority_id}"): Rule(
        AUDITOR, owned=False, path=p("/api/v1/authorities/1")
    ),
    ("GET", "/api/v1/authorities/{authority_id}/certificate.pem"): Rule(
        PUBLIC, owned=False, path=p("/api/v1/authorities/1/certificate.pem")
    ),
    ("GET", "/api/v1/authorities/{authority_id}/crl"): Rule(
        PUBLIC, owned=False, path=p("/api/v1/authorities/1/crl")
    ),
    ("GET", "/api/v1/sites"): Rule(AUDITOR),
    ("POST", "/api/v1/sites"): Rule(ADMIN, body=lambda f: {"name": "new-site"}),
    ("GET", "/api/v1/sites/{site_id}"): Rule(AUDITOR, path=p("/api/v1/sites/{site}")),
    ("PATCH", "/api/v1/sites/{site_id}"): Rule(
        OPERATOR, path=p("/api/v1/sites/{site}"), body=lambda f: {"description": "mine now"}
    ),
    ("DELETE", "/api/v1/sites/{site_id}"): Rule(ADMIN, path=p("/api/v1/sites/{site}")),
    ("POST", "/api/v1/sites/{site_id}/mute"): Rule(
        OPERATOR, path=p("/api/v1/sites/{site}/mute"), body=lambda f: {"until": None}
    ),
    ("GET", "/api/v1/hosts"): Rule(AUDITOR),
    ("POST", "/api/v1/hosts"): Rule(
        OPERATOR,
        body=lambda f: {"name": "intruder", "site": B, "dns_names": ["intruder"]},
    ),
    ("GET", "/api/v1/hosts/{host_id}"): Rule(AUDITOR, path=p("/api/v1/hosts/{host}")),
    ("PATCH", "/api/v1/hosts/{host_id}"): Rule(
        OPERATOR, path=p("/api/v1/hosts/{host}"), body=lambda f: {"roles": ["client"]}
    ),
    ("DELETE", "/api/v1/hosts/{host_id}"): Rule(OPERATOR, path=p("/api/v1/hosts/{host}")),
    ("GET", "/api/v1/shared-names"): Rule(ADMIN, owned=False),
    ("POST", "/api/v1/shared-names"): Rule(ADMIN, owned=False, body=lambda f: {"name": "x"}),
    ("DELETE", "/api/v1/shared-names/{name}"): Rule(
        ADMIN, owned=False, path=p("/api/v1/shared-names/10.20.1.11")
    ),
    ("PUT", "/api/v1/inventory"): Rule(
        OPERATOR,
        body=lambda f: {
            "hosts": [
                {"name": B_HOST, "site": A, "dns_names": ["aar-rec01.hq.vms.nordbank.example"]}
            ]
        },
    ),
    ("GET", "/api/v1/issuance-requests"): Rule(AUDITOR),
    ("POST", "/api/v1/issuance-requests"): Rule(OPERATOR, body=lambda f: {"host": B_HOST}),
    ("POST", "/api/v1/issuance-requests/bulk"): Rule(
        OPERATOR, body=lambda f: {"requests": [{"host": B_HOST}]}
    ),
    ("GET", "/api/v1/issuance-requests/{request_id}"): Rule(
        AUDITOR, path=p("/api/v1/issuance-requests/{request}")
    ),
    ("GET", "/api/v1/certificates"): Rule(AUDITOR),
    ("GET", "/api/v1/certificates/{certificate_id}"): Rule(
        AUDITOR, path=p("/api/v1/certificates/{certificate}")
    ),
    ("GET", "/api/v1/certificates/{certificate_id}/der"): Rule(
        AUDITOR, path=p("/api/v1/certificates/{certificate}/der")
    ),
    ("GET", "/api/v1/certificates/{certificate_id}/pem"): Rule(
        AUDITOR, path=p("/api/v1/certificates/{certificate}/pem")
    ),
    ("POST", "/api/v1/certificates/{certificate_id}/pfx"): Rule(
        OPERATOR,
        path=p("/api/v1/certificates/{certificate}/pfx"),
        body=lambda f: {"password": "a-long-password-1"},
    ),
    ("POST", "/api/v1/certificates/{certificate_id}/renew"): Rule(
        OPERATOR, path=p("/api/v1/certificates/{certificate}/renew")
    ),
    ("POST", "/api/v1/certificates/{certificate_id}/revoke"): Rule(
        OPERATOR, path=p("/api/v1/certificates/{certificate}/revoke"), body=lambda f: {}
    ),
    ("GET", "/api/v1/deliveries"): Rule(AUDITOR),
    ("GET", "/api/v1/events"): Rule(AUDITOR),
    ("GET", "/api/v1/reports/expiry"): Rule(AUDITOR),
    ("GET", "/api/v1/campaigns"): Rule(AUDITOR),
    ("POST", "/api/v1/campaigns"): Rule(
        OPERATOR, body=lambda f: {"name": "mine", "selector": {"sites": [B]}}
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}"): Rule(
        AUDITOR, path=p("/api/v1/campaigns/{campaign}")
    ),
    ("GET", "/api/v1/campaigns/{campaign_id}/items"): Rule(
        AUDITOR, path=p("/api/v1/campaigns/{campaign}/items")
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/pause"): Rule(
        OPERATOR, path=p("/api/v1/campaigns/{campaign}/pause")
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/resume"): Rule(
        OPERATOR, path=p("/api/v1/campaigns/{campaign}/resume"), body=lambda f: {}
    ),
    ("POST", "/api/v1/campaigns/{campaign_id}/cancel"): Rule(
        OPERATOR, path=p("/api/v1/campaigns/{campaign}/cancel")
    ),
    ("GET", "/api/v1/notification-channels"): Rule(AUDITOR),
    ("POST", "/api/v1/notification-channels"): Rule(
        ADMIN, body=lambda f: {"name": "n", "kind": "email", "target": "x@example.com"}
    ),
    ("POST", "/api/v1/notification-channels/{channel_id}/mute"): Rule(
        OPERATOR,
        path=p("/api/v1/notification-channels/{channel}/mute"),
        body=lambda f: {"until": None},
    ),
    ("GET", "/api/v1/tokens"): Rule(ADMIN, owned=False),
    ("POST", "/api/v1/tokens"): Rule(
        ADMIN, owned=False, body=lambda f: {"name": "t", "role": "admin"}
    ),
    ("POST", "/api/v1/tokens/{token_id}/revoke"): Rule(
        ADMIN, owned=False, path=p("/api/v1/tokens/{token}/revoke")
    ),
    ("POST", "/api/v1/agent/enrollment-tokens"): Rule(OPERATOR, body=lambda f: {"host": B_HOST}),
    ("POST", "/api/v1/agent/enroll"): Rule(PUBLIC, owned=False),
    ("GET", "/api/v1/agent/bundle"): Rule(AGENT, owned=False),
    ("POST", "/api/v1/agent/ack"): Rule(
        AGENT, owned=False, body=lambda f: {"delivery_id": 999999, "status": "failed"}
    ),
}
READS = ("GET",)
# Pages outside the spec that show site-owned rows.
PAGES = ("/dashboard/", "/dashboard/campaigns", "/dashboard/hosts", "/dashboard/events")
# Routes outside the spec that show no site-owned rows: sign-in and out, the reference page
# and its package's scripts.
OUTSIDE_SPEC = {
    ("GET", "/dashboard/login"),
    ("POST", "/dashboard/login"),
    ("POST", "/dashboard/logout"),
    ("GET", "/api/v1/docs"),
    ("GET", "/api/v1/docs/assets/<filename>"),
    ("GET", "/api/v1/openapi.json"),
}


def spec_operations(api: ApiHarness) -> set[tuple[str, str]]:
    spec = api.get("/api/v1/openapi.json", token="").get_json()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }


@pytest.fixture
def fleet(api: ApiHarness) -> Fleet:
    api.apply_inventory()
    for host in (A_HOST, B_HOST):
        assert api.post("/api/v1/issuance-requests", json={"host": host}).status_code == 202
    api.run_issuer()
    agent = enroll(api, "hq-rec02")  # a host of site A has an agent
    with api.db.session() as session:
        b_site = session.scalars(select(Site).where(Site.name == B)).one()
        b_host = session.scalars(select(Host).where(Host.name == B_HOST)).one()
        names = {B}
        for host in session.scalars(select(Host).where(Host.site_id == b_site.id)):
            names |= {host.name, *host.dns_names, *host.ip_addresses}
        site_id, host_id = b_site.id, b_host.id
    request = api.get("/api/v1/issuance-requests").get_json()["items"]
    certificate = api.get("/api/v1/certificates", query_string={"host": B_HOST}).get_json()
    campaign = api.post("/api/v1/campaigns", json={"name": "b", "selector": {"sites": [B]}})
    channel = api.post(
        "/api/v1/notification-channels",
        json={"name": "b-mail", "kind": "email", "target": "ops@b.example", "site": B},
    )
    assert campaign.status_code == 201 and channel.status_code == 201
    token = api.post("/api/v1/tokens", json={"name": "victim", "role": "auditor"})
    tokens: dict[str, str | None] = {
        "admin": api.admin_token,
        "operator": api.token("operator"),
        "operator_a": api.token("operator", site=A),
        "operator_b": api.token("operator", site=B),
        "auditor": api.token("auditor"),
        "agent": agent,
        "none": None,
    }
    return Fleet(
        api,
        {
            "site": site_id,
            "host": host_id,
            "request": next(r["id"] for r in request if r["host"] == B_HOST),
            "certificate": certificate["items"][0]["id"],
            "campaign": campaign.get_json()["id"],
            "channel": channel.get_json()["id"],
            "token": token.get_json()["id"],
        },
        tokens,
        enrollment_token(api, B_HOST),
        names,
    )


def call(fleet: Fleet, operation: tuple[str, str], who: str) -> Any:
    method, path = operation
    rule = MATRIX[operation]
    url = rule.path(fleet) if rule.path else path
    kwargs: dict[str, Any] = {}
    if rule.body is not None:
        kwargs["json"] = rule.body(fleet)
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    if operation == ("POST", "/api/v1/agent/enroll"):
        kwargs["json"] = {
            "enrollment_token": fleet.enrollment,
            "csr": agent_csr(factories.rsa_key()),
        }
    return fleet.api.call(method, url, token=fleet.tokens[who] or "", **kwargs)


def test_every_operation_of_the_spec_has_a_rule(api: ApiHarness) -> None:
    operations = spec_operations(api)
    assert operations - set(MATRIX) == set(), "operations without a rule in the matrix"
    assert set(MATRIX) - operations == set(), "rules for operations that do not exist"


def test_every_route_of_the_app_is_in_the_spec_or_listed_here(api: ApiHarness) -> None:
    """A route registered outside flask-smorest (a page, a static folder) is not in the spec
    the matrix is generated from: it must be listed above, where its rule is written down."""
    # flask's /hosts/<int:host_id> is the spec's /hosts/{host_id}
    spec = {(method, re.sub(r"\{(\w+)\}", r"<\1>", path)) for method, path in spec_operations(api)}
    routes = {
        (method, re.sub(r"<[^<>]*?(\w+)>", r"<\1>", rule.rule))
        for rule in api.app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert len(routes) > len(MATRIX)
    outside = routes - spec
    pages = {("GET", page) for page in PAGES}
    assert outside - pages - OUTSIDE_SPEC == set(), "routes with no rule written down"
    assert OUTSIDE_SPEC - outside == set(), "listed routes that do not exist"


def test_the_matrix(fleet: Fleet) -> None:
    refusals = (401, 403, 404)
    checked = 0
    for operation, rule in MATRIX.items():
        method = operation[0]
        if operation == ("POST", "/api/v1/agent/enroll"):
            continue  # authenticated by its one-time secret, not a bearer token: test_agent
        # No token.
        answer = call(fleet, operation, "none")
        if rule.role == PUBLIC:
            assert answer.status_code < 500 and answer.status_code != 401, operation
        else:
            assert answer.status_code == 401, (operation, answer.status_code)
        # A host agent reaches nothing but its own endpoints.
        answer = call(fleet, operation, "agent")
        if rule.role not in (PUBLIC, AGENT):
            assert answer.status_code == 403, (operation, answer.status_code)
        for who in ("admin", "operator", "operator_a", "operator_b", "auditor"):
            if rule.role == AGENT:
                assert call(fleet, operation, who).status_code == 403, (operation, who)
                continue
            writes = method not in READS
            rank = {PUBLIC: 0, AUDITOR: 0, OPERATOR: 1, ADMIN: 2}[rule.role]
            has = {"admin": 2, "operator": 1, "operator_a": 1, "operator_b": 1, "auditor": 0}[who]
            if has < rank:
                answer = call(fleet, operation, who)
                assert answer.status_code == 403, (operation, who, answer.status_code)
                continue
            if who == "operator_a" and rule.owned:
                answer = call(fleet, operation, who)
                text = answer.get_data(as_text=True)
                if (rule.path is not None or writes) and not rule.own_site_only:
                    assert answer.status_code in (403, 404), (operation, answer.status_code)
                elif rule.own_site_only:
                    assert answer.status_code < 300, (operation, answer.status_code)
                else:
                    assert answer.status_code == 200, (operation, answer.status_code)
                # What it sent itself may be echoed (a problem names the item); nothing more.
                sent = json.dumps(rule.body(fleet)) if rule.body else ""
                leaked = sorted(n for n in fleet.b_names if n in text and n not in sent)
                assert not leaked, (operation, leaked)
                checked += 1
                continue
            if writes:
                continue  # performed by the functional tests; here only refusals are sent
            answer = call(fleet, operation, who)
            assert answer.status_code not in refusals or (
                answer.status_code == 404 and not rule.owned
            ), (operation, who, answer.status_code, answer.get_json())
            checked += 1
    assert checked >= 60


def test_pages_and_metrics_of_another_site_show_nothing_of_it(fleet: Fleet) -> None:
    api = fleet.api
    token = fleet.tokens["operator_a"]
    assert token is not None
    assert sign_in(api, token).status_code == 303
    for page in PAGES:
        answer = api.client.get(page)
        assert answer.status_code == 200, page
        text = answer.get_data(as_text=True)
        assert not sorted(n for n in fleet.b_names if n in text), page
    own = api.get("/api/v1/hosts", token=token).get_json()["items"]
    assert own and {h["site"] for h in own} == {A}
