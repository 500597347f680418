"""Incident controls: a running job is stopped at once, by its provider, the operator, or a
revocation, and nothing of it comes out."""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest

from authz.wire import TERMINAL
from tests.docker.helpers import (
    Stack,
    Target,
    fetch_output,
    job_containers,
    ledger_entries,
    make_target,
    submit,
    wait_job,
)

pytestmark = pytest.mark.docker

LONG = """\
import time
import pandas as pd
df = pd.read_csv("/in/data.csv")
pd.DataFrame({"n": [len(df)]}).to_csv("/out/t.csv", index=False)
time.sleep(90)
"""


@pytest.fixture(scope="module")
def target(stack: Stack) -> Target:
    return make_target(stack, "main", "incident.csv", 41)


def _running(stack: Stack, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while stack.requester.get(f"/jobs/{job_id}")["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)


def _gone(engine: docker.DockerClient, stack: Stack, job_id: str) -> dict[str, Any]:
    """Wait (bounded) until the job's container has gone; the job as the requester sees it."""
    deadline = time.monotonic() + 45  # the job itself would sleep 90 s
    while job_containers(engine, job_id):
        assert time.monotonic() < deadline, "the stopped job's container is still there"
        time.sleep(0.3)
    job: dict[str, Any] = stack.requester.get(f"/jobs/{job_id}")
    return job


def _assert_stopped(stack: Stack, job: dict[str, Any], reason: str) -> None:
    assert job["state"] == "cancelled" and reason in job["reason"], job
    assert job["outputs"] == [] and job["ledger_index"] is None
    assert fetch_output(stack.requester, job["id"], "t.csv")[0] == 404
    kinds = [e["kind"] for e in ledger_entries(stack.regulator)
             if e["body"].get("job_id") == job["id"]]
    assert "job.cancelled" in kinds and "run.finished" not in kinds, kinds


def test_a_provider_stops_a_running_job(stack: Stack, target: Target,
                                        docker_engine: docker.DockerClient) -> None:
    job_id = submit(stack, target.permit_id, target.dataset_id, LONG)
    _running(stack, job_id)
    stopped = target.provider.client.post(f"/jobs/{job_id}/stop",
                                          {"reason": "suspected misuse"})
    assert stopped["state"] == "cancelled"
    _assert_stopped(stack, _gone(docker_engine, stack, job_id), "suspected misuse")
    # The agent goes on serving: the next job runs.
    after = wait_job(stack.requester, submit(stack, target.permit_id, target.dataset_id,
                                             "print('ok')\n"))
    assert after["state"] in TERMINAL and after["state"] != "cancelled", after


def test_a_revocation_stops_the_permits_running_jobs(stack: Stack,
                                                     docker_engine: docker.DockerClient
                                                     ) -> None:
    t = make_target(stack, "main", "revoked.csv", 43)
    job_id = submit(stack, t.permit_id, t.dataset_id, LONG)
    _running(stack, job_id)
    t.provider.client.post(f"/permits/{t.permit_id}/revoke", {"reason": "purpose changed"})
    _assert_stopped(stack, _gone(docker_engine, stack, job_id), "permit revoked")


def test_only_the_jobs_provider_or_the_operator_may_stop_it(stack: Stack,
                                                            target: Target) -> None:
    job_id = submit(stack, target.permit_id, target.dataset_id, "print('ok')\n")
    r = stack.requester.http.post(f"{stack.url}/api/v1/jobs/{job_id}/stop",
                                  json={"reason": "mine"}, timeout=30)
    assert r.status_code == 403
    wait_job(stack.requester, job_id)
