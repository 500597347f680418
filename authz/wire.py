"""The messages between the controller and its agents, typed once for both sides.

The controller builds these and the agent parses them (tasks, lease state, identity); the
agent builds the others and the controller parses them (schema verdicts, run reports).
Both sides parse at their edge with :func:`parse`, so the rest of the code only ever sees
these frozen types, and a message of the wrong shape is refused where it arrives with an
:class:`~compute.errors.InvalidInput` naming the field and the rule.

Every message carries ``version``; a message of a version this side does not speak is
refused (absent means version 1). The module imports neither Flask nor SQLAlchemy: the
agent, the controller and the requester's client all import it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from authz.states import (
    ACTIVE,
    REPORTED,
    RUN_OVER,
    TERMINAL,
    DatasetStatus,
    JobState,
    JointJobState,
    OutputDecision,
    ScriptRelease,
)
from authz.validate import HEX64_RX
from compute.errors import InvalidInput

__all__ = [
    "ACTIVE",
    "RUN_OVER",
    "TERMINAL",
    "WIRE_VERSION",
    "AgentIdentity",
    "AgentStatus",
    "CellHoldersVector",
    "DatasetStatus",
    "DatasetTask",
    "JobState",
    "JointJobState",
    "JointPart",
    "LeaseState",
    "MaskKeyAnnouncement",
    "OutputDecision",
    "OutputReport",
    "RunReport",
    "RunStarted",
    "RunTask",
    "SchemaCheckTask",
    "SchemaVerdict",
    "Task",
    "VerdictError",
    "dump",
    "parse",
    "parse_task",
]

WIRE_VERSION = 1
# A PSI part's blinded message travels to the controller and back in chunks of at most this
# many bytes, one request each: well under the controller's default body limit once in
# base64 (authz/psi_relay.py).
PSI_CHUNK_BYTES = 4 * 1024 * 1024
# The cell-holders rounds' bounds (compute/cell_holders.py MAX_ROUNDS and MAX_CELLS).
CELL_HOLDER_ROUNDS = 4
CELL_HOLDER_CELLS = 1 << 18
PSI_MAX_CHUNKS = 64  # a message holds at most compute.psi_ring.MAX_MESSAGE_BYTES

# Strict where a JSON type mix-up would be a bug on the other side (no "5" for 5).
HEX64 = Annotated[str, StringConstraints(strict=True, pattern=rf"^{HEX64_RX}$")]


Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=40)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
Word = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=20)]
Line = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strict=True, min_length=0, max_length=500)]
Reason = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=2000)]
Location = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1000)]
Image = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Log = Annotated[str, StringConstraints(strict=True, max_length=64 * 1024)]
Base64 = Annotated[str, StringConstraints(strict=True, max_length=16 << 20)]
OutputName = Annotated[str, StringConstraints(
    strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]


Count = Annotated[StrictInt, Field(ge=0, le=1 << 62)]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: StrictInt = WIRE_VERSION

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != WIRE_VERSION:
            raise ValueError(f"unsupported wire version; this side speaks {WIRE_VERSION}")
        return v


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- controller → agent ---------------------------------------------------------------

class FieldDecl(_Part):
    """One declared field of a dataset, as the provider registered it."""

    name: Name
    type: Word
    sensitivity: Word
    description: Note = ""
    # Declared metadata (authz.catalog): the agent makes the mock data of a run from it
    # and holds the file to it in a schema check.
    categories: tuple[Annotated[str, StringConstraints(strict=True, max_length=200)], ...] | None \
        = Field(default=None, max_length=500)
    range: tuple[StrictInt | float | str, StrictInt | float | str] | None = None
    missing_rate: Annotated[float, Field(ge=0, le=1)] | None = None


class DatasetTask(_Part):
    """A dataset as an agent needs it: where it is (only the agent resolves that), its
    format, and the fields it may read (all of them for a schema check, the permitted
    ones for a run)."""

    id: Id
    code: Name
    provider_id: Id
    format: Word
    location: Location
    fields: tuple[FieldDecl, ...]
    # The dataset's declared identifier fields (sensitivity ``identifier``), whatever the
    # permit: the statistics route counts contributors as the persons they identify, not
    # as records. Read by the agent in the provider's domain, never projected.
    identifiers: tuple[Name, ...] = Field(default=(), max_length=1000)


class SchemaCheckTask(_Message):
    type: Literal["schema_check"] = "schema_check"
    dataset: DatasetTask


class JointPart(_Part):
    """What one provider's part of a joint job needs to aggregate and encrypt."""

    joint_id: Id
    spec: dict[str, Any]
    public_context_b64: Base64
    context_fingerprint: HEX64
    # The job's per-cell provider minimum (compute/cell_holders.py). Absent from an earlier
    # controller, which serves no cell-holders round.
    min_providers: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None


class PsiRing(_Part):
    """Where a part stands in a PSI ring of three or more providers (compute/psi_ring.py):
    ring positions of this part, of the holder and of the counter."""

    position: Annotated[StrictInt, Field(ge=0)]
    size: Annotated[StrictInt, Field(ge=3, le=16)]
    holder: Annotated[StrictInt, Field(ge=0)]
    counter: Annotated[StrictInt, Field(ge=0)]

    @model_validator(mode="after")
    def _positions_in_ring(self) -> PsiRing:
        # Fail closed: a counter that is the holder would release the holder's own groups.
        if max(self.position, self.holder, self.counter) >= self.size or \
                self.holder == self.counter:
            raise ValueError("ring positions outside the ring, or the holder counting")
        return self


class PsiPart(_Part):
    """One provider's role in a private set intersection: client or server of the
    two-party protocol (compute/psi.py), or a member of a ring (``ring`` set)."""

    joint_id: Id
    role: Literal["client", "server", "ring"]
    spec: dict[str, Any]
    ring: PsiRing | None = None


class RunTask(_Message):
    """One job to run in the agent's domain, on the permitted columns only."""

    type: Literal["run"] = "run"
    job_id: Name
    kind: Word
    permit_id: Id
    # Whose job it is: the provider's differencing audit keeps what each requester was
    # released (absent: audited under the permit alone).
    requester_id: Id | None = None
    script_b64: Base64
    script_sha256: HEX64
    datasets: tuple[DatasetTask, ...] = Field(min_length=1)
    min_cell_count: Annotated[StrictInt, Field(ge=1)]
    blocked_columns: tuple[str, ...] = ()
    timeout_s: Annotated[float, Field(gt=0)]
    joint: JointPart | None = None
    psi: PsiPart | None = None
    # A statistics job (kind "statistics"): the spec the platform computes, no script.
    statistics: dict[str, Any] | None = None
    # The permit's disclosure settings beyond min_cell_count (None: the defaults).
    disclosure: dict[str, Any] | None = None
    # Absent means review: an agent never releases script outputs automatically unless
    # the permit says its providers accepted that.
    script_release: ScriptRelease = ScriptRelease.REVIEW


Task = Annotated[SchemaCheckTask | RunTask, Field(discriminator="type")]
_TASK: TypeAdapter[SchemaCheckTask | RunTask] = TypeAdapter(Task)


class LeaseState(_Message):
    """Whether a job is still leased to the asking agent and not yet finished."""

    job_id: Name
    state: JobState
    active: StrictBool
    # Of a job that ended after release review: the outputs its checkers released, by
    # name. The agent promotes their populations in the provider's differencing audit
    # and drops those of the others (containers.review_audit).
    released_outputs: tuple[OutputName, ...] = Field(default=(), max_length=100)


class AgentStatus(_Message):
    """What an agent says of itself with each poll for work: the container runtime its jobs
    run under (None: the engine's default) and how many jobs it runs side by side. The
    operator's page shows it beside the controller's own count of busy slots."""

    runtime: Annotated[str, StringConstraints(
        strict=True, pattern=r"^[A-Za-z0-9._-]{1,100}$")] | None = None
    slots: Annotated[StrictInt, Field(ge=1, le=1 << 16)]


class AgentIdentity(_Message):
    id: Id
    name: Line
    providers: tuple[str, ...]


# ---- agent → controller ---------------------------------------------------------------

class VerdictError(_Part):
    field: Line
    rule: Note


class SchemaVerdict(_Message):
    """The agent's check of a registered file against its declared fields."""

    ok: StrictBool
    rows: Count | None = None
    error: VerdictError | None = None


class MaskKeyAnnouncement(_Part):
    """A joint part's pairwise-mask public key, signed by the announcing agent
    (compute/masking.py ``announce``; the controller verifies the signature)."""

    type: Literal["joint-mask-key"]
    job_id: Id
    provider_id: Id
    public_key: HEX64
    signature: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]


class CellHoldersVector(_Part):
    """A joint part's masked indicator vector of one cell-holders round, signed by its agent
    (compute/cell_holders.py ``publish``; the controller and every agent verify it)."""

    type: Literal["joint-cell-holders"]
    job_id: Id
    provider_id: Id
    round: Annotated[StrictInt, Field(ge=0, lt=CELL_HOLDER_ROUNDS)]
    cells: Annotated[StrictInt, Field(ge=1, le=CELL_HOLDER_CELLS)]
    masked_b64: Annotated[str, StringConstraints(strict=True, min_length=4,
                                                 max_length=4 * (2 * CELL_HOLDER_CELLS + 1))]
    signature: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]


class RunStarted(_Message):
    """The agent's notice that a run started (its input projected). A joint part's mask-key
    announcement rides along, so both are recorded in one transaction (``job.running``
    and ``joint.mask_key``) instead of two."""

    mask_key: MaskKeyAnnouncement | None = None


class OutputReport(_Part):
    """One file the run left in /out: released with its content, or blocked without it."""

    name: OutputName
    sha256: HEX64
    bytes: Annotated[StrictInt, Field(ge=0, le=1 << 40)]
    decision: OutputDecision
    reasons: tuple[Note, ...] = Field(default=(), max_length=100)
    content_b64: Base64 | None = None
    # For a held output: what re-derivation from the input found, for the reviewer (rule,
    # column and row by position; never a value). Not the requester's to see.
    findings: tuple[Note, ...] = Field(default=(), max_length=200)


class RunReport(_Message):
    """What a run came to, as the agent checked it in the provider's domain."""

    state: JobState
    reason: Reason | None = None
    exit_code: Annotated[StrictInt, Field(ge=-1024, le=1024)] | None = None
    rows_read: Count
    bytes_read: Count
    # Absent when the run failed before its input was projected (e.g. file unreadable).
    input_sha256: HEX64 | None = None
    runner_image: Image | None = None
    log: Log | None = None
    outputs: tuple[OutputReport, ...] = Field(max_length=100)
    # The script failed on mock data before it ever ran on the provider's: the job fails,
    # its log is the mock run's whole console output, and the permit's run is given back.
    mock_failed: StrictBool = False
    # The agent computed and checked the outputs itself just before this report (a
    # statistics job or a joint part, no container): the controller records the checking
    # step (``job.checking``) with the result, in one transaction, instead of the agent
    # sending a separate notice for a step that took no time. Never for a failed run.
    checked: StrictBool = False

    @field_validator("state")
    @classmethod
    def _reported(cls, v: JobState) -> JobState:
        if v not in REPORTED:
            raise ValueError(f"must be one of {', '.join(sorted(REPORTED))}")
        return v

    @field_validator("mock_failed")
    @classmethod
    def _mock_failure_carries_nothing(cls, v: bool, info: ValidationInfo) -> bool:
        if v and (info.data.get("state") != JobState.FAILED or info.data.get("outputs")
                  or info.data.get("rows_read")):
            raise ValueError("a failure on mock data is failed, read nothing, and has no "
                             "outputs")
        return v

    @field_validator("checked")
    @classmethod
    def _checked_outputs_only(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("state") == JobState.FAILED:
            raise ValueError("a failed run had no outputs checked")
        return v

    @classmethod
    def failed(cls, reason: str, rows_read: int = 0, bytes_read: int = 0) -> RunReport:
        """A plain failure: nothing came out (the reason is platform text, never data)."""
        return cls(state=JobState.FAILED, reason=reason[:2000], rows_read=rows_read,
                   bytes_read=bytes_read, outputs=())


# ---- parsing at the edge --------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("schema_check", "run"):  # the union's branch, not a field
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _invalid(e: ValidationError) -> InvalidInput:
    first = e.errors(include_url=False)[0]
    rule = {"missing": "required", "extra_forbidden": "unknown field"}.get(
        first["type"], first["msg"].removeprefix("Value error, "))
    return InvalidInput(_where(first["loc"]), rule)


def parse(model: type[M], data: object) -> M:
    """``data`` (decoded JSON) as ``model``, or InvalidInput naming the field and the rule."""
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _invalid(e) from None


def parse_task(data: object) -> SchemaCheckTask | RunTask:
    if not isinstance(data, dict):
        raise InvalidInput("task", "must be a JSON object")
    try:
        return _TASK.validate_python(data)
    except ValidationError as e:
        raise _invalid(e) from None


def dump(message: BaseModel) -> dict[str, Any]:
    """The JSON form of a message, as it goes on the wire."""
    return message.model_dump(mode="json")
