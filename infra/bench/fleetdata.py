"""Existing certificates for the scan and campaign steps, bulk-loaded with COPY.

Every row carries the same real PEM (one certificate signed by the installation's CA, on the
first host): the scans and the campaign read dates, statuses and IDs, never the PEM, but the
table then has its real width. Serials and fingerprints are unique made-up hex.

Shape of the history (`generations` rows per host, IDs given explicitly): each host's newest
certificate is `active`, issued U(0, 265) days ago with 397 days of validity, so it is not
yet due; a small share (`overdue`) was issued 265-400 days ago and is due (some expired).
Older generations are `superseded`, each renewed 265 days after the one before, so some of
them expire within the notice horizon as in a real fleet. Renewal points come from
shared.renewal.renewal_due_at, as the issuer stores them."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import select

from infra.bench import env
from shared.authorities import load_signer
from shared.db.models import Authority
from shared.db.session import Database
from shared.pki.export import to_pem
from shared.pki.profiles import XPROTECT_SERVER
from shared.pki.signing import SubjectNames, sign_server_certificate
from shared.renewal import renewal_due_at

DAY = dt.timedelta(days=1)
LIFETIME = 397 * DAY
RENEWED_AFTER = 265 * DAY
CERT_COLUMNS = (
    "id",
    "authority_id",
    "host_id",
    "request_id",
    "serial",
    "fingerprint",
    "common_name",
    "dns_names",
    "ip_addresses",
    "not_before",
    "not_after",
    "status",
    "certificate_pem",
    "key_source",
    "created_at",
    "superseded_at",
    "superseded_by_id",
    "renewal_due_at",
    "renewal_attempts",
)
REQUEST_COLUMNS = (
    "id",
    "host_id",
    "csr_pem",
    "validity_days",
    "status",
    "request_hash",
    "attempts",
    "requested_by",
    "created_at",
    "updated_at",
)


def template_pem(db_url: str, authority_id: int) -> str:
    """One real server certificate from the installation's CA."""
    db = Database(db_url)
    try:
        with db.session() as session:
            authority = session.scalars(select(Authority).where(Authority.id == authority_id)).one()
            signer = load_signer(authority, env.CA_PASSPHRASE)
    finally:
        db.dispose()
    key = env.host_key()
    certificate = sign_server_certificate(
        key.public_key(),
        SubjectNames((env.dns_name(0),)),
        signer,
        now=dt.datetime.now(dt.UTC),
        validity_days=XPROTECT_SERVER.default_validity_days,
        profile=XPROTECT_SERVER,
    )
    return to_pem(certificate).decode()


def _rows(
    host_ids: list[int],
    authority_id: int,
    pem: str,
    now: dt.datetime,
    *,
    generations: int,
    overdue: float,
    with_requests: bool,
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(6)  # noqa: S311 - a reproducible spread, not a secret
    for index, host_id in enumerate(host_ids):
        late = rng.random() < overdue
        age = rng.uniform(265, 400) if late else rng.uniform(0, 265)
        newest_start = now - age * DAY
        name = env.dns_name(index)
        for g in range(generations):
            cert_id = index * generations + g + 1
            not_before = newest_start - g * RENEWED_AFTER
            not_after = not_before + LIFETIME
            serial = f"{cert_id:040x}"
            yield (
                cert_id,
                authority_id,
                host_id,
                (index + 1) if with_requests else None,
                serial,
                hashlib.sha256(serial.encode()).hexdigest(),
                name,
                [name],
                [],
                not_before,
                not_after,
                "active" if g == 0 else "superseded",
                pem,
                "csr",
                not_before,
                None if g == 0 else not_before + RENEWED_AFTER,
                None if g == 0 else cert_id - 1,
                renewal_due_at(not_before, not_after, 1 / 3, jitter_seed=serial),
                0,
            )


def load_certificates(
    db_url: str,
    authority_id: int,
    *,
    generations: int,
    overdue: float,
    csrs: list[str] | None = None,
) -> int:
    """COPY `generations` certificates per host (and, with `csrs`, the issued request each
    newest certificate came from, so that a renewal reuses the host's CSR); returns rows."""
    pem = template_pem(db_url, authority_id)
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(env.libpq_url(db_url)) as conn:
        hosts = [r[0] for r in conn.execute("SELECT id FROM hosts ORDER BY name").fetchall()]
        if csrs is not None:
            env.copy_rows(
                conn,
                "issuance_requests",
                REQUEST_COLUMNS,
                (
                    (i + 1, host_id, csrs[i], 397, "issued", "0" * 64, 1, "bench", now, now)
                    for i, host_id in enumerate(hosts)
                ),
            )
        count = env.copy_rows(
            conn,
            "certificates",
            CERT_COLUMNS,
            _rows(
                hosts,
                authority_id,
                pem,
                now,
                generations=generations,
                overdue=overdue,
                with_requests=csrs is not None,
            ),
        )
        if csrs is not None:
            conn.execute(
                "UPDATE issuance_requests r SET certificate_id = c.id FROM certificates c"
                " WHERE c.request_id = r.id"
            )
        for table in ("certificates", "issuance_requests"):
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({name}, 'id'),"
                    " (SELECT coalesce(max(id), 1) FROM {table}))"
                ).format(name=sql.Literal(table), table=sql.Identifier(table))
            )
    with psycopg.connect(env.libpq_url(db_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum gives a long-lived table
    return count
