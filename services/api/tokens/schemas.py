"""Token shapes. The secret appears only in the creation response."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from shared.db.models import TOKEN_ROLES


class TokenInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(TOKEN_ROLES))
    site = ma.fields.String(
        load_default=None,
        metadata={"description": "scope an operator or auditor to one site (not an admin)"},
    )

    @ma.validates_schema
    def admins_are_unscoped(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("role") == "admin" and data.get("site"):
            raise ma.ValidationError("an admin token reaches every site; it takes no site", "site")


class TokenOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    role = ma.fields.String()
    site_id = ma.fields.Integer(allow_none=True)
    prefix = ma.fields.String()
    created_at = ma.fields.DateTime()
    last_used_at = ma.fields.DateTime(allow_none=True)
    revoked_at = ma.fields.DateTime(allow_none=True)


class NewTokenOutSchema(TokenOutSchema):
    token = ma.fields.String(metadata={"description": "the secret; shown only now"})
