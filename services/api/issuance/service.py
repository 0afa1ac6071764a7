"""Accept issuance requests: check them now, store them `queued`, let the issuer sign.

Everything that can be refused is refused here, before a row exists: unknown host, a site
the token cannot write, a CSR that does not parse, verify, or ask for allowed names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload

from services.api.auth import Principal
from services.api.common import get_or_404
from services.api.hosts.service import get_host, host_by_name
from shared.db.models import Host, IssuanceRequest
from shared.errors import CertfleetError, Conflict, ValidationFailed
from shared.issuance import (
    check_csr_for_host,
    request_fingerprint,
    site_policy,
    store_request,
    subject_names,
)
from shared.pki.profiles import XPROTECT_SERVER


@dataclass(frozen=True)
class Accepted:
    request: IssuanceRequest
    created: bool


def get_request(session: Session, request_id: int) -> IssuanceRequest:
    return get_or_404(session, IssuanceRequest, request_id, "issuance request")


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
    if who.role == "operator" and who.site_id is not None:
        query = query.join(Host, Host.id == IssuanceRequest.host_id).where(
            Host.site_id == who.site_id
        )
    return query


def resolve_host(session: Session, item: dict[str, Any]) -> Host:
    if item.get("host_id") is not None:
        return get_host(session, item["host_id"])
    return host_by_name(session, item["host"])


def prepare(session: Session, item: dict[str, Any], who: Principal) -> tuple[Host, str | None, int]:
    """Validate one item; return the host, the CSR and the validity to store."""
    host = resolve_host(session, item)
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
    """All or nothing: one bad item refuses the batch, with every item's problem listed."""
    if len(items) > max_items:
        raise ValidationFailed(f"at most {max_items} requests per bulk call, not {len(items)}")
    accepted: list[Accepted] = []
    problems: dict[str, str] = {}
    for index, item in enumerate(items):
        key = f"{idempotency_key}:{index}" if idempotency_key else None
        try:
            accepted.append(accept(session, item, who=who, idempotency_key=key, now=now))
        except CertfleetError as exc:
            problems[str(index)] = exc.message
    if problems:
        raise ValidationFailed(f"{len(problems)} of {len(items)} requests were refused", problems)
    return accepted


def to_enqueue(accepted: Sequence[Accepted]) -> list[int]:
    """New rows, and replays of rows that are still queued (their message may have been lost)."""
    return [a.request.id for a in accepted if a.created or a.request.status == "queued"]
