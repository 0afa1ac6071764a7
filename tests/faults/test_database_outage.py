"""PostgreSQL unreachable for a while under a running stack: the API says 503 with
Retry-After (header and JSON), the workers retry, and after it returns every request is
issued exactly once. The services reach the real PostgreSQL through a proxy the test cuts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.faults.conftest import RestartableRedis, logs, start_fleet
from tests.faults.proxy import Proxy

pytestmark = pytest.mark.faults

REQUESTS = 1000
OUTAGE_S = 12.0


def test_a_database_outage_is_a_503_and_loses_nothing(
    tmp_path: Path, pg_database: str, own_redis: RestartableRedis
) -> None:
    direct = make_url(pg_database)
    with Proxy((direct.host or "127.0.0.1", direct.port or 5432)) as proxy:
        proxied = direct.set(host="127.0.0.1", port=proxy.port)
        stack, fleet = start_fleet(
            tmp_path,
            proxied.render_as_string(hide_password=False),
            own_redis.url,
            REQUESTS + 1,
            db_url_for_setup=pg_database,
        )
        hosts = sorted(fleet.csrs)
        with stack:
            ids = fleet.submit(hosts[:REQUESTS])
            fleet.wait_for("some issued", lambda s: s.get("issued", 0) >= 100, 120)
            proxy.cut()
            cut_at = time.monotonic()
            answer = fleet.post(
                "/api/v1/issuance-requests", {"host": hosts[-1], "csr": fleet.csrs[hosts[-1]]}
            )
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"].isdigit()
            body = answer.json()
            assert body["code"] == "unavailable"
            assert body["retry_after"] == int(answer.headers["Retry-After"])
            assert requests.get(stack.url + "/readyz", timeout=10).status_code == 503
            during = fleet.statuses()
            assert during.get("issued", 0) < REQUESTS, "the outage came too late to matter"
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            proxy.restore()

            late = fleet.post(
                "/api/v1/issuance-requests", {"host": hosts[-1], "csr": fleet.csrs[hosts[-1]]}
            )
            assert late.status_code == 202, late.text
            fleet.wait_for("every request settled", lambda s: set(s) == {"issued"}, 240)
            fleet.assert_each_issued_once([*ids, late.json()["id"]])
            assert all(p.poll() is None for p in stack.processes.values()), "a service died"
            assert "transient error, retrying" in logs(stack), "the issuer never saw the outage"
