"""Every JSON answer the API tests receive is checked against the OpenAPI document's
response schema for its route and status (sandbox/api/contract.py): the contract cannot
drift from what the views really send."""

from __future__ import annotations

from typing import Any

from flask import Flask
from jsonschema import Draft202012Validator
from werkzeug.exceptions import HTTPException

from sandbox.api.contract import document

# Keyed by the URL map's routes: every test builds its own app, all with the same routes.
_DOCS: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
_VALIDATORS: dict[tuple[int, str, str, int], Draft202012Validator] = {}


def check_answer(app: Flask, method: str, path: str, status: int, body: Any) -> None:
    if body is None:
        return
    routes = tuple(sorted((r.rule, r.endpoint) for r in app.url_map.iter_rules()))
    doc = _DOCS.get(routes)
    if doc is None:
        doc = _DOCS[routes] = document(app)
    try:
        rule, _ = app.url_map.bind("localhost").match(path.split("?")[0], method=method,
                                                       return_rule=True)
    except HTTPException:
        return  # no such route: the 404/405 answer is the framework's
    paths = doc["paths"]
    key = rule.rule.replace("<int:", "<").replace("<", "{").replace(">", "}")
    op = paths.get(key, {}).get(method.lower())
    if op is None:
        return
    answer = op["responses"].get(str(status))
    assert answer is not None, f"{method} {path} answered {status}, not in the contract"
    cache_key = (id(doc), key, method, status)
    validator = _VALIDATORS.get(cache_key)
    if validator is None:
        schema = next(iter(answer["content"].values()))["schema"]
        validator = _VALIDATORS[cache_key] = Draft202012Validator(
            {"allOf": [schema], "components": doc["components"]})
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, (f"{method} {path} {status} breaks the contract: "
                        f"{errors[0].message} at {list(errors[0].path)}")
