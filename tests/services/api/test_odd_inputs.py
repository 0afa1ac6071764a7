"""Odd and hostile inputs get a 4xx in the error shape, never a 500."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.services.api.conftest import ApiHarness

HUGE = 2**70

ODD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/sites", {"json": []}),
    ("POST", "/api/v1/sites", {"json": "a string"}),
    ("POST", "/api/v1/sites", {"json": None}),
    ("POST", "/api/v1/sites", {"json": {"name": 5}}),
    ("POST", "/api/v1/sites", {"json": {"name": "x" * 300}}),
    ("POST", "/api/v1/sites", {"json": {"name": "s", "dns_suffixes": "not-a-list"}}),
    ("POST", "/api/v1/sites", {"json": {"name": "s", "ip_ranges": ["300.1.1.1/8"]}}),
    ("POST", "/api/v1/sites", {"json": {"name": "s", "dns_suffixes": ["bad_label!.example"]}}),
    ("POST", "/api/v1/sites", {"json": {"name": "s", "authority": "nope"}}),
    ("POST", "/api/v1/hosts", {"json": {"name": "h", "site": "nowhere", "dns_names": ["h.x"]}}),
    (
        "POST",
        "/api/v1/hosts",
        {"json": {"name": "h", "site": "hq-copenhagen", "ip_addresses": ["abc"]}},
    ),
    (
        "POST",
        "/api/v1/hosts",
        {"json": {"name": "h", "site": "hq-copenhagen", "dns_names": ["a" * 300]}},
    ),
    ("POST", "/api/v1/hosts", {"json": {"name": "h", "site": "hq-copenhagen", "roles": ["king"]}}),
    (
        "POST",
        "/api/v1/hosts",
        {"json": {"name": "h", "site": "hq-copenhagen", "tls_endpoints": ["nope"]}},
    ),
    ("POST", "/api/v1/issuance-requests", {"json": {"host": "hq-rec01", "csr": "x" * 20000}}),
    ("POST", "/api/v1/issuance-requests", {"json": {"host": "hq-rec01", "validity_days": "abc"}}),
    ("POST", "/api/v1/issuance-requests", {"json": {"host_id": -1}}),
    ("POST", "/api/v1/issuance-requests", {"json": {"host_id": HUGE}}),
    ("POST", "/api/v1/issuance-requests", {"json": {"host": "hq-rec01", "csr": "\x00\x01binary"}}),
    (
        "POST",
        "/api/v1/issuance-requests",
        {"json": {"host": "hq-rec01"}, "headers": {"Idempotency-Key": "k" * 500}},
    ),
    ("POST", "/api/v1/issuance-requests/bulk", {"json": {"requests": []}}),
    ("POST", "/api/v1/issuance-requests/bulk", {"json": {"requests": "all"}}),
    ("GET", f"/api/v1/hosts/{HUGE}", {}),
    ("GET", f"/api/v1/certificates/{HUGE}", {}),
    ("GET", f"/api/v1/certificates/{HUGE}/pem", {}),
    ("GET", f"/api/v1/issuance-requests/{HUGE}", {}),
    ("GET", f"/api/v1/authorities/{HUGE}/certificate.pem", {}),
    ("GET", "/api/v1/issuance-requests?ids=" + ",".join(["1"] * 1001), {}),
    ("GET", f"/api/v1/issuance-requests?ids={HUGE}", {}),
    ("GET", "/api/v1/certificates?limit=abc", {}),
    ("GET", "/api/v1/certificates?cursor=" + base64.urlsafe_b64encode(b"id:abc").decode(), {}),
    (
        "GET",
        "/api/v1/certificates?cursor=" + base64.urlsafe_b64encode(f"id:{HUGE}".encode()).decode(),
        {},
    ),
    ("GET", "/api/v1/certificates?status=lost", {}),
    ("PATCH", "/api/v1/sites/1", {"json": {"name": "renamed"}}),
    ("PATCH", "/api/v1/sites/1", {"json": {"renew_at_fraction": 5}}),
    ("POST", "/api/v1/certificates/1/pfx", {"json": {}}),
    ("POST", "/api/v1/tokens", {"json": {"name": "t", "role": "admin", "site": "hq-copenhagen"}}),
    ("POST", "/api/v1/tokens", {"json": {"name": "t", "role": "operator", "site": "nowhere"}}),
    ("POST", "/api/v1/authorities", {"json": {"name": "R", "kind": "root", "parent": "Test Root"}}),
    ("POST", "/api/v1/authorities", {"json": {"name": "R", "validity_days": 10**9}}),
    ("PUT", "/api/v1/inventory", {"data": b"\xff\xfe\x00", "content_type": "application/yaml"}),
    ("PUT", "/api/v1/inventory", {"data": b"sites: 5", "content_type": "application/yaml"}),
    (
        "PUT",
        "/api/v1/inventory",
        {"data": b"!!python/object/apply:os.system ['true']", "content_type": "application/yaml"},
    ),
    ("DELETE", "/api/v1/certificates/1", {}),
]


@pytest.mark.parametrize(
    "method,path,kwargs", ODD_REQUESTS, ids=[f"{m} {p[:60]}" for m, p, _ in ODD_REQUESTS]
)
def test_odd_input_is_a_4xx(
    api: ApiHarness, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    api.apply_inventory()
    response = api.call(method, path, **kwargs)
    assert 400 <= response.status_code < 500, (
        response.status_code,
        response.get_data(as_text=True)[:300],
    )
    assert response.mimetype == "application/json"
