"""/api/v1/notification-channels and the channel and site mutes, through the real app."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from shared.db.models import Event, NotificationChannel, Site
from tests.services.api.conftest import ApiHarness

CHANNELS = "/api/v1/notification-channels"
SLACK_URL = "https://hooks.slack.example.com/services/T01/B02/tOkEn-in-the-path"


def make_site(api: ApiHarness, name: str) -> int:
    response = api.post("/api/v1/sites", json={"name": name, "dns_suffixes": [f"{name}.example"]})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def create(api: ApiHarness, token: str | None = None, **body: Any) -> Any:
    return api.post(CHANNELS, json=body, token=token)


def iso(when: dt.datetime) -> str:
    return when.isoformat()


def test_admin_creates_channels_and_readers_list_them(api: ApiHarness) -> None:
    north = make_site(api, "north")
    make_site(api, "south")
    mail = create(
        api,
        name="ops-mail",
        kind="email",
        target=" ops@example.com ,nvr@example.org",
        thresholds=[7, 30, 0, 7],
    )
    assert mail.status_code == 201, mail.get_json()
    assert mail.get_json()["target"] == "ops@example.com, nvr@example.org"
    assert mail.get_json()["thresholds"] == [30, 7, 0]
    assert mail.get_json()["site_id"] is None and mail.get_json()["muted_until"] is None
    hook = create(
        api,
        name="north-chat",
        kind="webhook",
        target=SLACK_URL,
        site="north",
        settings={"secret_env": "CERTFLEET_SECRET_CHAT", "allow_http": "false"},
    )
    assert hook.status_code == 201, hook.get_json()
    assert hook.get_json()["target"] == "https://hooks.slack.example.com/…"  # token hidden
    assert hook.get_json()["thresholds"] == [30, 14, 7, 1, 0]
    assert hook.get_json()["site_id"] == north
    assert hook.get_json()["settings"] == {
        "secret_env": "CERTFLEET_SECRET_CHAT",
        "allow_http": False,
    }
    create(api, name="south-mail", kind="email", target="s@example.com", site="south")
    with api.db.session() as session:
        stored = session.scalars(select(NotificationChannel).order_by(NotificationChannel.id))
        assert next(iter(stored)).target == "ops@example.com, nvr@example.org"
        assert (
            session.scalar(
                select(NotificationChannel.target).where(NotificationChannel.name == "north-chat")
            )
            == SLACK_URL
        )
        assert session.scalar(
            select(Event.kind).where(Event.kind == "notification_channel.created").limit(1)
        )

    auditor = api.get(CHANNELS, token=api.token("auditor")).get_json()
    assert [c["name"] for c in auditor] == ["ops-mail", "north-chat", "south-mail"]
    operator = api.get(CHANNELS, token=api.token("operator", site="north")).get_json()
    assert [c["name"] for c in operator] == ["ops-mail", "north-chat"]
    refused = create(api, api.token("operator"), name="x", kind="email", target="x@example.com")
    assert refused.status_code == 403
    assert create(api, name="ops-mail", kind="email", target="y@example.com").status_code == 409


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"kind": "sms", "target": "+4512345678"}, "kind"),
    ({"kind": "email", "target": "ops@example.com, not-an-address"}, "target"),
    ({"kind": "email", "target": " , "}, "target"),
    ({"kind": "email", "target": "a@example.com", "settings": {"allow_http": True}}, "settings"),
    ({"kind": "webhook", "target": "http://chat.local/hook"}, "target"),
    ({"kind": "webhook", "target": "ftp://chat.example.com/hook"}, "target"),
    ({"kind": "webhook", "target": SLACK_URL, "settings": {"secret": "x"}}, "settings"),
    ({"kind": "webhook", "target": SLACK_URL, "settings": {"secret_env": "A B"}}, "settings"),
    ({"kind": "email", "target": "a@example.com", "thresholds": [826]}, "thresholds"),
    ({"kind": "email", "target": "a@example.com", "thresholds": [-1]}, "thresholds"),
    ({"kind": "email", "target": "a@example.com", "thresholds": ["7"]}, "thresholds"),
    ({"kind": "email", "target": "a@example.com", "site": "nowhere"}, "site"),
]


def test_invalid_channels_are_422_naming_the_field(api: ApiHarness) -> None:
    for body, field in INVALID:
        response = create(api, name="bad", **body)
        assert response.status_code == 422, (body, response.get_json())
        errors = response.get_json()["errors"]
        assert field in errors.get("json", errors), (body, errors)
    with api.db.session() as session:
        assert session.scalar(select(NotificationChannel.id)) is None


def test_http_webhook_is_accepted_with_allow_http(api: ApiHarness) -> None:
    response = create(
        api,
        name="onprem-chat",
        kind="webhook",
        target="http://mattermost.lan:8065/hooks/abc",
        settings={"allow_http": True},
        thresholds=[],
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["thresholds"] == []


def test_mutes_need_the_site_in_scope_and_a_sane_until(api: ApiHarness) -> None:
    north = make_site(api, "north")
    south = make_site(api, "south")
    channel = create(api, name="north-mail", kind="email", target="n@example.com", site="north")
    everywhere = create(api, name="all-mail", kind="email", target="a@example.com")
    channel_id, global_id = channel.get_json()["id"], everywhere.get_json()["id"]
    north_op = api.token("operator", site="north")
    south_op = api.token("operator", site="south")
    now = api.clock.now()
    until = now + dt.timedelta(days=30)
    body = {"until": iso(until)}

    def mute(path: str, token: str | None = None, **json: Any) -> Any:
        return api.post(path, json=json or body, token=token)

    muted = mute(f"{CHANNELS}/{channel_id}/mute", north_op)
    assert muted.status_code == 200, muted.get_json()
    assert dt.datetime.fromisoformat(muted.get_json()["muted_until"]) == until
    assert mute(f"{CHANNELS}/{channel_id}/mute", south_op).status_code == 404
    assert mute(f"{CHANNELS}/{global_id}/mute", north_op).status_code == 403  # not its site
    assert mute(f"{CHANNELS}/{global_id}/mute", api.token("auditor")).status_code == 403
    assert mute(f"{CHANNELS}/{global_id}/mute").status_code == 200  # admin
    assert mute(f"{CHANNELS}/999/mute").status_code == 404

    site_mute = mute(f"/api/v1/sites/{north}/mute", north_op)
    assert site_mute.status_code == 200, site_mute.get_json()
    assert site_mute.get_json()["name"] == "north"
    assert mute(f"/api/v1/sites/{south}/mute", north_op).status_code == 404
    assert mute(f"/api/v1/sites/{south}/mute", south_op).status_code == 200
    assert mute("/api/v1/sites/999/mute").status_code == 404

    for bad in (now - dt.timedelta(minutes=1), now + dt.timedelta(days=401)):
        refused = mute(f"/api/v1/sites/{north}/mute", until=iso(bad))
        assert refused.status_code == 422
        assert "until" in refused.get_json()["errors"]
    assert mute(f"/api/v1/sites/{north}/mute", until="tomorrow").status_code == 422
    naive = (now + dt.timedelta(days=2)).replace(tzinfo=None, microsecond=0)
    as_utc = mute(f"/api/v1/sites/{south}/mute", until=naive.isoformat())
    assert dt.datetime.fromisoformat(as_utc.get_json()["muted_until"]) == naive.replace(
        tzinfo=dt.UTC
    )

    with api.db.session() as session:
        assert session.get_one(Site, north).muted_until == until
        kinds = list(session.scalars(select(Event.kind).where(Event.kind.like("%muted"))))
    assert kinds.count("notification_channel.muted") == 2 and kinds.count("site.muted") == 3

    unmuted = api.post(f"{CHANNELS}/{channel_id}/mute", json={"until": None}, token=north_op)
    assert unmuted.status_code == 200 and unmuted.get_json()["muted_until"] is None
