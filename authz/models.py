"""Parties, catalog, access requests, permits and jobs.

The controller's whole state lives here (plus the ledger's tables in ``ledger``). No raw
data is ever stored: a dataset row holds metadata and a location that only the owning
provider's agent resolves.
"""

from __future__ import annotations

import enum
import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from authz.sealed import SealedBytes, SealedJSON, SealedText, install
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


class AuthzBase(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    # Unguessable ids: object ids appear in URLs, and a guessable id would let a party
    # probe for the existence of another party's objects by timing or enumeration.
    return f"{prefix}_{secrets.token_hex(8)}"


E = TypeVar("E", bound=enum.StrEnum)


class StateText(TypeDecorator[E], Generic[E]):
    """A state stored as its plain name (VARCHAR(20)) and read back as its enum.

    Writing a name the enum does not have raises before the row is written (fail closed).
    """

    impl = String(20)
    cache_ok = True

    def __init__(self, states: type[E]) -> None:
        super().__init__()
        self.states = states

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(self.states(value).value)

    def process_result_value(self, value: Any, dialect: Any) -> E | None:
        return None if value is None else self.states(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on SQLite too (it stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a timezone")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class Party(AuthzBase):
    __tablename__ = "parties"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # provider | requester | regulator | admin
    code: Mapped[str | None] = mapped_column(String(64), unique=True)  # provider/org code
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Person(AuthzBase):
    """A named person who acts for one party, with roles within it.

    The party's own token stays as its service account; a person signs in with a password
    (and TOTP when enrolled) and carries a personal API token. Decisions record the person.
    """

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    roles: Mapped[list[Any]] = mapped_column()  # authz.people.PersonRole values
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    totp_secret: Mapped[str | None] = mapped_column(SealedText(), default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last RFC 6238 time step whose code was accepted: a code is good once only.
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    token_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Identity verified by the operator (how, when): no personal document is stored.
    identity_method: Mapped[str | None] = mapped_column(String(200), default=None)
    identity_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    accreditations: Mapped[list[Accreditation]] = relationship(
        cascade="all, delete-orphan", order_by="Accreditation.expires_at")


class Accreditation(AuthzBase):
    """Training a person completed (e.g. safe researcher training), and until when it holds."""

    __tablename__ = "accreditations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(200))
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(40))


class Agent(AuthzBase):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    # Ed25519 public key (raw, hex) used to verify what the agent signs (HE submissions).
    public_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    providers: Mapped[list[AgentProvider]] = relationship(cascade="all, delete-orphan")
    # Health, for the operator (authz/agent_health.py): when it last polled for work, and
    # what it said of itself then (its container runtime, None for the engine's default;
    # its slots).
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    runtime: Mapped[str | None] = mapped_column(String(100), default=None)
    slots: Mapped[int | None] = mapped_column(Integer, default=None)


class AgentRetiredKey(AuthzBase):
    """A signing key an agent used before its current one, and when it was in use.

    Parts an agent signed while a key was current still verify under it after the key is
    replaced (authz/agent_keys.py); a part signed with it after it was retired does not.
    """

    __tablename__ = "agent_retired_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_by: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)


class AgentProvider(AuthzBase):
    """Which providers' domains an agent serves: it only ever receives their tasks."""

    __tablename__ = "agent_providers"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), primary_key=True)


class Dataset(AuthzBase):
    __tablename__ = "datasets"
    # A code is registered again (a rejected file fixed, a new edition) as its next version.
    __table_args__ = (UniqueConstraint("code", "version", name="uq_datasets_code_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(10))  # csv | parquet
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    openness: Mapped[str] = mapped_column(String(20))  # unconditional | conditional | not_open
    sharing: Mapped[str] = mapped_column(String(20))  # unconditional | conditional | none
    update_cycle: Mapped[str] = mapped_column(String(20))
    publish_date: Mapped[str] = mapped_column(String(10))
    related_codes: Mapped[list[Any]] = mapped_column(default=list)
    fields: Mapped[list[Any]] = mapped_column()  # [{name, type, sensitivity, description}]
    location: Mapped[str] = mapped_column(Text)  # resolved only by the provider's agent
    status: Mapped[DatasetStatus] = mapped_column(StateText(DatasetStatus),
                                                  default=DatasetStatus.CHECKING, index=True)
    status_reason: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    rows: Mapped[int | None] = mapped_column(Integer, default=None)
    registered_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    check_leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class AccessRequest(AuthzBase):
    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    purpose: Mapped[str] = mapped_column(Text)
    use_kind: Mapped[str] = mapped_column(String(30))
    business_system: Mapped[str] = mapped_column(String(200))
    # The requester's people who may use the permit (the person who asked, and any named).
    people: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[Decision] = mapped_column(StateText(Decision), default=Decision.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    items: Mapped[list[RequestItem]] = relationship(
        cascade="all, delete-orphan", order_by="RequestItem.position"
    )


class RequestItem(AuthzBase):
    """One dataset of a request, decided by that dataset's provider alone."""

    __tablename__ = "request_items"
    __table_args__ = (UniqueConstraint("request_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"))
    position: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    columns: Mapped[list[Any]] = mapped_column()
    decision: Mapped[Decision] = mapped_column(StateText(Decision), default=Decision.PENDING)
    decided_by: Mapped[str | None] = mapped_column(String(40), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    conditions: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class Permit(AuthzBase):
    """Issued once every provider approved; conditions are the strictest of all approvals."""

    __tablename__ = "permits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), unique=True)
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    # {dataset_id: [columns]} — requested ∩ allowed, per dataset.
    columns: Mapped[dict[str, Any]] = mapped_column()
    # The people who may use it: none named, only the requester's service account (a
    # permit asked for by a person always names them).
    people: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    max_runs: Mapped[int] = mapped_column(Integer)
    runs_used: Mapped[int] = mapped_column(Integer, default=0)
    min_cell_count: Mapped[int] = mapped_column(Integer)
    classification: Mapped[str] = mapped_column(String(20))
    # Differential privacy for joint statistics: the smallest budget any provider granted.
    epsilon_budget: Mapped[float | None] = mapped_column(Float, default=None)
    epsilon_spent: Mapped[float] = mapped_column(Float, default=0.0)
    # Statistical disclosure settings beyond the minimum cell count (compute.sdc.SDCPolicy
    # fields: dominance, p%, zeros, class disclosure, model dof), strictest of all approvals;
    # None: the defaults.
    disclosure: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Automatic only if every provider accepted automatic release of script outputs.
    script_release: Mapped[ScriptRelease] = mapped_column(
        StateText(ScriptRelease), default=ScriptRelease.REVIEW, server_default="review")
    # How many different output checkers of each provider must approve a held output
    # (2: the two-person rule), the largest any provider asked for.
    review_quorum: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Each new script must be approved by an approver of every provider before it runs
    # (a script hash approved once runs again without asking).
    approve_scripts: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default="0")
    # Runs given back because the script failed on mock data (authz/runs.py): capped, so
    # failing scripts cannot use the provider's agent without end at no cost.
    mock_returns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[PermitStatus] = mapped_column(StateText(PermitStatus),
                                                 default=PermitStatus.ACTIVE)
    revoked_by: Mapped[str | None] = mapped_column(String(40), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(AuthzBase):
    __tablename__ = "jobs"
    __table_args__ = (
        # The provider's usage report (authz/usage.py) pages by submission time.
        Index("ix_jobs_provider_submitted", "provider_id", "submitted_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    permit_id: Mapped[str] = mapped_column(ForeignKey("permits.id"))
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    # The requester's person who submitted it (None: the party's service account).
    submitted_by: Mapped[str | None] = mapped_column(String(40), default=None)
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    dataset_ids: Mapped[list[Any]] = mapped_column()
    kind: Mapped[str] = mapped_column(String(20), default="script")
    # Sealed at rest (authz/sealed.py): scripts and statistics specs, console logs and
    # released outputs are readable only with the key-encryption key, never from a dump.
    script: Mapped[bytes] = mapped_column(SealedBytes())
    script_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(StateText(JobState), default=JobState.QUEUED,
                                            index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The agent the job is (or, once requeued, was last) leased to: a late report of the run
    # it finished is still accepted while the job waits requeued (authz/runs.py::finish).
    agent_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # The agent's idempotency key for the claim that dispatched it: a claim retried after a
    # lost answer gets the same job again instead of leasing a second one.
    claim_key: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    rows_read: Mapped[int | None] = mapped_column(Integer, default=None)
    bytes_read: Mapped[int | None] = mapped_column(Integer, default=None)
    input_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    runner_image: Mapped[str | None] = mapped_column(String(100), default=None)
    log: Mapped[str | None] = mapped_column(SealedText(), default=None)
    ledger_index: Mapped[int | None] = mapped_column(Integer, default=None)
    # Set on the per-provider parts of a joint (homomorphic) job.
    joint_id: Mapped[str | None] = mapped_column(ForeignKey("joint_jobs.id"), default=None,
                                                 index=True)
    outputs: Mapped[list[JobOutput]] = relationship(
        cascade="all, delete-orphan", order_by="JobOutput.name"
    )


class UsageDay(AuthzBase):
    """Jobs per provider, requester and day (UTC): the usage dashboard's charts read these
    few rows instead of counting every job. Kept by :func:`_count_in_usage` in the
    transaction that inserts the job, so it never disagrees with ``jobs``."""

    __tablename__ = "usage_days"

    # No foreign keys: a count derived from the jobs (whose own keys hold), which
    # authz.usage.rebuild_rollup can count again from them at any time.
    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    requester_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer)


class UsageVersion(AuthzBase):
    """How many times a provider's rollup (``usage_days``) changed: what the dashboard
    read from it is kept per (provider, version) and read again only after a change."""

    __tablename__ = "usage_versions"

    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


def bump_usage_versions(connection: Connection, provider_ids: Iterable[str]) -> None:
    """One more version of each provider's rollup (in its transaction; key order)."""
    ins = (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(
        UsageVersion)
    for provider_id in sorted(set(provider_ids)):
        connection.execute(ins.values(provider_id=provider_id, version=1).on_conflict_do_update(
            index_elements=["provider_id"], set_={"version": UsageVersion.version + 1}))


def utc_day(ts: datetime) -> str:
    return ts.astimezone(UTC).date().isoformat()


@event.listens_for(Session, "after_flush")
def _count_in_usage(session: Session, _flush: Any) -> None:
    # Every way a job is made (a script or statistics job, a joint or PSI part) adds a Job
    # through the ORM; counting the flush's new jobs here keeps the rollup in the same
    # transaction without each service having to remember it. The rows are upserted in
    # key order, so two transactions adding jobs under the same keys (a requester's two
    # joint jobs naming the providers in different orders) lock them in the same order
    # and never deadlock.
    added = Counter((job.provider_id, utc_day(job.submitted_at), job.requester_id)
                    for job in session.new if isinstance(job, Job))
    if not added:
        return
    connection = session.connection()
    ins = (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(UsageDay)
    for (provider_id, day, requester_id), n in sorted(added.items()):
        connection.execute(ins.values(
            provider_id=provider_id, day=day, requester_id=requester_id, jobs=n,
        ).on_conflict_do_update(index_elements=["provider_id", "day", "requester_id"],
                                set_={"jobs": UsageDay.jobs + n}))
    # After the counts, in key order as well: the same lock order in every transaction.
    bump_usage_versions(connection, (provider_id for provider_id, _, _ in added))


class JobOutput(AuthzBase):
    __tablename__ = "job_outputs"
    # The id is generated by the database, after the value is sealed: bind to the job and
    # the output's name instead.
    __sealed_row__ = ("job_id", "name")

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    # An output not released when its run ended is named by position (output-<i>, no
    # extension: authz/output_names.py), released by review or not: the script's file
    # name is text it chose after reading the data.
    name: Mapped[str] = mapped_column(String(200))
    # The name the agent reported (the script's own) when ``name`` is positional: for the
    # output checkers and the agent's differencing audit, never for the requester.
    script_name: Mapped[str | None] = mapped_column(String(200), default=None)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)  # bytes
    decision: Mapped[OutputDecision] = mapped_column(StateText(OutputDecision))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    # Only released outputs, and outputs held for review, keep content: a blocked output
    # never reaches the controller, and a rejected or returned one is discarded.
    content: Mapped[bytes | None] = mapped_column(SealedBytes(), default=None)
    # What re-deriving a held output from the input found (rule, column and row by
    # position, never a value): for its output checkers, not for the requester.
    findings: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # The requester's case for releasing a held output (as ACRO's exception requests).
    justification: Mapped[str | None] = mapped_column(SealedText(), default=None)
    # When review settled it (released, rejected or returned).
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reviews: Mapped[list[OutputReview]] = relationship(
        cascade="all, delete-orphan", order_by="OutputReview.id")


class ScriptApproval(AuthzBase):
    """A provider's approval of one exact script (by hash) under one permit."""

    __tablename__ = "script_approvals"
    __table_args__ = (UniqueConstraint("permit_id", "script_sha256", "provider_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    permit_id: Mapped[str] = mapped_column(ForeignKey("permits.id"), index=True)
    script_sha256: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    approved_by: Mapped[str] = mapped_column(String(40))  # a person, or the service account
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutputReview(AuthzBase):
    """One output checker's decision on one held output."""

    __tablename__ = "output_reviews"
    __table_args__ = (UniqueConstraint("output_id", "reviewer_id"),)
    __sealed_row__ = ("output_id", "reviewer_id")

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("job_outputs.id"), index=True)
    # The provider whose quorum the decision counts for (the reviewer's party).
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    reviewer_id: Mapped[str] = mapped_column(ForeignKey("people.id"))
    decision: Mapped[ReviewDecision] = mapped_column(StateText(ReviewDecision))
    # Sealed, like the justification: review text may quote the output it is about.
    comment: Mapped[str] = mapped_column(SealedText())
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JointJob(AuthzBase):
    """Statistics over several providers' data, combined under homomorphic encryption.

    The controller holds the requester's public CKKS context and the providers' encrypted
    submissions; it adds them and never holds a key that decrypts them.
    """

    __tablename__ = "joint_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    permit_id: Mapped[str] = mapped_column(ForeignKey("permits.id"))
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    # Sealed: a spec may name filter values as well as columns.
    spec: Mapped[dict[str, Any]] = mapped_column(SealedJSON())
    public_context: Mapped[bytes] = mapped_column(LargeBinary)
    context_fingerprint: Mapped[str] = mapped_column(String(64))
    min_providers: Mapped[int] = mapped_column(Integer)
    # Each provider's signed X25519 mask-key announcement for this job (compute/masking.py):
    # public keys only; combined only when the submissions are exactly these providers.
    mask_keys: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # Each provider's signed, masked vector of each cell-holders round
    # (compute/cell_holders.py): uniform words, no provider's indicators in the clear.
    cell_holders: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    state: Mapped[JointJobState] = mapped_column(StateText(JointJobState),
                                                 default=JointJobState.RUNNING)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    aggregate: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    aggregate_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    ledger_index: Mapped[int | None] = mapped_column(Integer, default=None)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PsiChunk(AuthzBase):
    """One chunk of a PSI job's blinded message in flight (authz/psi_relay.py).

    A message of millions of points travels in chunks, each one request; it counts as sent
    once every chunk is in. Every chunk of a job is deleted when the job ends.
    """

    __tablename__ = "psi_chunks"

    joint_id: Mapped[str] = mapped_column(ForeignKey("joint_jobs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunks: Mapped[int] = mapped_column(Integer)  # how many the whole message has
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OidcIdentity(AuthzBase):
    """An account at an OpenID Connect provider, linked to one person.

    Linked at the person's first OIDC sign-in, when the provider vouched for the email the
    operator recorded for them; later sign-ins match on (issuer, subject) alone, so an email
    changed at the provider neither breaks the link nor moves it to someone else.
    """

    __tablename__ = "oidc_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))  # OIDC Core §2: at most 255 ASCII
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OidcLogin(AuthzBase):
    """An OIDC sign-in started and not yet finished: used once, then deleted.

    Kept in the database, not in a cookie, so any worker can finish what another started;
    the browser that started it holds a secret whose digest is stored here, so a callback
    URL replayed in another browser is refused (login CSRF).
    """

    __tablename__ = "oidc_logins"

    state_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_digest: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(200))
    code_verifier: Mapped[str] = mapped_column(String(200))
    token_days: Mapped[int | None] = mapped_column(Integer, default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


install(AuthzBase)
