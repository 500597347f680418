"""The JSON API's operations, written once: for each endpoint, the body spec that parses
its request (``authz.specs``, ``authz.wire``) and the schema of its answer
(``sandbox.api.contract_schemas``).

Pure: it imports neither Flask nor the database. The server generates its OpenAPI document
from these (``sandbox.api.contract``); the requester's client checks every body it sends and
every answer it reads with the same ones (``sandbox.client.Client.call``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, TypeAdapter

from authz import specs, wire
from authz import validate as v
from sandbox.api.contract_schemas import (
    ANY,
    BOOL,
    INT,
    STR,
    TIME,
    Schema,
    array,
    nullable,
    obj,
    ref,
)

REF_TEMPLATE = "#/components/schemas/{model}"

# A request body is one of: the field spec the service parses (authz.specs), the wire
# model the agent endpoints parse (authz.wire), or a JSON Schema for a body parsed by hand.
Body = Sequence[v.Field] | type[BaseModel] | Schema


@dataclass(frozen=True)
class Operation:
    summary: str
    roles: str  # who may call it: party roles and person roles, in words
    body: Body | None = None
    response: Schema = field(default_factory=dict)
    status: int = 200
    errors: tuple[int, ...] = (400, 401, 403, 404)
    media: str = "application/json"
    query: tuple[str, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses with the same answer
    body_required: bool = True

    def body_schema(self) -> Schema | None:
        """The JSON Schema of the body, generated from what parses it."""
        if self.body is None or isinstance(self.body, dict):
            return self.body
        if isinstance(self.body, type):
            return self.body.model_json_schema(ref_template=REF_TEMPLATE)
        return v.spec_schema(self.body)


def _model(model: type[BaseModel]) -> Schema:
    return model.model_json_schema(ref_template=REF_TEMPLATE)


def _list_of(key: str, item: Schema) -> Schema:
    return obj({key: array(item)})


TASK = TypeAdapter(wire.Task).json_schema(ref_template=REF_TEMPLATE)
READ = (401, 403, 404)
CHANGE = (400, 401, 403, 404, 409)
TEXT = "text/plain"

OPERATIONS: dict[str, Operation] = {
    # -- parties, people ------------------------------------------------------------------
    "parties.create_party": Operation("Create a party (organisation)", "admin",
                                      specs.PARTY_SPEC, ref("Issued"), 201,
                                      CHANGE),
    "parties.create_agent": Operation("Register a provider-side agent", "admin",
                                      specs.AGENT_SPEC, ref("Issued"), 201,
                                      CHANGE),
    "parties.deactivate": Operation("Deactivate a party or an agent", "admin", None,
                                    obj({"id": STR, "active": BOOL}), 200, CHANGE),
    "parties.me": Operation("The caller: party, and person if signed in", "any party",
                            None, ref("Party"), 200, READ),
    "parties.rotate_token": Operation("Replace the caller's token", "any party or person",
                                      specs.TOKEN_SPEC, ref("Issued"), 200,
                                      CHANGE),
    "people.create": Operation("Add a person to a party", "admin, or the party itself",
                               specs.PERSON_SPEC, ref("Person"), 201, CHANGE),
    "people.list_people": Operation("The people of a party", "admin, or the party",
                                    None, _list_of("people", ref("Person")), 200, READ),
    "people.get": Operation("One person", "admin, or the person's party", None,
                            ref("Person"), 200, READ),
    "people.set_roles": Operation("Set a person's roles", "admin, or the party itself",
                                  specs.ROLES_SPEC, ref("Person"), 200, CHANGE),
    "people.deactivate": Operation("Deactivate a person", "admin, or the party itself",
                                   None, ref("Person"), 200, CHANGE),
    "people.verify_identity": Operation("Record a person's identity check", "admin",
                                        specs.IDENTITY_SPEC, ref("Person"), 200,
                                        CHANGE),
    "people.accredit": Operation("Record a person's accreditation", "admin",
                                 specs.ACCREDITATION_SPEC, ref("Person"), 201,
                                 CHANGE),
    "people.sign_in": Operation("Sign in as a person: a personal token", "anyone",
                                specs.SIGN_IN_SPEC,
                                obj({"person": ref("Person"), "token": STR,
                                      "expires_at": nullable(TIME)}), 200, (400, 401, 429)),
    "people.change_password": Operation("Change one's password", "a person",
                                        specs.PASSWORD_SPEC,
                                        obj({"changed": BOOL}), 200, CHANGE),
    "people.start_totp": Operation("Start TOTP enrolment", "a person", None,
                                   obj({"otpauth_uri": STR}), 200, CHANGE),
    "people.confirm_totp": Operation("Confirm TOTP enrolment", "a person",
                                     specs.TOTP_SPEC,
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
                                  "provider (dataset_steward)", specs.DATASET_SPEC,
                                  ref("Dataset"), 201, (*CHANGE, 422), also=(202,)),
    "catalog.list_datasets": Operation("The catalog", "any party", None,
                                       _list_of("datasets", ref("Dataset")), 200, READ),
    "catalog.suspend": Operation("Take a dataset out of service; its open jobs are cancelled",
                                 "provider (approver or dataset_steward), admin",
                                 v.REASON_SPEC, ref("Dataset"), 200, CHANGE),
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
                                       specs.REQUEST_SPEC, ref("Request"), 201,
                                       CHANGE),
    "access.list_requests": Operation("Requests one asked for or decides", "requester, "
                                      "provider", None, _list_of("requests", ref("Request")),
                                      200, READ),
    "access.get_request": Operation("One request", "requester, provider", None,
                                    ref("Request"), 200, READ),
    "access.approve": Operation("Approve one's item of a request, with conditions",
                                "provider (approver)", specs.APPROVE_SPEC,
                                ref("Request"), 200, CHANGE),
    "access.deny": Operation("Deny one's item of a request", "provider (approver)",
                             v.REASON_SPEC, ref("Request"), 200, CHANGE),
    "access.list_permits": Operation("Permits one holds, or that cover one's data",
                                     "requester, provider", None,
                                     _list_of("permits", ref("Permit")), 200, READ),
    "access.get_permit": Operation("One permit", "requester, provider", None,
                                   ref("Permit"), 200, READ),
    "access.revoke": Operation("Revoke a permit", "provider (approver)", v.REASON_SPEC,
                               ref("Permit"), 200, CHANGE),
    "access.usage": Operation(
        "Who used the provider's data: every job, or with limit the latest page", "provider",
        None, obj({"usage": array(ref("UsageRow")), "next_before": nullable(STR)}), 200,
        (400, *READ), query=("limit", "before")),
    "access.public_projects": Operation("Public register of approved uses", "anyone", None,
                                        _list_of("projects", ANY), 200, (404,)),
    # -- jobs -------------------------------------------------------------------------------
    "jobs.submit": Operation("Submit a script or a statistics spec under a permit",
                             "requester (analyst, named on the permit)",
                             specs.JOB_SUBMIT_SPEC, ref("Job"), 201, CHANGE),
    "jobs.list_jobs": Operation("Jobs one submitted, or on one's data", "requester, provider",
                                None, _list_of("jobs", ref("Job")), 200, READ),
    "jobs.get_job": Operation("One job", "requester, provider", None, ref("Job"), 200, READ),
    "jobs.cancel": Operation("Withdraw a job (queued, awaiting approval or review)",
                             "requester (analyst)", None, ref("Job"), 200, CHANGE),
    "jobs.stop": Operation("Stop a job at once (incident control)",
                           "provider (approver), admin", v.REASON_SPEC, ref("Job"),
                           200, CHANGE),
    "jobs.receipt": Operation("The job's offline-verifiable receipt", "requester", None,
                              ref("Receipt"), 200, (*READ, 503)),
    "jobs.output": Operation("A released output", "requester", None, {}, 200, (*READ, 503),
                             "application/octet-stream"),
    "joint.submit": Operation("Submit joint statistics under homomorphic encryption",
                              "requester (analyst)", specs.JOINT_SUBMIT_SPEC,
                              ref("JointJob"), 201, CHANGE),
    "joint.get": Operation("One joint job (long poll while it runs)", "requester", None,
                           ref("JointJob"), 200, READ, query=("wait",)),
    "psi.submit": Operation("Submit a private set intersection among two or more providers",
                            "requester (analyst)", specs.PSI_SUBMIT_SPEC,
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
                                specs.DECIDE_SPEC, ref("ReviewMaterial"), 200,
                                CHANGE),
    "reviews.justify": Operation("Justify releasing a held output", "requester (analyst)",
                                 specs.JUSTIFY_SPEC,
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
                                       v.REASON_SPEC,
                                       obj({"job_id": STR, "state": STR,
                                             "reason": nullable(STR)}), 200, CHANGE),
    # -- agents -----------------------------------------------------------------------------
    "agents.me": Operation("The agent and the providers it serves", "agent", None,
                           _model(wire.AgentIdentity), 200, READ),
    "agents.next_task": Operation("Claim the next task (long poll); the body, optional, is "
                                  "the agent's status", "agent", wire.AgentStatus,
                                  obj({"task": {"anyOf": [TASK, {"type": "null"}]}}), 200,
                                  (400, 401, 403), query=("wait",), body_required=False),
    "agents.schema_verdict": Operation("Report a dataset's schema check", "agent",
                                       wire.SchemaVerdict, obj({"status": STR}),
                                       200, CHANGE),
    "agents.leased": Operation("Whether a job is still leased to the agent", "agent", None,
                               _model(wire.LeaseState), 200, READ),
    "agents.started": Operation("A job's run started; a joint part's mask key may ride "
                                "along", "agent", _model(wire.RunStarted),
                                obj({"state": STR}, {"announced": BOOL}), 200,
                                CHANGE),
    "agents.checking": Operation("A job's container exited; outputs being checked", "agent",
                                 None, obj({"state": STR}), 200, CHANGE),
    "agents.result": Operation("Report a run", "agent", wire.RunReport,
                               obj({"state": STR, "ledger_index": nullable(INT)}), 200, CHANGE),
    "agent_admin.rotate_token": Operation("A new token for an agent (incident control)",
                                          "admin", None, ref("Issued"), 200, CHANGE),
    "agent_admin.replace_signing_key": Operation(
        "Replace an agent's signing key; earlier parts still verify", "admin",
        specs.KEY_SPEC, obj({"id": STR, "public_key": STR}), 200, CHANGE),
    "agent_admin.signing_keys": Operation("Every signing key an agent has used, and when",
                                          "admin, regulator", None,
                                          obj({"id": STR, "keys": array(ANY)}), 200, READ),
    "agents.mask_key": Operation("Announce a joint part's signed pairwise-mask key", "agent",
                                 ANY, obj({"joint_id": STR, "announced": INT}), 200,
                                 CHANGE),
    "agents.mask_keys": Operation("Every provider's mask key of the joint job, once all are "
                                  "announced (long poll)", "agent", None, ANY, 200, CHANGE,
                                  query=("wait",)),
    "agents.cell_holders": Operation("Publish a joint part's signed, masked vector of one "
                                     "cell-holders round", "agent",
                                     _model(wire.CellHoldersVector),
                                     obj({"joint_id": STR, "round": INT}), 200, CHANGE),
    "agents.cell_holders_round": Operation("Every provider's vector of a cell-holders round, "
                                           "once all are in (long poll)", "agent", None,
                                           ANY, 200, CHANGE, query=("wait",)),
    "agents.psi_message": Operation("Relay one chunk of a blinded PSI message", "agent",
                                    specs.PSI_CHUNK_SPEC, obj({"sent": STR}), 200,
                                    CHANGE),
    "agents.psi_peer_message": Operation("A chunk of another part's blinded PSI message",
                                         "agent", None, ANY, 200, CHANGE,
                                         query=("chunk",)),
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


def wire_components() -> dict[str, Schema]:
    """Nested wire models, referenced from the agent operations' schemas."""
    defs: dict[str, Schema] = {}
    for model in (wire.RunReport, wire.SchemaVerdict, wire.AgentIdentity, wire.LeaseState):
        defs.update(model.model_json_schema(ref_template=REF_TEMPLATE).get("$defs", {}))
    defs.update(TASK.get("$defs", {}))
    return defs
