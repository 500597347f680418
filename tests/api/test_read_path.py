"""What an authenticated read costs the database, and that it still checks the token.

Counted in statements, not time: a job list must not query once per job (and per output),
and a person's token is checked against their row and their party's on every request.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event

from sandbox import db
from tests.api.helpers import SCRIPT, permit_for
from tests.conftest import Actor


@contextmanager
def selects(app: Flask) -> Iterator[list[str]]:
    """The SELECT statements run on the app's engines meanwhile."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    svc = db.services(app)
    engines = {f.kw["bind"] for f in (svc.sessions, svc.readers)}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


def released_job(requester: Actor, agent: Actor, permit_id: str, ds_id: str, n: int) -> str:
    job_id: str = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                           "script": SCRIPT}).json["id"]
    assert agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    agent.post(f"/agent/jobs/{job_id}/started")
    outputs: list[dict[str, Any]] = []
    for name in ("a.csv", "b.csv"):
        content = f"x,n\n{name},{n}\n".encode()
        outputs.append({"name": name, "sha256": hashlib.sha256(content).hexdigest(),
                        "bytes": len(content), "decision": "released", "reasons": [],
                        "content_b64": base64.b64encode(content).decode()})
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "data-sandbox-runner:test", "log": "",
        "outputs": outputs})
    assert r.status_code == 200, r.json
    return job_id


def test_a_job_list_costs_the_same_statements_however_long(app: Flask, make_party: Any,
                                                           make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, max_runs=10)
    first = released_job(requester, agent, permit_id, ds["id"], 0)
    with selects(app) as one:
        assert requester.get("/jobs").status_code == 200
    for n in range(1, 4):
        released_job(requester, agent, permit_id, ds["id"], n)
    with selects(app) as four:
        listed = requester.get("/jobs").json["jobs"]
    assert len(listed) == 4
    assert len(four) == len(one), four
    # The caller's token (a party's: one lookup) and the list with its outputs and
    # reviews: one round trip each.
    assert len(four) == 2, four
    # One job, polled by a requester's client until it ends: the same two.
    with selects(app) as single:
        assert requester.get(f"/jobs/{first}").json["outputs"] == listed[0]["outputs"]
    assert len(single) == 2, single
    # Its provider sees it too; another provider does not.
    assert provider.get(f"/jobs/{first}").json["id"] == first
    assert make_party("provider").get(f"/jobs/{first}").status_code == 404
    # Still the whole answer: every output with its hash, and the content to download.
    assert [o["name"] for o in listed[0]["outputs"]] == ["a.csv", "b.csv"]
    content = b"x,n\na.csv,0\n"
    assert listed[0]["outputs"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    assert requester.get(f"/jobs/{first}/outputs/a.csv").data == content


def test_a_persons_token_is_checked_with_their_party_in_one_statement(
        app: Flask, admin: Actor, make_party: Any, make_person: Any) -> None:
    party = make_party("requester")
    person = make_person(party, "analyst")
    with selects(app) as seen:
        assert person.get("/me").json["person"]["id"] == person.id
    # The person with their party and their accreditations, as plain columns
    # (authz/checked.py): one statement.
    assert len(seen) == 1, seen
    # Checked on every request: a deactivated party locks its people out at the next one.
    assert admin.post(f"/parties/{party.id}/deactivate").status_code == 200
    assert person.get("/me").status_code == 401
