"""Fixtures shared by the whole suite: a private Redis, real databases (SQLite and PostgreSQL),
a fixed clock, test secrets and cached RSA keys.

Every fixture is safe under pytest-xdist: Redis listens on a free port per worker and every
PostgreSQL test gets a database with a random name.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from infra import local
from infra.local import DEFAULT_PG_ADMIN_URL, REDIS_SERVER, libpq_url
from shared.clock import FixedClock
from shared.db.migrate import upgrade
from shared.db.session import Database
from shared.pki.ca import IssuedCa, create_intermediate_ca, create_root_ca
from tests import factories
from tests.sshd import SshServer, running_sshd

PG_START_HINT = (
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(or point CERTFLEET_TEST_PG_ADMIN_URL at a server where the user may create databases)"
)

TEST_CA_PASSPHRASE = "test-ca-passphrase-0123"
TEST_DATA_KEY = "test-data-key-456789abcdef"


# --- Redis -------------------------------------------------------------------------------


def _start_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server without persistence, on a free port or on `port` (a restart)."""
    try:
        return local.start_redis(workdir, port)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test process, without persistence."""
    if not (os.path.exists(REDIS_SERVER) and os.access(REDIS_SERVER, os.X_OK)):
        pytest.fail(f"{REDIS_SERVER} not found: install it with `apt-get install redis-server`")
    process, port = _start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        local.stop(process)


# --- The fast tier -------------------------------------------------------------------------

# `make test-fast` (pytest --fast): SQLite and a private redis-server only. Left out: every
# PostgreSQL case, the SSH server, and the suites that start whole stacks, a browser, or
# several Redis servers (tests/infra: Sentinel failover, the benchmark harness).
SLOW_DIRECTORIES = ("e2e", "faults", "infra")
SLOW_FIXTURES = frozenset({"pg_admin_url", "_postgres_url", "sshd"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast", action="store_true", help="the fast tier: no PostgreSQL, sshd or browser"
    )


def is_slow(item: pytest.Item) -> bool:
    tests_dir = Path(__file__).parent
    parts = item.path.relative_to(tests_dir).parts
    callspec = getattr(item, "callspec", None)
    return (
        (len(parts) > 1 and parts[0] in SLOW_DIRECTORIES)
        or bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
        or (callspec is not None and callspec.params.get("db_url") == "postgresql")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    slow = [item for item in items if is_slow(item)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not is_slow(item)]


# --- SSH -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH server on loopback, one per test process."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


# --- Databases ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("CERTFLEET_TEST_PG_ADMIN_URL") or DEFAULT_PG_ADMIN_URL
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {make_url(url)!r} ({exc.__class__.__name__}: "
            f"{str(exc).strip()}); {PG_START_HINT}"
        )
    return url


def _sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'certfleet.db'}"


@pytest.fixture
def _postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with local.fresh_database(request.getfixturevalue("pg_admin_url"), "certfleet_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: once on SQLite, once on PostgreSQL (dropped afterwards by
    _postgres_url)."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
    else:
        url = request.getfixturevalue("_postgres_url")
    upgrade(url)
    return url


def _opened(url: str) -> Iterator[Database]:
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    yield from _opened(db_url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file, for tests that need not run on both databases."""
    url = _sqlite_url(tmp_path / "sqlite-only")
    upgrade(url)
    return url


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Iterator[Database]:
    yield from _opened(sqlite_url)


# --- Time, secrets, keys --------------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(factories.FIXED_NOW)


@pytest.fixture
def wall_clock() -> FixedClock:
    """A clock stopped at the real current time, for certificates that real TLS clients and
    `openssl verify` (which read the system clock) must accept."""
    return FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def ca_passphrase() -> str:
    return TEST_CA_PASSPHRASE


@pytest.fixture
def data_key() -> str:
    return TEST_DATA_KEY


@pytest.fixture(scope="session")
def rsa_keys() -> factories.KeyPool:
    """The session's pool of pre-generated RSA-2048 keys (factories.rsa_key hands them out)."""
    return factories.KEY_POOL


@pytest.fixture(scope="session")
def root_ca() -> IssuedCa:
    """A root CA (RSA 2048) valid from factories.FIXED_NOW for ten years."""
    return create_root_ca(
        "certfleet test root", now=factories.FIXED_NOW, key_bits=2048, validity_days=3650
    )


@pytest.fixture(scope="session")
def intermediate_ca(root_ca: IssuedCa) -> IssuedCa:
    return create_intermediate_ca(
        "certfleet test intermediate",
        parent=root_ca,
        now=factories.FIXED_NOW,
        key_bits=2048,
        validity_days=1825,
    )


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """factories.openssl, after checking that the CLI is there."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is not installed: apt-get install openssl")
    return factories.openssl
