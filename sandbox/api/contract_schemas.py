"""The JSON API's answers, written once: the response shapes of sandbox/api/contract.py.

JSON Schema (2020-12, as OpenAPI 3.1 uses it) as plain dictionaries; answers may grow
fields, so the keys listed are required and others allowed.
"""

from __future__ import annotations

from typing import Any

from authz.states import (
    DatasetStatus,
    Decision,
    JobState,
    JointJobState,
    OutputDecision,
    PermitStatus,
    ReviewDecision,
    ScriptRelease,
)

Schema = dict[str, Any]


def enum_of(e: Any) -> Schema:
    return {"type": "string", "enum": [str(m) for m in e]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    # Answers may grow fields (additive changes keep clients working), so extra keys are
    # allowed; the keys listed are always there, with these types.
    props = {**required, **(optional or {})}
    return {"type": "object", "properties": props, "required": sorted(required)}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
ANY: Schema = {}


def nullable(s: Schema) -> Schema:
    return {"anyOf": [s, {"type": "null"}]}


def array(s: Schema) -> Schema:
    return {"type": "array", "items": s}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


REVIEW = obj({"reviewer_id": STR, "provider_id": STR, "decision": enum_of(ReviewDecision),
               "comment": STR, "decided_at": TIME})
OUTPUT = obj({"name": STR, "sha256": STR, "bytes": INT, "decision": enum_of(OutputDecision),
               "reasons": array(STR)},
              {"justification": nullable(STR), "reviews": array(REVIEW),
               "review_s": nullable(INT)})
PERSON = obj({"id": STR, "party_id": STR, "name": STR, "email": STR, "roles": array(STR),
               "active": BOOL, "totp_enabled": BOOL, "created_at": TIME},
              {"token_expires_at": nullable(TIME), "identity_verified_at": nullable(TIME),
               "accreditations": array(obj({"kind": STR, "awarded_at": TIME,
                                             "expires_at": TIME}))})
COMPONENTS: dict[str, Schema] = {
    "Error": obj({"error": STR, "message": STR}, {"field": STR, "rule": STR}),
    "Party": obj({"id": STR, "name": STR, "role": STR}, {"code": nullable(STR),
                                                          "person": nullable(PERSON)}),
    "Issued": obj({"id": STR, "token": STR}, {"role": STR, "expires_at": nullable(TIME)}),
    "Person": PERSON,
    "Dataset": obj({"id": STR, "code": STR, "name": STR, "category": STR, "format": STR,
                     "provider_id": STR, "openness": STR, "fields": array(ANY),
                     "status": enum_of(DatasetStatus), "rows": nullable(INT),
                     "created_at": TIME},
                    {"location": STR, "status_reason": nullable(ANY)}),
    "Request": obj({"id": STR, "requester_id": STR, "purpose": STR, "use_kind": STR,
                     "business_system": STR, "status": enum_of(Decision), "people": array(STR),
                     "permit_id": nullable(STR), "items": array(obj({
                         "dataset_id": STR, "provider_id": STR, "columns": array(STR),
                         "decision": enum_of(Decision), "decided_by": nullable(STR)}))}),
    "Permit": obj({"id": STR, "request_id": STR, "requester_id": STR, "columns": ANY,
                    "people": array(STR), "expires_at": TIME, "max_runs": INT,
                    "runs_used": INT, "min_cell_count": INT, "status": enum_of(PermitStatus),
                    "script_release": enum_of(ScriptRelease), "review_quorum": INT,
                    "approve_scripts": BOOL}),
    "Job": obj({"id": STR, "permit_id": STR, "requester_id": STR, "provider_id": STR,
                 "dataset_ids": array(STR), "script_sha256": STR, "state": enum_of(JobState),
                 "reason": nullable(STR), "submitted_at": TIME, "outputs": array(OUTPUT)},
                {"rows_read": nullable(INT), "bytes_read": nullable(INT), "log": nullable(STR),
                 "exit_code": nullable(INT), "ledger_index": nullable(INT)}),
    "JointJob": obj({"id": STR, "permit_id": STR, "state": enum_of(JointJobState),
                      "spec": ANY, "parts": array(ANY), "submitted_at": TIME},
                     {"aggregate": ANY, "reason": nullable(STR)}),
    "ReviewMaterial": obj({"job_id": STR, "permit_id": STR, "state": enum_of(JobState),
                            "script": STR, "review_quorum": INT,
                            "outputs": array(obj({"name": STR, "script_name": STR,
                                                   "decision": STR, "findings": array(STR),
                                                   "reviews": array(REVIEW)})),
                            "earlier_releases": array(ANY)}),
    "Receipt": obj({"index": INT}),
    # One job in the provider's usage report (GET /usage).
    "UsageRow": obj({"job_id": STR, "requester_id": STR, "requester_name": nullable(STR),
                      "purpose": STR, "business_system": STR, "dataset_ids": array(STR),
                      "state": enum_of(JobState), "submitted_at": TIME,
                      "started_at": nullable(TIME), "rows_read": nullable(INT),
                      "bytes_read": nullable(INT), "script_sha256": STR,
                      "ledger_index": nullable(INT)}),
}
