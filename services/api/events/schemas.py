"""Audit Event shapes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma

from services.api.common import PageArgs, id_field


def _when(description: str) -> ma.fields.AwareDateTime:
    return ma.fields.AwareDateTime(
        load_default=None,
        default_timezone=dt.UTC,
        metadata={"description": f"{description}; ISO 8601, without a zone it is read as UTC"},
    )


class EventListArgs(PageArgs):
    site = ma.fields.String(load_default=None, metadata={"description": "site name"})
    host = ma.fields.String(load_default=None, metadata={"description": "host name"})
    kind = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=64),
        metadata={"description": "exact kind, or a prefix ending in '.' (certificate.)"},
    )
    actor = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=200))
    since = _when("events at or after this time")
    until = _when("events before this time")
    subject_type = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=32),
        metadata={"example": "certificate"},
    )
    subject_id = id_field(load_default=None, metadata={"description": "needs subject_type"})

    @ma.validates_schema
    def subject_id_needs_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("subject_id") is not None and data.get("subject_type") is None:
            raise ma.ValidationError("subject_id needs subject_type", "subject_id")


class EventOutSchema(ma.Schema):
    id = ma.fields.Integer()
    at = ma.fields.DateTime()
    kind = ma.fields.String()
    actor = ma.fields.String()
    site_id = ma.fields.Integer(allow_none=True)
    host_id = ma.fields.Integer(allow_none=True)
    subject_type = ma.fields.String(allow_none=True)
    subject_id = ma.fields.Integer(allow_none=True)
    data = ma.fields.Dict()


class EventPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(EventOutSchema))
    next_cursor = ma.fields.String(allow_none=True)
