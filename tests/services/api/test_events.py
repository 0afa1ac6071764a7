"""/api/v1/events through the real app on both databases: newest-first pages, every filter,
site scoping, the indexes the pages read, and the audit Events of certificate exports and of
token use."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from services.api.auth import Principal, touch
from services.api.events import service
from shared import events
from shared.db.models import ApiToken, Authority, Event, Host
from shared.tokens import create_token
from tests import factories
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_certificates import PFX_PASSWORD, issue_all

EVENTS = "/api/v1/events"
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Trail:
    """Two sites with a host each, and seven events ten days ago, one an hour."""

    base: dt.datetime
    ids: dict[str, int]
    hq: int
    aarhus: int
    hq_host: int
    aarhus_host: int


def seed(api: ApiHarness) -> Trail:
    base = api.clock.now().replace(microsecond=0) - dt.timedelta(days=10)
    with api.db.session() as session:
        authority = session.scalars(select(Authority)).one()
        hq = factories.make_site(session, authority, "hq")
        aarhus = factories.make_site(session, authority, "aarhus")
        hq_host = factories.make_host(session, hq, "hq-rec01")
        aarhus_host = factories.make_host(session, aarhus, "aar-rec01")
        plan: list[tuple[str, str, int | None, int | None, tuple[str, int] | None]] = [
            ("issued", "certificate.issued", hq.id, hq_host.id, ("certificate", 7)),
            ("exported", "certificate.exported", hq.id, hq_host.id, ("certificate", 7)),
            ("revoked", "certificate.revoked", aarhus.id, aarhus_host.id, ("certificate", 8)),
            ("plural", "certificates.odd", hq.id, None, None),
            ("channel", "notification_channel.created", None, None, ("notification_channel", 1)),
            ("lookalike", "notificationXchannel.created", None, None, None),
            ("campaign", "campaign.created", aarhus.id, None, ("campaign", 1)),
        ]
        rows = {}
        for hour, (label, kind, site_id, host_id, subject) in enumerate(plan):
            actor = "token:9:ops" if label in ("exported", "revoked") else "issuer"
            rows[label] = events.record(
                session,
                kind,
                actor,
                at=base + hour * HOUR,
                site_id=site_id,
                host_id=host_id,
                subject=subject,
            )
        session.commit()
        return Trail(
            base, {k: v.id for k, v in rows.items()}, hq.id, aarhus.id, hq_host.id, aarhus_host.id
        )


def pages(api: ApiHarness, token: str | None = None, **query: Any) -> list[dict[str, Any]]:
    """Every event the query reaches, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        args = {**query, **({"cursor": cursor} if cursor else {})}
        response = api.get(EVENTS, token=token, query_string=args)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert len(page["items"]) <= int(query.get("limit", 100))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def labels(trail: Trail, items: list[dict[str, Any]]) -> list[str]:
    """The seeded events among `items`, by label, in the order given."""
    by_id = {v: k for k, v in trail.ids.items()}
    return [by_id[i["id"]] for i in items if i["id"] in by_id]


def test_pages_run_newest_first_through_every_event(api: ApiHarness) -> None:
    trail = seed(api)
    with api.db.session() as session:
        for n in range(30):
            events.record(session, "test.filler", "tester", at=api.clock.now(), n=n)
        session.commit()
    first = api.get(EVENTS, query_string={"limit": 7}).get_json()
    assert len(first["items"]) == 7 and first["next_cursor"]
    assert first["items"][0]["kind"] == "token.used"  # this very request's token, just now
    assert [i["data"].get("n") for i in first["items"][1:]] == [29, 28, 27, 26, 25, 24]
    walked = [i["id"] for i in pages(api, limit=7)]
    with api.db.session() as session:
        assert walked == list(session.scalars(select(Event.id).order_by(Event.id.desc())))
    assert labels(trail, pages(api, limit=1000)) == list(reversed(trail.ids))
    shown = next(i for i in pages(api) if i["id"] == trail.ids["revoked"])
    assert shown == {
        "id": trail.ids["revoked"],
        "at": (trail.base + 2 * HOUR).isoformat(),
        "kind": "certificate.revoked",
        "actor": "token:9:ops",
        "site_id": trail.aarhus,
        "host_id": trail.aarhus_host,
        "subject_type": "certificate",
        "subject_id": 8,
        "data": {},
    }


def test_each_filter_narrows_the_trail(api: ApiHarness) -> None:
    trail = seed(api)

    def only(**query: Any) -> list[str]:
        return labels(trail, pages(api, **query))

    assert only(site="hq") == ["plural", "exported", "issued"]
    assert only(site="aarhus", limit=1) == ["campaign", "revoked"]
    for unknown in ({"site": "nowhere"}, {"host": "nowhere"}):  # a name that is nothing
        missing = api.get(EVENTS, query_string=unknown)
        assert (
            missing.status_code == 404
            and "'nowhere' does not exist" in missing.get_json()["message"]
        )
    assert only(host="hq-rec01") == ["exported", "issued"]
    assert only(kind="certificate.revoked") == ["revoked"]
    assert only(kind="certificate.") == ["revoked", "exported", "issued"]
    assert only(kind="certificate") == []  # not a prefix without its dot
    assert only(kind="notification_channel.") == ["channel"]  # `_` is no wildcard
    assert only(actor="token:9:ops") == ["revoked", "exported"]
    assert only(since=(trail.base + 5 * HOUR).isoformat()) == ["campaign", "lookalike"]
    assert only(until=(trail.base + HOUR).isoformat()) == ["issued"]
    assert only(
        since=(trail.base + HOUR).isoformat(), until=(trail.base + 3 * HOUR).isoformat()
    ) == ["revoked", "exported"]
    naive = (trail.base + 6 * HOUR).replace(tzinfo=None).isoformat()  # read as UTC
    assert only(since=naive) == ["campaign"]
    assert only(subject_type="certificate", subject_id=7) == ["exported", "issued"]
    assert only(subject_type="campaign") == ["campaign"]
    assert only(site="hq", kind="certificate.", actor="issuer") == ["issued"]
    assert only(site="aarhus", host="hq-rec01") == []


def test_a_site_scoped_operator_sees_only_its_sites_events(api: ApiHarness) -> None:
    trail = seed(api)
    aarhus = api.token("operator", site="aarhus")
    seen = pages(api, token=aarhus)
    assert {i["site_id"] for i in seen} == {trail.aarhus}
    assert labels(trail, seen) == ["campaign", "revoked"]
    assert "token.used" in {i["kind"] for i in seen}  # its own use, at its site
    elsewhere = api.get(EVENTS, token=aarhus, query_string={"site": "hq"})
    nowhere = api.get(EVENTS, token=aarhus, query_string={"site": "hx"})
    assert elsewhere.status_code == nowhere.status_code == 404  # alike: nothing learned
    assert elsewhere.get_json()["message"].replace("hq", "hx") == nowhere.get_json()["message"]
    assert pages(api, token=aarhus, kind="notification_channel.") == []
    for reader in (api.token("operator"), api.token("auditor"), api.admin_token):
        assert len(labels(trail, pages(api, token=reader))) == len(trail.ids)

    with api.db.session() as session:
        agent = create_token(
            session,
            name="agent:hq-rec01",
            role="agent",
            site_id=None,
            host_id=trail.hq_host,
            created_by="test",
            now=api.clock.now(),
        )
        session.commit()
    assert api.get(EVENTS, token=agent.secret).status_code == 403
    assert api.get(EVENTS, token="").status_code == 401


def test_invalid_queries_are_422_naming_the_field(api: ApiHarness) -> None:
    for query, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00"}, "until"),
        ({"subject_id": 7}, "subject_id"),
        ({"subject_type": "certificate", "subject_id": 0}, "subject_id"),
        ({"kind": ""}, "kind"),
        ({"kind": "x" * 65}, "kind"),
    ]:
        response = api.get(EVENTS, query_string=query)
        assert response.status_code == 422, (query, response.get_json())
        errors = response.get_json()["errors"]
        assert field in errors.get("query", errors), (query, errors)
    assert api.get(EVENTS, query_string={"limit": 1000}).status_code == 200


def explain(session: Session, args: dict[str, Any], who: Principal) -> str:
    query = service.list_query(session, {**EMPTY_ARGS, **args}, who, 0)
    assert query is not None
    bind = session.get_bind()
    sql = str(query.compile(dialect=bind.dialect, compile_kwargs={"literal_binds": True}))
    if bind.dialect.name == "sqlite":
        return " ".join(str(row[-1]) for row in session.execute(text("EXPLAIN QUERY PLAN " + sql)))
    return " ".join(str(row[0]) for row in session.execute(text("EXPLAIN " + sql)))


EMPTY_ARGS: dict[str, Any] = {
    "limit": 100,
    "site": None,
    "host": None,
    "kind": None,
    "actor": None,
    "since": None,
    "until": None,
    "subject_type": None,
    "subject_id": None,
}


def test_pages_read_an_index_that_ends_in_the_id(api: ApiHarness) -> None:
    """Each equality filter walks one index range backwards: no sort, no scan of other rows."""
    trail = seed(api)
    with api.db.session() as session:
        session.execute(
            insert(Event),
            [
                {
                    "at": trail.base,
                    "kind": f"test.kind{n % 40}",
                    "actor": "tester",
                    "site_id": n % 40,
                    "host_id": n % 40,
                    "subject_type": "certificate",
                    "subject_id": n % 40,
                    "data": {},
                }
                for n in range(4000)
            ],
        )
        session.commit()
        if session.get_bind().dialect.name == "postgresql":
            # An SSD's random reads (the usual production setting): at the default 4 a table
            # this small is cheaper to sort than to walk by index.
            session.execute(text("ANALYZE events"))
            session.execute(text("SET random_page_cost = 1.1"))
        auditor = Principal(1, "auditor-t", "auditor", None)
        scoped = Principal(2, "operator-t", "operator", trail.aarhus)
        for args, who, index in [
            ({}, scoped, "ix_events_site_id_id"),
            ({"site": "hq"}, auditor, "ix_events_site_id_id"),
            ({"host": "hq-rec01"}, auditor, "ix_events_host_id_id"),
            ({"kind": "certificate.issued"}, auditor, "ix_events_kind_id"),
            ({"subject_type": "certificate", "subject_id": 7}, auditor, "ix_events_subject_id"),
        ]:
            plan = explain(session, args, who)
            assert index in plan, (args, plan)
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, (args, plan)


def test_every_certificate_export_is_an_event_with_its_actor(api: ApiHarness) -> None:
    api.apply_inventory()
    [request] = issue_all(api, ["hq-rec01"])
    cert_id = request["certificate_id"]
    auditor, operator = api.token("auditor"), api.token("operator")
    assert api.get(f"/api/v1/certificates/{cert_id}/pem", token=auditor).status_code == 200
    assert api.get(f"/api/v1/certificates/{cert_id}/der", token=auditor).status_code == 200
    pfx = api.post(
        f"/api/v1/certificates/{cert_id}/pfx", token=operator, json={"password": PFX_PASSWORD}
    )
    assert pfx.status_code == 200
    assert api.get(f"/api/v1/certificates/{cert_id}/pem", token=operator).status_code == 200
    exports = pages(
        api, kind="certificate.exported", subject_type="certificate", subject_id=cert_id
    )
    assert [(e["data"]["format"], e["actor"].split(":")[-1]) for e in exports] == [
        ("pem", "operator-t"),
        ("pfx", "operator-t"),
        ("der", "auditor-t"),
        ("pem", "auditor-t"),
    ]
    with api.db.session() as session:
        host = session.scalars(select(Host).where(Host.name == "hq-rec01")).one()
        host_id, site_id = host.id, host.site_id
    for event in exports:
        assert event["actor"].startswith("token:")
        assert event["at"] == api.clock.now().isoformat()
        assert event["host_id"] == host_id and event["site_id"] == site_id
    elsewhere = api.token("operator", site="branch-aarhus")
    assert api.get(f"/api/v1/certificates/{cert_id}/pem", token=elsewhere).status_code == 404
    assert len(pages(api, kind="certificate.exported")) == 4  # a refusal exports nothing


def token_uses(api: ApiHarness, token_id: int) -> list[dict[str, Any]]:
    return pages(api, kind="token.used", subject_type="api_token", subject_id=token_id)


def test_token_use_is_an_event_once_per_clock_hour(api: ApiHarness) -> None:
    start = api.clock.now()
    api.clock.advance(start.replace(minute=5, second=0) + HOUR - start)  # the next hh:05:00
    secret = api.token("auditor")
    with api.db.session() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == "auditor-t")).one()
        token_id, prefix = token.id, token.prefix

    def use(after: dt.timedelta) -> None:
        api.clock.advance(after)
        assert api.get("/api/v1/sites", token=secret).status_code == 200

    first = api.clock.now()
    for _ in range(3):
        use(dt.timedelta(0))
    use(dt.timedelta(minutes=2))  # hh:07, touched, same hour
    use(dt.timedelta(minutes=52, seconds=30))  # hh:59:30
    assert len(token_uses(api, token_id)) == 1
    with api.db.session() as session:
        stored = session.get(ApiToken, token_id)
        assert stored is not None and stored.last_used_at == api.clock.now()
    use(dt.timedelta(seconds=40))  # the next hour's :00:10, within a minute of the last touch
    second = api.clock.now()
    use(dt.timedelta(minutes=30))
    uses = token_uses(api, token_id)
    assert [u["at"] for u in uses] == [second.isoformat(), first.isoformat()]
    for event in uses:
        assert event["actor"] == f"token:{token_id}:auditor-t"
        assert event["data"] == {"prefix": prefix, "role": "auditor"}
        assert event["site_id"] is None and event["host_id"] is None
    trail = json.dumps(pages(api))
    assert secret not in trail and secret[len(prefix) :] not in trail


def test_an_agent_tokens_use_is_filed_under_its_hosts_site(api: ApiHarness) -> None:
    trail = seed(api)
    with api.db.session() as session:
        agent = create_token(
            session,
            name="agent:aar-rec01",
            role="agent",
            site_id=None,
            host_id=trail.aarhus_host,
            created_by="test",
            now=api.clock.now(),
        )
        session.commit()
    assert api.get("/api/v1/agent/bundle", token=agent.secret).status_code == 204
    [used] = token_uses(api, agent.token.id)
    assert used["site_id"] == trail.aarhus and used["host_id"] == trail.aarhus_host
    assert used["actor"] == f"token:{agent.token.id}:agent:aar-rec01"


def test_two_workers_touching_a_token_record_one_use(api: ApiHarness) -> None:
    """Both load the token before either writes: the conditional update lets one through."""
    api.get("/api/v1/sites")
    api.clock.advance(HOUR)
    admin = select(ApiToken).where(ApiToken.role == "admin")
    with api.db.session() as first, api.db.session() as second:
        tokens = [first.scalars(admin).one(), second.scalars(admin).one()]
        assert tokens[0].last_used_at == tokens[1].last_used_at
        for session, token in zip((first, second), tokens, strict=True):
            who = Principal(token.id, token.name, token.role, token.site_id)
            touch(session, token, who, api.clock.now())
        admin_id = tokens[0].id
    assert [u["at"] for u in token_uses(api, admin_id)] == [
        api.clock.now().isoformat(),
        (api.clock.now() - HOUR).isoformat(),
    ]
