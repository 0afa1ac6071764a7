"""API fixtures: the real app on a real database (SQLite and PostgreSQL) publishing to a real
private Redis, with an admin token made by `certfleet init`'s own code."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from services.api.app import create_app
from services.cli import admin
from services.issuer import service as issuer
from shared.clock import FixedClock
from shared.contracts import QUEUE_ISSUE
from shared.db.models import IssuanceRequest
from shared.db.session import Database
from shared.settings import Settings
from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY

EXAMPLE_INVENTORY = Path(__file__).parents[3] / "examples" / "inventory.yaml"


@dataclass
class ApiHarness:
    app: Flask
    client: FlaskClient
    settings: Settings
    db: Database
    clock: FixedClock
    admin_token: str
    redis: redis.Redis

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        secret = self.admin_token if token is None else token
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        if response.status_code >= 400 and response.mimetype == "application/json":
            assert_error_shape(response.get_json())
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def apply_inventory(self, path: Path = EXAMPLE_INVENTORY, token: str | None = None) -> Any:
        response = self.call(
            "PUT",
            "/api/v1/inventory",
            token=token,
            data=path.read_bytes(),
            content_type="application/yaml",
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def token(self, role: str, site: str | None = None) -> str:
        response = self.post(
            "/api/v1/tokens", json={"name": f"{role}-t", "role": role, "site": site}
        )
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["token"])

    def queued_messages(self, queue: str = QUEUE_ISSUE) -> list[dict[str, Any]]:
        """The kombu envelopes waiting on a queue (the issue queue by default), decoded."""
        messages = []
        for raw in self.redis.lrange(queue, 0, -1):
            envelope = json.loads(raw)
            body = (
                base64.b64decode(envelope["body"])
                if envelope["properties"].get("body_encoding") == "base64"
                else envelope["body"]
            )
            messages.append({"envelope": envelope, "raw": raw, "body": json.loads(body)})
        return messages

    def run_issuer(self) -> issuer.BatchResult:
        """Do what the issuer worker does with every queued request, in this process."""
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(IssuanceRequest.id).where(IssuanceRequest.status == "queued")
                )
            )
        return issuer.issue_batch(
            self.db,
            ids,
            signers=issuer.SignerCache(),
            secrets=issuer.Secrets(TEST_CA_PASSPHRASE, TEST_DATA_KEY),
            clock=self.clock,
        )


def assert_error_shape(payload: Any) -> None:
    assert isinstance(payload, dict), payload
    assert isinstance(payload.get("code"), str) and payload["code"], payload
    assert isinstance(payload.get("message"), str) and payload["message"], payload
    assert set(payload) <= {"code", "message", "errors", "retry_after"}, payload
    retries = payload["code"] in ("unavailable", "too_many_requests")
    assert ("retry_after" in payload) == retries, payload


@contextlib.contextmanager
def running_api(
    db_url: str, redis_url: str, tmp_path: Path, clock: FixedClock
) -> Iterator[ApiHarness]:
    """The real app on `db_url` with an admin token, publishing to `redis_url` (flushed)."""
    settings = Settings(
        database_url=db_url,
        redis_url=redis_url,
        ca_key_passphrase=TEST_CA_PASSPHRASE,
        data_key=TEST_DATA_KEY,
        var_dir=tmp_path / "var",
        max_body_bytes=512 * 1024,
        bulk_max_items=50,
        issue_batch_size=10,
    )
    result = admin.init(settings, clock, ca_name="Test Root", key_bits=2048)
    assert result.admin_token is not None
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    db = Database(db_url)
    app = create_app(settings, database=db, clock=clock)
    try:
        yield ApiHarness(app, app.test_client(), settings, db, clock, result.admin_token, queue)
    finally:
        queue.flushdb()
        queue.close()
        db.dispose()


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` on a real HTTP server (werkzeug, threaded) on a free loopback port; its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def api(
    db_url: str, redis_url: str, tmp_path: Path, wall_clock: FixedClock
) -> Iterator[ApiHarness]:
    with running_api(db_url, redis_url, tmp_path, wall_clock) as harness:
        yield harness
