"""The API reference page's scripts and styles, served by the API itself so that
`/api/v1/docs` works with no network: Swagger UI's distribution comes from the installed
flask-swagger-ui package (its `dist` folder, pinned by the package's version), never a CDN."""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint

SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
ASSETS_URL = "/api/v1/docs/assets/"

# A static folder only: werkzeug's send_from_directory keeps every request inside it.
bp = Blueprint(
    "docs_assets",
    __name__,
    static_folder=str(SWAGGER_UI_DIST),
    static_url_path=ASSETS_URL.rstrip("/"),
)
