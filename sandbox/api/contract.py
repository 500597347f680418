"""The JSON API's contract: an OpenAPI 3.1 document generated from the same specs that
validate request bodies (``authz.specs`` field lists, ``authz.wire`` pydantic models), plus
the response shapes, all written once in ``sandbox.api.operations`` (which the requester's
client checks its bodies and answers with).

Every rule of the app's URL map has an :class:`Operation` in :data:`OPERATIONS` (a test
refuses a route without one). Served at ``GET /api/v1/openapi.json``; ``GET /api/v1/docs``
renders it as a page. Tests validate the document with ``openapi-spec-validator`` and every
JSON answer the API test suite receives against its operation's response schema.
"""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from sandbox.api.contract_schemas import COMPONENTS, INT, STR, ref
from sandbox.api.operations import OPERATIONS as OPERATIONS
from sandbox.api.operations import Operation, wire_components

bp = Blueprint("contract", __name__, url_prefix="/api/v1")


ADMISSION = (400, 413, 429, 500, 503)
ERROR_TEXT = {400: "Invalid input: the field and the rule", 401: "Not authenticated",
              403: "Not allowed for this role", 404: "No such object (or not yours)",
              409: "Conflicts with the object's state", 413: "Body too large",
              500: "Internal error, failing closed (e.g. a sealed value that does not open); "
                   "the message names no value",
              502: "The identity provider could not be reached",
              422: "Checked and refused", 429: "Rate limited (Retry-After)",
              503: "Unavailable now (Retry-After), e.g. database or witnesses"}


def _path(rule: str) -> str:
    out = rule
    for conv in ("int:", "path:"):
        out = out.replace(f"<{conv}", "<")
    return out.replace("<", "{").replace(">", "}")


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app`` (KeyError for one without an
    operation: a route is not served without its contract)."""
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.startswith("web"):
            continue
        op = OPERATIONS[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec = _operation(rule, op)
            if spec["operationId"] in seen:  # one view under two rules
                spec["operationId"] += "_" + rule.rule.strip("/").split("/")[2]
            seen.add(spec["operationId"])
            paths.setdefault(_path(rule.rule), {})[method.lower()] = spec
    doc: dict[str, Any] = _strip_defs({
        "openapi": "3.1.0",
        "info": {"title": "data-sandbox API", "version": "1",
                 "description": "Authorized data operation: results, not data. Prose: "
                                "docs/api.md."},
        "paths": paths,
        "components": {
            "schemas": {**COMPONENTS, **wire_components()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
    return doc


def _operation(rule: Any, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": rule.endpoint.replace(".", "_"), "summary": op.summary,
        "description": f"Who: {op.roles}.",
        "parameters": [{"name": a, "in": "path", "required": True,
                        "schema": INT if "int:" in rule.rule else STR}
                       for a in sorted(rule.arguments)]
        + [{"name": q, "in": "query", "required": False, "schema": STR} for q in op.query],
        "responses": {str(code): {
            "description": "Success",
            "content": {op.media: {"schema": op.response}}} for code in (op.status, *op.also)},
    }
    body = op.body_schema()
    if body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": body}}}
    # Every request passes admission (path and query text, body size) and the rate limits,
    # and may meet the database down or a stored value that fails to open (fail closed):
    # those answers are possible anywhere.
    for code in sorted({*op.errors, *ADMISSION}):
        out["responses"][str(code)] = {
            "description": ERROR_TEXT[code],
            "content": {"application/json": {"schema": ref("Error")}}}
    return out


def _strip_defs(s: Any) -> Any:
    """Without pydantic's nested ``$defs``: they are components of the document instead."""
    if isinstance(s, dict):
        return {k: _strip_defs(x) for k, x in s.items() if k != "$defs"}
    if isinstance(s, list):
        return [_strip_defs(x) for x in s]
    return s


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return document(current_app)


@bp.get("/docs")
def docs() -> Response:
    """The document as a plain page: one row per operation (no script, no external asset)."""
    doc = document(current_app)
    rows = "".join(
        f"<tr><td><code>{html.escape(m.upper())}</code></td><td><code>{html.escape(p)}"
        f"</code></td><td>{html.escape(o['summary'])}</td>"
        f"<td>{html.escape(o['description'])}</td></tr>"
        for p, ms in doc["paths"].items() for m, o in ms.items())
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>data-sandbox API</title></head><body><main><h1>data-sandbox API</h1>"
            "<p>Machine-readable: <a href=\"openapi.json\">openapi.json</a> (OpenAPI 3.1)."
            "</p><table><thead><tr><th scope=\"col\">Method</th><th scope=\"col\">Path</th>"
            "<th scope=\"col\">What</th><th scope=\"col\">Who</th></tr></thead><tbody>"
            f"{rows}</tbody></table></main></body></html>")
    return Response(page, mimetype="text/html")
