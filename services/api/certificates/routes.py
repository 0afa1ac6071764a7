"""/api/v1/certificates"""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from services.api.auth import principal, requires
from services.api.certificates import service
from services.api.certificates.schemas import (
    CertificateListArgs,
    CertificateOutSchema,
    CertificatePageSchema,
    PfxInSchema,
    RevocationOutSchema,
    RevokeInSchema,
)
from services.api.common import decode_cursor, page_of, publish_issuance, queue_crl_refresh
from services.api.context import runtime
from services.api.issuance.schemas import IssuanceOutSchema
from shared.db.models import Certificate
from shared.errors import Unavailable
from shared.pki.export import to_der

blp = Blueprint(
    "certificates", __name__, url_prefix="/api/v1/certificates", description="Issued certificates"
)

PEM_CHAIN = "application/pem-certificate-chain"
DER = "application/pkix-cert"


@blp.route("")
class Certificates(MethodView):
    @requires("auditor")
    @blp.arguments(CertificateListArgs, location="query")
    @blp.response(200, CertificatePageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        session = runtime().session()
        query = service.list_query(session, args, principal(), decode_cursor(args["cursor"]))
        rows = list(session.scalars(query).unique())
        items, cursor = page_of(rows, args["limit"])
        return {"items": items, "next_cursor": cursor}


@blp.route("/<int:certificate_id>")
class CertificateById(MethodView):
    @requires("auditor")
    @blp.response(200, CertificateOutSchema)
    def get(self, certificate_id: int) -> Certificate:
        return service.get_certificate(runtime().session(), certificate_id, principal())


@blp.route("/<int:certificate_id>/pem")
@requires("auditor")
@blp.response(200, content_type=PEM_CHAIN, description="Leaf, then its issuers up to the root")
def certificate_pem(certificate_id: int) -> Response:
    rt = runtime()
    session = rt.session()
    who = principal()
    row = service.get_certificate(session, certificate_id, who)
    pem = service.pem_bundle(session, row)
    service.record_export(session, row, "pem", who=who, now=rt.clock.now())
    session.commit()
    return Response(pem, mimetype=PEM_CHAIN)


@blp.route("/<int:certificate_id>/der")
@requires("auditor")
@blp.response(200, content_type=DER, description="The leaf certificate alone, DER-encoded")
def certificate_der(certificate_id: int) -> Response:
    rt = runtime()
    session = rt.session()
    who = principal()
    row = service.get_certificate(session, certificate_id, who)
    der = to_der(service.leaf_of(row))
    service.record_export(session, row, "der", who=who, now=rt.clock.now())
    session.commit()
    return Response(der, mimetype=DER)


@blp.route("/<int:certificate_id>/pfx", methods=["POST"])
@requires("operator")
@blp.arguments(PfxInSchema)
@blp.response(200, content_type="application/x-pkcs12", description="PKCS#12 for Windows")
def certificate_pfx(data: dict[str, Any], certificate_id: int) -> Response:
    rt = runtime()
    session = rt.session()
    who = principal()
    row = service.get_certificate(session, certificate_id, who, with_key=True)
    who.require_write(row.host.site_id)
    pfx = service.export_pfx(
        session,
        row,
        password=data["password"],
        friendly_name=data["friendly_name"],
        data_key=rt.settings.data_key,
        who=who,
        now=rt.clock.now(),
    )
    session.commit()
    return Response(
        pfx,
        mimetype="application/x-pkcs12",
        headers={"Content-Disposition": f'attachment; filename="{row.common_name}.pfx"'},
    )


@blp.route("/<int:certificate_id>/renew", methods=["POST"])
@requires("operator")
@blp.response(202, IssuanceOutSchema)
def renew_certificate(certificate_id: int) -> Any:
    """Renew now, whatever the renewal point, backoff or maintenance window say."""
    rt = runtime()
    session = rt.session()
    who = principal()
    row = service.get_certificate(session, certificate_id, who)
    who.require_write(row.host.site_id)
    request = service.force_renewal(session, row, who=who, now=rt.clock.now())
    session.commit()
    publish_issuance([request])
    location = url_for("issuance.IssuanceRequestById", request_id=request.id)
    return request, 202, {"Location": location}


@blp.route("/<int:certificate_id>/revoke", methods=["POST"])
@requires("operator")
@blp.arguments(RevokeInSchema)
@blp.response(200, RevocationOutSchema)
def revoke_certificate(data: dict[str, Any], certificate_id: int) -> dict[str, Any]:
    """Revoke for good (409 if already revoked or expired). The issuer re-signs the
    authority's CRL right after; `renew` also starts a renewal of an active certificate."""
    rt = runtime()
    session = rt.session()
    who = principal()
    row = service.get_certificate(session, certificate_id, who)
    who.require_write(row.host.site_id)
    renewal = service.revoke(
        session, row, reason=data["reason"], renew=data["renew"], who=who, now=rt.clock.now()
    )
    session.commit()
    queued = queue_crl_refresh(row.authority_id)
    if renewal is not None:
        try:
            publish_issuance([renewal])
        except Unavailable:
            queued = False  # the request stays `queued`; the sweep enqueues it again
    return {"certificate": row, "renewal_request": renewal, "queued": queued}
