"""The OpenAPI contract: generated from the specs that validate, covering every route."""

from __future__ import annotations

from typing import Any

from flask import Flask
from openapi_spec_validator import validate

from authz import specs
from authz import validate as v
from authz.access import REQUEST_SPEC
from sandbox.api.contract import OPERATIONS, document
from sandbox.api.routes import ROUTES
from tests.conftest import Actor
from tests.contract_check import check_answer


def test_the_document_is_valid_openapi_and_covers_every_route(app: Flask) -> None:
    doc = document(app)  # KeyError for a route without an operation
    validate(doc)
    endpoints = {r.endpoint for r in app.url_map.iter_rules()} - {"static"}
    assert set(OPERATIONS) == {e for e in endpoints if not e.startswith("web")}
    # Every operation answers errors in the one error shape.
    for methods in doc["paths"].values():
        for op in methods.values():
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


def test_the_routes_the_client_builds_paths_from_are_the_apps(app: Flask) -> None:
    served = {(r.endpoint, f"{m} {r.rule}") for r in app.url_map.iter_rules()
              if r.endpoint != "static" and not r.endpoint.startswith("web")
              for m in (r.methods or set()) - {"HEAD", "OPTIONS"}}
    assert served == {(op, route) for op, routes in ROUTES.items() for route in routes}


def test_request_schemas_come_from_the_validating_specs(app: Flask) -> None:
    """One definition: the body schema of POST /requests is the spec the service parses."""
    doc = document(app)
    body = doc["paths"]["/api/v1/requests"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert body == v.spec_schema(REQUEST_SPEC)
    assert body["additionalProperties"] is False
    # The very lists the services parse with, which the client checks bodies with.
    assert OPERATIONS["access.create_request"].body is REQUEST_SPEC
    assert OPERATIONS["jobs.submit"].body is specs.JOB_SUBMIT_SPEC
    assert body["properties"]["use_kind"]["enum"] == ["statistics", "joint_statistics",
                                                      "modelling", "verification"]


def test_served_with_a_docs_page(client: Any, admin: Actor) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.json["openapi"] == "3.1.0"
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "/api/v1/reviews/{job_id}/outputs/{name}" in page.get_data(as_text=True)
    assert "<script" not in page.get_data(as_text=True)


def test_an_answer_that_breaks_the_contract_is_caught(app: Flask, admin: Actor) -> None:
    """The check every API test runs (tests/contract_check.py) does fail on drift."""
    try:
        check_answer(app, "GET", "/api/v1/me", 200, {"id": "pty_x", "name": "n"})
    except AssertionError as e:
        assert "role" in str(e)
    else:
        raise AssertionError("a missing required key was not caught")
