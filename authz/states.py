"""Every state an object of the domain can be in, and which moves between them are legal.

One place for the names the controller stores, the agent reports and the client waits on
(:mod:`authz.wire` re-exports what crosses the wire). Pure: no SQLAlchemy, no Flask, so
the agent and the requester's client import it without the server.

A job::

    awaiting_approval ──▶ queued   (when the permit requires every new script approved)
         └──▶ blocked | cancelled

    queued ──▶ dispatched ──▶ running ──▶ checking ──▶ released | blocked | failed
      │  ▲          │            │           │   └──▶ awaiting_review ──▶ released | blocked
      │  ▲          │            │           │        (outputs held for output checkers;
      │  ▲          │            │           │         cancelled if withdrawn or revoked)
      │  └──────────┴────────────┴───────────┘  requeued when the agent's lease expired
      ├──▶ cancelled                            by the requester, or by a revocation
      │                                         (also from dispatched, running, checking:
      │                                         stopped at once, its outputs discarded)
      ├──▶ blocked                              at dispatch, when the permit no longer allows it
      └──▶ released | blocked | failed          a late report, once requeued, from the agent
                                                that held the expired lease

An agent may report a result from ``dispatched`` or ``running`` as well as from
``checking`` (a run that failed before its container started has nothing to check).
"""

from __future__ import annotations

import enum

from compute.errors import Conflict


class JobState(enum.StrEnum):
    # The permit requires each new script to be approved by every provider first.
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    CHECKING = "checking"
    # The run ended; its checked outputs wait for the providers' output checkers.
    AWAITING_REVIEW = "awaiting_review"
    RELEASED = "released"
    BLOCKED = "blocked"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Leased to an agent: counted as in flight, and requeued if the lease expires.
ACTIVE = frozenset({JobState.DISPATCHED, JobState.RUNNING, JobState.CHECKING})
TERMINAL = frozenset({JobState.RELEASED, JobState.BLOCKED, JobState.FAILED,
                      JobState.CANCELLED})
# What an agent's run report may end a job in.
REPORTED = frozenset({JobState.RELEASED, JobState.BLOCKED, JobState.FAILED,
                      JobState.AWAITING_REVIEW})
# The run is over (nothing runs any more): a final state, or outputs waiting for review.
RUN_OVER = TERMINAL | {JobState.AWAITING_REVIEW}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # Queued once every provider's approver approved the script; blocked if one refused.
    JobState.AWAITING_APPROVAL: frozenset({JobState.QUEUED, JobState.BLOCKED,
                                           JobState.CANCELLED}),
    # Blocked at dispatch; released, blocked or failed by a late report of the agent that
    # held the expired lease (a run that finished is not run again).
    JobState.QUEUED: frozenset({JobState.DISPATCHED, JobState.CANCELLED, *REPORTED}),
    # Cancelled while leased: stopped by its provider or the operator, or by a revocation;
    # the agent sees its lease end, kills the container and discards its outputs.
    JobState.DISPATCHED: frozenset({JobState.RUNNING, JobState.CHECKING, JobState.QUEUED,
                                    JobState.CANCELLED, *REPORTED}),
    JobState.RUNNING: frozenset({JobState.CHECKING, JobState.QUEUED, JobState.CANCELLED,
                                 *REPORTED}),
    JobState.CHECKING: frozenset({JobState.QUEUED, JobState.CANCELLED, *REPORTED}),
    # Settled by the output checkers' decisions; withdrawn by the requester, or cancelled
    # by a revocation, a stop or a deactivation (the held outputs are discarded).
    JobState.AWAITING_REVIEW: frozenset({JobState.RELEASED, JobState.BLOCKED,
                                         JobState.CANCELLED}),
    **{s: frozenset() for s in TERMINAL},
}


def check_job_move(current: str, to: JobState) -> JobState:
    """Refuse a move the table does not allow (a Conflict, HTTP 409, naming both states)."""
    state = JobState(current)
    if to not in JOB_TRANSITIONS[state]:
        raise Conflict(f"job is {state}; it cannot become {to}")
    return to


class JointJobState(enum.StrEnum):
    RUNNING = "running"
    COMBINED = "combined"
    FAILED = "failed"
    # Shown, never stored: combined, but the witnesses have not yet cosigned a checkpoint
    # that holds it, so nothing of it is served (witness-gated release).
    AWAITING_WITNESSES = "awaiting_witnesses"


class DatasetStatus(enum.StrEnum):
    CHECKING = "checking"  # registered; its agent has not yet checked the file
    ACTIVE = "active"
    REJECTED = "rejected"
    # Taken out of service by its provider or the operator (incident control): its open
    # jobs were cancelled and no permit covers it until it is reinstated.
    SUSPENDED = "suspended"


class Decision(enum.StrEnum):
    """Of a whole access request, and of each provider's item of it."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class PermitStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class ScriptRelease(enum.StrEnum):
    """Whether a permit's providers accept that checked script outputs are released
    automatically. File-level checks cannot know a cell's true contributors, so the
    default holds script outputs for a human decision (and blocks them until one exists)."""

    REVIEW = "review"
    AUTOMATIC = "automatic"


#: The reason of a script run whose checked outputs are held for a human decision.
HELD_FOR_REVIEW = ("outputs held for review by the providers' output checkers: the permit "
                   "does not release script outputs automatically")
#: The reason of a script run whose outputs the agent could not verify against the input
#: (re-derived counts and statistics): never released automatically, whatever the permit.
HELD_UNVERIFIED = ("outputs held for review by the providers' output checkers: the automatic "
                   "checks could not verify every output against the permitted input")


class OutputDecision(enum.StrEnum):
    RELEASED = "released"
    BLOCKED = "blocked"  # refused by a check: the whole run is blocked, nothing leaves
    # A file the automatic checks cannot vouch for (an image): not released and without
    # content, name, digest or size, but it does not block the run's checked tables.
    WITHHELD = "withheld"
    # Passed the automatic checks; held for the providers' output checkers (release review).
    PENDING_REVIEW = "pending_review"
    REJECTED = "rejected"  # by an output checker: discarded
    RETURNED = "returned"  # by an output checker, for changes: discarded, the requester may
    #                        submit a changed job


class ReviewDecision(enum.StrEnum):
    """An output checker's decision on one held output."""

    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"  # for changes
