"""One typed, frozen settings object per process, built from the environment once.

No other module reads the environment: entry points call `Settings.from_env()` and pass the
result down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from shared.delivery_settings import DeliveryLimits
from shared.destinations import DestinationPolicy
from shared.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///var/certfleet.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_API_BIND = "127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    # With a sentinel:// URL: the name of the master the Sentinels watch.
    redis_sentinel_master: str = "mymaster"
    api_bind: str = DEFAULT_API_BIND
    # Secrets are kept out of repr() so that a logged Settings object leaks nothing.
    ca_key_passphrase: str | None = field(default=None, repr=False)
    data_key: str | None = field(default=None, repr=False)
    var_dir: Path = Path("var")
    log_level: str = "INFO"
    max_body_bytes: int = 8 * 1024 * 1024
    bulk_max_items: int = 5000
    issue_batch_size: int = 100
    # The renewal scan: certificates read per run, and renewals started per site per run
    # (a site's hosts are not all renewed at once).
    renew_scan_limit: int = 500
    renew_per_site: int = 5
    # /metrics lists this many leaf certificates one by one (the soonest to expire); the
    # rest are counted in buckets of days left, so a fleet of 100,000 stays one small scrape.
    metrics_leaf_cap: int = 500
    task_time_limit_s: int = 300
    probe_delay_s: float = 5.0
    crl_validity_days: int = 7
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_starttls: bool = False
    # The sweep: how often it runs, how long a queued request or a due delivery waits before
    # its message is sent again, and when a claim (`signing`) counts as its worker's death.
    sweep_interval_s: float = 60.0
    sweep_grace_s: float = 120.0
    sweep_stale_signing_s: float = 900.0
    # Failed bearer-token authentications per client address before 429, and the fixed
    # window (seconds) they are counted in.
    auth_fail_limit: int = 20
    auth_fail_window_s: int = 60
    # Directory delivery targets write only inside these (absolute; default: var/deliveries).
    delivery_roots: tuple[Path, ...] = ()
    # Outbound connections (webhooks, SSH, probes) to loopback, link-local, multicast and
    # cloud-metadata addresses are refused, except to these networks (e.g. 127.0.0.0/8).
    outbound_allow: tuple[str, ...] = ()
    # Reverse proxies in front of the API that set X-Forwarded-For (0: none, the client's
    # own address is the peer's); only then is that header believed.
    proxy_hops: int = 0

    @property
    def delivery_limits(self) -> DeliveryLimits:
        roots = self.delivery_roots or ((self.var_dir / "deliveries").absolute(),)
        return DeliveryLimits(tuple(roots), self.destinations)

    @property
    def destinations(self) -> DestinationPolicy:
        return DestinationPolicy.build(self.outbound_allow)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read CERTFLEET_* variables; raise ConfigError naming every bad one."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(f"CERTFLEET_{name}")
            return default if value is None or value == "" else value

        def get_int(name: str, default: int, minimum: int = 1) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"CERTFLEET_{name} must be an integer")
                return default
            if value < minimum:
                problems.append(f"CERTFLEET_{name} must be at least {minimum}")
            return value

        def get_float(name: str, default: float, minimum: float, maximum: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"CERTFLEET_{name} must be a number")
                return default
            if not minimum <= value <= maximum:
                problems.append(f"CERTFLEET_{name} must be between {minimum} and {maximum}")
            return value

        database_url = get("DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL
        if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            problems.append("CERTFLEET_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        redis_url = get("REDIS_URL", DEFAULT_REDIS_URL) or DEFAULT_REDIS_URL
        if urlparse(redis_url).scheme not in ("redis", "rediss", "sentinel"):
            problems.append("CERTFLEET_REDIS_URL must be a redis://, rediss:// or sentinel:// URL")
        elif urlparse(redis_url).scheme == "sentinel":
            try:
                sentinel_nodes(redis_url)
            except ValueError as exc:
                problems.append(f"CERTFLEET_REDIS_URL: {exc}")
        api_bind = get("API_BIND", DEFAULT_API_BIND) or DEFAULT_API_BIND
        host, _, port = api_bind.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append("CERTFLEET_API_BIND must be HOST:PORT")
        passphrase = get("CA_KEY_PASSPHRASE")
        if passphrase is not None and len(passphrase) < 12:
            problems.append("CERTFLEET_CA_KEY_PASSPHRASE must be at least 12 characters")
        data_key = get("DATA_KEY")
        if data_key is not None and len(data_key) < 12:
            problems.append("CERTFLEET_DATA_KEY must be at least 12 characters")
        roots = tuple(Path(p) for p in (get("DELIVERY_ROOTS", "") or "").split(":") if p)
        if any(not p.is_absolute() for p in roots):
            problems.append("CERTFLEET_DELIVERY_ROOTS must be absolute paths joined by ':'")
        allow = tuple(a.strip() for a in (get("OUTBOUND_ALLOW", "") or "").split(",") if a.strip())
        try:
            DestinationPolicy.build(allow)
        except ValueError as exc:
            problems.append(f"CERTFLEET_OUTBOUND_ALLOW: {exc}")
        log_level = (get("LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append("CERTFLEET_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")

        settings = cls(
            database_url=normalize_database_url(database_url),
            redis_url=redis_url,
            redis_sentinel_master=get("REDIS_SENTINEL_MASTER", "mymaster") or "mymaster",
            api_bind=api_bind,
            ca_key_passphrase=passphrase,
            data_key=data_key,
            var_dir=Path(get("VAR_DIR", "var") or "var"),
            log_level=log_level,
            max_body_bytes=get_int("MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            bulk_max_items=get_int("BULK_MAX_ITEMS", cls.bulk_max_items),
            issue_batch_size=get_int("ISSUE_BATCH_SIZE", cls.issue_batch_size),
            renew_scan_limit=get_int("RENEW_SCAN_LIMIT", cls.renew_scan_limit),
            renew_per_site=get_int("RENEW_PER_SITE", cls.renew_per_site),
            metrics_leaf_cap=get_int("METRICS_LEAF_CAP", cls.metrics_leaf_cap, minimum=0),
            task_time_limit_s=get_int("TASK_TIME_LIMIT", cls.task_time_limit_s),
            probe_delay_s=get_float("PROBE_DELAY", cls.probe_delay_s, 0.05, 3600),
            crl_validity_days=get_int("CRL_VALIDITY_DAYS", cls.crl_validity_days),
            smtp_host=get("SMTP_HOST"),
            smtp_port=get_int("SMTP_PORT", 25),
            smtp_from=get("SMTP_FROM"),
            smtp_starttls=(get("SMTP_STARTTLS", "false") or "").lower() in ("1", "true", "yes"),
            sweep_interval_s=get_float("SWEEP_INTERVAL", cls.sweep_interval_s, 1, 3600),
            sweep_grace_s=get_float("SWEEP_GRACE", cls.sweep_grace_s, 1, 86400),
            sweep_stale_signing_s=get_float(
                "SWEEP_STALE_SIGNING", cls.sweep_stale_signing_s, 1, 86400
            ),
            auth_fail_limit=get_int("AUTH_FAIL_LIMIT", cls.auth_fail_limit),
            auth_fail_window_s=get_int("AUTH_FAIL_WINDOW", cls.auth_fail_window_s),
            delivery_roots=roots,
            proxy_hops=get_int("PROXY_HOPS", cls.proxy_hops, minimum=0),
            outbound_allow=allow,
        )
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return settings

    def require_ca_passphrase(self) -> str:
        if not self.ca_key_passphrase:
            raise ConfigError("CERTFLEET_CA_KEY_PASSPHRASE is not set; it is needed to use CA keys")
        return self.ca_key_passphrase

    def require_data_key(self) -> str:
        if not self.data_key:
            raise ConfigError("CERTFLEET_DATA_KEY is not set; it is needed for server-held keys")
        return self.data_key


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@dataclass(frozen=True)
class SentinelNodes:
    addresses: list[tuple[str, int]]
    db: int
    password: str | None = field(default=None, repr=False)


def sentinel_nodes(url: str) -> SentinelNodes:
    """The Sentinels, database number and password of a Sentinel URL in kombu's form:
    `sentinel://[:password@]host:port[/db]`, several joined with `;`."""
    addresses: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ValueError("each ;-separated part must be sentinel://host:port")
        try:
            port = parsed.port or 26379
        except ValueError:
            raise ValueError("a Sentinel port must be a number") from None
        addresses.append((parsed.hostname, port))
        path = parsed.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError("the database must be a number (sentinel://host:port/0)")
            db = int(path)
        password = unquote(parsed.password) if parsed.password else password
    return SentinelNodes(addresses, db, password)


def broker_url(url: str) -> str:
    """The URL for Celery's broker. kombu takes the database and password of a Sentinel URL
    from its first part only, so each part gets them, wherever they were written."""
    if urlparse(url).scheme != "sentinel":
        return url
    nodes = sentinel_nodes(url)
    auth = f":{quote(nodes.password, safe='')}@" if nodes.password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{nodes.db}" for host, port in nodes.addresses)
