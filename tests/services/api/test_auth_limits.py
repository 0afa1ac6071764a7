"""The limit on failed token authentications, counted per client address in the harness's
real Redis, and its settings. Each test gives its clients their own addresses."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from services.api.app import create_app
from services.api.limits import KEY_PREFIX
from shared.errors import ConfigError
from shared.settings import Settings
from tests import factories
from tests.ports import free_port
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_agent import agent_csr, enrollment_token

SITES = "/api/v1/sites"
BAD = "cf_not-a-real-token"


def limited(api: ApiHarness, limit: int = 3, window_s: int = 60, **changes: str) -> ApiHarness:
    """A second app on the same database, Redis and clock, with a small limit."""
    settings = dataclasses.replace(
        api.settings, auth_fail_limit=limit, auth_fail_window_s=window_s, **changes
    )
    app = create_app(settings, database=api.db, clock=api.clock)
    return dataclasses.replace(api, app=app, client=app.test_client(), settings=settings)


def status(api: ApiHarness, address: str, token: str | None = None, **headers: str) -> int:
    response = api.get(SITES, token=token, headers=headers, environ_base={"REMOTE_ADDR": address})
    return int(response.status_code)


def test_bad_tokens_from_one_address_are_429_after_the_limit(api: ApiHarness) -> None:
    app = limited(api)
    assert [status(app, "10.0.0.1", BAD) for _ in range(3)] == [401, 401, 401]
    locked = app.get(SITES, token=BAD, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert locked.status_code == 429
    body = locked.get_json()
    assert body["code"] == "too_many_requests" and BAD not in locked.get_data(as_text=True)
    assert 0 < body["retry_after"] == int(locked.headers["Retry-After"]) <= 60
    assert status(app, "10.0.0.1") == 429  # even with the valid admin token
    assert status(app, "10.0.0.1", "") == 429  # and with none
    assert status(limited(api), "10.0.0.1") == 429  # every worker shares the count
    assert status(app, "10.0.0.2") == 200  # other addresses are untouched
    assert status(app, "10.0.0.2", BAD) == 401
    assert int(api.redis.get(KEY_PREFIX + "10.0.0.1") or 0) == 3  # refusals are not counted
    assert status(api, "10.0.0.1") == 200  # the default limit (20) is not reached


def test_a_success_resets_nothing_and_a_missing_token_is_no_failure(api: ApiHarness) -> None:
    app = limited(api)
    assert [status(app, "10.0.1.1", "") for _ in range(5)] == [401] * 5
    assert [status(app, "10.0.1.1", BAD) for _ in range(2)] == [401, 401]
    assert status(app, "10.0.1.1") == 200
    assert status(app, "10.0.1.1", BAD) == 401  # the third failure
    assert status(app, "10.0.1.1") == 429


def test_the_window_is_fixed_and_the_lockout_ends_with_it(api: ApiHarness) -> None:
    app = limited(api, limit=2, window_s=60)
    key = KEY_PREFIX + "10.0.2.1"
    assert status(app, "10.0.2.1", BAD) == 401
    assert 0 < api.redis.pttl(key) <= 60_000
    api.redis.pexpire(key, 30_000)  # as if 30 s of the window had passed
    assert status(app, "10.0.2.1", BAD) == 401
    assert 0 < api.redis.pttl(key) <= 30_000  # a later failure does not extend the window
    assert status(app, "10.0.2.1") == 429
    api.redis.pexpire(key, 1)  # the window ends
    while api.redis.exists(key):
        pass
    assert status(app, "10.0.2.1") == 200
    assert status(app, "10.0.2.1", BAD) == 401  # a new window, counted from one


def test_the_address_is_the_peers_not_x_forwarded_for(api: ApiHarness) -> None:
    app = limited(api, limit=2)
    for n in range(2):
        assert status(app, "10.0.3.1", BAD, **{"X-Forwarded-For": f"192.0.2.{n}"}) == 401
    assert status(app, "10.0.3.1", **{"X-Forwarded-For": "192.0.2.99"}) == 429
    assert status(app, "10.0.3.2", **{"X-Forwarded-For": "10.0.3.1"}) == 200


def test_the_limiter_fails_open_when_redis_is_unreachable(
    api: ApiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    app = limited(api, limit=2, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="services.api.limits"):
        assert [status(app, "10.0.4.1", BAD) for _ in range(4)] == [401] * 4
        assert status(app, "10.0.4.1") == 200
    warnings = [r for r in caplog.records if r.name == "services.api.limits"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)


def test_the_limit_and_window_come_from_the_environment() -> None:
    assert (Settings().auth_fail_limit, Settings().auth_fail_window_s) == (20, 60)
    settings = Settings.from_env(
        {"CERTFLEET_AUTH_FAIL_LIMIT": "5", "CERTFLEET_AUTH_FAIL_WINDOW": "300"}
    )
    assert (settings.auth_fail_limit, settings.auth_fail_window_s) == (5, 300)
    for name, value in (("AUTH_FAIL_LIMIT", "0"), ("AUTH_FAIL_WINDOW", "soon")):
        with pytest.raises(ConfigError, match=f"CERTFLEET_{name}"):
            Settings.from_env({f"CERTFLEET_{name}": value})


def test_wrong_enrolment_tokens_count_against_the_address(api: ApiHarness) -> None:
    """An enrolment token is a secret too: guessing it locks the address out like a bad bearer
    token does, and a locked-out address cannot enrol even with a valid one."""
    api.apply_inventory()
    app = limited(api)
    csr = agent_csr(factories.rsa_key())

    def enrol(secret: str, address: str) -> int:
        response = app.post(
            "/api/v1/agent/enroll",
            token="",
            json={"enrollment_token": secret, "csr": csr},
            environ_base={"REMOTE_ADDR": address},
        )
        return int(response.status_code)

    assert [enrol("cfe_guess", "10.0.9.1") for _ in range(3)] == [401, 401, 401]
    valid = enrollment_token(api, "aar-rec01")
    assert enrol(valid, "10.0.9.1") == 429
    assert status(app, "10.0.9.1") == 429  # the same count as bearer tokens
    assert enrol(valid, "10.0.9.2") == 201
