"""Bodies and query strings built to hurt: deep nesting, alias bombs, bodies past the limit
sent without a length, integers no row ID can be. Each is a 4xx, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator

import requests
from sqlalchemy import func, select

from shared.db.models import Host, Site
from tests.services.api.conftest import ApiHarness, serving
from tests.services.api.test_dashboard import sign_in

YAML = "application/yaml"


def counts(api: ApiHarness) -> tuple[int, int]:
    with api.db.session() as session:
        sites = session.scalar(select(func.count()).select_from(Site)) or 0
        hosts = session.scalar(select(func.count()).select_from(Host)) or 0
    return int(sites), int(hosts)


def test_deeply_nested_json_is_a_4xx_on_every_kind_of_route(api: ApiHarness) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for method, path in (
        ("POST", "/api/v1/sites"),
        ("POST", "/api/v1/issuance-requests/bulk"),
        ("PUT", "/api/v1/inventory"),
        ("POST", "/api/v1/campaigns"),
    ):
        answer = api.call(method, path, data=deep, content_type="application/json")
        assert 400 <= answer.status_code < 500, (path, answer.get_json())
    nested_object = {"sites": [{"name": "x", "description": "d"}], "hosts": []}
    for _ in range(100):
        nested_object = {"sites": [], "hosts": [], "x": nested_object}
    answer = api.call("PUT", "/api/v1/inventory", json=nested_object)
    assert answer.status_code == 422 and "nested deeper" in answer.get_json()["message"]
    assert counts(api) == (0, 0)


def test_deeply_nested_yaml_is_a_422(api: ApiHarness) -> None:
    flow = "sites: " + "[" * 5000 + "]" * 5000
    block = "sites:\n" + "".join(" " * i + "-\n" for i in range(200))
    for doc in (flow, block):
        answer = api.call("PUT", "/api/v1/inventory", data=doc, content_type=YAML)
        assert answer.status_code == 422, answer.get_json()
        assert "nested deeper" in answer.get_json()["message"]


def test_yaml_aliases_cannot_expand_a_document_past_a_small_multiple_of_itself(
    api: ApiHarness,
) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    bomb = "\n".join(lines) + "\nsites: []\nhosts: []\n"
    answer = api.call("PUT", "/api/v1/inventory", data=bomb, content_type=YAML)
    assert answer.status_code == 422, answer.get_json()
    assert "aliases expand" in answer.get_json()["message"]
    recursive = "sites: &s [*s]\n"
    answer = api.call("PUT", "/api/v1/inventory", data=recursive, content_type=YAML)
    assert answer.status_code == 422
    assert counts(api) == (0, 0)
    # Aliases for what they are for, a window two sites share, still work.
    shared = (
        "sites:\n"
        "  - {name: one, maintenance_window: &w {start: '01:00', end: '04:00', timezone: UTC}}\n"
        "  - {name: two, maintenance_window: *w}\n"
    )
    applied = api.call("PUT", "/api/v1/inventory", data=shared, content_type=YAML)
    assert applied.status_code == 200, applied.get_json()
    assert counts(api) == (2, 0)


def test_a_chunked_body_past_the_limit_is_a_413_not_a_truncated_document(
    api: ApiHarness,
) -> None:
    limit = api.settings.max_body_bytes

    def chunks(total: int) -> Iterator[bytes]:
        yield b"sites:\n"
        sent = 7
        while sent < total:
            line = b"  - {name: s%07d}\n" % sent
            sent += len(line)
            yield line

    with serving(api.app) as base:
        headers = {"Authorization": f"Bearer {api.admin_token}", "Content-Type": YAML}
        too_big = requests.put(
            f"{base}/api/v1/inventory", data=chunks(limit + 4096), headers=headers, timeout=30
        )
        assert too_big.status_code == 413, too_big.text
        assert counts(api) == (0, 0)
        fits = requests.put(
            f"{base}/api/v1/inventory",
            data=iter([b"sites:\n", b"  - {name: chunked-site}\n"]),
            headers=headers,
            timeout=30,
        )
        assert fits.status_code == 200, fits.text
    assert counts(api) == (1, 0)


def test_integers_no_row_id_can_be_are_4xx_in_every_query_string(api: ApiHarness) -> None:
    huge = "9" * 40
    for path in (
        f"/api/v1/certificates?cursor=x&limit={huge}",
        f"/api/v1/hosts?limit={huge}",
        f"/api/v1/deliveries?certificate={huge}",
        f"/api/v1/events?subject_type=certificate&subject_id={huge}",
        f"/api/v1/issuance-requests?ids={huge}",
        f"/api/v1/reports/expiry?within_days={huge}",
        f"/api/v1/issuance-requests/1?wait={huge}",
        "/api/v1/hosts?limit=-1",
    ):
        answer = api.get(path)
        assert 400 <= answer.status_code < 500, (path, answer.get_json())
    assert sign_in(api, api.admin_token).status_code == 303
    for path in (
        f"/dashboard/hosts?after={huge}",
        f"/dashboard/events?before={huge}",
        "/dashboard/hosts?after=-5",
        "/dashboard/events?before=" + "1" * 5000,
    ):
        assert api.client.get(path).status_code == 400, path
    assert api.client.get("/dashboard/hosts?after=0").status_code == 200


def test_names_cannot_end_in_a_newline(api: ApiHarness) -> None:
    for name in ("site\n", "site\r\n", "si\nte"):
        answer = api.post("/api/v1/sites", json={"name": name})
        assert answer.status_code == 422, (name, answer.get_json())
    assert counts(api) == (0, 0)
