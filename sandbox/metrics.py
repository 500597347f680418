"""Prometheus metrics: counted per request in each process, or read from the database.

Two kinds, so that any worker can answer a scrape with the whole controller's figures:

- Counters and histograms (requests, authentication failures, requeues, witness
  failures) live in each process. Under ``sandbox serve`` (several gunicorn workers)
  prometheus-client's multiprocess mode keeps them in files under
  ``PROMETHEUS_MULTIPROC_DIR``, and a scrape sums every worker's files.
- Gauges of state (jobs by state, queue depth, ledger size, checkpoint age) are queried
  from the database at scrape time, so they are the same whichever worker answers and
  whichever replica.

Labels are bounded: the route is the URL rule (``/api/v1/jobs/<job_id>``), never the
path, and a ledger entry's kind is one of a fixed set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from authz.models import Job
from authz.states import ACTIVE, JobState
from ledger.errors import LedgerError
from ledger.log import AppendResult, Item, TransparencyLog
from sandbox.health import ledger_status

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Where a session keeps the kinds of the ledger entries it appended, until it commits.
APPENDED = "sandbox.appended_kinds"


def multiprocess() -> bool:
    """Whether this process shares its counters with sibling workers (``sandbox serve``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """One app's metric objects and the registry a scrape reads."""

    def __init__(self, witnesses: int = 0) -> None:
        shared = multiprocess()
        # In multiprocess mode values go to files and a scrape reads the files, so the
        # live objects are registered nowhere; otherwise in this app's own registry (one
        # process may hold several apps, e.g. in tests).
        self.registry: CollectorRegistry | None = None if shared else CollectorRegistry()
        reg = self.registry
        self.requests = Counter("sandbox_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=reg)
        self.latency = Histogram("sandbox_http_request_duration_seconds",
                                 "Time to answer a request (long polls included)",
                                 ["method", "route"], buckets=BUCKETS, registry=reg)
        self.auth_failures = Counter("sandbox_auth_failures",
                                     "Requests answered 401 (missing, malformed or wrong token)",
                                     registry=reg)
        self.rate_limited = Counter("sandbox_rate_limited",
                                    "Requests answered 429, by the limit that refused them",
                                    ["limit"], registry=reg)
        self.requeued = Counter("sandbox_jobs_requeued",
                                "Jobs requeued because their agent's lease expired "
                                "(committed job.requeued entries)", registry=reg)
        self.appends = Counter("sandbox_ledger_appends",
                               "Ledger entries committed by this controller, by kind",
                               ["kind"], registry=reg)
        self.witness_failures = Counter("sandbox_witness_failures",
                                        "Readiness probes a witness did not answer",
                                        ["witness"], registry=reg)
        self.quorum_failures = Counter("sandbox_witness_quorum_failures",
                                       "Results withheld for want of witness cosignatures "
                                       "(503 awaiting_witnesses)", registry=reg)
        self.leader = Gauge("sandbox_checkpointer_leader",
                            "1 in the process that signs checkpoints in the background",
                            multiprocess_mode="livesum", registry=reg)
        self._scrape_sessions: sessionmaker[Session] | None = None
        # Labelled series exist from the start at 0, so that a rate over them is defined
        # before the first event.
        for limit in ("address", "token_id", "token_rate"):
            self.rate_limited.labels(limit)
        for i in range(witnesses):
            self.witness_failures.labels(str(i))

    def attach_database(self, readers: sessionmaker[Session]) -> None:
        self._scrape_sessions = readers
        if self.registry is not None:
            self.registry.register(DatabaseCollector(readers))

    def scrape_registry(self) -> CollectorRegistry:
        if self.registry is not None:
            return self.registry
        reg = CollectorRegistry()
        MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        if self._scrape_sessions is not None:
            reg.register(DatabaseCollector(self._scrape_sessions))
        return reg

    def leader_changed(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def count_commits(self, sessions: sessionmaker[Session]) -> None:
        """Count ledger entries when their transaction commits, not when appended: a
        rolled-back requeue is retried, and would be counted twice."""

        @event.listens_for(sessions, "after_commit")
        def _committed(session: Session) -> None:
            for kind in session.info.pop(APPENDED, ()):
                self.appends.labels(kind).inc()
                if kind == "job.requeued":
                    self.requeued.inc()

        @event.listens_for(sessions, "after_rollback")
        def _rolled_back(session: Session) -> None:
            session.info.pop(APPENDED, None)


class ObservedLog(TransparencyLog):
    """The transparency log, noting in the session what kinds of entry it appended."""

    def append_many(self, session: Session, items: Iterable[Item]) -> list[AppendResult]:
        items = list(items)
        results = super().append_many(session, items)
        session.info.setdefault(APPENDED, []).extend(kind for kind, _, _ in items)
        return results


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time (the same from every worker)."""

    def __init__(self, readers: sessionmaker[Session]) -> None:
        self._readers = readers

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sandbox_database_up",
                               "1 if this scrape could read the database")
        try:
            with self._readers() as s:
                families = list(_state_families(s))
                s.rollback()
        except (SQLAlchemyError, LedgerError, ValueError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _state_families(s: Session) -> Iterator[Metric]:
    now = datetime.now(UTC)
    counts: dict[Any, int] = dict(s.execute(  # type: ignore[arg-type]
        select(Job.state, func.count()).group_by(Job.state)).all())
    jobs = GaugeMetricFamily("sandbox_jobs", "Jobs by state", labels=["state"])
    for state in JobState:
        jobs.add_metric([state.value], counts.get(state, 0))
    yield jobs
    yield GaugeMetricFamily("sandbox_queue_depth", "Jobs queued for an agent",
                            value=counts.get(JobState.QUEUED, 0))
    oldest = s.execute(select(func.min(Job.submitted_at))
                       .where(Job.state == JobState.QUEUED)).scalar()
    yield GaugeMetricFamily("sandbox_queue_oldest_seconds",
                            "Age of the oldest queued job (0 when none)",
                            value=0 if oldest is None else
                            max(0.0, (now - oldest).total_seconds()))
    expired = s.execute(select(func.count()).select_from(Job).where(
        Job.state.in_(ACTIVE), Job.lease_expires_at < now)).scalar()
    yield GaugeMetricFamily("sandbox_jobs_lease_expired",
                            "Leased jobs whose lease has expired, not yet requeued (requeued "
                            "when an agent of the provider next polls)", value=expired or 0)
    st = ledger_status(s, now)
    yield GaugeMetricFamily("sandbox_ledger_size", "Entries in the transparency log",
                            value=st.size)
    yield GaugeMetricFamily("sandbox_ledger_checkpoint_size",
                            "Tree size of the latest signed checkpoint (-1 when none)",
                            value=-1 if st.checkpoint_size is None else st.checkpoint_size)
    yield GaugeMetricFamily("sandbox_ledger_checkpoint_age_seconds",
                            "Time since the latest checkpoint was signed (-1 when none); "
                            "grows while no entry is appended",
                            value=-1 if st.checkpoint_age_s is None else st.checkpoint_age_s)
    yield GaugeMetricFamily("sandbox_ledger_unsigned_entries",
                            "Entries no signed checkpoint covers yet", value=st.unsigned)
    yield GaugeMetricFamily("sandbox_ledger_oldest_unsigned_entry_age_seconds",
                            "How long the oldest entry not under a checkpoint has waited",
                            value=st.oldest_unsigned_age_s)
