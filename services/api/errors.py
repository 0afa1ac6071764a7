"""One JSON error shape for every failure: {"code", "message", "errors"?}.

Domain errors map to statuses here and nowhere else; nothing below leaks a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
import redis.exceptions
import sqlalchemy.exc
from flask import Flask
from werkzeug.exceptions import HTTPException

from shared.errors import (
    CertfleetError,
    ConfigError,
    Conflict,
    Forbidden,
    KeyUnavailable,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

STATUS_BY_ERROR: list[tuple[type[CertfleetError], int]] = [
    (ValidationFailed, 422),
    (NotFound, 404),
    (Conflict, 409),
    (KeyUnavailable, 409),
    (Forbidden, 403),
    (Unauthorized, 401),
    (TooManyRequests, 429),
    (Unavailable, 503),
    (ConfigError, 503),
]


class ErrorSchema(ma.Schema):
    code = ma.fields.String(metadata={"description": "machine-readable error code"})
    message = ma.fields.String(metadata={"description": "what went wrong, for a person"})
    errors = ma.fields.Dict(metadata={"description": "details, e.g. per field"})
    retry_after = ma.fields.Integer(
        metadata={
            "description": "503 and 429 only: seconds to wait before retrying (as Retry-After)"
        }
    )


Payload = tuple[dict[str, Any], int, dict[str, str]]


def body(code: str, message: str, errors: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"code": code, "message": message}
    if errors:
        payload["errors"] = errors
    return payload


def http_error(error: HTTPException) -> Payload:
    status = error.code or 500
    code = (error.name or "error").lower().replace(" ", "_")
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message") or error.description or error.name
    if status == 422 and errors and "message" not in data:
        message = "the request did not validate"
    return body(code, message, errors), status, dict(data.get("headers") or {})


def status_of(error: CertfleetError) -> int:
    return next((s for cls, s in STATUS_BY_ERROR if isinstance(error, cls)), 400)


def domain_error(error: CertfleetError) -> Payload:
    status = status_of(error)
    if status == 503:
        return retry_later(body(error.code, error.message, error.errors))
    if isinstance(error, TooManyRequests):
        return retry_later(body(error.code, error.message), status=429, seconds=error.retry_after)
    return body(error.code, error.message, error.errors), status, {}


def unavailable(error: Exception) -> Payload:
    log.warning("dependency unavailable", extra={"fields": {"error": type(error).__name__}})
    return retry_later(body("unavailable", "the database or queue is unreachable; retry shortly"))


def retry_later(
    payload: dict[str, Any], *, status: int = 503, seconds: int = RETRY_AFTER_SECONDS
) -> Payload:
    """A 503 or 429 says when to come back, in the header and in the body."""
    payload["retry_after"] = seconds
    return payload, status, {"Retry-After": str(seconds)}


def too_deep(error: Exception) -> Payload:
    """A body nested past the parser's recursion (thousands of `[`): refused, not a 500."""
    log.warning("request nested too deeply", extra={"fields": {"error": type(error).__name__}})
    return body("bad_request", "the request body is nested too deeply"), 400, {}


def concurrent_change(error: Exception) -> Payload:
    """A unique or foreign key that a concurrent writer took between our check and our
    commit (two operators registering the same name at once): the loser retries."""
    log.info("integrity conflict", extra={"fields": {"error": type(error).__name__}})
    return body("conflict", "a concurrent change conflicts with this one; retry"), 409, {}


def unexpected(error: Exception) -> Payload:
    log.exception("unhandled error")
    return body("internal_error", "an internal error occurred; see the API logs"), 500, {}


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(CertfleetError, domain_error)
    app.register_error_handler(sqlalchemy.exc.IntegrityError, concurrent_change)
    app.register_error_handler(RecursionError, too_deep)
    for exc in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ):
        app.register_error_handler(exc, unavailable)
    app.register_error_handler(Exception, unexpected)
