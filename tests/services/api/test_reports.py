"""The expiry report: what expires within N days, by site, with CAs that die before leaves."""

from __future__ import annotations

import datetime as dt

from tests.services.api.conftest import ApiHarness


def test_expiry_report_follows_the_clock(api: ApiHarness) -> None:
    api.apply_inventory()
    hosts = ["hq-rec01", "aar-rec01", "sto-rec01"]
    response = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": h} for h in hosts]}
    )
    assert response.status_code == 202
    api.run_issuer()
    now = api.get("/api/v1/reports/expiry").get_json()
    assert now["total"] == 0 and now["certificates"] == []
    [root] = now["authorities"]
    assert root["expires_before_its_leaves"] is False and root["latest_leaf_not_after"]
    api.clock.advance(dt.timedelta(days=380))
    soon = api.get("/api/v1/reports/expiry", query_string={"within_days": 30}).get_json()
    assert soon["total"] == 3
    assert {s["site"]: (s["expiring"], s["expired"]) for s in soon["by_site"]} == {
        "hq-copenhagen": (1, 0),
        "branch-aarhus": (1, 0),
        "branch-stockholm": (1, 0),
    }
    assert all(0 < c["days_left"] <= 30 for c in soon["certificates"])
    assert (
        api.get("/api/v1/reports/expiry", query_string={"within_days": 5}).get_json()["total"] == 0
    )
    api.clock.advance(dt.timedelta(days=20))
    late = api.get("/api/v1/reports/expiry", query_string={"within_days": 0}).get_json()
    assert late["total"] == 3 and all(s["expired"] == 1 for s in late["by_site"])
    assert all(c["days_left"] < 0 for c in late["certificates"])
    aarhus = api.token("operator", site="branch-aarhus")
    scoped = api.get(
        "/api/v1/reports/expiry", token=aarhus, query_string={"within_days": 0}
    ).get_json()
    assert [c["host"] for c in scoped["certificates"]] == ["aar-rec01"]
    assert api.get("/api/v1/reports/expiry", query_string={"within_days": -1}).status_code == 422
