"""/api/v1/authorities and /api/v1/trust-bundle"""

from __future__ import annotations

from typing import Any

from flask import Response, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from services.api.auth import principal, requires
from services.api.authorities import service
from services.api.authorities.schemas import (
    AuthorityInSchema,
    AuthorityOutSchema,
    CrlArgs,
    TrustPushSchema,
)
from services.api.common import publish_trust
from services.api.context import runtime
from shared import access
from shared.authorities import certificate_of, trust_anchors
from shared.contracts import create_authority
from shared.db.models import Authority, Host
from shared.pki.export import to_pem

blp = Blueprint(
    "authorities", __name__, url_prefix="/api/v1", description="Certificate authorities"
)

PEM = "application/x-pem-file"
CRL_DER = "application/pkix-crl"
CRL_TYPES = {"der": CRL_DER, "pem": PEM}


@blp.route("/authorities")
class Authorities(MethodView):
    @requires("auditor")
    @blp.response(200, AuthorityOutSchema(many=True))
    def get(self) -> list[Authority]:
        return list(runtime().session().scalars(select(Authority).order_by(Authority.id)))

    @requires("admin")
    @blp.arguments(AuthorityInSchema)
    @blp.response(202, AuthorityOutSchema)
    def post(self, data: dict[str, Any]) -> Any:
        rt = runtime()
        session = rt.session()
        row = service.request_authority(session, data, actor=principal().actor, now=rt.clock.now())
        session.commit()
        rt.publisher.publish(create_authority(row.id))
        return row, 202, {"Location": url_for("authorities.AuthorityById", authority_id=row.id)}


@blp.route("/authorities/<int:authority_id>")
class AuthorityById(MethodView):
    @requires("auditor")
    @blp.response(200, AuthorityOutSchema)
    def get(self, authority_id: int) -> Authority:
        return service.get_authority(runtime().session(), authority_id)


@blp.route("/authorities/<int:authority_id>/certificate.pem")
@blp.doc(security=[])
@blp.response(200, content_type=PEM, description="The CA certificate (public)")
def authority_certificate(authority_id: int) -> Response:
    row = service.get_authority(runtime().session(), authority_id)
    return Response(to_pem(certificate_of(row)), mimetype=PEM)


@blp.route("/authorities/<int:authority_id>/crl")
@blp.doc(security=[])
@blp.arguments(CrlArgs, location="query")
@blp.response(200, content_type=CRL_DER, description="The CA's current CRL (public)")
def authority_crl(args: dict[str, Any], authority_id: int) -> Response:
    """DER by default; PEM with `?format=pem` or `Accept: application/x-pem-file`.
    404 until the issuer has published the authority's first CRL."""
    rt = runtime()
    stored = service.current_crl(rt.session(), authority_id)
    fmt = args["format"] or (
        "pem" if request.accept_mimetypes.best_match([CRL_DER, PEM], CRL_DER) == PEM else "der"
    )
    response = Response(service.crl_body(stored, fmt), mimetype=CRL_TYPES[fmt])
    response.set_etag(f"crl-{authority_id}-{stored.number}-{fmt}")
    response.last_modified = stored.this_update
    response.cache_control.public = True
    response.cache_control.max_age = service.crl_max_age(stored, rt.clock.now())
    response.vary.add("Accept")
    response.make_conditional(request)  # 304 for a matching If-None-Match
    return response


@blp.route("/trust-bundle")
@blp.doc(security=[])
@blp.response(200, content_type=PEM, description="Every CA certificate clients must trust now")
def trust_bundle() -> Response:
    anchors = trust_anchors(runtime().session())
    return Response(b"".join(to_pem(c) for c in anchors), mimetype=PEM)


@blp.route("/trust-bundle/distribute", methods=["POST"])
@requires("operator")
@blp.response(202, TrustPushSchema)
def distribute_trust_bundle() -> dict[str, Any]:
    """Push the current trust bundle to every client host (of the token's site, if scoped)."""
    query = access.scope(select(Host.id, Host.roles), Host.site_id, principal())
    ids = [row.id for row in runtime().session().execute(query) if "client" in row.roles]
    queued = publish_trust(ids) if ids else True
    return {"hosts": len(ids), "queued": queued}
