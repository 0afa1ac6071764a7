"""Health, spec, authentication and the error shape."""

from __future__ import annotations

import re
from pathlib import Path

import schemathesis
import yaml

from services.api.app import create_app
from shared.settings import Settings
from tests.ports import free_port
from tests.services.api.conftest import ApiHarness, assert_error_shape

DESIGN_PATHS = {
    "/healthz",
    "/readyz",
    "/api/v1/authorities",
    "/api/v1/authorities/{authority_id}",
    "/api/v1/authorities/{authority_id}/certificate.pem",
    "/api/v1/trust-bundle",
    "/api/v1/sites",
    "/api/v1/sites/{site_id}",
    "/api/v1/hosts",
    "/api/v1/hosts/{host_id}",
    "/api/v1/inventory",
    "/api/v1/issuance-requests",
    "/api/v1/issuance-requests/bulk",
    "/api/v1/issuance-requests/{request_id}",
    "/api/v1/certificates",
    "/api/v1/certificates/{certificate_id}",
    "/api/v1/certificates/{certificate_id}/pem",
    "/api/v1/certificates/{certificate_id}/pfx",
    "/api/v1/tokens",
    "/api/v1/reports/expiry",
    "/api/v1/certificates/{certificate_id}/renew",
}


def test_health_and_readiness(api: ApiHarness) -> None:
    assert api.get("/healthz", token="").get_json() == {"status": "ok"}
    ready = api.get("/readyz", token="")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_health_bodies_match_the_spec(api: ApiHarness) -> None:
    """Both were documented with only the error response, so a healthy 200 broke the spec."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api.app)
    checks = [
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.response_schema_conformance,
    ]
    for path in ("/healthz", "/readyz"):
        response = schema[path]["GET"].Case().call_and_validate(checks=checks)
        assert response.status_code == 200


def test_readyz_is_503_when_redis_is_unreachable(api: ApiHarness) -> None:
    settings = Settings(
        database_url=api.settings.database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    app = create_app(settings, database=api.db)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    payload = response.get_json()
    assert_error_shape(payload)
    assert payload["retry_after"] == int(response.headers["Retry-After"])
    assert payload["errors"] == {"database": "ok", "redis": "unreachable"}


def test_openapi_spec_lists_every_route_and_docs_page_serves(api: ApiHarness) -> None:
    spec = api.get("/api/v1/openapi.json", token="").get_json()
    assert spec["info"]["title"] == "certfleet"
    assert set(spec["paths"]) >= DESIGN_PATHS
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    docs = api.get("/api/v1/docs", token="")
    assert docs.status_code == 200 and b"swagger" in docs.data.lower()


def test_the_docs_page_needs_no_network(api: ApiHarness) -> None:
    """Every script and style of the reference page is served by the API, from the installed
    package; nothing is fetched from elsewhere (tests/e2e/test_dashboard_browser.py renders it
    in a browser that may not leave the API)."""
    page = api.get("/api/v1/docs", token="").get_data(as_text=True)
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(references) >= 3
    assert not [r for r in references if "//" in r], "an asset from another origin"
    kinds = {"css": "text/css", "js": "text/javascript"}
    for reference in references:
        answer = api.get(reference, token="")
        assert answer.status_code == 200, reference
        assert answer.content_type.startswith(kinds[reference.rsplit(".", 1)[1]]), reference
        assert len(answer.data) > 10_000, reference
    # The folder serves its own files only.
    for outside in ("../flask_swagger_ui.py", "..%2fflask_swagger_ui.py", "%2e%2e/LICENSE"):
        assert api.get(f"/api/v1/docs/assets/{outside}", token="").status_code == 404, outside
    # The app has no default /static folder (it would serve the working directory's).
    assert api.get("/static/pyproject.toml", token="").status_code == 404


def test_missing_and_wrong_tokens_are_401(api: ApiHarness) -> None:
    missing = api.get("/api/v1/sites", token="")
    assert missing.status_code == 401 and missing.get_json()["code"] == "unauthorized"
    wrong = api.get("/api/v1/sites", token="cf_not-a-real-token")
    assert wrong.status_code == 401
    assert "cf_not-a-real-token" not in wrong.get_data(as_text=True)


def test_auditor_reads_but_cannot_write(api: ApiHarness) -> None:
    auditor = api.token("auditor")
    assert api.get("/api/v1/sites", token=auditor).status_code == 200
    response = api.post(
        "/api/v1/sites", token=auditor, json={"name": "x", "dns_suffixes": ["x.example"]}
    )
    assert response.status_code == 403
    assert (
        api.post("/api/v1/tokens", token=auditor, json={"name": "n", "role": "admin"}).status_code
        == 403
    )


def test_unknown_route_and_bad_json_use_the_error_shape(api: ApiHarness) -> None:
    missing = api.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert_error_shape(missing.get_json())
    bad = api.post("/api/v1/sites", data=b"{not json", content_type="application/json")
    assert bad.status_code == 400
    assert_error_shape(bad.get_json())


def test_validation_errors_name_the_field(api: ApiHarness) -> None:
    response = api.post(
        "/api/v1/sites",
        json={
            "name": "ok-site",
            "maintenance_window": {"start": "25:00", "end": "04:00", "timezone": "Mars/Olympus"},
        },
    )
    assert response.status_code == 422
    errors = response.get_json()["errors"]["json"]["maintenance_window"]
    assert "start" in errors and "timezone" in errors


def test_a_window_the_watcher_could_not_read_is_refused_everywhere(
    api: ApiHarness, tmp_path: Path
) -> None:
    """`days: []` would stop renewals: the API refuses it on create, patch and inventory, with
    the same parser the expiry watcher uses (shared.renewal.MaintenanceWindow)."""
    never = {"start": "01:00", "end": "04:00", "timezone": "UTC", "days": []}
    created = api.post("/api/v1/sites", json={"name": "never", "maintenance_window": never})
    assert created.status_code == 422
    assert "never renew" in created.get_json()["errors"]["json"]["maintenance_window"]["days"]
    site = api.post("/api/v1/sites", json={"name": "fine"}).get_json()
    for window in (never, {"start": "01:00"}, {**never, "days": ["Saturday"]}):
        patched = api.call(
            "PATCH", f"/api/v1/sites/{site['id']}", json={"maintenance_window": window}
        )
        assert patched.status_code == 422, window
    assert api.get(f"/api/v1/sites/{site['id']}").get_json()["maintenance_window"] is None
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(yaml.safe_dump({"sites": [{"name": "inv", "maintenance_window": never}]}))
    applied = api.call(
        "PUT", "/api/v1/inventory", data=inventory.read_bytes(), content_type="application/yaml"
    )
    assert applied.status_code == 422
    assert "never renew" in str(applied.get_json()["errors"])
    assert [s["name"] for s in api.get("/api/v1/sites").get_json()] == ["fine"]


def test_oversized_body_is_413(api: ApiHarness) -> None:
    body = b'{"requests": [' + b'{"host": "x"},' * 60000 + b'{"host": "x"}]}'
    assert len(body) > api.settings.max_body_bytes
    response = api.post(
        "/api/v1/issuance-requests/bulk", data=body, content_type="application/json"
    )
    assert response.status_code == 413
    assert_error_shape(response.get_json())


def test_tokens_are_stored_hashed_and_shown_once(api: ApiHarness) -> None:
    secret = api.token("operator")
    listing = api.get("/api/v1/tokens").get_data(as_text=True)
    assert secret not in listing
    from sqlalchemy import text

    with api.db.session() as session:
        stored = [row[0] for row in session.execute(text("SELECT token_hash FROM api_tokens"))]
    assert secret not in stored and all(len(h) == 64 for h in stored)
    assert api.get("/api/v1/sites", token=secret).status_code == 200


def test_an_admin_revokes_a_token_and_it_is_refused_at_once(api: ApiHarness) -> None:
    secret = api.token("auditor")
    assert api.get("/api/v1/sites", token=secret).status_code == 200
    [listed] = [t for t in api.get("/api/v1/tokens").get_json() if t["role"] == "auditor"]
    operator = api.token("operator")
    assert api.post(f"/api/v1/tokens/{listed['id']}/revoke", token=operator).status_code == 403

    revoked = api.post(f"/api/v1/tokens/{listed['id']}/revoke")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert api.get("/api/v1/sites", token=secret).status_code == 401
    assert listed["id"] not in [t["id"] for t in api.get("/api/v1/tokens").get_json()]
    again = api.post(f"/api/v1/tokens/{listed['id']}/revoke")  # idempotent
    assert (
        again.status_code == 200
        and again.get_json()["revoked_at"] == revoked.get_json()["revoked_at"]
    )
    kinds = [e["kind"] for e in api.get("/api/v1/events?kind=token.revoked").get_json()["items"]]
    assert kinds == ["token.revoked"]

    admin_id = next(t["id"] for t in api.get("/api/v1/tokens").get_json() if t["role"] == "admin")
    itself = api.post(f"/api/v1/tokens/{admin_id}/revoke")
    assert itself.status_code == 409 and itself.get_json()["code"] == "conflict"
    assert api.post("/api/v1/tokens/999999/revoke").status_code == 404
