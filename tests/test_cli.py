"""The `sandbox` command over a real controller on loopback (no Docker needed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from authz.models import Permit
from ledger.checkpointer import sign_checkpoint
from sandbox.cli import main
from sandbox.client import Client, served_file_name
from sandbox.embedded import EmbeddedStack
from tests.api.helpers import PATIENT_FIELDS, approval, dataset_body
from tests.api.test_release_review import TABLE, Review
from tests.conftest import Actor


@pytest.fixture
def stack(app: Flask) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(app).start()
    yield s
    s.stop()


def run(stack: EmbeddedStack, token: str, *args: str, url: str | None = None) -> Result:
    runner = CliRunner(mix_stderr=False)
    return runner.invoke(main, ["--url", url or stack.url, "--token", token, *args])


def test_cli_drives_the_api(stack: EmbeddedStack, admin: Actor, tmp_path: Path) -> None:
    r = run(stack, admin.token, "party-create", "--name", "Hospital", "--role", "provider",
            "--code", "H1")
    assert r.exit_code == 0, r.output
    provider: dict[str, Any] = json.loads(r.output)
    key = tmp_path / "agent.key"
    r = CliRunner().invoke(main, ["agent-key", str(key)])
    assert r.exit_code == 0 and len(r.output.strip()) == 64
    assert key.stat().st_mode & 0o777 == 0o600
    r = run(stack, admin.token, "agent-create", "--name", "a", "--provider", provider["id"],
            "--public-key", r.output.strip())
    assert r.exit_code == 0, r.output
    # An error answer: what went wrong and what to do, on standard error; JSON with --json.
    r = run(stack, admin.token, "party-create", "--name", "x", "--role", "wizard")
    assert r.exit_code == 1 and r.stdout == ""
    assert "Error: role: must be one of" in r.stderr
    assert "What to do: fix role and run the command again" in r.stderr
    r = run(stack, admin.token, "--json", "party-create", "--name", "x", "--role", "wizard")
    assert r.exit_code == 1 and json.loads(r.stdout)["field"] == "role"
    r = run(stack, provider["token"], "me")
    assert json.loads(r.output)["role"] == "provider"


def test_no_traceback_for_connection_errors_or_bad_files(stack: EmbeddedStack, admin: Actor,
                                                         tmp_path: Path) -> None:
    r = run(stack, admin.token, "datasets", url="http://127.0.0.1:9")
    assert r.exit_code == 1 and "Traceback" not in r.stderr + r.stdout
    assert "Retrying" not in r.stderr  # the HTTP library's retries are not the user's concern
    assert "cannot reach the controller at http://127.0.0.1:9" in r.stderr
    assert "check --url or SANDBOX_URL" in r.stderr
    bad = tmp_path / "metadata.json"
    bad.write_text('{"code": "X",\n  oops}')
    r = run(stack, admin.token, "dataset-register", str(bad))
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert f"{bad} is not valid JSON (line 2, column 3" in r.stderr
    r = run(stack, admin.token, "dataset-register", str(tmp_path / "missing.json"))
    assert r.exit_code == 2 and "No such file or directory" in r.stderr
    r = run(stack, "not-a-token", "datasets")
    assert r.exit_code == 1 and "check --token or SANDBOX_TOKEN" in r.stderr


class World:
    """A provider with an active dataset, a requester with a permit on it, and the
    provider's agent driven through the agent API (no engine: this is the CLI's test)."""

    def __init__(self, stack: EmbeddedStack, make_party: Any, make_agent: Any) -> None:
        provider = make_party("provider")
        self.agent = make_agent(provider)
        self.requester = make_party("requester")
        self.provider = provider
        ds = provider.post("/datasets", dataset_body(fields=[
            *PATIENT_FIELDS[:2], {**PATIENT_FIELDS[2], "categories": ["F", "M"]},
            *PATIENT_FIELDS[3:]])).json
        self.agent.post(f"/agent/datasets/{ds['id']}/schema", {"ok": True, "rows": 300})
        self.dataset_id: str = ds["id"]
        req = self.requester.post("/requests", {
            "purpose": "Average cost by age band, for pricing.", "use_kind": "statistics",
            "business_system": "pricing", "items": [
                {"dataset_id": ds["id"], "columns": ["age", "sex", "cost"]}]}).json
        self.request_id: str = req["id"]
        self.permit_id: str = provider.post(
            f"/requests/{req['id']}/items/{ds['id']}/approve",
            approval(max_runs=3)).json["permit_id"]
        self.agent_api = Client(stack.url, self.agent.token)

    def finish_next(self) -> None:
        """The agent's side of one job: claim it, report a released run."""
        task = self.agent_api.post("/agent/tasks/next")["task"]
        job_id = task["job_id"]
        self.agent_api.post(f"/agent/jobs/{job_id}/started")
        content = b"n\n300\n"
        import base64
        import hashlib

        self.agent_api.post(f"/agent/jobs/{job_id}/result", {
            "state": "released", "rows_read": 300, "bytes_read": 4000,
            "input_sha256": "0" * 64, "runner_image": "runner:test", "log": "",
            "outputs": [{"name": "total.csv", "sha256": hashlib.sha256(content).hexdigest(),
                         "bytes": len(content), "decision": "released", "reasons": [],
                         "content_b64": base64.b64encode(content).decode()}]})


def test_requester_commands(app: Flask, stack: EmbeddedStack, make_party: Any, make_agent: Any,
                            tmp_path: Path) -> None:
    w = World(stack, make_party, make_agent)
    token = w.requester.token
    script = tmp_path / "analysis.py"
    script.write_text("print('hello')\n")
    # A request id where a permit id belongs: the error says which id to use.
    r = run(stack, token, "submit", "--permit", w.request_id, "--dataset", w.dataset_id,
            str(script))
    assert r.exit_code == 1 and "access request's id, not a permit's" in r.stderr
    # A syntax error is refused at submission with its line, costing nothing.
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\ny = (\n")
    r = run(stack, token, "submit", "--permit", w.permit_id, "--dataset", w.dataset_id,
            str(broken))
    assert r.exit_code == 1 and "syntax error at line 2" in r.stderr
    # Lists are tables by default, JSON with --json.
    r = run(stack, token, "permits")
    assert r.exit_code == 0 and r.stdout.split()[:3] == ["ID", "STATUS", "EXPIRES"]
    assert w.permit_id in r.stdout and "0/3" in r.stdout
    assert json.loads(run(stack, token, "permits", "--json").stdout)["permits"][0]["id"] \
        == w.permit_id
    r = run(stack, token, "datasets")
    assert w.dataset_id in r.stdout and r.stdout.startswith("ID")
    r = run(stack, token, "requests")
    assert r.stdout.split()[:3] == ["ID", "STATUS", "PERMIT"] and w.request_id in r.stdout
    r = run(stack, w.provider.token, "usage")
    assert r.exit_code == 0 and r.stdout.strip() == "no use of your data yet"
    # submit, then cancel while queued.
    r = run(stack, token, "submit", "--permit", w.permit_id, "--dataset", w.dataset_id,
            str(script))
    job_id = json.loads(r.stdout)["id"]
    r = run(stack, token, "cancel", job_id)
    assert r.exit_code == 0 and r.stdout.strip() == f"{job_id} cancelled"
    r = run(stack, token, "cancel", job_id)
    assert r.exit_code == 1 and "job is cancelled; only queued jobs" in r.stderr
    # submit --wait follows the job to its end, with each state on the way.
    agent = threading.Timer(0.5, w.finish_next)
    agent.start()
    r = run(stack, token, "submit", "--wait", "--permit", w.permit_id, "--dataset",
            w.dataset_id, str(script))
    agent.join()
    assert r.exit_code == 0, r.stderr
    assert " queued" in r.stderr and " released" in r.stderr
    assert "total.csv: released" in r.stdout and "fetch: sandbox output" in r.stdout
    released_id = json.loads(run(stack, token, "jobs", "--json").stdout)["jobs"][1]["id"]
    # The output: to standard output, to a file, or into a directory under its served name.
    r = run(stack, token, "output", released_id, "total.csv")
    assert r.exit_code == 0 and r.stdout == "n\n300\n"
    into = tmp_path / "fetched"
    into.mkdir()
    r = run(stack, token, "output", released_id, "total.csv", "-o", str(into))
    assert r.exit_code == 0 and (into / "total.csv").read_bytes() == b"n\n300\n", r.stderr
    r = run(stack, token, "output", released_id, "total.csv", "-o", str(tmp_path / "t.csv"))
    assert r.exit_code == 0 and (tmp_path / "t.csv").read_bytes() == b"n\n300\n"
    r = run(stack, token, "output", released_id, "nothing.csv", "-o", str(into))
    assert r.exit_code == 1 and not (into / "nothing.csv").exists()
    done = run(stack, token, "jobs", "--json")
    jobs = json.loads(done.stdout)["jobs"]
    assert [j["state"] for j in jobs] == ["cancelled", "released"]
    table = run(stack, token, "jobs").stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "STATE"] and len(table) == 3
    receipt = tmp_path / "receipt.json"
    r = run(stack, token, "receipt", jobs[1]["id"], "-o", str(receipt))
    assert r.exit_code == 1 and "try again shortly" in r.stderr  # not yet in a checkpoint
    ext = app.extensions["sandbox"]
    with ext.sessions() as s:
        sign_checkpoint(ext.log, s)
        s.commit()
    r = run(stack, token, "receipt", jobs[1]["id"], "-o", str(receipt))
    assert r.exit_code == 0 and "ledger-verify receipt" in r.stderr, r.stderr
    assert json.loads(receipt.read_text())["entry"]
    r = run(stack, token, "mock-data", w.dataset_id, "--rows", "20", "--seed", "4")
    lines = r.stdout.splitlines()
    assert lines[0] == "patient_id,age,sex,diagnosis,cost" and len(lines) == 21


def test_errors_say_what_to_do_next(app: Flask, stack: EmbeddedStack, make_party: Any,
                                    make_agent: Any, tmp_path: Path) -> None:
    w = World(stack, make_party, make_agent)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({
        "purpose": "Average cost by age band, for pricing.", "use_kind": "statistics",
        "business_system": "pricing",
        "items": [{"dataset_id": w.dataset_id, "columns": ["age", "salary"]}]}))
    r = run(stack, w.requester.token, "request-create", str(request))
    assert r.exit_code == 1
    assert "no field 'salary'" in r.stderr
    assert "its fields are: patient_id, age, sex, diagnosis, cost" in r.stderr
    ext = app.extensions["sandbox"]
    expired = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with ext.sessions() as s:
        permit = s.get(Permit, w.permit_id)
        assert permit is not None
        permit.expires_at = expired
        s.commit()
    script = tmp_path / "a.py"
    script.write_text("print(1)\n")
    r = run(stack, w.requester.token, "submit", "--permit", w.permit_id, "--dataset",
            w.dataset_id, str(script))
    assert r.exit_code == 1
    assert f"permit expired at {expired.isoformat()}" in r.stderr
    assert "apply again with a new access request" in r.stderr


def test_cli_people_and_release_review(app: Flask, admin: Actor, make_party: Any,
                                       make_agent: Any, make_person: Any) -> None:
    """Sign-in, accreditation and a review decision through the `sandbox` command."""
    stack = EmbeddedStack(app).start()
    try:
        runner = CliRunner()
        review = Review(make_party, make_agent, make_person)
        job_id = review.held_job(("t.csv", TABLE))
        party = make_party("provider")
        base = ["--url", stack.url, "--token", admin.token]
        r = runner.invoke(main, [*base, "person-create", party.id, "--name", "Zhao Min",
                                 "--email", "zhao@example.org", "--role", "output_checker"],
                          input="a long enough password\na long enough password\n")
        assert r.exit_code == 0, r.output
        made = json.loads(r.output[r.output.index("{"):])
        for args in (["person-verify", made["id"], "--method", "in person"],
                     ["person-accredit", made["id"], "--kind", "output checking"]):
            assert runner.invoke(main, [*base, *args]).exit_code == 0
        r = runner.invoke(main, ["--url", stack.url, "login", "--email", "zhao@example.org"],
                          input="a long enough password\n")
        assert r.exit_code == 0, r.output
        signed = json.loads(r.output[r.output.index("{"):])
        assert signed["person"]["id"] == made["id"]
        # The checker of the job's provider decides through the CLI.
        checker = ["--url", stack.url, "--token", review.checkers[0].token]
        r = runner.invoke(main, [*checker, "review", job_id])
        assert json.loads(r.output)["outputs"][0]["content"] == TABLE.decode()
        r = runner.invoke(main, [*checker, "review-decide", job_id, "output-1", "--decision",
                                 "approve", "--comment", "two bands, both above k"])
        assert r.exit_code == 0, r.output
        # A person of another provider gets the API's refusal, and exit status 1.
        other = ["--url", stack.url, "--token", signed["token"], "--json"]
        r = CliRunner(mix_stderr=False).invoke(main, [
            *other, "review-decide", job_id, "output-1", "--decision", "approve", "--comment",
            "not mine to decide"])
        assert r.exit_code == 1 and json.loads(r.stdout)["error"] == "not_found"
        assert "What to do: check the id" in r.stderr
        assert review.analyst.get(f"/jobs/{job_id}").json["state"] == "released"
    finally:
        stack.stop()


def test_served_file_name_stays_a_plain_name() -> None:
    """Where ``sandbox output -o DIR`` writes is never the controller's choice."""
    assert served_file_name('attachment; filename="output-0.csv"', "output-0") == "output-0.csv"
    assert served_file_name('attachment; filename="../../etc/x"', "output-1") == "output-1"
    assert served_file_name('attachment; filename=".bashrc"', "output-2") == "bashrc"
    assert served_file_name("", "a/b") == "a_b"
    assert served_file_name("", "..") == "output"
