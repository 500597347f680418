"""A claim in flight locks only the job it takes (``authz.runs.next_task``, PostgreSQL).

A claim used to lock the 64 oldest queued jobs of its providers ``FOR NO KEY UPDATE SKIP
LOCKED`` to take one of them: another agent (or slot) claiming at the same moment skipped
them all, found nothing and went back to its long poll although a job was queued.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from authz import runs
from authz.context import Ctx
from authz.models import Agent, Job
from authz.states import JobState
from authz.wire import RunTask
from sandbox import db
from tests.api.helpers import permit_for


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_second_claim_takes_the_other_queued_job(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    ids = [requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                    "script": "print(1)\n"}).json["id"] for _ in range(2)]
    svc = db.services(app)
    first = svc.sessions()
    got: list[Any] = []
    try:
        agent_row = first.get(Agent, agent.id)
        assert agent_row is not None
        task = runs.next_task(Ctx(first, svc.log, "test"), agent_row)
        assert isinstance(task, RunTask) and task.job_id == ids[0]
        # The first claim's transaction is still open (it holds its job, the permit and
        # the ledger head): the second claim passes over its job, takes the other, and
        # waits for the permit and the ledger head, not for nothing.
        second = threading.Thread(target=lambda: got.append(
            agent.post("/agent/tasks/next?wait=0")))
        second.start()
        second.join(0.5)
        first.commit()
        second.join(30)
        assert not second.is_alive()
    finally:
        first.rollback()
        first.close()
    assert got[0].status_code == 200, got[0].json
    assert (got[0].json["task"] or {}).get("job_id") == ids[1]
    with svc.sessions() as s:
        assert {s.get(Job, i).state for i in ids} == {JobState.DISPATCHED}  # type: ignore[union-attr]
