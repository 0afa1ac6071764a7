"""API tokens: random secrets shown once, stored as SHA-256 hashes.

A token secret has 256 bits of entropy, so a fast hash is enough: there is nothing to
brute-force that a slow hash would protect.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import AGENT_ROLE, TOKEN_ROLES, ApiToken
from shared.errors import ValidationFailed

TOKEN_PREFIX = "cf_"


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    session: Session,
    *,
    name: str,
    role: str,
    site_id: int | None,
    created_by: str,
    now: dt.datetime,
    host_id: int | None = None,
) -> NewToken:
    """A new token. Agent tokens are made only by enrolment, always for one host."""
    if role not in (*TOKEN_ROLES, AGENT_ROLE):
        raise ValidationFailed(f"role must be one of {', '.join(TOKEN_ROLES)}")
    if (role == AGENT_ROLE) != (host_id is not None):
        raise ValidationFailed("an agent token belongs to exactly one host, and only it does")
    if site_id is not None and role not in ("operator", "auditor"):
        raise ValidationFailed("only operator and auditor tokens can be scoped to a site")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        role=role,
        site_id=site_id,
        host_id=host_id,
        token_hash=hash_secret(secret),
        prefix=secret[:10],
        created_by=created_by,
        created_at=now,
    )
    session.add(token)
    session.flush()
    return NewToken(token, secret)


def find_token(session: Session, secret: str) -> ApiToken | None:
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
    if token is None or token.revoked_at is not None:
        return None
    return token
