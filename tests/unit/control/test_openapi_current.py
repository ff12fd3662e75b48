"""docs/openapi.json is the app's own document.

Regenerate with `cdnlab control openapi --output docs/openapi.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdnlab.control.cli import openapi_document

DOC = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_checked_in_openapi_is_current() -> None:
    assert DOC.exists(), "docs/openapi.json is missing"
    assert json.loads(DOC.read_text()) == openapi_document(), (
        "docs/openapi.json is stale: run `cdnlab control openapi --output docs/openapi.json`"
    )


def test_openapi_covers_the_interfaces() -> None:
    doc = openapi_document()
    paths = doc["paths"]
    for p in (
        "/v1/steer",
        "/v1/appliances",
        "/v1/appliances/{appliance_id}/inventory",
        "/v1/health",
        "/v1/analytics",
    ):
        assert p in paths
    steer = paths["/v1/steer"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert steer["$ref"].endswith("/SteeringManifest")
    assert "InventoryReport" in doc["components"]["schemas"]
