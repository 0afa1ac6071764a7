"""Sites, hosts and inventory apply."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.services.api.conftest import EXAMPLE_INVENTORY, ApiHarness


def test_apply_example_inventory_then_again_is_unchanged(api: ApiHarness) -> None:
    first = api.apply_inventory()
    doc = yaml.safe_load(EXAMPLE_INVENTORY.read_text())
    assert first["created"] == len(doc["sites"]) + len(doc["hosts"])
    assert sorted(first["hosts"]["created"]) == sorted(h["name"] for h in doc["hosts"])
    second = api.apply_inventory()
    assert second["created"] == second["updated"] == 0
    assert second["unchanged"] == first["created"]
    hosts = api.get("/api/v1/hosts", query_string={"site": "branch-aarhus"}).get_json()["items"]
    assert {h["name"] for h in hosts} == {"aar-rec01", "aar-rec02"}
    failover = api.get("/api/v1/hosts", query_string={"name": "hq-recfo01"}).get_json()["items"][0]
    assert failover["failover_for"] == ["hq-rec01", "hq-rec02"]
    assert failover["roles"] == ["failover", "recording"]


def test_changed_inventory_reports_updates(api: ApiHarness, tmp_path: Path) -> None:
    api.apply_inventory()
    doc = yaml.safe_load(EXAMPLE_INVENTORY.read_text())
    doc["hosts"][0]["dns_names"].append("MGMT.hq.vms.nordbank.example.")
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = api.apply_inventory(path)
    assert result["hosts"]["updated"] == [doc["hosts"][0]["name"]]
    host = api.get("/api/v1/hosts", query_string={"name": doc["hosts"][0]["name"]}).get_json()
    assert "mgmt.hq.vms.nordbank.example" in host["items"][0]["dns_names"]


def test_bad_inventory_applies_nothing_and_lists_every_problem(
    api: ApiHarness, tmp_path: Path
) -> None:
    doc = yaml.safe_load(EXAMPLE_INVENTORY.read_text())
    doc["hosts"][0]["dns_names"] = ["mgmt.evil.example"]
    doc["hosts"][1]["ip_addresses"] = ["192.168.1.1"]
    doc["hosts"][2]["site"] = "no-such-site"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    response = api.call(
        "PUT", "/api/v1/inventory", data=path.read_bytes(), content_type="application/yaml"
    )
    assert response.status_code == 422
    problems = response.get_json()["errors"]
    assert len(problems) == 3
    assert any("outside the site's allowed suffixes" in p for p in problems.values())
    assert any("outside the site's allowed ranges" in p for p in problems.values())
    assert any("no-such-site" in p for p in problems.values())
    assert api.get("/api/v1/sites").get_json() == []


def test_garbage_inventory_is_422(api: ApiHarness) -> None:
    for body, ctype in (
        (b"sites: [unclosed", "application/yaml"),
        (b"[1, 2]", "application/json"),
        (b'{"hosts": [{"name": "x"}]}', "application/json"),
    ):
        response = api.call("PUT", "/api/v1/inventory", data=body, content_type=ctype)
        assert response.status_code == 422, body


def test_site_and_host_crud(api: ApiHarness) -> None:
    created = api.post(
        "/api/v1/sites",
        json={"name": "lab", "dns_suffixes": ["Lab.Example.COM."], "ip_ranges": ["10.9.0.1/24"]},
    )
    assert created.status_code == 201
    site = created.get_json()
    assert site["dns_suffixes"] == ["lab.example.com"] and site["ip_ranges"] == ["10.9.0.0/24"]
    assert site["authority"] == "Test Root"
    assert api.post("/api/v1/sites", json={"name": "lab"}).status_code == 409
    host = api.post(
        "/api/v1/hosts",
        json={
            "name": "lab-rec01",
            "site": "lab",
            "dns_names": ["lab-rec01.lab.example.com"],
            "ip_addresses": ["10.9.0.5"],
            "roles": ["recording"],
        },
    )
    assert host.status_code == 201, host.get_json()
    host_id = host.get_json()["id"]
    outside = api.call("PATCH", f"/api/v1/hosts/{host_id}", json={"ip_addresses": ["10.8.0.5"]})
    assert outside.status_code == 422
    patched = api.call("PATCH", f"/api/v1/hosts/{host_id}", json={"ip_addresses": ["10.9.0.6"]})
    assert patched.status_code == 200 and patched.get_json()["ip_addresses"] == ["10.9.0.6"]
    renamed = api.call("PATCH", f"/api/v1/hosts/{host_id}", json={"name": "other"})
    assert renamed.status_code == 422
    operator = api.token("operator", site="lab")
    repoint = api.call(
        "PATCH", f"/api/v1/sites/{site['id']}", token=operator, json={"ip_ranges": ["0.0.0.0/0"]}
    )
    assert repoint.status_code == 403
    unchanged = api.call(  # naming its current authority changes nothing: no admin needed
        "PATCH", f"/api/v1/sites/{site['id']}", token=operator, json={"authority": "Test Root"}
    )
    assert unchanged.status_code == 200
    described = api.call(
        "PATCH", f"/api/v1/sites/{site['id']}", token=operator, json={"description": "lab site"}
    )
    assert described.status_code == 200 and described.get_json()["description"] == "lab site"
    assert api.call("DELETE", f"/api/v1/sites/{site['id']}").status_code == 409
    assert api.call("DELETE", f"/api/v1/hosts/{host_id}").status_code == 204
    assert api.call("DELETE", f"/api/v1/sites/{site['id']}").status_code == 204
    assert api.get("/api/v1/sites", token=operator).status_code == 401  # its scope went too
    assert api.get(f"/api/v1/sites/{site['id']}").status_code == 404


def test_host_needs_a_name_and_valid_names(api: ApiHarness) -> None:
    api.post("/api/v1/sites", json={"name": "lab", "dns_suffixes": ["lab.example.com"]})
    none = api.post("/api/v1/hosts", json={"name": "h1", "site": "lab"})
    assert none.status_code == 422
    wildcard = api.post(
        "/api/v1/hosts", json={"name": "h2", "site": "lab", "dns_names": ["*.lab.example.com"]}
    )
    assert wildcard.status_code == 422
    assert "wildcard" in str(wildcard.get_json()["errors"])


def test_site_scoped_operator_sees_and_changes_only_its_site(api: ApiHarness) -> None:
    api.apply_inventory()
    operator = api.token("operator", site="branch-aarhus")
    sites = api.get("/api/v1/sites", token=operator).get_json()
    assert [s["name"] for s in sites] == ["branch-aarhus"]
    hosts = api.get("/api/v1/hosts", token=operator).get_json()["items"]
    assert {h["site"] for h in hosts} == {"branch-aarhus"}
    other = api.get("/api/v1/hosts", query_string={"name": "hq-mgmt01"}).get_json()["items"][0]
    assert api.get(f"/api/v1/hosts/{other['id']}", token=operator).status_code == 404
    patch = api.call("PATCH", f"/api/v1/hosts/{other['id']}", token=operator, json={"roles": []})
    assert patch.status_code == 404
    inventory = api.call(
        "PUT",
        "/api/v1/inventory",
        token=operator,
        data=EXAMPLE_INVENTORY.read_bytes(),
        content_type="application/yaml",
    )
    assert inventory.status_code == 403
