"""The JSON API's contract: an OpenAPI 3.1 document generated from the same specs that
validate request bodies (``authz.validate`` field lists, ``authz.wire`` pydantic models),
plus the response shapes, written once here.

Every rule of the app's URL map has an :class:`Operation` in :data:`OPERATIONS` (a test
refuses a route without one). Served at ``GET /api/v1/openapi.json``; ``GET /api/v1/docs``
renders it as a page. Tests validate the document with ``openapi-spec-validator`` and every
JSON answer the API test suite receives against its operation's response schema.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel, TypeAdapter

from authz import access, catalog, jobs, joint, people, psi_jobs, review, wire
from authz import validate as v
from sandbox.api import agent_admin
from sandbox.api import parties as parties_api
from sandbox.api import people as people_api
from sandbox.api.contract_schemas import (
    ANY,
    BOOL,
    COMPONENTS,
    INT,
    STR,
    TIME,
    Schema,
    array,
    nullable,
    obj,
    ref,
)

bp = Blueprint("contract", __name__, url_prefix="/api/v1")

@dataclass(frozen=True)
class Operation:
    summary: str
    roles: str  # who may call it: party roles and person roles, in words
    body: Schema | None = None
    response: Schema = field(default_factory=dict)
    status: int = 200
    errors: tuple[int, ...] = (400, 401, 403, 404)
    media: str = "application/json"
    query: tuple[str, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses with the same answer
    body_required: bool = True


def _spec(fields: Sequence[v.Field]) -> Schema:
    return v.spec_schema(fields)


def _model(model: type[BaseModel]) -> Schema:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def _list_of(key: str, item: Schema) -> Schema:
    return obj({key: array(item)})


TASK = TypeAdapter(wire.Task).json_schema(ref_template="#/components/schemas/{model}")
READ = (401, 403, 404)
CHANGE = (400, 401, 403, 404, 409)
TEXT = "text/plain"

OPERATIONS: dict[str, Operation] = {
    # -- parties, people ------------------------------------------------------------------
    "parties.create_party": Operation("Create a party (organisation)", "admin",
                                      _spec(parties_api.PARTY_SPEC), ref("Issued"), 201,
                                      CHANGE),
    "parties.create_agent": Operation("Register a provider-side agent", "admin",
                                      _spec(parties_api.AGENT_SPEC), ref("Issued"), 201,
                                      CHANGE),
    "parties.deactivate": Operation("Deactivate a party or an agent", "admin", None,
                                    obj({"id": STR, "active": BOOL}), 200, CHANGE),
    "parties.me": Operation("The caller: party, and person if signed in", "any party",
                            None, ref("Party"), 200, READ),
    "parties.rotate_token": Operation("Replace the caller's token", "any party or person",
                                      _spec(people_api.TOKEN_SPEC), ref("Issued"), 200,
                                      CHANGE),
    "people.create": Operation("Add a person to a party", "admin, or the party itself",
                               _spec(people.PERSON_SPEC), ref("Person"), 201, CHANGE),
    "people.list_people": Operation("The people of a party", "admin, or the party",
                                    None, _list_of("people", ref("Person")), 200, READ),
    "people.get": Operation("One person", "admin, or the person's party", None,
                            ref("Person"), 200, READ),
    "people.set_roles": Operation("Set a person's roles", "admin, or the party itself",
                                  _spec(people_api.ROLES_SPEC), ref("Person"), 200, CHANGE),
    "people.deactivate": Operation("Deactivate a person", "admin, or the party itself",
                                   None, ref("Person"), 200, CHANGE),
    "people.verify_identity": Operation("Record a person's identity check", "admin",
                                        _spec(people.IDENTITY_SPEC), ref("Person"), 200,
                                        CHANGE),
    "people.accredit": Operation("Record a person's accreditation", "admin",
                                 _spec(people.ACCREDITATION_SPEC), ref("Person"), 201,
                                 CHANGE),
    "people.sign_in": Operation("Sign in as a person: a personal token", "anyone",
                                _spec(people.SIGN_IN_SPEC),
                                obj({"person": ref("Person"), "token": STR,
                                      "expires_at": nullable(TIME)}), 200, (400, 401, 429)),
    "people.change_password": Operation("Change one's password", "a person",
                                        _spec(people_api.PASSWORD_SPEC),
                                        obj({"changed": BOOL}), 200, CHANGE),
    "people.start_totp": Operation("Start TOTP enrolment", "a person", None,
                                   obj({"otpauth_uri": STR}), 200, CHANGE),
    "people.confirm_totp": Operation("Confirm TOTP enrolment", "a person",
                                     _spec(people_api.TOTP_SPEC),
                                     obj({"totp_enabled": BOOL}), 200, CHANGE),
    "oidc.login": Operation("Start OIDC sign-in: a redirect to the identity provider",
                            "anyone (when configured)", None, {}, 302, (404, 502),
                            "text/html", query=("token_days",)),
    "oidc.callback": Operation("Finish OIDC sign-in: a personal token", "the browser that "
                               "started it", None,
                               obj({"person": ref("Person"), "token": STR,
                                     "expires_at": nullable(TIME), "method": STR}), 200,
                               (400, 401, 404, 409, 502), query=("code", "state", "error")),
    "oidc.unlink": Operation("Remove a person's identity-provider links", "admin", None,
                             obj({"person_id": STR, "unlinked": INT}), 200, CHANGE),
    # -- catalog ----------------------------------------------------------------------------
    "catalog.register": Operation("Register a dataset (checked by its agent)",
                                  "provider (dataset_steward)", _spec(catalog.DATASET_SPEC),
                                  ref("Dataset"), 201, (*CHANGE, 422), also=(202,)),
    "catalog.list_datasets": Operation("The catalog", "any party", None,
                                       _list_of("datasets", ref("Dataset")), 200, READ),
    "catalog.suspend": Operation("Take a dataset out of service; its open jobs are cancelled",
                                 "provider (approver or dataset_steward), admin",
                                 _spec(v.REASON_SPEC), ref("Dataset"), 200, CHANGE),
    "catalog.reinstate": Operation("Put a suspended dataset back in service",
                                   "provider (approver or dataset_steward), admin", None,
                                   ref("Dataset"), 200, CHANGE),
    "catalog.mock_data": Operation("Mock data from the declared fields only (CSV)",
                                   "any party", None, {}, 200, READ, "text/csv",
                                   query=("rows", "seed")),
    "catalog.get_dataset": Operation("One dataset", "any party", None, ref("Dataset"), 200,
                                     READ),
    # -- access -----------------------------------------------------------------------------
    "access.create_request": Operation("Ask for access", "requester (analyst)",
                                       _spec(access.REQUEST_SPEC), ref("Request"), 201,
                                       CHANGE),
    "access.list_requests": Operation("Requests one asked for or decides", "requester, "
                                      "provider", None, _list_of("requests", ref("Request")),
                                      200, READ),
    "access.get_request": Operation("One request", "requester, provider", None,
                                    ref("Request"), 200, READ),
    "access.approve": Operation("Approve one's item of a request, with conditions",
                                "provider (approver)", _spec(access.APPROVE_SPEC),
                                ref("Request"), 200, CHANGE),
    "access.deny": Operation("Deny one's item of a request", "provider (approver)",
                             _spec(v.REASON_SPEC), ref("Request"), 200, CHANGE),
    "access.list_permits": Operation("Permits one holds, or that cover one's data",
                                     "requester, provider", None,
                                     _list_of("permits", ref("Permit")), 200, READ),
    "access.get_permit": Operation("One permit", "requester, provider", None,
                                   ref("Permit"), 200, READ),
    "access.revoke": Operation("Revoke a permit", "provider (approver)", _spec(v.REASON_SPEC),
                               ref("Permit"), 200, CHANGE),
    "access.usage": Operation("Who used the provider's data", "provider", None,
                              _list_of("usage", ANY), 200, READ),
    "access.public_projects": Operation("Public register of approved uses", "anyone", None,
                                        _list_of("projects", ANY), 200, (404,)),
    # -- jobs -------------------------------------------------------------------------------
    "jobs.submit": Operation("Submit a script or a statistics spec under a permit",
                             "requester (analyst, named on the permit)",
                             _spec(jobs.SUBMIT_SPEC), ref("Job"), 201, CHANGE),
    "jobs.list_jobs": Operation("Jobs one submitted, or on one's data", "requester, provider",
                                None, _list_of("jobs", ref("Job")), 200, READ),
    "jobs.get_job": Operation("One job", "requester, provider", None, ref("Job"), 200, READ),
    "jobs.cancel": Operation("Withdraw a job (queued, awaiting approval or review)",
                             "requester (analyst)", None, ref("Job"), 200, CHANGE),
    "jobs.stop": Operation("Stop a job at once (incident control)",
                           "provider (approver), admin", _spec(v.REASON_SPEC), ref("Job"),
                           200, CHANGE),
    "jobs.receipt": Operation("The job's offline-verifiable receipt", "requester", None,
                              ref("Receipt"), 200, (*READ, 503)),
    "jobs.output": Operation("A released output", "requester", None, {}, 200, (*READ, 503),
                             "application/octet-stream"),
    "joint.submit": Operation("Submit joint statistics under homomorphic encryption",
                              "requester (analyst)", _spec(joint.SUBMIT_SPEC),
                              ref("JointJob"), 201, CHANGE),
    "joint.get": Operation("One joint job (long poll while it runs)", "requester", None,
                           ref("JointJob"), 200, READ, query=("wait",)),
    "psi.submit": Operation("Submit a private set intersection between two providers",
                            "requester (analyst)", _spec(psi_jobs.SUBMIT_SPEC),
                            ref("JointJob"), 201, CHANGE),
    # -- release review ---------------------------------------------------------------------
    "reviews.queue": Operation("Jobs awaiting review on the provider's data",
                               "provider (output_checker)", None, _list_of("reviews", ANY),
                               200, READ),
    "reviews.material": Operation("What an output checker sees of a job",
                                  "provider (output_checker)", None, ref("ReviewMaterial"),
                                  200, READ),
    "reviews.decide": Operation("Approve, reject or return a held output",
                                "provider (output_checker person)",
                                _spec(review.DECIDE_SPEC), ref("ReviewMaterial"), 200,
                                CHANGE),
    "reviews.justify": Operation("Justify releasing a held output", "requester (analyst)",
                                 _spec(review.JUSTIFY_SPEC),
                                 obj({"name": STR, "decision": STR, "justification": STR}),
                                 200, CHANGE),
    "reviews.script": Operation("A job's full code", "requester, provider", None,
                                obj({"job_id": STR, "kind": STR, "sha256": STR,
                                      "script": STR, "approvals": array(ANY)}), 200, READ),
    "reviews.pending_scripts": Operation("Scripts awaiting the provider's approval",
                                         "provider (approver)", None,
                                         _list_of("jobs", ANY), 200, READ),
    "reviews.approve_script": Operation("Approve a job's exact script", "provider (approver)",
                                        None, obj({"job_id": STR, "state": STR}), 200,
                                        CHANGE),
    "reviews.refuse_script": Operation("Refuse a job's script", "provider (approver)",
                                       _spec(v.REASON_SPEC),
                                       obj({"job_id": STR, "state": STR,
                                             "reason": nullable(STR)}), 200, CHANGE),
    # -- agents -----------------------------------------------------------------------------
    "agents.me": Operation("The agent and the providers it serves", "agent", None,
                           _model(wire.AgentIdentity), 200, READ),
    "agents.next_task": Operation("Claim the next task (long poll); the body, optional, is "
                                  "the agent's status", "agent", _model(wire.AgentStatus),
                                  obj({"task": {"anyOf": [TASK, {"type": "null"}]}}), 200,
                                  (400, 401, 403), query=("wait",), body_required=False),
    "agents.schema_verdict": Operation("Report a dataset's schema check", "agent",
                                       _model(wire.SchemaVerdict), obj({"status": STR}),
                                       200, CHANGE),
    "agents.leased": Operation("Whether a job is still leased to the agent", "agent", None,
                               _model(wire.LeaseState), 200, READ),
    "agents.started": Operation("A job's run started; a joint part's mask key may ride "
                                "along", "agent", _model(wire.RunStarted),
                                obj({"state": STR}, {"announced": BOOL}), 200,
                                CHANGE),
    "agents.checking": Operation("A job's container exited; outputs being checked", "agent",
                                 None, obj({"state": STR}), 200, CHANGE),
    "agents.result": Operation("Report a run", "agent", _model(wire.RunReport),
                               obj({"state": STR, "ledger_index": nullable(INT)}), 200, CHANGE),
    "agent_admin.rotate_token": Operation("A new token for an agent (incident control)",
                                          "admin", None, ref("Issued"), 200, CHANGE),
    "agent_admin.replace_signing_key": Operation(
        "Replace an agent's signing key; earlier parts still verify", "admin",
        _spec(agent_admin.KEY_SPEC), obj({"id": STR, "public_key": STR}), 200, CHANGE),
    "agent_admin.signing_keys": Operation("Every signing key an agent has used, and when",
                                          "admin, regulator", None,
                                          obj({"id": STR, "keys": array(ANY)}), 200, READ),
    "agents.mask_key": Operation("Announce a joint part's signed pairwise-mask key", "agent",
                                 ANY, obj({"joint_id": STR, "announced": INT}), 200,
                                 CHANGE),
    "agents.mask_keys": Operation("Every provider's mask key of the joint job, once all are "
                                  "announced (long poll)", "agent", None, ANY, 200, CHANGE,
                                  query=("wait",)),
    "agents.psi_message": Operation("Relay one blinded PSI message", "agent",
                                    obj({"data_b64": STR}), obj({"sent": STR}), 200,
                                    CHANGE),
    "agents.psi_peer_message": Operation("The other part's blinded PSI message", "agent",
                                         None, ANY, 200, CHANGE),
    # -- ledger -----------------------------------------------------------------------------
    "ledger.public_key": Operation("The log's verifier key (note format)", "anyone", None,
                                   {}, 200, (), TEXT),
    "ledger.checkpoint": Operation("The latest signed checkpoint", "any party", None, {},
                                   200, READ, TEXT),
    "ledger.entries": Operation("Entries [start, end)", "regulator, admin, provider, "
                                "requester", None,
                                obj({"start": INT, "end": INT, "tree_size": INT,
                                      "entries": array(obj({"index": INT, "data": STR}))}),
                                200, (400, *READ), query=("start", "end")),
    "ledger.inclusion": Operation("An inclusion proof", "regulator, admin, provider, "
                                  "requester", None, ANY, 200, (400, *READ),
                                  query=("size", "index", "hash")),
    "ledger.consistency": Operation("A consistency proof", "regulator, admin, provider, "
                                    "requester", None, ANY, 200, (400, *READ),
                                    query=("old", "new")),
    "ledger.receipt": Operation("A receipt for one entry", "regulator, admin, provider, "
                                "requester", None, ref("Receipt"), 200, (400, *READ)),
    # -- operations and the contract itself -------------------------------------------------
    "ops.healthz": Operation("Liveness", "anyone", None, obj({"status": STR}), 200, ()),
    "ops.readyz": Operation("Readiness: database, schema, checkpoint, witnesses", "anyone",
                            None, obj({"status": STR}), 200, (503,)),
    "ops.scrape": Operation("Prometheus metrics", "the scrape token", None, {}, 200,
                            (401, 404), TEXT),
    "contract.openapi": Operation("This document", "anyone", None, ANY, 200, ()),
    "contract.docs": Operation("This document as a page", "anyone", None, {}, 200, (),
                               "text/html"),
}

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
            "schemas": {**COMPONENTS, **_wire_components()},
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
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": op.body}}}
    # Every request passes admission (path and query text, body size) and the rate limits,
    # and may meet the database down or a stored value that fails to open (fail closed):
    # those answers are possible anywhere.
    for code in sorted({*op.errors, *ADMISSION}):
        out["responses"][str(code)] = {
            "description": ERROR_TEXT[code],
            "content": {"application/json": {"schema": ref("Error")}}}
    return out


def _wire_components() -> dict[str, Schema]:
    """Nested wire models, referenced from the agent operations' schemas."""
    defs: dict[str, Schema] = {}
    for model in (wire.RunReport, wire.SchemaVerdict, wire.AgentIdentity, wire.LeaseState):
        defs.update(model.model_json_schema(
            ref_template="#/components/schemas/{model}").get("$defs", {}))
    defs.update(TASK.get("$defs", {}))
    return defs


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
