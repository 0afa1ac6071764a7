"""Small helpers every resource uses: committing, paging, and publishing after commit."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import marshmallow as ma
import redis.exceptions
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import IntegerConverter, Map

from services.api.context import runtime
from shared.contracts import (
    MAX_IDS_PER_MESSAGE,
    chunked,
    distribute_trust,
    publish_crl,
)
from shared.db.models import IssuanceRequest
from shared.errors import NotFound, Unavailable, ValidationFailed
from shared.issuance import issue_messages

T = TypeVar("T")
log = logging.getLogger(__name__)

# Row IDs are 64-bit signed in both databases; a larger number is no ID (404/422, not 500).
MAX_ID = 2**63 - 1


def id_field(**kwargs: Any) -> ma.fields.Integer:
    return ma.fields.Integer(validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` URL parts above MAX_ID do not match, so the route is a 404."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


DEFAULT_PAGE = 100
MAX_PAGE = 1000


def get_or_404(session: Session, model: type[T], row_id: int, noun: str) -> T:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{noun} {row_id} does not exist")
    return row


def find_by_name(session: Session, model: Any, name: str) -> Any:
    """The row of `model` (a Site or Host: names are unique) with this name, or None."""
    return session.scalar(select(model).where(model.name == name))


def by_name_or_404(session: Session, model: type[T], name: str, noun: str) -> T:
    row: T | None = find_by_name(session, model, name)
    if row is None:
        raise NotFound(f"{noun} {name!r} does not exist")
    return row


def named_in_scope(session: Session, model: Any, name: str | None, noun: str, who: Any) -> Any:
    """The site or host a listing is filtered by, looked up by name: None without a filter.
    An unknown name, or one outside the reader's scope (alike, so a scoped token learns
    nothing), is a 404 naming what was asked for: an empty page would read as "none". An
    empty name is no filter, as it always was."""
    if not name:
        return None
    row = find_by_name(session, model, name)
    site_id = None if row is None else (row.id if noun == "site" else row.site_id)
    if row is None or not who.can_read_site(site_id):
        raise NotFound(f"{noun} {name!r} does not exist")
    return row


class PageArgs(ma.Schema):
    cursor = ma.fields.String(load_default=None, metadata={"description": "from next_cursor"})
    limit = ma.fields.Integer(
        load_default=DEFAULT_PAGE, validate=ma.validate.Range(min=1, max=MAX_PAGE)
    )


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind != "id":
            raise ValueError(kind)
        last_id = int(value)
        if not 0 <= last_id <= MAX_ID:
            raise ValueError(value)
        return last_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("the cursor is not valid", {"cursor": ["not valid"]}) from exc


def page_of(rows: Sequence[object], limit: int) -> tuple[list[object], str | None]:
    """Given up to limit+1 rows ordered by id, return the page and the next cursor."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return items, encode_cursor(items[-1].id) if more and items else None  # type: ignore[attr-defined]


def publish_issuance(requests: Sequence[IssuanceRequest]) -> None:
    """Enqueue already committed requests (server-side key ones in smaller messages). If
    Redis is down the rows stay `queued`, nothing is lost, and the caller is told to retry
    (a replay with the same Idempotency-Key re-enqueues)."""
    rt = runtime()
    try:
        for message in issue_messages(requests, rt.settings.issue_batch_size):
            rt.publisher.publish(message)
    except (redis.exceptions.RedisError, KombuOperationalError, OSError) as exc:
        raise Unavailable(
            "the request was saved but could not be queued; retry with the same Idempotency-Key"
        ) from exc


def publish_trust(host_ids: Sequence[int]) -> bool:
    """Ask the distributor to bring the current trust bundle to these hosts. The bundle is
    derived from the database, so a lost message loses nothing that a later push or the
    sweep cannot redo; a Redis outage is logged and reported, not raised."""
    try:
        for chunk in chunked(list(host_ids), MAX_IDS_PER_MESSAGE):
            runtime().publisher.publish(distribute_trust(chunk))
    except (redis.exceptions.RedisError, KombuOperationalError, OSError):
        log.warning("trust distribution could not be queued")
        return False
    return True


def queue_crl_refresh(authority_id: int) -> bool:
    """Ask the issuer to re-sign the authority's CRL. Like publish_trust, a Redis outage is
    logged and reported, not raised: the issuer's periodic refresh sees that the stored CRL
    is older than the latest revocation and publishes it then."""
    try:
        runtime().publisher.publish(publish_crl(authority_id))
    except (redis.exceptions.RedisError, KombuOperationalError, OSError):
        log.warning("crl refresh could not be queued")
        return False
    return True
