"""The request bodies of the JSON API, written once: the field specs the services parse
(``authz.validate``) and the limits and choices they state.

Pure: it imports neither Flask nor the database, so the requester's client checks a body
with exactly the spec the server will apply (``sandbox.client.Client.call``) and the API's
OpenAPI document is generated from the same lists (``sandbox.api.contract``).
"""

from __future__ import annotations

import enum
from typing import Any

from authz import validate as v
from authz.states import ReviewDecision, ScriptRelease
from authz.wire import PSI_CHUNK_BYTES, PSI_MAX_CHUNKS
from compute.statspec import statistics_shape

# -- parties and people ---------------------------------------------------------------------
PARTY_ROLES = ("provider", "requester", "regulator", "admin")


class PersonRole(enum.StrEnum):
    APPROVER = "approver"  # decides access requests and revocations for a provider
    OUTPUT_CHECKER = "output_checker"  # reviews outputs held for release
    DATASET_STEWARD = "dataset_steward"  # registers and maintains a provider's datasets
    ANALYST = "analyst"  # a requester's person: requests access, submits jobs
    AUDITOR = "auditor"  # a regulator's person
    ADMIN = "admin"  # the platform operator's person


MIN_PASSWORD = 12  # NIST SP 800-63B §5.1.1.2: at least 8; longer for privileged accounts
MAX_PASSWORD = 256
MAX_TOKEN_DAYS = 365

PARTY_SPEC = [
    v.Field("name", v.text(200, single_line=True)),
    v.Field("role", v.choice(*PARTY_ROLES)),
    v.Field("code", v.text(64, pattern=v.CODE_RX), required=False),
]
AGENT_SPEC = [
    v.Field("name", v.text(200, single_line=True)),
    v.Field("providers", v.list_of(v.text(40, single_line=True), 1, 100, unique=True)),
    v.Field("public_key", v.text(64, pattern=v.HEX64_RX), required=False),
]
KEY_SPEC = [
    v.Field("public_key", v.text(64, pattern=v.HEX64_RX)),
    v.Field("reason", v.text(500, single_line=True)),
]
PERSON_SPEC = [
    v.Field("name", v.text(200, single_line=True)),
    v.Field("email", v.text(254, pattern=r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,62}")),
    v.Field("roles", v.list_of(v.choice(*PersonRole), 1, len(PersonRole), unique=True)),
    v.Field("password", v.text(MAX_PASSWORD, min_len=MIN_PASSWORD), required=False),
]
SIGN_IN_SPEC = [
    v.Field("email", v.text(254, single_line=True)),
    v.Field("password", v.text(MAX_PASSWORD)),
    v.Field("totp", v.text(6, min_len=6, pattern=r"[0-9]{6}"), required=False),
    v.Field("token_days", v.integer(1, MAX_TOKEN_DAYS), required=False),
]
ACCREDITATION_SPEC = [
    v.Field("kind", v.text(200, single_line=True)),
    v.Field("awarded_at", v.aware_datetime),
    v.Field("expires_at", v.aware_datetime),
]
IDENTITY_SPEC = [v.Field("method", v.text(200, single_line=True))]
TOKEN_SPEC = [v.Field("token_days", v.integer(1, MAX_TOKEN_DAYS), required=False)]
PASSWORD_SPEC = [
    v.Field("current", v.text(MAX_PASSWORD), required=False),
    v.Field("new", v.text(MAX_PASSWORD)),
]
ROLES_SPEC = [v.Field("roles", v.list_of(v.text(40), 1, 10))]
TOTP_SPEC = [v.Field("totp", v.text(6))]

# -- catalog --------------------------------------------------------------------------------
FIELD_TYPES = ("integer", "number", "string", "date", "boolean")
# Ordered from least to most sensitive: a fused job's classification is the highest level
# among its inputs (数据融合的密级取决于密级要求最高的数据项).
SENSITIVITY = ("public", "internal", "sensitive", "restricted", "identifier")
OPENNESS = ("unconditional", "conditional", "not_open")
MAX_CATEGORIES = 500


def _range_bound(path: str, x: Any) -> Any:
    # A number for integer and number fields, a YYYY-MM-DD date for date fields; which one
    # a field needs is checked against its type in authz.catalog._check_declared.
    if isinstance(x, str):
        return v.iso_date(path, x)
    return v.number(-1e15, 1e15)(path, x)


# Declared metadata (optional): what the provider publishes about a column's values. The
# platform makes mock data from it (compute.mockdata) and the agent's schema check holds
# the file to it; it is the provider's own statement, never derived from the file.
FIELD_SPEC = [
    v.Field("name", v.text(64, pattern=v.NAME_RX)),
    v.Field("type", v.choice(*FIELD_TYPES)),
    v.Field("sensitivity", v.choice(*SENSITIVITY)),
    v.Field("description", v.text(500, min_len=0), required=False, default=""),
    v.Field("categories", v.list_of(v.text(200, single_line=True), 1, MAX_CATEGORIES,
                                    unique=True), required=False),
    v.Field("range", v.list_of(_range_bound, 2, 2), required=False),
    v.Field("missing_rate", v.number(0.0, 1.0), required=False),
]
DATASET_SPEC = [
    v.Field("code", v.text(64, pattern=v.CODE_RX)),
    v.Field("name", v.text(200, single_line=True)),
    v.Field("category", v.text(100, single_line=True)),
    v.Field("summary", v.text(2000)),
    v.Field("format", v.choice("csv", "parquet")),
    v.Field("openness", v.choice(*OPENNESS)),
    v.Field("sharing", v.choice("unconditional", "conditional", "none"), required=False,
            default="conditional"),
    v.Field("update_cycle", v.choice("realtime", "daily", "weekly", "monthly", "quarterly",
                                     "yearly", "irregular")),
    v.Field("publish_date", v.iso_date),
    v.Field("related_codes", v.list_of(v.text(64, pattern=v.CODE_RX), max_items=50),
            required=False, default=[]),
    v.Field("fields", v.list_of(v.obj(FIELD_SPEC), min_items=1, max_items=1000)),
    v.Field("location", v.text(1000, single_line=True)),
]

# -- access ---------------------------------------------------------------------------------
USE_KINDS = ("statistics", "joint_statistics", "modelling", "verification")
DEFAULT_MIN_CELL = 10

REQUEST_SPEC = [
    v.Field("purpose", v.text(2000, min_len=10)),
    v.Field("use_kind", v.choice(*USE_KINDS)),
    v.Field("business_system", v.text(200)),
    v.Field("items", v.list_of(v.obj([
        v.Field("dataset_id", v.text(40)),
        v.Field("columns", v.list_of(v.text(64, pattern=v.NAME_RX), 1, 1000, unique=True)),
    ]), min_items=1, max_items=20)),
    # The requester's analysts who may use the permit, besides the person asking.
    v.Field("people", v.list_of(v.text(40), 0, 50, unique=True), required=False, default=[]),
]
APPROVE_SPEC = [
    v.Field("columns", v.list_of(v.text(64, pattern=v.NAME_RX), 1, 1000, unique=True),
            required=False),
    v.Field("expires_at", v.aware_datetime),
    v.Field("max_runs", v.integer(1, 10_000)),
    v.Field("min_cell_count", v.integer(1, 1_000_000), required=False,
            default=DEFAULT_MIN_CELL),
    v.Field("risk_assessment", v.text(2000)),
    v.Field("epsilon_budget", v.number(0.001, 100.0), required=False),
    # Disclosure settings beyond the minimum cell count (compute.sdc; defaults otherwise),
    # validated by building the policy they describe.
    v.Field("disclosure", lambda path, x: x, required=False),
    # "automatic": this provider accepts that script outputs passing the file-level checks
    # are released without a human decision (recorded on the ledger with the permit).
    v.Field("script_release", v.choice(*ScriptRelease), required=False,
            default=ScriptRelease.REVIEW.value),
    # How many different output checkers of this provider must approve each held output:
    # 2 is the two-person rule (neither of them the analyst who submitted the job).
    v.Field("review_quorum", v.integer(1, 2), required=False, default=1),
    # true: every new script runs only after an approver of every provider approved it.
    v.Field("approve_scripts", v.boolean, required=False, default=False),
]

# -- jobs -----------------------------------------------------------------------------------
MAX_SCRIPT_BYTES = 256 * 1024
MAX_CONTEXT_BYTES = 4 * 1024 * 1024

JOB_SUBMIT_SPEC = [
    v.Field("permit_id", v.text(40)),
    v.Field("dataset_ids", v.list_of(v.text(40), 1, 20, unique=True)),
    # Exactly one of: a script (run in a container, its outputs checked), or a statistics
    # spec (computed by the platform's own code, every cell checked: compute.statspec).
    v.Field("script", v.text(MAX_SCRIPT_BYTES, min_len=1), required=False),
    # Its shape here; its columns against the permit's declared types once the permit is
    # known (compute.statspec.parse_statistics_spec).
    v.Field("statistics", statistics_shape, required=False),
]
JOINT_SUBMIT_SPEC = [
    v.Field("permit_id", v.text(40)),
    v.Field("dataset_ids", v.list_of(v.text(40), 1, 50, unique=True)),
    v.Field("spec", lambda path, x: x),  # parsed by compute.spec against the schema
    v.Field("public_context_b64", v.text(MAX_CONTEXT_BYTES * 2)),
    v.Field("context_fingerprint", v.text(64, pattern=v.HEX64_RX)),
]
PSI_SUBMIT_SPEC = [
    v.Field("permit_id", v.text(40)),
    # Two providers: the client's and the server's dataset (the server holds the columns).
    v.Field("client_dataset_id", v.text(40), required=False),
    v.Field("server_dataset_id", v.text(40), required=False),
    # Two or more providers: every dataset of the permit, one per provider, in ring order;
    # the holder's has the category and value columns; the counter's (a non-holder; the
    # first one when absent) intersects and releases.
    v.Field("dataset_ids", v.list_of(v.text(40), 2, 16, unique=True), required=False),
    v.Field("holder_dataset_id", v.text(40), required=False),
    v.Field("counter_dataset_id", v.text(40), required=False),
    v.Field("spec", lambda path, x: x),  # parsed by compute.psi against the schema
]

# -- release review -------------------------------------------------------------------------
DECIDE_SPEC = [
    v.Field("decision", v.choice(*ReviewDecision)),
    v.Field("comment", v.text(4000, min_len=3)),
]
JUSTIFY_SPEC = [v.Field("justification", v.text(4000, min_len=10))]

# One chunk of a PSI part's blinded message (authz/psi_relay.py).
PSI_CHUNK_SPEC = [
    v.Field("data_b64", v.text(max_len=PSI_CHUNK_BYTES * 4 // 3 + 4)),
    v.Field("chunk", v.integer(0, PSI_MAX_CHUNKS - 1), required=False, default=0),
    v.Field("chunks", v.integer(1, PSI_MAX_CHUNKS), required=False, default=1),
]
