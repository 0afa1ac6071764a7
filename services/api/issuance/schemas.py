"""Issuance request shapes."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from webargs.fields import DelimitedList

from services.api.common import id_field
from shared.db.models import REQUEST_STATUSES
from shared.waiting import MAX_WAIT_S

MAX_CSR_CHARS = 16384


class IssuanceInSchema(ma.Schema):
    host = ma.fields.String(load_default=None, metadata={"description": "host name"})
    host_id = id_field(load_default=None)
    csr = ma.fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(min=1, max=MAX_CSR_CHARS),
        metadata={"description": "PEM CSR; omit to have a key generated and held server-side"},
    )
    validity_days = ma.fields.Integer(
        load_default=None, allow_none=True, validate=ma.validate.Range(min=1, max=825)
    )

    @ma.validates_schema
    def one_host(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("host") is None) == (data.get("host_id") is None):
            raise ma.ValidationError("give exactly one of `host` (name) or `host_id`")


class BulkInSchema(ma.Schema):
    requests = ma.fields.List(
        ma.fields.Nested(IssuanceInSchema), required=True, validate=ma.validate.Length(min=1)
    )


class IssuanceOutSchema(ma.Schema):
    id = ma.fields.Integer()
    host_id = ma.fields.Integer()
    host = ma.fields.Function(lambda r: r.host.name)
    status = ma.fields.String()
    reason = ma.fields.String(allow_none=True)
    validity_days = ma.fields.Integer()
    key_source = ma.fields.Function(lambda r: "csr" if r.csr_pem else "server")
    certificate_id = ma.fields.Integer(allow_none=True)
    attempts = ma.fields.Integer()
    idempotency_key = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class BulkOutSchema(ma.Schema):
    count = ma.fields.Integer()
    requests = ma.fields.List(ma.fields.Nested(IssuanceOutSchema))


class IdempotencyHeader(ma.Schema):
    idempotency_key = ma.fields.String(
        data_key="Idempotency-Key",
        load_default=None,
        validate=ma.validate.Length(min=1, max=190),
    )


class IssuanceListArgs(ma.Schema):
    ids = DelimitedList(
        id_field(),
        load_default=list,
        validate=ma.validate.Length(max=1000),
        metadata={"description": "comma-separated request IDs"},
    )
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(REQUEST_STATUSES))
    cursor = ma.fields.String(load_default=None)
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))


class IssuanceWaitArgs(ma.Schema):
    wait = ma.fields.Float(
        load_default=0.0,
        validate=ma.validate.Range(min=0, max=MAX_WAIT_S),
        metadata={
            "description": "seconds to hold the response until the request is issued or"
            f" failed (long poll, at most {MAX_WAIT_S:.0f}); 0 answers at once"
        },
    )


class IssuancePageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(IssuanceOutSchema))
    next_cursor = ma.fields.String(allow_none=True)
