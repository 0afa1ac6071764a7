"""API tokens: the secret is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from shared.clock import FixedClock
from shared.db.models import ApiToken
from shared.db.session import Database
from shared.errors import ValidationFailed
from shared.tokens import TOKEN_PREFIX, create_token, find_token, hash_secret
from tests.factories import make_root_authority, make_site


def test_hash_is_stored_not_secret(database: Database, clock: FixedClock) -> None:
    with database.session() as session:
        new = create_token(
            session, name="ci", role="admin", site_id=None, created_by="tests", now=clock.now()
        )
        token_id = new.token.id
    secret = new.secret
    assert secret.startswith(TOKEN_PREFIX)
    assert len(secret) >= 40

    with database.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_tokens WHERE id = :id"), {"id": token_id})
        stored = row.mappings().one()
    assert stored["token_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["prefix"] == secret[:10]
    for value in stored.values():
        assert secret not in str(value)
    assert stored["created_at"] is not None


def test_find_token(sqlite_database: Database, clock: FixedClock) -> None:
    with sqlite_database.session() as session:
        first = create_token(
            session, name="a", role="auditor", site_id=None, created_by="t", now=clock.now()
        )
        second = create_token(
            session, name="b", role="admin", site_id=None, created_by="t", now=clock.now()
        )
    assert first.secret != second.secret
    with sqlite_database.session() as session:
        found = find_token(session, first.secret)
        assert found is not None
        assert found.id == first.token.id
        assert found.role == "auditor"
        assert find_token(session, second.secret).id == second.token.id  # type: ignore[union-attr]
        assert find_token(session, first.secret + "x") is None
        assert find_token(session, "") is None
        assert find_token(session, hash_secret(first.secret)) is None


def test_revoked_token_is_not_found(sqlite_database: Database, clock: FixedClock) -> None:
    with sqlite_database.session() as session:
        new = create_token(
            session, name="old", role="admin", site_id=None, created_by="t", now=clock.now()
        )
    with sqlite_database.session() as session:
        token = session.get(ApiToken, new.token.id)
        assert token is not None
        token.revoked_at = clock.now()
    with sqlite_database.session() as session:
        assert find_token(session, new.secret) is None


def test_roles_and_scoping(
    sqlite_database: Database, clock: FixedClock, ca_passphrase: str
) -> None:
    with sqlite_database.session() as session:
        site = make_site(session, make_root_authority(session, ca_passphrase, clock))
        with pytest.raises(ValidationFailed, match="role must be one of"):
            create_token(
                session, name="x", role="root", site_id=None, created_by="t", now=clock.now()
            )
        with pytest.raises(ValidationFailed, match="only operator"):
            create_token(
                session, name="x", role="admin", site_id=site.id, created_by="t", now=clock.now()
            )
        scoped = create_token(
            session,
            name="site op",
            role="operator",
            site_id=site.id,
            created_by="t",
            now=clock.now(),
        )
        assert scoped.token.site_id == site.id
    with sqlite_database.session() as session:
        found = find_token(session, scoped.secret)
        assert found is not None
        assert found.site_id == site.id
