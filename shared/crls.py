"""Stored CRLs: which revoked certificates an authority's CRL lists, when it is due again,
and storing the next one without ever reusing or lowering its CRL Number.

Signing happens in the issuer, the only process that decrypts CA keys: it passes the signer
in. The API only reads what is stored here.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db.models import Authority, AuthorityCrl, Certificate
from shared.pki.ca import IssuedCa
from shared.pki.crl import RevokedEntry, build_crl, crl_to_der
from shared.pki.profiles import DEFAULT_CRL, CrlProfile

SIGNING_STATUSES = ("active", "retiring")


def _reason(name: str | None) -> x509.ReasonFlags:
    try:
        return x509.ReasonFlags(name or "unspecified")
    except ValueError:
        return x509.ReasonFlags.unspecified


def revoked_entries(session: Session, authority_id: int) -> list[RevokedEntry]:
    """Every revoked certificate of the authority, expired ones included (build_crl decides
    how long those stay listed). One statement, so the list and its length agree."""
    rows = session.execute(
        select(
            Certificate.serial,
            Certificate.revoked_at,
            Certificate.revocation_reason,
            Certificate.not_before,
            Certificate.not_after,
        ).where(Certificate.authority_id == authority_id, Certificate.status == "revoked")
    ).all()
    return [
        RevokedEntry(
            serial_number=int(row.serial, 16),
            revoked_at=row.revoked_at or row.not_before,
            reason=_reason(row.revocation_reason),
            not_after=row.not_after,
        )
        for row in rows
    ]


def _insert_first(session: Session, values: dict[str, object]) -> bool:
    """Insert an authority's first CRL row unless another worker just did."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(AuthorityCrl)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(AuthorityCrl.authority_id)
    )
    return session.execute(statement).first() is not None


def store_next_crl(
    session: Session,
    authority: Authority,
    signer: IssuedCa,
    *,
    now: dt.datetime,
    profile: CrlProfile = DEFAULT_CRL,
) -> int | None:
    """Build the authority's next CRL and store it in the caller's transaction; return its
    number. None means another worker stored a CRL after this one read the previous number:
    the caller commits nothing useful and tries again in a new transaction, so the CRL that
    wins always lists what was revoked before it was built."""
    previous = session.scalar(
        select(AuthorityCrl.number).where(AuthorityCrl.authority_id == authority.id)
    )
    entries = revoked_entries(session, authority.id)
    number = (previous or 0) + 1
    crl = build_crl(signer, entries, number=number, now=now, profile=profile)
    values: dict[str, object] = {
        "number": number,
        "der": crl_to_der(crl),
        "this_update": crl.last_update_utc,
        "next_update": crl.next_update_utc,
        "revoked_count": len(entries),
        "entries": len(crl),
    }
    if previous is None:
        return number if _insert_first(session, {"authority_id": authority.id, **values}) else None
    replaced = session.execute(
        update(AuthorityCrl)
        .where(AuthorityCrl.authority_id == authority.id, AuthorityCrl.number == previous)
        .values(**values)
        .returning(AuthorityCrl.authority_id)
    ).first()
    return number if replaced is not None else None


def due_authority_ids(
    session: Session, now: dt.datetime, profile: CrlProfile = DEFAULT_CRL
) -> list[int]:
    """Authorities that can sign and whose CRL is missing, past half its validity, or older
    than a revocation (a lost "publish" message is made good here)."""
    revoked = (
        select(Certificate.authority_id, func.count().label("n"))
        .where(Certificate.status == "revoked")
        .group_by(Certificate.authority_id)
        .subquery()
    )
    rows = session.execute(
        select(Authority.id, AuthorityCrl.next_update, AuthorityCrl.revoked_count, revoked.c.n)
        .outerjoin(AuthorityCrl, AuthorityCrl.authority_id == Authority.id)
        .outerjoin(revoked, revoked.c.authority_id == Authority.id)
        .where(Authority.status.in_(SIGNING_STATUSES), Authority.certificate_pem.is_not(None))
        .order_by(Authority.id)
    ).all()
    return [
        row.id
        for row in rows
        if row.next_update is None
        or row.next_update - now <= profile.refresh_before
        or (row.n or 0) > row.revoked_count
    ]


def stored_crl(session: Session, authority_id: int) -> AuthorityCrl | None:
    return session.get(AuthorityCrl, authority_id)
