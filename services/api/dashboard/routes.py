"""The dashboard: server-rendered pages behind the API's own tokens.

A browser cannot send a bearer header, so the login form takes a token once and keeps it in
an HttpOnly, SameSite=Strict cookie scoped to /dashboard; every page then authenticates that
secret exactly as the API authenticates a header (same lookup, same lockout of an address
after repeated bad tokens, same revocation). The pages only read; the two forms that write
(login, logout) change nothing but the cookie."""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from services.api.auth import Principal, authenticate_secret
from services.api.common import MAX_ID
from services.api.context import runtime
from services.api.dashboard import service
from services.api.errors import status_of
from shared.clock import days_left
from shared.errors import CertfleetError, TooManyRequests

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")
bp.add_app_template_global(days_left, "days_left")  # as the CLI and the notices count them
COOKIE = "certfleet_dashboard"
# Double-submit CSRF token: a random value in a cookie of its own, repeated in every form;
# a cross-site page can make a browser send the cookie but cannot read it to fill the form.
CSRF_COOKIE = "certfleet_csrf"
CSRF_LENGTH = 64
COOKIE_AGE = dt.timedelta(hours=12)
LIVE_REFRESH_MS = 5000
F = TypeVar("F", bound=Callable[..., Any])


def signed_in(view: F) -> F:
    """The page for a reader with a valid token in the cookie; the login form otherwise."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        secret = request.cookies.get(COOKIE, "")
        if not secret:
            return redirect(url_for("dashboard.login", next=request.full_path))
        try:
            who = authenticate_secret(secret)
        except TooManyRequests as exc:
            return _page("dashboard/login.html", 429, error=exc.message)
        except CertfleetError:
            response = redirect(url_for("dashboard.login", expired=1))
            response.delete_cookie(COOKIE, path=bp.url_prefix)
            return response
        if who.role == "agent":
            return _page("dashboard/login.html", 403, error="agent tokens cannot sign in")
        g.dashboard_reader = who
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def reader() -> Principal:
    who = g.dashboard_reader
    assert isinstance(who, Principal)
    return who


def csrf_token() -> str:
    """This browser's CSRF token: the cookie's, or a new one (set on the response)."""
    token = g.get("csrf_token")
    if token is None:
        token = request.cookies.get(CSRF_COOKIE) or ""
        if len(token) != CSRF_LENGTH or not token.isalnum():
            token = secrets.token_hex(CSRF_LENGTH // 2)
            g.csrf_new = True
        g.csrf_token = token
    return str(token)


def csrf_ok() -> bool:
    sent, kept = request.form.get("csrf", ""), request.cookies.get(CSRF_COOKIE, "")
    return bool(kept) and hmac.compare_digest(sent.encode(), kept.encode())


@bp.app_context_processor
def _csrf_context() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = Response(render_template(template, **context), status=status)
    if g.pop("csrf_new", False):
        response.set_cookie(
            CSRF_COOKIE,
            g.csrf_token,
            max_age=int(COOKIE_AGE.total_seconds()),
            path=bp.url_prefix,
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/login")
def login() -> Response:
    expired = request.args.get("expired") is not None
    return _page(
        "dashboard/login.html",
        error="the token is no longer valid; sign in again" if expired else None,
        next=request.args.get("next", ""),
    )


@bp.post("/login")
def login_submit() -> BaseResponse:
    if not csrf_ok():
        return _page("dashboard/login.html", 400, error="the form expired; sign in again")
    secret = request.form.get("token", "").strip()
    try:
        who = authenticate_secret(secret) if secret else None
    except CertfleetError as exc:
        return _page("dashboard/login.html", status_of(exc), error=exc.message)
    if who is None:
        return _page("dashboard/login.html", 401, error="paste an API token")
    if who.role == "agent":
        return _page("dashboard/login.html", 403, error="agent tokens cannot sign in")
    target = request.form.get("next", "")
    if not target.startswith(f"{bp.url_prefix}/"):  # never an open redirect
        target = url_for("dashboard.overview")
    response = redirect(target, code=303)
    response.set_cookie(
        COOKIE,
        secret,
        max_age=int(COOKIE_AGE.total_seconds()),
        path=bp.url_prefix,
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    if not csrf_ok():
        return _page("dashboard/login.html", 400, error="the form expired; sign out again")
    response = redirect(url_for("dashboard.login"), code=303)
    response.delete_cookie(COOKIE, path=bp.url_prefix)
    return response


def page_id(name: str) -> int | None:
    """A paging argument: a row ID (0 when absent), or None for anything else (too large for
    a row ID, negative, not a number): the page answers 400 rather than guess."""
    value = request.args.get(name, "0")
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_ID:
        return None
    return int(value)


@bp.get("/")
@signed_in
def overview() -> Response:
    rt = runtime()
    session, now, who = rt.session(), rt.clock.now(), reader()
    sites = service.sites(session, who, now)
    return _page(
        "dashboard/overview.html",
        who=who,
        now=now,
        sites=sites,
        totals=service.totals(sites),
        week=service.WEEK,
        timeline=service.timeline(session, who, now),
        campaigns=service.campaigns(session, who),
        events=service.events(session, who, 0, 20),
        expiring_days=service.EXPIRING_DAYS,
        refresh_ms=LIVE_REFRESH_MS,
    )


@bp.get("/campaigns")
@signed_in
def campaigns() -> Response:
    """The campaigns section alone: the overview reloads it every few seconds."""
    rows = service.campaigns(runtime().session(), reader())
    return _page("dashboard/_campaigns.html", campaigns=rows)


@bp.get("/hosts")
@signed_in
def hosts() -> Response:
    rt = runtime()
    site = request.args.get("site") or None
    problem = (
        request.args.get("problem") if request.args.get("problem") in service.PROBLEMS else None
    )
    after = page_id("after")
    if after is None:
        return _page("dashboard/login.html", 400, error="that page does not exist")
    now = rt.clock.now()
    rows, next_after = service.hosts(rt.session(), reader(), site, after, problem, now)
    return _page(
        "dashboard/hosts.html",
        who=reader(),
        now=now,
        rows=rows,
        site=site,
        problem=problem,
        problems=service.PROBLEMS,
        next_after=next_after,
    )


@bp.get("/events")
@signed_in
def events() -> Response:
    before = page_id("before")
    if before is None:
        return _page("dashboard/login.html", 400, error="that page does not exist")
    rows = service.events(runtime().session(), reader(), before, service.EVENTS_PER_PAGE)
    return _page(
        "dashboard/events.html",
        who=reader(),
        rows=rows,
        next_before=rows[-1].id if len(rows) == service.EVENTS_PER_PAGE else None,
    )
