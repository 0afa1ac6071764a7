"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask_smorest import Blueprint
from sqlalchemy import text

from services.api.context import runtime
from services.api.errors import ErrorSchema
from shared.errors import Unavailable

blp = Blueprint("health", __name__, description="Process liveness and readiness")


class LiveSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "always ok"})


class ReadySchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "always ready"})
    checks = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={"description": "ok per dependency: database, redis"},
    )


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200, LiveSchema)
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@blp.route("/readyz")
@blp.doc(security=[])
@blp.response(200, ReadySchema)
@blp.alt_response(
    503, schema=ErrorSchema, description="Not ready: `errors` names what is unreachable"
)
def readyz() -> dict[str, Any]:
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        rt.session().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    try:
        rt.redis_client.ping()
        checks["redis"] = "ok"
    except Exception:
        checks["redis"] = "unreachable"
    if any(v != "ok" for v in checks.values()):
        raise Unavailable("not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items()), checks)
    return {"status": "ready", "checks": checks}
