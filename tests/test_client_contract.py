"""The requester's client speaks the API's contract (sandbox.api.operations): a body the
server would refuse is refused before anything is sent, with the server's field and rule;
an answer that breaks the contract is an error naming the operation and the JSON path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from flask import Flask
from requests.adapters import HTTPAdapter

from authz.states import JobState
from sandbox.cli import main
from sandbox.client import Client, ContractError, RequestRefused
from sandbox.embedded import EmbeddedStack
from sandbox.sdk import JointStatistics
from sandbox.sdk_statistics import run_statistics
from tests.conftest import Actor
from tests.test_cli import World

# A statistics spec with a typo: refused before the permit is even looked up.
TYPO_SPEC = {"analyses": [{"kind": "frequency", "dims": ["sex"], "dimz": ["age"]}]}


class NothingSent(HTTPAdapter):
    """A transport that fails the test if the client sends anything."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"sent {request.method} {request.url}")


class Answers(HTTPAdapter):
    """A transport answering every request with one JSON body (a controller that breaks
    the contract)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__()
        self.status, self.body = status, body

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> Any:
        r = requests.Response()
        r.status_code, r.request, r.url = self.status, request, str(request.url)
        r.headers["Content-Type"] = "application/json"
        r._content = json.dumps(self.body).encode()
        return r


def offline(adapter: HTTPAdapter) -> Client:
    client = Client("http://controller.invalid", "tok")
    client.http.mount("http://", adapter)
    return client


def test_a_body_the_server_refuses_is_refused_before_sending(admin: Actor,
                                                              make_party: Any) -> None:
    requester = make_party("requester")
    cases = [
        (admin, "parties.create_party", "/parties", {"name": "x", "role": "wizard"}),
        (requester, "access.create_request", "/requests", {
            "purpose": "Average cost by age band.", "use_kind": "statistics",
            "business_system": "pricing", "items": [{"dataset_id": "ds_x", "columns": ["a"]}],
            "priority": "high"}),
        (requester, "jobs.submit", "/jobs", {"permit_id": "pmt_x", "dataset_ids": ["ds_x"],
                                             "statistics": TYPO_SPEC}),
    ]
    client = offline(NothingSent())
    for actor, operation, path, body in cases:
        server = actor.post(path, body)
        assert server.status_code == 400, server.json
        with pytest.raises(RequestRefused) as refused:
            client.call(operation, body)
        assert refused.value.status == 400
        assert {k: refused.value.body[k] for k in ("error", "field", "rule")} == \
            {k: server.json[k] for k in ("error", "field", "rule")}, operation
    assert refused.value.body["field"] == "statistics.analyses[0].dimz"


def test_an_answer_that_breaks_the_contract_is_an_error(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    with pytest.raises(ContractError) as e:
        offline(Answers(200, {"id": "pty_x", "name": "n"})).call("parties.me")
    assert e.value.operation == "parties.me" and e.value.path == "$"
    assert "'role' is a required property" in str(e.value)
    job = {"id": "job_x", "permit_id": "p", "requester_id": "r", "provider_id": "p",
           "dataset_ids": [], "script_sha256": "0", "state": "released", "reason": None,
           "submitted_at": "2026-01-01T00:00:00Z",
           "outputs": [{"name": "t.csv", "bytes": 1, "decision": "released", "reasons": []}]}
    with pytest.raises(ContractError) as e:
        offline(Answers(200, job)).call("jobs.get_job", job_id="job_x")
    assert e.value.path == "$.outputs[0]" and "'sha256' is a required property" in str(e.value)
    # The command line says so, without a traceback.
    monkeypatch.setattr(HTTPAdapter, "send", Answers(200, {"id": "pty_x"}).send)
    r = CliRunner(mix_stderr=False).invoke(main, ["--url", "http://controller.invalid",
                                                  "--token", "tok", "me"])
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert "parties.me: the answer breaks the API contract at $" in r.stderr


@pytest.fixture
def stack(app: Flask) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(app).start()
    yield s
    s.stop()


def test_the_sdk_round_trips_through_the_contract(stack: EmbeddedStack, make_party: Any,
                                                  make_agent: Any) -> None:
    """Against the real app on loopback: every answer the SDK reads is checked, and a
    malformed spec costs no run."""
    w = World(stack, make_party, make_agent)
    client = Client(stack.url, w.requester.token)
    assert JointStatistics(client).schema(w.permit_id, [w.dataset_id]) == {
        "age": "integer", "sex": "string", "cost": "number"}
    with pytest.raises(RequestRefused) as refused:
        run_statistics(client, w.permit_id, w.dataset_id, TYPO_SPEC)
    assert refused.value.body["field"] == "statistics.analyses[0].dimz"
    permit = client.call("access.get_permit", permit_id=w.permit_id)
    assert permit["runs_used"] == 0 and client.call("jobs.list_jobs") == {"jobs": []}
    job = client.call("jobs.submit", {"permit_id": w.permit_id, "dataset_ids": [w.dataset_id],
                                      "statistics": {"analyses": [{"kind": "frequency",
                                                                   "dims": ["sex"]}]}})
    assert client.call("jobs.get_job", job_id=job["id"])["state"] == JobState.QUEUED

