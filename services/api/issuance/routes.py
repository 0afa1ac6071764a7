"""/api/v1/issuance-requests"""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from services.api.auth import principal, requires
from services.api.common import decode_cursor, page_of, publish_issuance
from services.api.context import runtime
from services.api.issuance import service
from services.api.issuance.schemas import (
    BulkInSchema,
    BulkOutSchema,
    IdempotencyHeader,
    IssuanceInSchema,
    IssuanceListArgs,
    IssuanceOutSchema,
    IssuancePageSchema,
    IssuanceWaitArgs,
)
from shared.db.models import IssuanceRequest

blp = Blueprint(
    "issuance",
    __name__,
    url_prefix="/api/v1/issuance-requests",
    description="Requests for server certificates, signed by the issuer service",
)


@blp.route("")
class IssuanceRequests(MethodView):
    @requires("auditor")
    @blp.arguments(IssuanceListArgs, location="query")
    @blp.response(200, IssuancePageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        query = service.list_query(args, principal(), decode_cursor(args["cursor"]))
        items, cursor = page_of(list(runtime().session().scalars(query)), args["limit"])
        return {"items": items, "next_cursor": cursor}

    @requires("operator")
    @blp.arguments(IdempotencyHeader, location="headers")
    @blp.arguments(IssuanceInSchema)
    @blp.response(202, IssuanceOutSchema)
    @blp.alt_response(200, schema=IssuanceOutSchema, description="Idempotent replay")
    def post(self, headers: dict[str, Any], data: dict[str, Any]) -> Any:
        rt = runtime()
        session = rt.session()
        accepted = service.accept(
            session,
            data,
            who=principal(),
            idempotency_key=headers["idempotency_key"],
            now=rt.clock.now(),
        )
        session.commit()
        publish_issuance(service.to_enqueue([accepted]))
        location = url_for("issuance.IssuanceRequestById", request_id=accepted.request.id)
        status = 202 if accepted.created else 200
        return accepted.request, status, {"Location": location}


@blp.route("/bulk")
class BulkIssuance(MethodView):
    @requires("operator")
    @blp.arguments(IdempotencyHeader, location="headers")
    @blp.arguments(BulkInSchema)
    @blp.response(202, BulkOutSchema)
    def post(self, headers: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        rt = runtime()
        session = rt.session()
        accepted = service.accept_bulk(
            session,
            data["requests"],
            who=principal(),
            idempotency_key=headers["idempotency_key"],
            max_items=rt.settings.bulk_max_items,
            now=rt.clock.now(),
        )
        session.commit()
        publish_issuance(service.to_enqueue(accepted))
        return {"count": len(accepted), "requests": [a.request for a in accepted]}


@blp.route("/<int:request_id>")
class IssuanceRequestById(MethodView):
    @requires("auditor")
    @blp.arguments(IssuanceWaitArgs, location="query")
    @blp.response(200, IssuanceOutSchema)
    def get(self, args: dict[str, Any], request_id: int) -> IssuanceRequest:
        rt = runtime()
        row = service.get_request(rt.session(), request_id, principal())
        return service.wait_finished(rt.session(), rt.redis_client, row, args["wait"])
