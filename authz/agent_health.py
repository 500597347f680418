"""Agent health for the operator: when each agent last polled for work, what it said of
itself (runtime, slots), and how many of its slots hold a job now.

Polls are frequent (a long poll every few seconds per slot), so ``last_seen_at`` is written
at most once per :data:`SEEN_EVERY` unless what the agent says changed. Health is
operational telemetry, not an authorization event: it goes to no ledger entry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from authz.context import Ctx
from authz.models import Agent, Job
from authz.states import JobState
from authz.wire import AgentStatus

SEEN_EVERY = timedelta(seconds=30)
#: A job in one of these states holds a slot of the agent it is leased to.
HOLDS_A_SLOT = (JobState.DISPATCHED, JobState.RUNNING, JobState.CHECKING)


def note_seen(ctx: Ctx, agent: Agent, status: AgentStatus | None) -> None:
    now = ctx.now()
    runtime, slots = (status.runtime, status.slots) if status else (agent.runtime, agent.slots)
    if (agent.last_seen_at is not None and now - agent.last_seen_at < SEEN_EVERY
            and (runtime, slots) == (agent.runtime, agent.slots)):
        return
    agent.last_seen_at, agent.runtime, agent.slots = now, runtime, slots


def busy_slots(ctx: Ctx) -> dict[str, int]:
    """Jobs leased to each agent that have not ended (by agent id)."""
    return {str(a): int(n) for a, n in ctx.session.execute(
        select(Job.agent_id, func.count()).where(Job.state.in_(HOLDS_A_SLOT),
                                                 Job.agent_id.is_not(None))
        .group_by(Job.agent_id)).all()}


def seen_ago(last_seen_at: datetime | None, now: datetime) -> int | None:
    """Whole seconds since the agent last polled (None: never)."""
    return None if last_seen_at is None else max(0, int((now - last_seen_at).total_seconds()))
