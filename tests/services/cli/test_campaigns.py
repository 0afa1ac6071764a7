"""`certfleet campaign` run in-process against the real API served over HTTP, with the
campaign moved along by the expiry watcher's own `advance` and the issuer's `issue_batch`."""

from __future__ import annotations

import json
import re
import threading

from sqlalchemy import func, select, update

from services.expiry_watcher.campaigns import advance
from shared import contracts
from shared.db.models import Campaign, CampaignItem, Host
from tests.services.api.test_certificates import issue_all
from tests.services.cli.conftest import ServedApi

AARHUS = ["aar-rec01", "aar-rec02"]


def fleet(served: ServedApi) -> None:
    """The example fleet, with Aarhus's hosts given no delivery method: an item's end is its
    certificate issued (no distributor runs here)."""
    served.harness.apply_inventory()
    with served.harness.db.session() as session:
        ids = session.scalars(select(Host.id).where(Host.name.in_(AARHUS))).all()
    for host_id in ids:
        changed = served.harness.call(
            "PATCH", f"/api/v1/hosts/{host_id}", json={"delivery": {"method": "none"}}
        )
        assert changed.status_code == 200, changed.get_json()
    issue_all(served.harness, [*AARHUS, "hq-rec01"])


def create(served: ServedApi, *args: str) -> int:
    result = served.cli("campaign", "create", "aarhus", "--site", "branch-aarhus", *args)
    assert result.exit_code == 0, result.output
    found = re.search(r"campaign (\d+) \('aarhus'\) started: 2 certificate\(s\)", result.output)
    assert found, result.output
    return int(found.group(1))


def drive(served: ServedApi, *, fail: str | None = None) -> list[contracts.Message]:
    """What the watcher and the issuer would do: start the items, sign, follow them up.
    `fail` names a host whose item the watcher found failed."""
    api, published = served.harness, []
    assert len(advance(api.db, published.append, api.clock).started) == 2
    if fail is not None:
        with api.db.session() as session:
            session.execute(
                update(CampaignItem)
                .where(
                    CampaignItem.host_id
                    == select(Host.id).where(Host.name == fail).scalar_subquery()
                )
                .values(status="failed", error="share unreachable", finished_at=api.clock.now())
            )
    api.run_issuer()
    advance(api.db, published.append, api.clock)
    return published


def test_dry_run_prints_per_site_and_stores_nothing(served: ServedApi) -> None:
    fleet(served)
    result = served.cli("campaign", "create", "spring", "--site", "branch-aarhus", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(r"branch-aarhus\s*│\s*2\s*│\s*aar-rec01, aar-rec02", result.output)
    assert "2 certificate(s) in all; dry run: nothing was stored" in result.output
    as_json = served.cli("-o", "json", "campaign", "create", "x", "--all", "--dry-run")
    plan = json.loads(as_json.stdout)
    assert plan["total"] == 3
    assert [(s["site"], s["certificates"]) for s in plan["sites"]] == [
        ("branch-aarhus", 2),
        ("hq-copenhagen", 1),
    ]
    rotation = served.cli("campaign", "rotate-ca", "Test Root", "--new-name", "R2", "--dry-run")
    assert rotation.exit_code == 0, rotation.output
    assert "rotate 'Test Root' -> 'R2'" in rotation.output and "retired" in rotation.output
    empty = served.cli("campaign", "create", "nothing")
    assert empty.exit_code == 1 and "the selector is empty" in empty.output
    with served.harness.db.session() as session:
        assert session.scalar(select(func.count(Campaign.id))) == 0


def test_create_show_steer_and_watch_to_the_end(served: ServedApi) -> None:
    fleet(served)
    campaign_id = create(served, "--ignore-windows", "--rate", "30")
    shown = served.cli("campaign", "show", str(campaign_id))
    assert shown.exit_code == 0, shown.output
    assert "running" in shown.output and "0/2 finished: pending 2" in shown.output
    assert "30/min, 2 per site, ignoring maintenance windows" in shown.output

    paused = served.cli("campaign", "pause", str(campaign_id))
    assert paused.exit_code == 0 and f"campaign {campaign_id}: paused" in paused.output
    assert "paused by token:" in paused.output
    waited = served.cli(
        "campaign", "watch", str(campaign_id), "--timeout", "0.5", "--interval", "0.1"
    )
    assert waited.exit_code == 2, waited.output
    assert "paused: paused by token:" in waited.output  # the reason, while waiting
    assert f"campaign {campaign_id} has not finished after 0.5s" in waited.output
    again = served.cli("campaign", "pause", str(campaign_id))
    assert again.exit_code == 1 and "409" in again.output
    resumed = served.cli("campaign", "resume", str(campaign_id), "--retry-failed")
    assert resumed.exit_code == 0 and f"campaign {campaign_id}: running" in resumed.output

    published = drive(served)
    assert {m.task for m in published} == {contracts.TASK_ISSUE_BATCH}
    done = served.cli(
        "campaign", "watch", str(campaign_id), "--interval", "0.1", "--timeout", "120"
    )
    assert done.exit_code == 0, done.output
    assert f"campaign {campaign_id} completed: 2/2 finished" in done.output
    listing = served.cli("-o", "json", "campaign", "list")
    [row] = json.loads(listing.stdout)
    assert (row["id"], row["status"], row["progress"]) == (campaign_id, "completed", "2/2")
    items = json.loads(served.cli("-o", "json", "campaign", "items", str(campaign_id)).stdout)
    assert sorted(i["host"] for i in items) == AARHUS
    assert {i["status"] for i in items} == {"issued"}  # no delivery method: issued is the end


def test_watch_follows_a_running_campaign_and_fails_with_its_items(served: ServedApi) -> None:
    fleet(served)
    campaign_id = create(served, "--ignore-windows")
    mover = threading.Timer(0.5, drive, args=(served,), kwargs={"fail": "aar-rec02"})
    mover.start()
    try:
        result = served.cli(
            "campaign", "watch", str(campaign_id), "--interval", "0.1", "--timeout", "60"
        )
    finally:
        mover.join()
    assert result.exit_code == 1, result.output
    assert f"campaign {campaign_id} completed: 2/2 finished" in result.output
    assert "failed 1" in result.output
    failed = served.cli("campaign", "items", str(campaign_id), "--status", "failed")
    assert "aar-rec02" in failed.output and "share unreachable" in failed.output
    cancelled = served.cli("campaign", "cancel", str(campaign_id))
    assert cancelled.exit_code == 1 and "completed" in cancelled.output


def test_a_rotation_is_watched_through_its_phases(served: ServedApi) -> None:
    fleet(served)
    started = served.cli(
        "campaign", "rotate-ca", "Test Root", "--new-name", "Test Root 2", "--ack-share", "0.5"
    )
    assert started.exit_code == 0, started.output
    assert "0 certificate(s), phase create_authority" in started.output
    campaign_id = re.search(r"campaign (\d+)", started.output).group(1)  # type: ignore[union-attr]
    waited = served.cli("campaign", "watch", campaign_id, "--timeout", "0.3", "--interval", "0.1")
    assert waited.exit_code == 2
    assert "create_authority" in waited.output
    operator = served.harness.token("operator")
    refused = served.cli("campaign", "pause", campaign_id, token=operator)
    assert refused.exit_code == 1 and "admin" in refused.output


def test_an_unthrottled_campaign_and_a_bad_rate(served: ServedApi) -> None:
    fleet(served)
    refused = served.cli("campaign", "create", "x", "--site", "branch-aarhus", "--rate", "0")
    assert refused.exit_code == 2 and "0 is not between 1 and 10000" in refused.output
    refused = served.cli("campaign", "create", "x", "--site", "branch-aarhus", "--rate", "fast")
    assert refused.exit_code == 2 and "neither a number nor 'unthrottled'" in refused.output
    campaign_id = create(served, "--rate", "unthrottled")
    shown = served.cli("campaign", "show", str(campaign_id))
    assert "unthrottled, 2 per site, within maintenance windows" in shown.output
    with served.harness.db.sessions() as session:
        assert session.get_one(Campaign, campaign_id).rate_per_minute is None
