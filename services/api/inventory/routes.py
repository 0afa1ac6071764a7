"""/api/v1/inventory"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import yaml
from flask import request
from flask_smorest import Blueprint

from services.api import documents
from services.api.auth import principal, requires
from services.api.common import publish_trust
from services.api.context import runtime
from services.api.inventory import service
from services.api.inventory.schemas import ApplyResultSchema, InventorySchema
from shared.errors import ValidationFailed

blp = Blueprint(
    "inventory", __name__, url_prefix="/api/v1/inventory", description="Declarative inventory"
)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def parse_document() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    try:
        doc = (
            documents.load_yaml(raw) if request.mimetype in YAML_TYPES else documents.load_json(raw)
        )
    except ValidationFailed:
        raise
    except (yaml.YAMLError, ValueError) as exc:
        raise ValidationFailed("the inventory is not valid YAML or JSON") from exc
    if not isinstance(doc, dict):
        raise ValidationFailed("the inventory must be a mapping with `sites` and `hosts`")
    try:
        loaded: dict[str, Any] = InventorySchema().load(doc)
    except ma.ValidationError as exc:
        raise ValidationFailed("the inventory did not validate", exc.normalized_messages()) from exc
    return loaded


@blp.route("", methods=["PUT"])
@requires("operator")
@blp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {"schema": InventorySchema},
            "application/yaml": {"schema": InventorySchema},
        },
    }
)
@blp.response(200, ApplyResultSchema)
def put_inventory() -> dict[str, Any]:
    doc = parse_document()
    rt = runtime()
    session = rt.session()
    result = service.apply_inventory(
        session, doc, who=principal(), now=rt.clock.now(), limits=rt.settings.delivery_limits
    )
    session.commit()
    changed = result["hosts"]["created"] + result["hosts"]["updated"]
    clients = service.client_host_ids(session, changed)
    if clients:
        publish_trust(clients)
    return result
