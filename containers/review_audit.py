"""Settling the differencing audit's held populations once a person has reviewed them.

A script run whose tables the automatic checks could not release ends awaiting review;
the agent records the populations of their rows as *held* in the provider's audit store
(:meth:`containers.audit_store.AuditSession.hold`), where every later check already
counts them as released. The decision is the controller's (its output checkers decide,
:mod:`authz.review`), so the agent asks, on the channel it already uses for its leases
(``GET /agent/jobs/<id>``, :class:`authz.wire.LeaseState`): once the job has ended, the
outputs it names in ``released_outputs`` are promoted to released and the rest dropped.

Fail closed: while the controller cannot be reached, does not know the job as this
agent's (another agent of the provider ran it, and settles it), or the review is still
open, the populations stay held, which is to say they count as released.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from authz.states import TERMINAL
from authz.wire import LeaseState
from containers.audit_store import AuditStore

log = logging.getLogger("data-sandbox.agent")


def settle_reviews(audit: AuditStore, leased: Callable[[str], LeaseState | None]) -> int:
    """Settle every held job whose review has ended; how many were settled.

    ``leased``: the controller's view of one job (None when it is not this agent's).
    The store is locked only to read the list and to settle one job, never while the
    controller is asked."""
    with audit.session() as store:
        jobs = store.held_jobs()
    settled = 0
    for job_id in jobs:
        try:
            state = leased(job_id)
        except Exception:  # unreachable or refused: ask again next time, held meanwhile
            log.warning("could not ask the controller about reviewed job %s", job_id)
            continue
        if state is None or state.state not in TERMINAL:
            continue
        with audit.session() as store:
            store.settle(job_id, state.released_outputs)
        settled += 1
    return settled
