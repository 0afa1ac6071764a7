"""The dashboard's pages through the real app (SQLite and PostgreSQL): sign-in with an API
token kept in a strict cookie, the same token checks as the API, the figures each section
shows, and an operator scoped to one site seeing only that site."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select

from services.api.dashboard.routes import COOKIE
from shared import campaigns
from shared.db.models import Authority, Certificate, Delivery, Host, Site
from tests.services.api.conftest import ApiHarness

ISSUED = ["hq-mgmt01", "hq-rec01", "aar-rec01", "sto-rec01"]


def csrf_of(api: ApiHarness, path: str = "/dashboard/login") -> str:
    """The CSRF token the page's forms carry (the same as this browser's CSRF cookie)."""
    html = api.client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(api: ApiHarness, token: str, next_page: str = "") -> Any:
    api.client.delete_cookie(COOKIE, path="/dashboard")
    csrf = csrf_of(api)
    return api.client.post(
        "/dashboard/login", data={"token": token, "next": next_page, "csrf": csrf}
    )


def page(api: ApiHarness, path: str) -> str:
    response = api.client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.location)
    return response.get_data(as_text=True)


def fleet(api: ApiHarness) -> int:
    """The example inventory, four certificates issued, one due in 10 days, one expired, a
    failed delivery at Aarhus, and a running campaign over headquarters (its ID)."""
    api.apply_inventory()
    response = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": h} for h in ISSUED]}
    )
    assert response.status_code == 202
    assert len(api.run_issuer().issued) == len(ISSUED)
    now = api.clock.now()
    with api.db.session() as session:
        rows = session.execute(
            select(Certificate, Host.name).join(Host, Certificate.host_id == Host.id)
        )
        certificates = {host: cert for cert, host in rows}
        certificates["hq-rec01"].not_after = now + dt.timedelta(days=10)
        certificates["hq-mgmt01"].not_after = now + dt.timedelta(days=100, hours=1)
        certificates["sto-rec01"].not_after = now - dt.timedelta(days=1)
        session.add(
            Delivery(
                host_id=certificates["aar-rec01"].host_id,
                kind="certificate",
                certificate_id=certificates["aar-rec01"].id,
                method="ssh",
                status="failed",
                last_error="ssh: connection refused",
            )
        )
        spec = campaigns.CampaignSpec(
            "spring renewal", campaigns.RENEW, {"sites": ["hq-copenhagen"]}
        )
        campaign, _ = campaigns.create(session, spec, actor="test", now=now)
        session.flush()
        return campaign.id


def test_sign_in_sets_a_strict_cookie_and_refuses_bad_tokens(api: ApiHarness) -> None:
    anonymous = api.client.get("/dashboard/hosts")
    assert anonymous.status_code == 302 and "/dashboard/login" in anonymous.location
    no_form = api.client.post("/dashboard/login", data={"token": api.token("auditor")})
    assert no_form.status_code == 400 and api.client.get_cookie(COOKIE, path="/dashboard") is None
    bad = sign_in(api, "cf_not-a-token")
    assert bad.status_code == 401 and "not valid" in bad.get_data(as_text=True)
    assert api.client.get_cookie(COOKIE, path="/dashboard") is None

    good = sign_in(api, api.token("auditor"), next_page="/dashboard/hosts")
    assert good.status_code == 303 and good.location.endswith("/dashboard/hosts")
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert page(api, "/dashboard/").count("<section") >= 4

    # Only dashboard pages may follow a sign-in: no open redirect.
    away = sign_in(api, api.token("auditor"), next_page="https://evil.example/")
    assert away.status_code == 303 and away.location.endswith("/dashboard/")

    forged = api.client.post("/dashboard/logout", data={"csrf": "0" * 64})
    assert forged.status_code == 400  # a form this dashboard did not serve
    assert api.client.get("/dashboard/").status_code == 200
    out = api.client.post("/dashboard/logout", data={"csrf": csrf_of(api, "/dashboard/")})
    assert out.status_code == 303
    assert api.client.get("/dashboard/").status_code == 302


def test_a_revoked_token_signs_the_reader_out(api: ApiHarness) -> None:
    secret = api.token("auditor")
    sign_in(api, secret)
    assert api.client.get("/dashboard/").status_code == 200
    [token] = [t for t in api.get("/api/v1/tokens").get_json() if t["role"] == "auditor"]
    assert api.post(f"/api/v1/tokens/{token['id']}/revoke").status_code == 200
    after = api.client.get("/dashboard/")
    assert after.status_code == 302 and "expired=1" in after.location


def test_overview_shows_sites_timeline_campaigns_and_audit(api: ApiHarness) -> None:
    fleet(api)
    sign_in(api, api.token("auditor"))
    html = page(api, "/dashboard/")
    tiles = dict(re.findall(r'id="tile-(\w+)"><b[^>]*>(\d+)</b>', html))
    assert tiles == {"active": "4", "expiring": "2", "expired": "1", "failed": "1"}
    sites = section(html, "sites")
    table = cells(sites)
    # site: hosts, active, expiring, expired, superseded, revoked, failed deliveries
    assert table["hq-copenhagen"][1:] == ["7", "2", "1", "0", "0", "0", "0"]
    assert table["branch-aarhus"][1:] == ["2", "1", "0", "0", "0", "0", "1"]
    assert table["branch-stockholm"][1:] == ["2", "1", "1", "1", "0", "0", "0"]
    weeks = [int(c) for c in re.findall(r'class="week" data-week="\d+" data-count="(\d+)"', html)]
    # hq-rec01 (due in 10 days) in the second week, hq-mgmt01 (100 days) in the 15th;
    # sto-rec01 (expired) as overdue; aar-rec01, valid for 397 days, in the last week: the
    # timeline reaches the latest expiry (57 weeks hold 397 days).
    assert len(weeks) == 57 and weeks[1] == 1 and weeks[14] == 1 and weeks[56] == 1
    assert sum(weeks) == 3
    assert re.search(r'class="overdue"[^>]*><title>1 already expired', html)
    with api.db.sessions() as session:
        [authority] = session.scalars(select(Authority)).all()
    assert f"CA <b>{authority.name}</b> expires" in html
    live = section(html, "campaigns")
    assert "spring renewal" in live and "running" in live
    assert "token.created" in section(html, "audit") or "inventory." in section(html, "audit")
    assert page(api, "/dashboard/campaigns").count("spring renewal") == 1


def test_the_timeline_reaches_the_longest_validity_and_the_latest_expiry(
    api: ApiHarness,
) -> None:
    fleet(api)
    sign_in(api, api.token("auditor"))
    with api.db.session() as session:
        stockholm = session.scalars(select(Site).where(Site.name == "branch-stockholm")).one()
        stockholm.default_validity_days = 825  # the longest a site may issue
    weeks = re.findall(r'class="week" data-week="(\d+)"', page(api, "/dashboard/"))
    assert len(weeks) == 118  # 825 days, rounded up to whole weeks
    # Another site's reader sees its own span: Aarhus issues for 397 days.
    sign_in(api, api.token("operator", site="branch-aarhus"))
    assert len(re.findall(r'class="week"', page(api, "/dashboard/"))) == 57
    # A certificate that outlives every site's validity (issued under an older policy)
    # stretches the timeline to its expiry, which it then sits in.
    sign_in(api, api.token("auditor"))
    with api.db.session() as session:
        [certificate] = session.scalars(
            select(Certificate).join(Host).where(Host.name == "hq-rec01")
        ).all()
        certificate.not_after = api.clock.now() + dt.timedelta(days=1000, hours=1)
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', page(api, "/dashboard/"))]
    assert len(counts) == 143 and counts[142] == 1  # day 1000 is in week 143


def test_days_left_are_counted_as_the_cli_counts_them(api: ApiHarness) -> None:
    """Whole days, floored (shared.clock.days_left): the hosts page and the expiry report
    the CLI prints say the same number for the same certificate."""
    fleet(api)
    sign_in(api, api.token("auditor"))
    rows = dict(
        re.findall(r'<tr data-host="([\w-]+)">(.*?)</tr>', page(api, "/dashboard/hosts"), re.S)
    )
    report = api.get("/api/v1/reports/expiry", query_string={"within_days": 400}).get_json()
    by_host = {c["host"]: c["days_left"] for c in report["certificates"]}
    assert by_host["hq-mgmt01"] == 100 and by_host["sto-rec01"] == -1 and by_host["hq-rec01"] == 10
    for host, days in by_host.items():
        assert re.search(rf'class="num[^"]*">{days}</td>', rows[host]), (host, days)


def test_hosts_show_certificate_delivery_and_verification(api: ApiHarness) -> None:
    fleet(api)
    sign_in(api, api.token("auditor"))
    html = page(api, "/dashboard/hosts?site=branch-aarhus")
    rows = dict(re.findall(r'<tr data-host="([\w-]+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {"aar-rec01", "aar-rec02"}
    assert "failed (ssh)" in rows["aar-rec01"] and "connection refused" in rows["aar-rec01"]
    assert ">none<" in rows["aar-rec02"]  # no certificate yet
    every = page(api, "/dashboard/hosts")
    assert every.count("<tr data-host=") == 11


def test_an_operator_of_one_site_sees_only_that_site(api: ApiHarness) -> None:
    fleet(api)
    sign_in(api, api.token("operator", site="branch-aarhus"))
    html = page(api, "/dashboard/")
    assert "branch-aarhus" in section(html, "sites")
    assert "hq-copenhagen" not in section(html, "sites")
    assert "hq-rec01" not in page(api, "/dashboard/hosts")
    weeks = [int(c) for c in re.findall(r'data-count="(\d+)"', html)]
    # Its own aar-rec01 only; headquarters' and Stockholm's (the overdue one) are not counted.
    assert sum(weeks) == 1 and weeks[56] == 1 and 'class="overdue"' not in html


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, name
    return match.group(1)


def cells(html: str) -> dict[str, list[str]]:
    """A table's rows by their first cell's text, each the text of its other cells."""
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        texts = [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if texts:
            rows[texts[0]] = texts[1:]
    return rows


def test_hosts_filtered_by_the_problem_an_operator_looks_for(api: ApiHarness) -> None:
    fleet(api)
    with api.db.session() as session:  # hq-mgmt01's new certificate is installed, not bound
        host_id, certificate_id = session.execute(
            select(Host.id, Certificate.id)
            .join(Certificate, Certificate.host_id == Host.id)
            .where(Host.name == "hq-mgmt01")
        ).one()
        session.add(
            Delivery(
                host_id=host_id,
                kind="certificate",
                certificate_id=certificate_id,
                method="agent",
                status="installed",
                probe_state="mismatch",
            )
        )
    sign_in(api, api.token("auditor"))

    def shown(query: str) -> set[str]:
        html = page(api, f"/dashboard/hosts{query}")
        return set(re.findall(r'<tr data-host="([\w-]+)">', html))

    assert shown("?problem=expiring") == {"hq-rec01", "sto-rec01"}  # 10 days; expired
    assert shown("?problem=delivery-failed") == {"aar-rec01"}
    assert shown("?problem=not-bound") == {"hq-mgmt01"}
    unissued = {"hq-event01", "hq-mobile01", "hq-rec02", "hq-recfo01", "hq-ops-client01"}
    assert shown("?problem=no-certificate") == unissued | {"aar-rec02", "sto-rec02"}
    assert shown("?problem=no-certificate&site=branch-aarhus") == {"aar-rec02"}
    assert len(shown("?problem=nonsense")) == 11  # an unknown filter shows every host
    overview = page(api, "/dashboard/")
    assert "/dashboard/hosts?problem=expiring" in overview
