"""/api/v1/campaigns through the real app on both databases: creating (and dry runs),
refusals, steering, the items listing and CA rotations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from shared.contracts import QUEUE_EXPIRY, QUEUE_ISSUE, TASK_ADVANCE_CAMPAIGNS
from shared.db.models import Authority, Campaign, CampaignItem, Event
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_certificates import issue_all

CAMPAIGNS = "/api/v1/campaigns"
HQ = "hq-copenhagen"
ISSUED = {
    HQ: ["hq-rec01", "hq-rec02", "hq-mgmt01"],
    "branch-aarhus": ["aar-rec01", "aar-rec02"],
    "branch-stockholm": ["sto-rec01"],
}


def fleet(api: ApiHarness) -> None:
    """The example inventory, with a certificate for each host in ISSUED."""
    api.apply_inventory()
    issue_all(api, [host for hosts in ISSUED.values() for host in hosts])


def start(api: ApiHarness, token: str | None = None, **body: Any) -> Any:
    return api.post(CAMPAIGNS, json={"name": "spring renewal", **body}, token=token)


def active_certificates(api: ApiHarness, site: str | None = None) -> int:
    listing = api.get("/api/v1/certificates", query_string={"status": "active", "site": site or ""})
    return len(listing.get_json()["items"])


def stored_campaigns(api: ApiHarness) -> int:
    with api.db.session() as session:
        return int(session.scalar(select(func.count(Campaign.id))) or 0)


def test_a_renewal_is_stored_with_its_items_and_announced_by_ids(api: ApiHarness) -> None:
    fleet(api)
    api.redis.flushdb()
    response = start(api, selector={"sites": [HQ]}, rate_per_minute=30)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"].endswith(f"{CAMPAIGNS}/{body['id']}")
    assert body["kind"] == "renew" and body["status"] == "running" and body["phase"] is None
    assert body["selector"] == {"sites": [HQ]} and body["rate_per_minute"] == 30
    assert body["per_site_concurrency"] == 2 and body["respect_windows"] is True
    assert body["created_by"].startswith("token:") and body["finished_at"] is None
    assert body["counts"]["total"] == active_certificates(api, HQ) == len(ISSUED[HQ])
    assert body["counts"]["pending"] == len(ISSUED[HQ]) and body["counts"]["finished"] == 0

    [message] = api.queued_messages(QUEUE_EXPIRY)
    assert message["envelope"]["headers"]["task"] == TASK_ADVANCE_CAMPAIGNS
    args, kwargs, _ = message["body"]
    assert args == [] and kwargs == {}
    for secret in (b"BEGIN", b"hq-rec01", TEST_CA_PASSPHRASE.encode(), TEST_DATA_KEY.encode()):
        assert secret not in message["raw"]

    everything = start(api, name="all of it", selector={"all": True}, rate_per_minute=None)
    assert everything.status_code == 201, everything.get_json()
    assert everything.get_json()["counts"]["total"] == active_certificates(api) == 6
    assert everything.get_json()["rate_per_minute"] is None  # null: unthrottled
    listing = api.get(CAMPAIGNS, token=api.token("auditor")).get_json()
    assert [c["name"] for c in listing] == ["all of it", "spring renewal"]  # newest first
    assert [c["counts"]["total"] for c in listing] == [6, 3]
    assert api.get(CAMPAIGNS, query_string={"status": "paused"}).get_json() == []
    assert api.get(f"{CAMPAIGNS}/{body['id']}").get_json()["counts"] == body["counts"]
    assert api.get(f"{CAMPAIGNS}/999").status_code == 404
    with api.db.session() as session:
        items = session.scalars(select(CampaignItem).where(CampaignItem.campaign_id == body["id"]))
        assert sorted(i.host.name for i in items) == sorted(ISSUED[HQ])
        assert session.scalar(select(Event.id).where(Event.kind == "campaign.created"))


def test_a_dry_run_lists_per_site_and_stores_nothing(api: ApiHarness) -> None:
    fleet(api)
    api.redis.flushdb()
    response = start(api, selector={"sites": [HQ, "branch-aarhus"]}, dry_run=True)
    assert response.status_code == 200, response.get_json()
    plan = response.get_json()
    assert plan["total"] == 5 and plan["kind"] == "renew"
    assert [(s["site"], s["certificates"]) for s in plan["sites"]] == [
        ("branch-aarhus", 2),
        (HQ, 3),
    ]
    assert {h["host"] for h in plan["sites"][1]["hosts"]} == set(ISSUED[HQ])
    assert "Location" not in response.headers
    assert stored_campaigns(api) == 0
    assert api.redis.llen(QUEUE_EXPIRY) == 0 and api.redis.llen(QUEUE_ISSUE) == 0


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"selector": {}}, "selector"),
    ({"selector": {"all": False}}, "selector"),
    ({"selector": {"colour": "red"}}, "selector"),
    ({"selector": {"sites": ["nowhere"]}}, "sites"),
    ({"selector": {"hosts": ["no-such-host"]}}, "hosts"),
    ({"selector": {"authority": "No Such CA"}}, "authority"),
    ({"selector": {"authority": 5}}, "selector"),
    ({"selector": {"expiring_within_days": -1}}, "selector"),
    ({"selector": {"all": True}, "rate_per_minute": 0}, "rate_per_minute"),
    ({"selector": {"all": True}, "max_failures": 100001}, "max_failures"),
    ({"selector": {"all": True}, "ack_share": 0.5}, "ack_share"),
    ({"selector": {"all": True}, "kind": "revoke"}, "kind"),
    ({"selector": {"all": True}, "name": ""}, "name"),
    ({"selector": {"all": True}, "colour": "red"}, "colour"),
    ({"selector": ["all"]}, "selector"),
]


def test_invalid_campaigns_are_422_naming_the_field(api: ApiHarness) -> None:
    fleet(api)
    for body, field in INVALID:
        for dry_run in (False, True):
            response = start(api, dry_run=dry_run, **body)
            assert response.status_code == 422, (body, response.get_json())
            errors = response.get_json()["errors"]
            assert field in errors.get("json", errors), (body, errors)
    nothing = start(api, selector={"hosts": ["hq-ops-client01"]})  # a client: no certificate
    assert nothing.status_code == 422 and "selector" in nothing.get_json()["errors"]
    assert (
        start(api, selector={"hosts": ["hq-ops-client01"]}, dry_run=True).get_json()["total"] == 0
    )
    assert stored_campaigns(api) == 0


def test_auditors_and_operators_of_other_sites_are_refused(api: ApiHarness) -> None:
    fleet(api)
    auditor = api.token("auditor")
    aarhus = api.token("operator", site="branch-aarhus")
    assert start(api, auditor, selector={"all": True}).status_code == 403
    for selector, status in (
        ({"sites": [HQ]}, 404),  # another site's: as if it did not exist
        ({"sites": ["branch-aarhus", HQ]}, 404),
        ({"all": True}, 403),  # a scoped token must name its site
        ({"hosts": ["aar-rec01"]}, 403),
    ):
        for dry_run in (False, True):
            refused = start(api, aarhus, selector=selector, dry_run=dry_run)
            assert refused.status_code == status, (selector, refused.get_json())
    assert stored_campaigns(api) == 0

    own = start(api, aarhus, selector={"sites": ["branch-aarhus"], "hosts": ["aar-rec01"]})
    assert own.status_code == 201 and own.get_json()["counts"]["total"] == 1
    fleetwide = start(api, api.token("operator"), selector={"all": True}).get_json()["id"]
    assert api.post(f"{CAMPAIGNS}/{fleetwide}/pause", token=aarhus).status_code == 404
    assert api.post(f"{CAMPAIGNS}/{fleetwide}/pause", token=auditor).status_code == 403
    assert api.post(f"{CAMPAIGNS}/{own.get_json()['id']}/pause", token=aarhus).status_code == 200
    # A fleet-wide campaign is not confined to aarhus: its operator does not see it at all.
    assert api.get(f"{CAMPAIGNS}/{fleetwide}/items", token=aarhus).status_code == 404
    assert [c["id"] for c in api.get(CAMPAIGNS, token=aarhus).get_json()] == [own.get_json()["id"]]
    assert len(api.get(f"{CAMPAIGNS}/{fleetwide}/items", token=auditor).get_json()["items"]) == 6


def test_pause_resume_cancel_and_impossible_transitions(api: ApiHarness) -> None:
    fleet(api)
    campaign = start(api, selector={"sites": [HQ]}).get_json()
    path = f"{CAMPAIGNS}/{campaign['id']}"
    api.redis.flushdb()

    paused = api.post(f"{path}/pause")
    assert paused.status_code == 200, paused.get_json()
    assert paused.get_json()["status"] == "paused"
    assert paused.get_json()["reason"].startswith("paused by token:")
    assert api.post(f"{path}/pause").status_code == 409
    assert api.redis.llen(QUEUE_EXPIRY) == 0  # pausing asks nothing of the watcher

    with api.db.session() as session:  # the watcher would record a failure like this
        session.execute(
            update(CampaignItem)
            .where(CampaignItem.id == select(func.min(CampaignItem.id)).scalar_subquery())
            .values(status="failed", error="boom", finished_at=api.clock.now())
        )
        session.commit()
    assert api.get(path).get_json()["counts"]["failed"] == 1
    resumed = api.post(f"{path}/resume", json={"retry_failed": True})
    assert resumed.status_code == 200, resumed.get_json()
    assert resumed.get_json()["status"] == "running" and resumed.get_json()["reason"] is None
    assert resumed.get_json()["counts"]["failed"] == 0
    assert resumed.get_json()["counts"]["pending"] == len(ISSUED[HQ])
    assert len(api.queued_messages(QUEUE_EXPIRY)) == 1  # advance now, not at the next beat
    assert api.post(f"{path}/resume").status_code == 409  # already running, nothing to retry

    cancelled = api.post(f"{path}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert cancelled.get_json()["counts"]["cancelled"] == len(ISSUED[HQ])
    for action in ("resume", "pause", "cancel"):
        assert api.post(f"{path}/{action}").status_code == 409, action
    assert api.post(f"{CAMPAIGNS}/999/cancel").status_code == 404
    assert api.post(f"{path}/resume", json={"retry_failed": "often"}).status_code == 422


def test_items_page_by_cursor_and_filter_by_status(api: ApiHarness) -> None:
    fleet(api)
    campaign = start(api, selector={"all": True}).get_json()
    path = f"{CAMPAIGNS}/{campaign['id']}/items"
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        page = api.get(path, query_string={"limit": 4, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.get_json()
        seen += page.get_json()["items"]
        pages += 1
        cursor = page.get_json()["next_cursor"]
        if not cursor:
            break
    assert pages == 2 and len(seen) == 6
    assert [i["id"] for i in seen] == sorted({i["id"] for i in seen})
    assert {i["host"] for i in seen} == {h for hosts in ISSUED.values() for h in hosts}
    first = seen[0]
    assert first["status"] == "pending" and first["certificate_id"] and first["site_id"]
    assert first["request_id"] is None and first["started_at"] is None and first["error"] is None
    assert api.get(path, query_string={"status": "failed"}).get_json()["items"] == []
    assert api.get(path, query_string={"cursor": "not-a-cursor"}).status_code == 422
    assert api.get(path, query_string={"status": "lost"}).status_code == 422
    assert api.get(f"{CAMPAIGNS}/999/items").status_code == 404


def test_a_rotation_needs_admin_and_asks_for_a_pending_authority(api: ApiHarness) -> None:
    fleet(api)
    api.redis.flushdb()
    rotation = {
        "kind": "rotate_authority",
        "selector": {"authority": "Test Root"},
        "new_authority": {"name": "Test Root 2", "key_bits": 3072},
        "ack_share": 0.9,
    }
    assert start(api, api.token("operator"), **rotation).status_code == 403
    plan = start(api, dry_run=True, **rotation)
    assert plan.status_code == 200, plan.get_json()
    assert plan.get_json()["new_authority"] == "Test Root 2" and plan.get_json()["total"] == 6
    assert plan.get_json()["clients"] == 1 and plan.get_json()["retires_old_authority"] is True

    response = start(api, **rotation)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["phase"] == "create_authority" and body["ack_share"] == 0.9
    assert body["counts"]["total"] == 0  # items come when the re-issue phase starts
    with api.db.session() as session:
        new = session.get_one(Authority, body["new_authority_id"])
        assert (new.name, new.status, new.key_bits) == ("Test Root 2", "pending", 3072)
        assert body["authority_id"] == session.scalar(
            select(Authority.id).where(Authority.name == "Test Root")
        )
    assert [m["body"][1] for m in api.queued_messages()] == [{"authority_id": new.id}]
    assert len(api.queued_messages(QUEUE_EXPIRY)) == 1
    assert start(api, **{**rotation, "new_authority": {}}).status_code == 409  # one at a time
    operator = api.token("operator")
    assert api.post(f"{CAMPAIGNS}/{body['id']}/pause", token=operator).status_code == 403
    bad_bits = start(api, **{**rotation, "new_authority": {"key_bits": 1024}})
    assert bad_bits.status_code == 422
    assert "new_authority" in bad_bits.get_json()["errors"]["json"]


def test_the_spec_documents_every_campaign_route(api: ApiHarness) -> None:
    paths = api.get("/api/v1/openapi.json", token="").get_json()["paths"]
    for path in (
        CAMPAIGNS,
        f"{CAMPAIGNS}/{{campaign_id}}",
        f"{CAMPAIGNS}/{{campaign_id}}/items",
        f"{CAMPAIGNS}/{{campaign_id}}/pause",
        f"{CAMPAIGNS}/{{campaign_id}}/resume",
        f"{CAMPAIGNS}/{{campaign_id}}/cancel",
    ):
        assert path in paths, path
        for method in {"get", "post"} & set(paths[path]):
            operation = paths[path][method]
            assert "200" in operation["responses"] or "201" in operation["responses"], path
    assert set(paths[CAMPAIGNS]["post"]["responses"]) >= {"200", "201", "422"}
