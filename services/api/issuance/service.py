"""Accept issuance requests: check them now, store them `queued`, let the issuer sign.

Everything that can be refused is refused here, before a row exists: unknown host, a site
the token cannot write, a CSR that does not parse, verify, or ask for allowed names.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload

from services.api.auth import Principal
from shared import access, events, waiting
from shared.db.models import Host, IssuanceRequest
from shared.errors import (
    CertfleetError,
    Conflict,
    Forbidden,
    NotFound,
    OutOfScope,
    ValidationFailed,
)
from shared.issuance import (
    check_csr_for_host,
    insert_requests,
    request_fingerprint,
    request_values,
    requested_entry,
    site_policy,
    store_request,
    subject_names,
)
from shared.logging import fields
from shared.pki.profiles import XPROTECT_SERVER
from shared.waiting import FINISHED_STATUSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    request: IssuanceRequest
    created: bool


def get_request(session: Session, request_id: int, who: Principal | None = None) -> IssuanceRequest:
    """The request with its host (which the answer names), if it lies in the reader's scope."""
    row = session.get(IssuanceRequest, request_id, options=[joinedload(IssuanceRequest.host)])
    if row is None:
        raise NotFound(f"issuance request {request_id} does not exist")
    if who is not None:
        who.require_read(row.host.site_id)
    return row


def wait_finished(
    session: Session, client: redis.Redis, row: IssuanceRequest, timeout: float
) -> IssuanceRequest:
    """The request once it is issued or failed, or as it stands after `timeout` seconds.
    No database connection is held while waiting. Without Redis there is no wake-up to wait
    for: the row is answered as it stands and the client asks again."""
    if row.status in FINISHED_STATUSES or timeout <= 0:
        return row
    request_id = row.id
    deadline = time.monotonic() + timeout
    try:
        with waiting.subscribed(client, request_id) as wakeup:
            while True:
                session.rollback()  # ends the transaction: the pool gets the connection back
                row = get_request(session, request_id)
                left = deadline - time.monotonic()
                if row.status in FINISHED_STATUSES or left <= 0:
                    break
                session.rollback()
                wakeup.wait(left)  # a wake-up for another installation's request: read again
    except redis.exceptions.RedisError as exc:
        log.warning("long poll without Redis", extra=fields(error=type(exc).__name__))
    return row


def list_query(args: dict[str, Any], who: Principal, after_id: int) -> Select[Any]:
    query = (
        select(IssuanceRequest)
        .options(joinedload(IssuanceRequest.host))
        .where(IssuanceRequest.id > after_id)
        .order_by(IssuanceRequest.id)
        .limit(args["limit"] + 1)
    )
    if args["ids"]:
        query = query.where(IssuanceRequest.id.in_(args["ids"]))
    if args["status"]:
        query = query.where(IssuanceRequest.status == args["status"])
    if who.scoped_site_id is not None:
        query = access.scope(
            query.join(Host, Host.id == IssuanceRequest.host_id), Host.site_id, who
        )
    return query


def resolve_host(session: Session, item: dict[str, Any], known: KnownHosts | None = None) -> Host:
    """The item's host with its site (one query when the caller has not loaded it)."""
    return (known or KnownHosts.load(session, [item])).get(item)


@dataclass(frozen=True)
class KnownHosts:
    """The hosts a bulk call names, loaded with two queries instead of one per item."""

    by_id: dict[int, Host]
    by_name: dict[str, Host]

    @classmethod
    def load(cls, session: Session, items: Sequence[dict[str, Any]]) -> KnownHosts:
        ids = {i["host_id"] for i in items if i.get("host_id") is not None}
        names = {i["host"] for i in items if i.get("host_id") is None and i.get("host")}
        query = select(Host).options(joinedload(Host.site))
        by_id = {h.id: h for h in session.scalars(query.where(Host.id.in_(ids)))} if ids else {}
        by_name = (
            {h.name: h for h in session.scalars(query.where(Host.name.in_(names)))} if names else {}
        )
        return cls(by_id, by_name)

    def get(self, item: dict[str, Any]) -> Host:
        if item.get("host_id") is not None:
            host = self.by_id.get(item["host_id"])
            if host is None:
                raise NotFound(f"host {item['host_id']} does not exist")
            return host
        found = self.by_name.get(item.get("host") or "")
        if found is None:
            raise NotFound(f"host {item.get('host')!r} does not exist")
        return found


def prepare(
    session: Session, item: dict[str, Any], who: Principal, known: KnownHosts | None = None
) -> tuple[Host, str | None, int]:
    """Validate one item; return the host, the CSR and the validity to store."""
    host = resolve_host(session, item, known)
    who.require_write(host.site_id)
    names = subject_names(host)
    site_policy(host.site).enforce(names.dns_names, names.ip_addresses)
    csr = item.get("csr")
    if csr:
        check_csr_for_host(host, csr, XPROTECT_SERVER)
        csr = csr.strip() + "\n"
    validity = item.get("validity_days") or host.site.default_validity_days
    return host, csr, validity


def accept(
    session: Session,
    item: dict[str, Any],
    *,
    who: Principal,
    idempotency_key: str | None,
    now: dt.datetime,
) -> Accepted:
    host, csr, validity = prepare(session, item, who)
    fingerprint = request_fingerprint(host.id, csr, validity)
    if idempotency_key is not None:
        existing = session.scalar(
            select(IssuanceRequest).where(IssuanceRequest.idempotency_key == idempotency_key)
        )
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise Conflict("this Idempotency-Key was used for a different request")
            return Accepted(existing, created=False)
    return Accepted(
        store_request(session, host, csr, validity, idempotency_key, fingerprint, who.actor, now),
        created=True,
    )


def accept_bulk(
    session: Session,
    items: Sequence[dict[str, Any]],
    *,
    who: Principal,
    idempotency_key: str | None,
    max_items: int,
    now: dt.datetime,
) -> list[Accepted]:
    """All or nothing: one bad item refuses the batch, with every item's problem listed.
    Hosts are loaded in one go and the new rows inserted by one multi-row INSERT."""
    if len(items) > max_items:
        raise ValidationFailed(f"at most {max_items} requests per bulk call, not {len(items)}")
    known = KnownHosts.load(session, items)
    keys = [f"{idempotency_key}:{i}" if idempotency_key else None for i in range(len(items))]
    replayed = _existing(session, [k for k in keys if k])
    accepted: list[Accepted | None] = []  # None: a new row, inserted below
    new: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    denied = False
    with session.no_autoflush:
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            try:
                host, csr, validity = prepare(session, item, who, known)
                fingerprint = request_fingerprint(host.id, csr, validity)
                existing = replayed.get(key or "")
                if existing is not None and existing.request_hash != fingerprint:
                    raise Conflict("this Idempotency-Key was used for a different request")
            except CertfleetError as exc:
                problems[str(index)] = exc.message
                denied = denied or isinstance(exc, OutOfScope | Forbidden)
                continue
            if existing is not None:
                accepted.append(Accepted(existing, created=False))
            else:
                new.append(request_values(host, csr, validity, key, fingerprint, who.actor, now))
                accepted.append(None)
    if denied:  # as for a single request: the token's rights, not the input, are the problem
        raise Forbidden(
            f"{len(problems)} of {len(items)} requests were refused, some beyond this token's "
            "rights",
            problems,
        )
    if problems:
        raise ValidationFailed(f"{len(problems)} of {len(items)} requests were refused", problems)
    created = iter(insert_requests(session, new))
    done = [a if a is not None else Accepted(next(created), created=True) for a in accepted]
    events.record_all(
        session, [requested_entry(a.request, who.actor, now) for a in done if a.created]
    )
    return done


def _existing(session: Session, keys: Sequence[str]) -> dict[str, IssuanceRequest]:
    if not keys:
        return {}
    rows = session.scalars(select(IssuanceRequest).where(IssuanceRequest.idempotency_key.in_(keys)))
    return {r.idempotency_key or "": r for r in rows}


def to_enqueue(accepted: Sequence[Accepted]) -> list[IssuanceRequest]:
    """New rows, and replays of rows that are still queued (their message may have been lost)."""
    return [a.request for a in accepted if a.created or a.request.status == "queued"]
