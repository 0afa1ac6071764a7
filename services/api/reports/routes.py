"""/api/v1/reports"""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma
from flask_smorest import Blueprint
from sqlalchemy import case, func, select

from services.api.auth import principal, requires
from services.api.context import runtime
from shared import access
from shared.clock import days_left
from shared.db.models import Authority, Certificate, Host, Site

blp = Blueprint("reports", __name__, url_prefix="/api/v1/reports", description="Reports")

MAX_LISTED = 1000


class ExpiryArgs(ma.Schema):
    within_days = ma.fields.Integer(load_default=30, validate=ma.validate.Range(min=0, max=3650))


class ExpiringSchema(ma.Schema):
    id = ma.fields.Integer()
    host = ma.fields.String()
    site = ma.fields.String()
    not_after = ma.fields.DateTime()
    days_left = ma.fields.Integer(
        metadata={
            "description": "whole days left, floored: 0 on the last day, negative once expired"
        }
    )
    renewal_due_at = ma.fields.DateTime(allow_none=True)
    renewal_in_progress = ma.fields.Boolean()


class SiteCountSchema(ma.Schema):
    site = ma.fields.String()
    expiring = ma.fields.Integer()
    expired = ma.fields.Integer()


class AuthorityExpirySchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    not_after = ma.fields.DateTime(allow_none=True)
    latest_leaf_not_after = ma.fields.DateTime(allow_none=True)
    expires_before_its_leaves = ma.fields.Boolean()


class ExpiryReportSchema(ma.Schema):
    generated_at = ma.fields.DateTime()
    within_days = ma.fields.Integer()
    total = ma.fields.Integer()
    by_site = ma.fields.List(ma.fields.Nested(SiteCountSchema))
    certificates = ma.fields.List(ma.fields.Nested(ExpiringSchema))
    authorities = ma.fields.List(ma.fields.Nested(AuthorityExpirySchema))


@blp.route("/expiry")
@requires("auditor")
@blp.arguments(ExpiryArgs, location="query")
@blp.response(200, ExpiryReportSchema)
def expiry_report(args: dict[str, Any]) -> dict[str, Any]:
    """Active certificates that expire within `within_days` (or already have), most urgent
    first, by an indexed query; and every CA with the latest expiry of its leaves."""
    rt = runtime()
    session = rt.session()
    now = rt.clock.now()
    horizon = now + dt.timedelta(days=args["within_days"])
    scope = [Certificate.status == "active", Certificate.not_after <= horizon]
    who = principal()
    if who.scoped_site_id is not None:
        scope.append(Host.site_id == who.scoped_site_id)
    base = select(Certificate, Host.name, Site.name).join(Host, Host.id == Certificate.host_id)
    rows = session.execute(
        base.join(Site, Site.id == Host.site_id)
        .where(*scope)
        .order_by(Certificate.not_after)
        .limit(MAX_LISTED)
    ).all()
    counts = session.execute(
        select(Site.name, func.count(), func.sum(case((Certificate.not_after <= now, 1), else_=0)))
        .select_from(Certificate)
        .join(Host, Host.id == Certificate.host_id)
        .join(Site, Site.id == Host.site_id)
        .where(*scope)
        .group_by(Site.name)
        .order_by(Site.name)
    ).all()
    latest = dict(
        session.execute(
            access.scope(
                select(Certificate.authority_id, func.max(Certificate.not_after))
                .join(Host, Host.id == Certificate.host_id)
                .where(Certificate.status == "active")
                .group_by(Certificate.authority_id),
                Host.site_id,
                who,
            )
        ).all()
    )
    authorities = [
        {
            "id": a.id,
            "name": a.name,
            "not_after": a.not_after,
            "latest_leaf_not_after": latest.get(a.id),
            "expires_before_its_leaves": bool(
                a.not_after and latest.get(a.id) and a.not_after < latest[a.id]
            ),
        }
        for a in session.scalars(
            select(Authority).where(Authority.status.in_(("active", "retiring")))
        )
    ]
    return {
        "generated_at": now,
        "within_days": args["within_days"],
        "total": sum(c[1] for c in counts),
        "by_site": [{"site": s, "expiring": n, "expired": int(e or 0)} for s, n, e in counts],
        "certificates": [
            {
                "id": c.id,
                "host": host,
                "site": site,
                "not_after": c.not_after,
                "days_left": days_left(c.not_after, now),
                "renewal_due_at": c.renewal_due_at,
                "renewal_in_progress": c.renewal_request_id is not None,
            }
            for c, host, site in rows
        ],
        "authorities": authorities,
    }
