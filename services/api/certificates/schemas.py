"""Certificate shapes."""

from __future__ import annotations

import datetime as dt

import marshmallow as ma

from services.api.common import PageArgs
from services.api.issuance.schemas import IssuanceOutSchema
from shared.db.models import CERTIFICATE_STATUSES
from shared.pki.crl import REVOCATION_REASONS, RFC5280_REASONS, UNSUPPORTED_REASONS
from shared.pki.export import MIN_PFX_PASSWORD


class CertificateListArgs(PageArgs):
    site = ma.fields.String(load_default=None, metadata={"description": "site name"})
    host = ma.fields.String(load_default=None, metadata={"description": "host name"})
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(CERTIFICATE_STATUSES))
    expires_before = ma.fields.AwareDateTime(
        load_default=None,
        default_timezone=dt.UTC,
        metadata={"description": "ISO 8601; without a zone it is read as UTC"},
    )


class CertificateOutSchema(ma.Schema):
    id = ma.fields.Integer()
    serial = ma.fields.String()
    fingerprint = ma.fields.String(metadata={"description": "SHA-256, hex"})
    common_name = ma.fields.String()
    dns_names = ma.fields.List(ma.fields.String())
    ip_addresses = ma.fields.List(ma.fields.String())
    not_before = ma.fields.DateTime()
    not_after = ma.fields.DateTime()
    status = ma.fields.String()
    key_source = ma.fields.String(metadata={"description": "csr (host holds the key) or server"})
    host_id = ma.fields.Integer()
    host = ma.fields.Function(lambda c: c.host.name)
    site = ma.fields.Function(lambda c: c.host.site.name)
    authority_id = ma.fields.Integer()
    request_id = ma.fields.Integer(allow_none=True)
    superseded_by_id = ma.fields.Integer(allow_none=True)
    revoked_at = ma.fields.DateTime(allow_none=True)
    revocation_reason = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()


class CertificatePageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(CertificateOutSchema))
    next_cursor = ma.fields.String(allow_none=True)


class PfxInSchema(ma.Schema):
    password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(min=MIN_PFX_PASSWORD, max=200)
    )
    friendly_name = ma.fields.String(load_default=None, validate=ma.validate.Length(max=200))


class RevokeInSchema(ma.Schema):
    reason = ma.fields.String(
        load_default="unspecified",
        validate=ma.validate.OneOf(RFC5280_REASONS),
        metadata={
            "description": "RFC 5280 reason: "
            + ", ".join(REVOCATION_REASONS)
            + " ("
            + " and ".join(UNSUPPORTED_REASONS)
            + " are refused: certfleet cannot un-revoke)"
        },
    )
    renew = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "also renew now (an active certificate's host needs one)"},
    )


class RevocationOutSchema(ma.Schema):
    certificate = ma.fields.Nested(CertificateOutSchema)
    renewal_request = ma.fields.Nested(IssuanceOutSchema, allow_none=True)
    queued = ma.fields.Boolean(
        metadata={
            "description": "the CRL refresh (and renewal) reached the queue; if not, the "
            "issuer's periodic CRL refresh and the sweep catch up"
        }
    )
