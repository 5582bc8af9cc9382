"""The OpenAPI 3.1 description of the REST API (served at ``/v1/openapi.json``), generated from
the route table and the request and response models, so it says what the handlers do."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)
from pydantic_core import core_schema

from aftd import __version__
from aftd.api.registry import Registry, Response, Route
from aftd.api.responses import Error
from aftd.scopes import ANY_KEY

__all__ = ["REF_TEMPLATE", "openapi_document"]

REF_TEMPLATE = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/responses/Error"}
_DOCUMENTS: weakref.WeakKeyDictionary[Registry, dict[str, Any]] = weakref.WeakKeyDictionary()


class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema, without a title on every property or a ``null`` default (an
    optional field that is never null has one), and with a dict's key pattern as
    ``propertyNames`` (pydantic's ``patternProperties`` would let any other key through)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if "default" in out and out["default"] is None:
            del out["default"]
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:
            [(pattern, values)] = patterns.items()
            out["propertyNames"] = {"pattern": pattern}
            out["additionalProperties"] = values
        return out


def openapi_document(registry: Registry) -> dict[str, Any]:
    """The document for ``registry``, built once (the route table does not change)."""
    doc = _DOCUMENTS.get(registry)
    if doc is None:
        doc = _DOCUMENTS[registry] = _build(registry)
    return doc


def _build(registry: Registry) -> dict[str, Any]:
    refs, schemas = _schemas(registry)
    paths: dict[str, Any] = {}
    for route in registry.routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, refs, schemas, registry)
    return {
        "openapi": "3.1.0",
        "info": {"title": "aftd REST API", "version": __version__,
                 "description": "Trigger and follow file-transfer jobs."},
        "servers": [{"url": "https://127.0.0.1:44399"}],
        "security": [{"ApiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
            "schemas": schemas,
            "responses": {"Error": _media("Error: 400 bad input, 401 no/invalid key, 403 "
                                          "address not allowed or scope missing, 404 unknown, "
                                          "408 request body "
                                          "too slow, 409 conflict, 413 too large, 503 draining "
                                          "or full", {"application/json": _ref("Error")})},
        },
    }


_Refs = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]


def _models(registry: Registry) -> Iterator[tuple[type[BaseModel], JsonSchemaMode]]:
    yield Error, "serialization"  # every route may answer with it
    for route in registry.routes:
        for model in (route.body, route.query, route.headers):
            if model is not None:
                yield model, "validation"
        for response in route.responses.values():
            for body in response.content.values():
                if isinstance(body, type):
                    yield body, "serialization"


def _schemas(registry: Registry) -> tuple[_Refs, dict[str, Any]]:
    """Every model's schema, in one set of components: requests as they are validated,
    responses as they are serialized. Query and header models become parameters, not
    components."""
    models = list(dict.fromkeys(_models(registry)))
    refs, defs = models_json_schema(models, ref_template=REF_TEMPLATE, schema_generator=_Schema)
    return dict(refs), dict(defs.get("$defs", {}))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[-1]


def _operation(route: Route, refs: _Refs, schemas: dict[str, Any],
               registry: Registry) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.description:
        op["description"] = route.description
    params = _parameters(route, refs, schemas)
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(route.body, "validation")]}}}
    op["responses"] = {
        **{str(s): _response(r, refs, registry) for s, r in route.responses.items()},
        **{str(s): _ERROR for s in route.error_statuses}}
    if route.public:
        op["security"] = []
    else:
        op["x-required-scope"] = str(route.scope)
        op["responses"]["403"] = _forbidden(str(route.scope))
    return op


def _forbidden(scope: str) -> dict[str, Any]:
    text = "The key is not allowed from this address"
    if scope != ANY_KEY:
        text += f", or it lacks scope {scope!r} (admin grants every scope)"
    return _media(text, {"application/json": _ref("Error")})


def _parameters(route: Route, refs: _Refs, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
           for p in route.path_params]
    for where, model in (("header", route.headers), ("query", route.query)):
        if model is not None:
            out += _model_parameters(where, schemas.pop(_name(refs[(model, "validation")])))
    return out


def _model_parameters(where: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": where, "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        out.append({**param, "schema": prop})
    return out


def _response(response: Response, refs: _Refs, registry: Registry) -> dict[str, Any]:
    content = {media: refs[(body, "serialization")] if isinstance(body, type) else body
               for media, body in response.content.items()}
    out = _media(response.description, content)
    if response.headers:
        out["headers"] = {name: {"description": text, "required": True,
                                 "schema": {"type": "string"}}
                          for name, text in response.headers.items()}
    if response.links:
        out["links"] = {_link_name(op): {
            "operationId": op,
            "parameters": {p: f"$response.body#/{p}" for p in registry.find(op).path_params}}
            for op in response.links}
    return out


def _media(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description,
            "content": {media: {"schema": schema} for media, schema in content.items()}}


def _link_name(operation_id: str) -> str:
    return operation_id[:1].upper() + operation_id[1:]
