"""Agent shapes."""

from __future__ import annotations

import marshmallow as ma

from services.api.common import id_field
from services.api.issuance.schemas import MAX_CSR_CHARS


class EnrollmentTokenInSchema(ma.Schema):
    host = ma.fields.String(required=True, metadata={"description": "host name"})
    valid_hours = ma.fields.Integer(load_default=24, validate=ma.validate.Range(min=1, max=720))


class EnrollmentTokenOutSchema(ma.Schema):
    host = ma.fields.String()
    enrollment_token = ma.fields.String(metadata={"description": "one-time; shown only now"})
    expires_at = ma.fields.DateTime()


class EnrollInSchema(ma.Schema):
    enrollment_token = ma.fields.String(required=True, load_only=True)
    csr = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=MAX_CSR_CHARS))


class EnrollOutSchema(ma.Schema):
    host = ma.fields.String()
    agent_token = ma.fields.String(metadata={"description": "host-scoped; shown only now"})
    request_id = ma.fields.Integer()


class AgentHostSchema(ma.Schema):
    name = ma.fields.String()
    roles = ma.fields.List(ma.fields.String())
    platform = ma.fields.String()
    service_account = ma.fields.String(allow_none=True)
    tls_endpoints = ma.fields.List(ma.fields.String())


class BundleOutSchema(ma.Schema):
    delivery_id = ma.fields.Integer()
    kind = ma.fields.String()
    fingerprint = ma.fields.String(metadata={"description": "SHA-256 to acknowledge"})
    certificate_pem = ma.fields.String(allow_none=True)
    chain_pem = ma.fields.String(allow_none=True)
    trust_pem = ma.fields.String()
    host = ma.fields.Nested(AgentHostSchema)


class AckInSchema(ma.Schema):
    delivery_id = id_field(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(("installed", "failed")))
    fingerprint = ma.fields.String(load_default=None, validate=ma.validate.Length(equal=64))
    error = ma.fields.String(load_default=None, validate=ma.validate.Length(max=2000))


class AckOutSchema(ma.Schema):
    delivery_id = ma.fields.Integer()
    status = ma.fields.String()
