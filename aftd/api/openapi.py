"""The OpenAPI 3.1 description of the REST API (served at ``/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from aftd import __version__
from aftd.jobs.model import JobState

__all__ = ["openapi_document"]

_ERR = {"$ref": "#/components/responses/Error"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERR for c in (401, 403, *codes)}


_JOB_ID = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}

_PATHS: dict[str, Any] = {
    "/v1/jobs": {
        "post": {
            "summary": "Trigger a script as a new job",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "maxLength": 200},
                            "description": "A retried trigger with the same key returns the "
                                           "same job (200) instead of starting another."}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("TriggerRequest")}}},
            "responses": {"201": _json(_ref("Job"), "Job created; Location header set"),
                          "200": _json(_ref("Job"), "Existing job for this Idempotency-Key"),
                          **_errors(400, 404, 409, 413, 503)},
        },
        "get": {
            "summary": "List jobs, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated states"},
                {"name": "script", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"},
                 "description": "nextCursor of the previous page"}],
            "responses": {"200": _json(_ref("JobList"), "A page of jobs"), **_errors(400)},
        },
    },
    "/v1/jobs/{jobId}": {"get": {
        "summary": "One job", "parameters": [_JOB_ID],
        "responses": {"200": _json(_ref("Job"), "The job"), **_errors(404)}}},
    "/v1/jobs/{jobId}/cancel": {"post": {
        "summary": "Cancel a queued or running job", "parameters": [_JOB_ID],
        "responses": {"200": _json(_ref("Job"), "The job after cancelling"),
                      **_errors(404, 409)}}},
    "/v1/jobs/{jobId}/log": {"get": {
        "summary": "The job's own log lines",
        "parameters": [_JOB_ID,
                       {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                        "description": "Stream NDJSON lines until the job ends"},
                       {"name": "after", "in": "query", "schema": {"type": "integer"},
                        "description": "Only lines with seq greater than this"}],
        "responses": {"200": {"description": "Log lines", "content": {
            "application/json": {"schema": _ref("JobLog")},
            "application/x-ndjson": {"schema": _ref("LogLine")}}}, **_errors(400, 404)}}},
    "/v1/scripts": {"get": {
        "summary": "Scripts that can be triggered",
        "responses": {"200": _json({"type": "object", "properties": {
            "scripts": {"type": "array", "items": _ref("Script")}}}, "Scripts"), **_errors()}}},
    "/v1/health": {"get": {
        "summary": "Daemon health (authenticated)",
        "responses": {"200": _json({"type": "object"}, "Healthy"),
                      "503": _json({"type": "object"}, "Draining"), **_errors()}}},
    "/livez": {"get": {
        "summary": "Unauthenticated liveness probe", "security": [],
        "responses": {"200": _json({"type": "object"}, "Alive")}}},
    "/metrics": {"get": {
        "summary": "Prometheus metrics (text exposition format)",
        "responses": {"200": {"description": "Metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **_errors()}}},
    "/v1/openapi.json": {"get": {
        "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI document"), **_errors()}}},
}

_PARAM_VALUE = {"type": ["string", "number", "integer", "boolean"]}

_SCHEMAS: dict[str, Any] = {
    "TriggerRequest": {
        "type": "object", "additionalProperties": False,
        "description": "Exactly one of scriptId / scriptName (case-insensitive).",
        "properties": {
            "scriptId": {"type": "string"}, "scriptName": {"type": "string"},
            "params": {"oneOf": [
                {"type": "array", "items": {"type": "object", "required": ["name", "value"],
                                            "properties": {"name": {"type": "string"},
                                                           "value": _PARAM_VALUE}}},
                {"type": "object", "additionalProperties": _PARAM_VALUE}]}}},
    "Job": {"type": "object", "required": ["jobId", "scriptId", "status"], "properties": {
        "jobId": {"type": "string"}, "scriptId": {"type": "string"},
        "status": {"type": "string", "enum": [str(s) for s in JobState]},
        "params": {"type": "object"},
        "createdAt": {"type": "string", "format": "date-time"},
        "startedAt": {"type": ["string", "null"], "format": "date-time"},
        "finishedAt": {"type": ["string", "null"], "format": "date-time"},
        "exitCode": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
        "progress": {"type": "object", "properties": {
            k: {"type": "number"} for k in ("filesDone", "filesTotal", "bytesDone",
                                            "bytesTotal", "bytesPerSecond")}},
        "report": {"type": ["object", "null"], "description": "Delivery of the final report",
                   "properties": {"state": {"type": "string",
                                            "enum": ["intent", "pending", "delivered",
                                                     "abandoned"]},
                                  "attempts": {"type": "integer"},
                                  "lastError": {"type": ["string", "null"]}}}}},
    "JobList": {"type": "object", "properties": {
        "jobs": {"type": "array", "items": _ref("Job")},
        "nextCursor": {"type": ["string", "null"]}}},
    "LogLine": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "timestamp": {"type": "string"},
        "level": {"type": "string"}, "event": {"type": "string"}}},
    "JobLog": {"type": "object", "properties": {
        "jobId": {"type": "string"}, "status": {"type": "string"},
        "lines": {"type": "array", "items": _ref("LogLine")}}},
    "Script": {"type": "object", "properties": {
        "scriptId": {"type": "string"}, "name": {"type": "string"},
        "description": {"type": "string"}}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "aftd REST API", "version": __version__,
                 "description": "Trigger and follow file-transfer jobs."},
        "servers": [{"url": "https://127.0.0.1:44399"}],
        "security": [{"ApiKey": []}],
        "paths": _PATHS,
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
            "schemas": _SCHEMAS,
            "responses": {"Error": _json(_ref("Error"),
                                         "Error: 400 bad input, 401 no/invalid key, 403 address "
                                         "not allowed, 404 unknown, 409 conflict, 413 too large, "
                                         "503 draining or full")},
        },
    }
