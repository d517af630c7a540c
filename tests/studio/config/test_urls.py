"""studio.config.urls: the OpenAPI schema is valid and complete; the docs page loads with local assets only."""

from __future__ import annotations

import json
import re

from rest_framework.test import APIClient


def test_schema_is_valid_openapi_with_operations_everywhere(db):
    from drf_spectacular.validation import validate_schema

    response = APIClient().get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    methods = {"get", "put", "post", "delete", "patch"}
    for path, item in schema["paths"].items():
        assert methods & set(item), f"{path} has no operation"
    objects = schema["paths"]["/api/v1/objects"]["post"]
    request = objects["requestBody"]["content"]["application/json"]["schema"]
    components = schema["components"]["schemas"]

    def resolve(node):
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    item = resolve(resolve(request)["properties"]["objects"]["items"])
    assert {"object_id", "payload", "text", "vector", "vectors", "average"} <= set(item["properties"])
    errors = resolve(resolve(objects["responses"]["200"]["content"]["application/json"]["schema"]))
    error_item = resolve(errors["properties"]["errors"]["items"])
    assert {"index", "object_id", "code", "message"} <= set(error_item["properties"])
    assert {"200", "400", "401", "403", "413"} <= set(objects["responses"])
    assert "ApiKey" in schema["components"]["securitySchemes"]
    detail = schema["paths"]["/api/v1/objects/{object_id}"]
    assert {"get", "delete"} <= set(detail)


def test_docs_page_loads_with_local_assets_only(db):
    client = APIClient()
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls
    assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    assert "cdn" not in html.lower()
    for url in urls:
        if url.startswith("/static/"):
            asset = client.get(url)
            assert asset.status_code == 200, url
            b"".join(asset.streaming_content) if asset.streaming else asset.content
