"""The OpenAPI 3.0 description served at ``GET /openapi.json`` (written by hand: the API is small
and its request shapes are stricter than what a framework would infer)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi"]

_ERROR = {
    "type": "object",
    "required": ["error", "field"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string", "nullable": True}},
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_WINDOW = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "limit": {"type": "integer"},
        "window": {"type": "number"},
        "remaining": {"type": "integer"},
        "reset_after": {"type": "number", "nullable": True},
        "allowed": {"type": "boolean"},
        "retry_after": {"type": "number", "nullable": True},
    },
}
_CHECK_KEY = {
    "type": "object",
    "required": ["rule", "key"],
    "additionalProperties": False,
    "properties": {
        "rule": {"type": "string", "description": "a rule name of the policy"},
        "key": {"type": "string", "minLength": 1, "description": "whose limit: a user id, an IP, a session"},
        "cost": {"type": "integer", "minimum": 0, "default": 1},
        "attrs": {**_STRINGS, "description": 'identity attributes for tiers, e.g. {"role": "OWNER"}'},
    },
}
_FACTS = {
    "type": "object",
    "required": ["path"],
    "additionalProperties": False,
    "properties": {
        "method": {"type": "string", "default": "GET"},
        "path": {"type": "string", "pattern": "^/"},
        "ip": {"type": "string", "nullable": True},
        "headers": _STRINGS,
        "user": {"type": "string", "nullable": True},
        "attrs": _STRINGS,
        "query": {"type": "string"},
        "host": {"type": "string"},
        "scheme": {"type": "string", "enum": ["http", "https", "ws", "wss"]},
        "body": {"type": "string", "description": "the request body, for body:FIELD keys"},
        "content_type": {"type": "string"},
    },
}
_CHECK_REQUEST = {
    "type": "object",
    "required": ["request"],
    "additionalProperties": False,
    "properties": {"request": _FACTS},
}
_DECISION = {
    "type": "object",
    "properties": {
        "allowed": {"type": "boolean"},
        "status": {"type": "integer"},
        "limit": {"type": "integer"},
        "remaining": {"type": "integer"},
        "reset_after": {"type": "number", "nullable": True},
        "retry_after": {"type": "number", "nullable": True, "description": "null: never (a cost above the limit)"},
        "rule": {"type": "string", "nullable": True},
        "headers": _STRINGS,
        "body": {"nullable": True},
        "decisions": {"type": "array", "items": _WINDOW},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _err(text: str) -> dict[str, Any]:
    return {"description": text, **_json(_ERROR)}


def openapi(version: str) -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"admin": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "ratewarden decision service", "version": version},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/check": {
                "post": {
                    "summary": "Decide (and consume when admitted): by rule and key, or by request facts",
                    "requestBody": {"required": True, **_json({"oneOf": [_CHECK_KEY, _CHECK_REQUEST]})},
                    "responses": {
                        "200": {"description": "the decision (a denial is an answer)", **_json(_DECISION)},
                        "400": _err("a client mistake"),
                        "413": _err("the body is larger than the cap"),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "Windows of a rule for a key, nothing consumed (no parameters: the service)",
                    "parameters": [
                        {"name": "rule", "in": "query", "required": False, "schema": {"type": "string"}},
                        {"name": "key", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "status", **_json({"type": "object"})},
                        "400": _err("a client mistake"),
                    },
                }
            },
            "/v1/reset": {
                "post": {
                    "summary": "Forget every window of a rule (or ban) for a key",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        **_json(
                            {
                                "type": "object",
                                "required": ["rule", "key"],
                                "additionalProperties": False,
                                "properties": {"rule": {"type": "string"}, "key": {"type": "string", "minLength": 1}},
                            }
                        ),
                    },
                    "responses": {
                        "200": {"description": "reset", **_json({"type": "object"})},
                        "400": _err("a client mistake"),
                        "401": _err("no bearer token"),
                        "403": _err("a wrong token, or reset disabled"),
                        "413": _err("the body is larger than the cap"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "200 when the store answers, else 503",
                    "responses": {
                        "200": {"description": "healthy", **_json({"type": "object"})},
                        "503": {"description": "the store does not answer", **_json({"type": "object"})},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
                }
            },
        },
    }
