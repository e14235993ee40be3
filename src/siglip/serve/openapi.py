"""`GET /openapi.json`: the API described as OpenAPI 3.1, its schemas generated from the pydantic models of
`schemas` (the request models are the ones that validate the requests), so the description cannot drift from
what the server accepts. Schema-based fuzzers read it (tests/fuzz_api.py: no 5xx, responses match it)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from . import schemas

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "bad input: the field or item at fault is in error.param",
    "401": "missing or wrong API key",
    "404": "no such route or item",
    "408": "the body did not arrive in time",
    "413": "over a cap (body, items, text length, pixels)",
    "415": "the body is not JSON in UTF-8",
    "503": "the queue is full or the server is stopping (Retry-After)",
    "504": "the request missed its deadline",
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}


def _responses(ok: str | None, *errors: str, ok_content: dict | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok_content or _json(ok or "")}}
    for code in errors:
        responses[code] = {"description": ERRORS[code], "content": _json("ErrorResponse")}
    return responses


def _post(summary: str, request: str, response: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": _json(request)},
        "responses": _responses(response, "400", "401", "408", "413", "415", "503", "504"),
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def openapi_document(title: str = "siglip serve", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes of `siglip.serve.app`."""
    models = [
        schemas.EmbeddingRequest,
        schemas.ClassifyRequest,
        schemas.SearchRequest,
        schemas.ErrorResponse,
        schemas.EmbeddingResponse,
        schemas.ClassifyResponse,
        schemas.SearchResponse,
        schemas.CollectionsResponse,
        schemas.ModelsResponse,
        schemas.Health,
        schemas.Readiness,
    ]
    _, definitions = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    search_get = {
        "summary": "search the collections with a text query",
        "parameters": [
            {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}, "description": "query text"},
            _query("k", {"type": "integer", "minimum": 1}, "how many hits (default 10)"),
            _query("ann", {"type": "boolean"}, "approximate search where a graph is built"),
            _query("collection", {"type": "string"}, "one collection's name (default: all)"),
        ],
        "responses": _responses("SearchResponse", "400", "401", "413", "503", "504"),
    }
    thumbnail = {
        "summary": "a JPEG thumbnail of an image item",
        "parameters": [
            {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
            _query("size", {"type": "integer"}, "box size in pixels (64, 128, 256 or 512; the next one up)"),
        ],
        "responses": _responses(
            None, "400", "401", "404", ok_content={"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}
        ),
    }
    paths = {
        "/healthz": {"get": {"summary": "liveness", "responses": _responses("Health")}},
        "/readyz": {
            "get": {
                "summary": "readiness",
                "responses": {
                    **_responses("Readiness"),
                    "503": {"description": "not ready", "content": _json("Readiness")},
                },
            }
        },
        "/v1/models": {"get": {"summary": "the served model", "responses": _responses("ModelsResponse", "401")}},
        "/v1/collections": {
            "get": {"summary": "the collections", "responses": _responses("CollectionsResponse", "401")}
        },
        "/v1/embeddings": {
            "post": _post("text and image embeddings (OpenAI-compatible)", "EmbeddingRequest", "EmbeddingResponse")
        },
        "/v1/classify": {
            "post": _post("zero-shot scores of images against labels", "ClassifyRequest", "ClassifyResponse")
        },
        "/v1/search": {"get": search_get, "post": _post("search by text or image", "SearchRequest", "SearchResponse")},
        "/v1/items/{item_id}/thumbnail": {"get": thumbnail},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
