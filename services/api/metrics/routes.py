"""GET /metrics: Prometheus' text format, for a scraper with an auditor token."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.auth import principal, requires
from services.api.context import runtime
from services.api.metrics import service

blp = Blueprint("metrics", __name__, description="Prometheus metrics")


@blp.route("/metrics")
@requires("auditor")
@blp.doc(
    responses={
        "200": {
            "description": "Prometheus text exposition format (version 0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
)
def metrics() -> Response:
    rt = runtime()
    current = service.snapshot(
        rt.session(), rt.redis_client, rt.clock.now(), rt.settings.metrics_leaf_cap, principal()
    )
    return Response(generate_latest(current), mimetype=CONTENT_TYPE_LATEST)  # type: ignore[arg-type]
