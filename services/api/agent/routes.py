"""/api/v1/agent"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from services.api.agent import service
from services.api.agent.schemas import (
    AckInSchema,
    AckOutSchema,
    BundleOutSchema,
    EnrollInSchema,
    EnrollmentTokenInSchema,
    EnrollmentTokenOutSchema,
    EnrollOutSchema,
)
from services.api.auth import failure_limiter, principal, requires, requires_agent
from services.api.common import publish_issuance
from services.api.context import runtime
from services.api.hosts.service import host_by_name
from shared import contracts, deliveries
from shared.errors import Unauthorized

blp = Blueprint("agent", __name__, url_prefix="/api/v1/agent", description="Host agents")


@blp.route("/enrollment-tokens", methods=["POST"])
@requires("operator")
@blp.arguments(EnrollmentTokenInSchema)
@blp.response(201, EnrollmentTokenOutSchema)
def create_enrollment_token(data: dict[str, Any]) -> dict[str, Any]:
    rt = runtime()
    session = rt.session()
    host = host_by_name(session, data["host"])
    who = principal()
    who.require_write(host.site_id)  # 404 outside the token's site, as for an unknown name
    secret, expires = service.make_enrollment(
        session, host, hours=data["valid_hours"], actor=who.actor, now=rt.clock.now()
    )
    session.commit()
    return {"host": host.name, "enrollment_token": secret, "expires_at": expires}


@blp.route("/enroll", methods=["POST"])
@blp.doc(security=[])
@blp.arguments(EnrollInSchema)
@blp.response(201, EnrollOutSchema)
def enroll(data: dict[str, Any]) -> dict[str, Any]:
    """Enrolment tokens are secrets like API tokens: a wrong one counts against the client's
    address, and a locked-out address gets 429 (services.api.limits)."""
    rt = runtime()
    session = rt.session()
    limiter = failure_limiter(rt)
    address = request.remote_addr or "unknown"
    limiter.check(address)
    try:
        enrolled = service.enroll(session, data["enrollment_token"], data["csr"], rt.clock.now())
    except Unauthorized:
        limiter.failed(address)
        raise
    session.commit()
    publish_issuance([enrolled.request])
    return {
        "host": enrolled.host.name,
        "agent_token": enrolled.agent_token,
        "request_id": enrolled.request.id,
    }


@blp.route("/bundle")
class AgentBundle(MethodView):
    @requires_agent
    @blp.response(200, BundleOutSchema)
    @blp.alt_response(204, description="Nothing waiting for this host")
    def get(self) -> Any:
        rt = runtime()
        session = rt.session()
        bundle = service.next_bundle(session, principal(), rt.clock.now())
        session.commit()
        if bundle is None:
            return Response(status=204)
        return bundle


@blp.route("/ack", methods=["POST"])
@requires_agent
@blp.arguments(AckInSchema)
@blp.response(200, AckOutSchema)
def ack(data: dict[str, Any]) -> dict[str, Any]:
    rt = runtime()
    session = rt.session()
    delivery = service.acknowledge(session, principal(), data, rt.clock.now())
    session.commit()
    if delivery.status == "installed" and deliveries.needs_probe(delivery):
        rt.publisher.publish(contracts.verify(delivery.id))
    return {"delivery_id": delivery.id, "status": delivery.status}
