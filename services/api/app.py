"""The API's app factory. Run with gunicorn: `gunicorn 'services.api.app:create_app()'`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, g, request
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix

from services.api import errors
from services.api.agent.routes import blp as agent_blp
from services.api.authorities.routes import blp as authorities_blp
from services.api.campaigns.routes import blp as campaigns_blp
from services.api.certificates.routes import blp as certificates_blp
from services.api.common import BoundedIntConverter
from services.api.context import ApiRuntime, close_session
from services.api.dashboard.routes import bp as dashboard_bp
from services.api.deliveries.routes import blp as deliveries_blp
from services.api.docs import ASSETS_URL
from services.api.docs import bp as docs_assets_bp
from services.api.events.routes import blp as events_blp
from services.api.health.routes import blp as health_blp
from services.api.hosts.routes import blp as hosts_blp
from services.api.inventory.routes import blp as inventory_blp
from services.api.issuance.routes import blp as issuance_blp
from services.api.metrics.routes import blp as metrics_blp
from services.api.names.routes import blp as names_blp
from services.api.notifications.routes import blp as notifications_blp
from services.api.reports.routes import blp as reports_blp
from services.api.sites.routes import blp as sites_blp
from services.api.tokens.routes import blp as tokens_blp
from shared.clock import Clock, SystemClock
from shared.db.session import Database
from shared.logging import bind, configure_logging, unbind
from shared.queue import CeleryPublisher, Publisher, make_celery, redis_client
from shared.settings import Settings

log = logging.getLogger(__name__)


class CertfleetApi(Api):  # type: ignore[misc]
    """flask-smorest's Api with certfleet's error shape in the spec."""

    ERROR_SCHEMA = errors.ErrorSchema

    def _register_error_handlers(self) -> None:
        errors.register(self._app)


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
) -> Flask:
    if settings is None:
        settings = Settings.from_env()
        configure_logging("api", settings.log_level)
    # No default /static route: it would serve whatever "static" folder the working
    # directory holds (the app has no import root of its own).
    app = Flask("certfleet-api", static_folder=None)
    if settings.proxy_hops:
        # Behind a reverse proxy that replaces X-Forwarded-For (infra/nginx): the address
        # failed logins count against is the client's, not the proxy's.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    app.url_map.converters["int"] = BoundedIntConverter
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="certfleet",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=ASSETS_URL,
        API_SPEC_OPTIONS={
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        },
    )
    app.extensions["certfleet"] = ApiRuntime(
        settings=settings,
        db=database or Database(settings.database_url),
        publisher=publisher or CeleryPublisher(make_celery(settings, "certfleet-api")),
        clock=clock or SystemClock(),
        redis_client=redis_client(
            settings.redis_url,
            settings.redis_sentinel_master,
            socket_timeout=2,
            socket_connect_timeout=2,
        ),
    )
    api = CertfleetApi(app)
    for blp in (
        health_blp,
        authorities_blp,
        sites_blp,
        hosts_blp,
        names_blp,
        inventory_blp,
        issuance_blp,
        certificates_blp,
        tokens_blp,
        deliveries_blp,
        agent_blp,
        reports_blp,
        notifications_blp,
        campaigns_blp,
        events_blp,
        metrics_blp,
    ):
        api.register_blueprint(blp)
    app.register_blueprint(dashboard_bp)  # HTML pages: not part of the OpenAPI spec
    app.register_blueprint(docs_assets_bp)  # the reference page's scripts, from the package
    app.before_request(_bind_request)
    app.before_request(_whole_body)
    app.after_request(_log_request)
    app.teardown_request(_teardown)
    return app


def _bind_request() -> None:
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    g.request_id = request_id[:64]
    g.log_token = bind(request_id=g.request_id)


def _whole_body() -> None:
    """A body without Content-Length (chunked) is read whole here, so that one past the limit
    is a 413: werkzeug's bounded stream would otherwise stop at the limit and hand the route
    a silently truncated body."""
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        request.get_data(cache=True)
        request.stream.read(1)  # past the limit: RequestEntityTooLarge


def _log_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    log.info(
        "request",
        extra={
            "fields": {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
            }
        },
    )
    return response


def _teardown(exc: BaseException | None) -> Any:
    close_session(exc)
    token = g.pop("log_token", None)
    if token is not None:
        unbind(token)
