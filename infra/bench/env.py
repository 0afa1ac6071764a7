"""What a benchmark step runs against: a redis-server of its own on a free port, a fresh
PostgreSQL database it creates and drops, an initialised certfleet (schema, root CA, admin
token), hosts loaded with COPY, and the stack's processes. Nothing depends on the state of
the Redis or the databases that may already run on this machine."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from infra import local
from infra.local import DEFAULT_PG_ADMIN_URL, free_port, libpq_url
from services.cli import admin
from services.cli.stack import Stack
from shared.clock import SystemClock
from shared.db.models import Authority
from shared.db.session import Database
from shared.settings import Settings

CA_PASSPHRASE = "bench-ca-passphrase-0123"
DATA_KEY = "bench-data-key-456789abcdef"
SUFFIX = "bench.example"
CSR_CHUNK = 500


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A redis-server without persistence on a free port; its URL."""
    process, port = local.start_redis(workdir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        local.stop(process)


def pg_admin_url() -> str:
    return (
        os.environ.get("CERTFLEET_BENCH_PG_ADMIN_URL")
        or os.environ.get("CERTFLEET_TEST_PG_ADMIN_URL")
        or DEFAULT_PG_ADMIN_URL
    )


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    with local.fresh_database(pg_admin_url(), f"certfleet_bench_{tag}") as url:
        yield url


@dataclass
class Installation:
    """An initialised certfleet on one database and one Redis, and its stack (not started)."""

    settings: Settings
    env: dict[str, str]
    stack: Stack
    token: str
    authority_id: int

    @property
    def db_url(self) -> str:
        return self.settings.database_url


def install(
    work: Path, db_url: str, redis_url: str, *, ca_bits: int, concurrency: int
) -> Installation:
    """Migrate, create the root CA and an admin token (as `certfleet init` does)."""
    bind = f"127.0.0.1:{free_port()}"
    env = {
        "CERTFLEET_DATABASE_URL": db_url,
        "CERTFLEET_REDIS_URL": redis_url,
        "CERTFLEET_CA_KEY_PASSPHRASE": CA_PASSPHRASE,
        "CERTFLEET_DATA_KEY": DATA_KEY,
        "CERTFLEET_VAR_DIR": str(work / "var"),
        "CERTFLEET_API_BIND": bind,
        "CERTFLEET_LOG_LEVEL": "WARNING",
    }
    settings = Settings.from_env(env)
    result = admin.init(settings, SystemClock(), ca_name="Bench Root", key_bits=ca_bits)
    assert result.admin_token is not None
    stack = Stack(
        env,
        bind,
        work / "logs",
        worker_concurrency=concurrency,
        api_workers=concurrency,
        ready_timeout=120,
    )
    return Installation(settings, env, stack, result.admin_token, result.authority.id)


def start(stack: Stack, names: Sequence[str]) -> None:
    """Start some of the stack's processes (all of them: Stack.start) and wait for the API
    when it is among them."""
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        stack.spawn(name)
    if "api" in names:
        stack.wait_ready(stack.ready_timeout)


def wait_consuming(redis_url: str, queue: str, workers: int, timeout: float = 60) -> None:
    """Until `workers` Celery processes of a queue listen (a worker announces itself by
    BRPOP-ing its queue, which shows as a blocked client)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if int(client.info("clients")["blocked_clients"]) >= workers:
                return
            time.sleep(0.1)
    finally:
        client.close()


# --- bulk rows ---------------------------------------------------------------------------


def copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY rows into a table; JSON values are given as Python lists/dicts."""
    count = 0
    cols = ", ".join(columns)
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(v) if isinstance(v, list | dict) else v for v in row])
            count += 1
    return count


HOST_COLUMNS = (
    "site_id",
    "name",
    "dns_names",
    "ip_addresses",
    "roles",
    "failover_for",
    "platform",
    "delivery",
    "tls_endpoints",
    "created_at",
    "updated_at",
)


def host_name(index: int) -> str:
    return f"h{index:07d}"


def add_sites_and_hosts(db_url: str, authority_id: int, hosts: int, per_site: int) -> list[int]:
    """Sites of `per_site` recording servers each (no delivery method), loaded with COPY;
    returns the site IDs. Host i is named host_name(i), with the one DNS name of dns_name(i)."""
    now = dt.datetime.now(dt.UTC)
    sites = max(1, -(-hosts // per_site))
    with psycopg.connect(libpq_url(db_url)) as conn:
        site_ids = [
            conn.execute(
                "INSERT INTO sites (name, description, authority_id, dns_suffixes, ip_ranges,"
                " allow_short_names, renew_at_fraction, default_validity_days, created_at,"
                " updated_at) VALUES (%s, '', %s, %s, '[]', true, %s, 397, %s, %s) RETURNING id",
                (f"site{s:04d}", authority_id, json.dumps([SUFFIX]), 1 / 3, now, now),
            ).fetchone()[0]  # type: ignore[index]
            for s in range(sites)
        ]
        copy_rows(
            conn,
            "hosts",
            HOST_COLUMNS,
            (
                (
                    site_ids[i // per_site],
                    host_name(i),
                    [dns_name(i)],
                    [],
                    ["recording"],
                    [],
                    "windows",
                    {},
                    [],
                    now,
                    now,
                )
                for i in range(hosts)
            ),
        )
        return site_ids


def dns_name(index: int) -> str:
    return f"{host_name(index)}.{SUFFIX}"


def host_ids(db_url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        return dict(conn.execute("SELECT name, id FROM hosts").fetchall())  # type: ignore[arg-type]


def authority_of(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.session() as session:
            return int(session.scalars(select(Authority.id)).one())
    finally:
        db.dispose()


# --- CSRs ----------------------------------------------------------------------------------


def host_key() -> rsa.RSAPrivateKey:
    """One RSA-2048 key for every host's CSR: the issuer's work per request is the same."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _csrs(args: tuple[bytes, range]) -> list[str]:
    pem, indexes = args
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return [make_csr(key, dns_name(i)) for i in indexes]


def make_csr(key: rsa.RSAPrivateKey, name: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csrs_for(indexes: range, key: rsa.RSAPrivateKey, processes: int) -> list[str]:
    """A real CSR per host (CN and SAN = its DNS name), signed on every core."""
    pem = key_pem(key)
    chunks = [indexes[i : i + CSR_CHUNK] for i in range(0, len(indexes), CSR_CHUNK)]
    with ProcessPoolExecutor(processes) as pool:
        return [csr for part in pool.map(_csrs, [(pem, c) for c in chunks]) for csr in part]
