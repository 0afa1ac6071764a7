"""Authority shapes."""

from __future__ import annotations

import re

import marshmallow as ma

from shared.db.models import AUTHORITY_KINDS
from shared.pki.profiles import ALLOWED_RSA_BITS

# X.520 caps a common name at 64 characters.
CA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 .,_()-]{0,63}\Z")


class AuthorityInSchema(ma.Schema):
    name = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(CA_NAME, error="1-64 letters, digits, spaces or .,_()-"),
        metadata={"description": "also the CA certificate's common name"},
    )
    kind = ma.fields.String(load_default="root", validate=ma.validate.OneOf(AUTHORITY_KINDS))
    parent = ma.fields.String(load_default=None, metadata={"description": "parent authority name"})
    key_bits = ma.fields.Integer(load_default=3072, validate=ma.validate.OneOf(ALLOWED_RSA_BITS))
    validity_days = ma.fields.Integer(
        load_default=None, allow_none=True, validate=ma.validate.Range(min=30, max=36500)
    )


class AuthorityOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    kind = ma.fields.String()
    parent_id = ma.fields.Integer(allow_none=True)
    status = ma.fields.String()
    key_bits = ma.fields.Integer()
    serial = ma.fields.String(allow_none=True)
    fingerprint = ma.fields.String(allow_none=True)
    not_before = ma.fields.DateTime(allow_none=True)
    not_after = ma.fields.DateTime(allow_none=True)
    reason = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()


class TrustPushSchema(ma.Schema):
    hosts = ma.fields.Integer(metadata={"description": "client hosts the bundle goes to"})
    queued = ma.fields.Boolean()


class CrlArgs(ma.Schema):
    format = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(("der", "pem")),
        metadata={"description": "der or pem; without it, the Accept header decides (DER)"},
    )
