"""The sweep: the database is the source of truth and Redis only a transport, so anything
whose message may have been lost is found here by indexed queries and sent again.
Duplicates are harmless: every worker claims its rows with a conditional update.

Two tables say what it covers. RELEASES hand back claims whose worker died (past the stale
limit) so that the finders below see the work again. STRANDED lists every kind of work a
lost message can leave behind, with how to find it (older than the grace period; found rows
are touched so the next sweep waits another grace period) and the message that restarts it:

- requests `queued` for longer than the grace period: enqueued again;
- authorities `pending` for longer than the grace period (their creation message was lost):
  created again;
- push deliveries that are due and not leased: enqueued again;
- delivered/installed deliveries whose probe never concluded: probed again;
- active certificates whose host has a delivery method but no delivery: planned.

A new kind of asynchronous work adds a row here, or a lost message strands it for ever.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from shared import contracts, deliveries
from shared.clock import Clock
from shared.db.models import Authority, Certificate, Delivery, Host, IssuanceRequest
from shared.db.session import Database

Publish = Callable[[contracts.Message], None]


@dataclass(frozen=True)
class SweepLimits:
    grace: dt.timedelta = dt.timedelta(minutes=2)
    stale_signing: dt.timedelta = dt.timedelta(minutes=15)
    batch: int = 1000
    per_run: int = 20000


@dataclass(frozen=True)
class SweepReport:
    requests_requeued: int = 0
    requests_released: int = 0
    authorities_resent: int = 0
    authorities_released: int = 0
    deliveries_resent: int = 0
    probes_resent: int = 0
    certificates_planned: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Release:
    """Claims older than the stale limit go back to where a finder sees them."""

    counted_as: str
    release: Callable[[Session, dt.datetime, dt.datetime], int]  # (session, before, now)


@dataclass(frozen=True)
class Stranded:
    """One kind of work a lost message can strand."""

    counted_as: str
    find: Callable[[Session, dt.datetime, dt.datetime, int], list[int]]  # before, now, limit
    messages: Callable[[Sequence[int], int], list[contracts.Message]]  # ids, batch size


def _each(
    build: Callable[[int], contracts.Message],
) -> Callable[[Sequence[int], int], list[contracts.Message]]:
    return lambda ids, _batch: [build(i) for i in ids]


def _batched(
    build: Callable[[Sequence[int]], contracts.Message],
) -> Callable[[Sequence[int], int], list[contracts.Message]]:
    return lambda ids, batch: [build(chunk) for chunk in contracts.chunked(ids, batch)]


def sweep(
    db: Database, publish: Publish, clock: Clock, limits: SweepLimits = SweepLimits()
) -> SweepReport:
    now = clock.now()
    counts: dict[str, int] = {}
    with db.session() as session:
        for release in RELEASES:
            counts[release.counted_as] = release.release(session, now - limits.stale_signing, now)
    for kind in STRANDED:
        with db.session() as session:  # committed before publishing: a worker must see it
            ids = kind.find(session, now - limits.grace, now, limits.per_run)
        for message in kind.messages(ids, limits.batch):
            publish(message)
        counts[kind.counted_as] = len(ids)
    return SweepReport(**counts)


Model = type[IssuanceRequest] | type[Authority] | type[Delivery]


def _released(
    model: Model, claimed: str, back_to: str
) -> Callable[[Session, dt.datetime, dt.datetime], int]:
    """A claim older than any task's time limit belongs to a worker that died: hand the
    row back, dated old enough to be sent again by this very sweep."""

    def release(session: Session, before: dt.datetime, now: dt.datetime) -> int:
        result = session.execute(
            update(model)
            .where(model.status == claimed, model.updated_at < before)
            .values(status=back_to, updated_at=before)
            .returning(model.id)
        )
        return len(result.all())

    return release


def _untouched(
    model: Model, conditions: Callable[[dt.datetime], Sequence[ColumnElement[bool]]]
) -> Callable[[Session, dt.datetime, dt.datetime, int], list[int]]:
    """Rows that match `conditions(now)` and have not changed for the grace period; they are
    touched, so that the next sweep waits another grace period before sending them again."""

    def find(session: Session, before: dt.datetime, now: dt.datetime, limit: int) -> list[int]:
        where = (*conditions(now), model.updated_at < before)
        ids = list(session.scalars(select(model.id).where(*where).order_by(model.id).limit(limit)))
        if ids:
            session.execute(
                update(model).where(model.id.in_(ids), *conditions(now)).values(updated_at=now)
            )
        return ids

    return find


def _queued(now: dt.datetime) -> Sequence[ColumnElement[bool]]:
    return (IssuanceRequest.status == "queued",)


def _pending_authority(now: dt.datetime) -> Sequence[ColumnElement[bool]]:
    return (Authority.status == "pending",)


def _due_push(now: dt.datetime) -> Sequence[ColumnElement[bool]]:
    """A push delivery due now and not leased by a worker."""
    return (
        Delivery.status == "pending",
        Delivery.method.in_(deliveries.PUSH_METHODS),
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
    )


def _open_probe(now: dt.datetime) -> Sequence[ColumnElement[bool]]:
    """A probe chain whose next message was lost: delivered/installed, verdict still open."""
    return (
        Delivery.status.in_(("delivered", "installed")),
        Delivery.kind == "certificate",
        Delivery.probe_state.in_(("unprobed", "mismatch", "unreachable")),
        Delivery.probe_attempts < deliveries.MAX_PROBES,
    )


def _unplanned_certificates(
    session: Session, before: dt.datetime, now: dt.datetime, limit: int
) -> list[int]:
    """Active certificates with no delivery at all although their host has a method. The
    method is tested in SQL: filtered afterwards, the first `limit` certificates of hosts
    without one would hide every later one that has one."""
    return list(
        session.scalars(
            select(Certificate.id)
            .join(Host, Host.id == Certificate.host_id)
            .outerjoin(Delivery, and_(Delivery.certificate_id == Certificate.id))
            .where(
                Certificate.status == "active",
                Certificate.created_at < before,
                Delivery.id.is_(None),
                deliveries.method_column() != deliveries.NO_METHOD,
            )
            .order_by(Certificate.id)
            .limit(limit)
        )
    )


RELEASES = (
    Release("requests_released", _released(IssuanceRequest, "signing", back_to="queued")),
    Release("authorities_released", _released(Authority, "generating", back_to="pending")),
)
STRANDED = (
    Stranded(
        "requests_requeued", _untouched(IssuanceRequest, _queued), _batched(contracts.issue_batch)
    ),
    Stranded(
        "authorities_resent",
        _untouched(Authority, _pending_authority),
        _each(contracts.create_authority),
    ),
    Stranded("deliveries_resent", _untouched(Delivery, _due_push), _each(contracts.deliver)),
    Stranded("probes_resent", _untouched(Delivery, _open_probe), _each(contracts.verify)),
    Stranded(
        "certificates_planned",
        _unplanned_certificates,
        _batched(contracts.distribute_certificates),
    ),
)
