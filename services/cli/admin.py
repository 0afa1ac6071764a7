"""Local admin commands that act on the database directly (no API): `certfleet init`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from shared import events
from shared.authorities import generate_material
from shared.clock import Clock
from shared.db.migrate import upgrade
from shared.db.models import ApiToken, Authority
from shared.db.session import Database
from shared.files import write_private
from shared.pki.profiles import DEFAULT_CA, CrlProfile
from shared.settings import Settings
from shared.tokens import create_token

ACTOR = "cli:init"


@dataclass(frozen=True)
class InitResult:
    authority: Authority
    authority_created: bool
    admin_token: str | None
    token_path: Path | None


def init(
    settings: Settings,
    clock: Clock,
    *,
    ca_name: str,
    key_bits: int = DEFAULT_CA.key_bits,
    validity_days: int = DEFAULT_CA.root_validity_days,
    new_token: bool = False,
) -> InitResult:
    """Create the schema, the first root CA and an admin token. Safe to run again: an existing
    authority is kept, and a token is made only if none exists or one is asked for."""
    passphrase = settings.require_ca_passphrase()
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            now = clock.now()
            authority = session.scalar(select(Authority).order_by(Authority.id).limit(1))
            created = authority is None
            if authority is None:
                authority = Authority(
                    name=ca_name,
                    kind="root",
                    status="pending",
                    key_bits=key_bits,
                    validity_days=validity_days,
                    created_at=now,
                )
                session.add(authority)
                session.flush()
                generate_material(
                    session,
                    authority,
                    passphrase=passphrase,
                    now=now,
                    crl_profile=CrlProfile(validity_days=settings.crl_validity_days),
                )
                events.record(
                    session,
                    "authority.created",
                    ACTOR,
                    at=now,
                    subject=("authority", authority.id),
                    name=authority.name,
                )
            has_admin = session.scalar(
                select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked_at.is_(None))
            )
            secret = path = None
            if new_token or has_admin is None:
                token = create_token(
                    session, name="admin", role="admin", site_id=None, created_by=ACTOR, now=now
                )
                events.record(
                    session,
                    "token.created",
                    ACTOR,
                    at=now,
                    subject=("api_token", token.token.id),
                    role="admin",
                )
                secret = token.secret
                path = write_secret(settings.var_dir / "admin.token", secret)
        return InitResult(authority, created, secret, path)
    finally:
        db.dispose()


def write_secret(path: Path, secret: str) -> Path:
    """Write with mode 0600 from the start (never world-readable, not even for a moment)."""
    return write_private(path, secret + "\n")
