"""Redis behind Sentinel: a real master, a real replica and a real Sentinel. A
`sentinel://` CERTFLEET_REDIS_URL reaches the master for the Celery broker and for the
plain clients (the API's limiter, the beat's lock), and keeps reaching it after the
Sentinel fails over to the replica."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.local import REDIS_SERVER, free_port, start_redis, stop
from shared.contracts import QUEUE_ISSUE, issue_batch
from shared.errors import ConfigError
from shared.queue import CeleryPublisher, make_celery, redis_client
from shared.settings import Settings, broker_url

MASTER = "certfleet-test"


def start_sentinel(workdir: Path, master_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "sentinel.conf"  # Sentinel rewrites its own config: a file of its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
    )
    process = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.sentinel_master(MASTER)["port"] == master_port:
                return process, port
        except (redis.RedisError, KeyError):
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the Sentinel did not come up")


class Pair:
    def __init__(self, root: Path) -> None:
        self.master, self.master_port = start_redis(root / "master")
        self.replica, self.replica_port = start_redis(
            root / "replica", extra=["--replicaof", "127.0.0.1", str(self.master_port)]
        )
        self.sentinel, self.sentinel_port = start_sentinel(root, self.master_port)

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            stop(process)

    def direct(self, port: int, db: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, db=db)

    def master_port_now(self) -> int:
        client = redis.Redis(host="127.0.0.1", port=self.sentinel_port)
        return int(client.sentinel_master(MASTER)["port"])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path)
    try:
        yield pair
    finally:
        pair.stop()


def settings_for(pair: Pair, db: int = 3) -> Settings:
    dead = free_port()  # a Sentinel that is down: the client must try the next one
    url = f"sentinel://127.0.0.1:{dead};sentinel://127.0.0.1:{pair.sentinel_port}/{db}"
    return Settings.from_env(
        {"CERTFLEET_REDIS_URL": url, "CERTFLEET_REDIS_SENTINEL_MASTER": MASTER}
    )


def queued_ids(client: redis.Redis) -> list[list[int]]:
    """The request IDs of each issue message waiting in the queue (kombu's JSON envelope
    around a base64 body of [args, kwargs, embed])."""
    messages = [json.loads(raw) for raw in client.lrange(QUEUE_ISSUE, 0, -1)]
    return [
        list(json.loads(base64.b64decode(m["body"]))[1]["request_ids"]) for m in reversed(messages)
    ]


def publish_until_it_lands(publisher: CeleryPublisher, ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            publisher.publish(issue_batch(ids))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_broker_and_clients_reach_the_master_through_sentinel(pair: Pair) -> None:
    settings = settings_for(pair)
    app = make_celery(settings, "sentinel-test")
    assert app.conf.broker_transport_options["master_name"] == MASTER
    CeleryPublisher(app).publish(issue_batch([1, 2, 3]))
    master = pair.direct(pair.master_port, 3)
    assert queued_ids(master) == [[1, 2, 3]]  # on the master, in the URL's database

    client = redis_client(settings.redis_url, settings.redis_sentinel_master, socket_timeout=2)
    client.set("certfleet:test", "via-sentinel")
    assert master.get("certfleet:test") == b"via-sentinel"


def test_after_a_failover_messages_go_to_the_new_master(pair: Pair) -> None:
    settings = settings_for(pair)
    publisher = CeleryPublisher(make_celery(settings, "sentinel-test"))
    client = redis_client(settings.redis_url, settings.redis_sentinel_master, socket_timeout=2)
    publisher.publish(issue_batch([1]))
    replica = pair.direct(pair.replica_port, 3)
    deadline = time.monotonic() + 10
    while replica.llen(QUEUE_ISSUE) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # replication is asynchronous

    stop(pair.master)
    deadline = time.monotonic() + 60
    while pair.master_port_now() != pair.replica_port:
        assert time.monotonic() < deadline, "the Sentinel never promoted the replica"
        time.sleep(0.2)

    publish_until_it_lands(publisher, [2], timeout=30)
    assert queued_ids(replica) == [[1], [2]]
    deadline = time.monotonic() + 30
    while True:  # the plain client finds the new master too (after one refused connection)
        try:
            client.set("certfleet:test", "after-failover")
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert replica.get("certfleet:test") == b"after-failover"


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://",
        "sentinel://127.0.0.1:26379;redis://127.0.0.1:6379",
        "sentinel://127.0.0.1:notaport",
        "sentinel://127.0.0.1:26379/zero",
    ],
)
def test_a_malformed_sentinel_url_is_refused_readably(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CERTFLEET_REDIS_URL": url})
    assert "CERTFLEET_REDIS_URL" in str(caught.value)


def test_every_part_of_the_broker_url_carries_the_database_and_password() -> None:
    url = "sentinel://:s%40cret@10.0.0.1:26379;sentinel://10.0.0.2/4"
    assert broker_url(url) == (
        "sentinel://:s%40cret@10.0.0.1:26379/4;sentinel://:s%40cret@10.0.0.2:26379/4"
    )
    assert broker_url("redis://127.0.0.1:6379/2") == "redis://127.0.0.1:6379/2"


def test_the_doctor_checks_a_deployment_behind_sentinel(pair: Pair, tmp_path: Path) -> None:
    """With a `sentinel://` URL the doctor reaches the master through the Sentinel (the
    down one first) and reports its findings; it used to end in a traceback."""
    from click.testing import CliRunner

    from services.cli import admin
    from services.cli.main import cli
    from shared.clock import SystemClock
    from tests.conftest import TEST_CA_PASSPHRASE

    settings = settings_for(pair, db=5)
    env = {
        "CERTFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'doctor.db'}",
        "CERTFLEET_REDIS_URL": settings.redis_url,
        "CERTFLEET_REDIS_SENTINEL_MASTER": MASTER,
        "CERTFLEET_CA_KEY_PASSPHRASE": TEST_CA_PASSPHRASE,
        "CERTFLEET_VAR_DIR": str(tmp_path / "var"),
    }
    admin.init(Settings.from_env(env), SystemClock(), ca_name="Sentinel Root", key_bits=2048)
    result = CliRunner().invoke(cli, ["-o", "json", "doctor", "--no-api"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["redis"]["status"] in ("ok", "warn"), checks["redis"]
    assert checks["clock: redis"]["status"] == "ok"
    assert checks["beat"]["status"] == "fail"  # none runs: a finding, not a crash
    assert "could not check" not in checks["beat"]["detail"]
    assert result.exit_code == 1  # no workers in this test
