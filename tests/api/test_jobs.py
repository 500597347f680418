from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from authz.jobs import MAX_SCRIPT_BYTES
from authz.models import Permit
from authz.runs import MOCK_RETURNS_PER_RUN
from tests.api.helpers import SCRIPT, approval, permit_for, register, request_access
from tests.conftest import Actor


def submit(requester: Actor, permit_id: str, ds_id: str, script: str = SCRIPT) -> Any:
    return requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                    "script": script})


def setup(make_party: Any, make_agent: Any, **approve: Any
          ) -> tuple[Actor, Actor, Actor, dict[str, Any], str]:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, **approve)
    return provider, requester, agent, ds, permit_id


def test_submit_dispatch_finish(app: Any, make_party: Any, make_agent: Any) -> None:
    provider, requester, agent, ds, permit_id = setup(make_party, make_agent)
    r = submit(requester, permit_id, ds["id"])
    assert r.status_code == 201 and r.json["state"] == "queued"
    job_id = r.json["id"]
    task = agent.post("/agent/tasks/next").json["task"]
    assert task["type"] == "run" and task["job_id"] == job_id
    assert base64.b64decode(task["script_b64"]).decode() == SCRIPT
    assert [f["name"] for f in task["datasets"][0]["fields"]] == ["age", "sex", "diagnosis",
                                                                  "cost"]
    assert task["min_cell_count"] == 10
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 1
    assert agent.post(f"/agent/jobs/{job_id}/started").json["state"] == "running"
    content = b"age_band,n\n0-17,12\n"
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "data-sandbox-runner:test", "log": "",
        "outputs": [{"name": "table.csv", "sha256": hashlib.sha256(content).hexdigest(),
                     "bytes": len(content), "decision": "released", "reasons": [],
                     "content_b64": base64.b64encode(content).decode()}]})
    assert r.status_code == 200, r.json
    job = requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "released" and job["rows_read"] == 500
    assert requester.get(f"/jobs/{job_id}/outputs/table.csv").data == content
    # The provider sees the use of its data but never the result.
    assert provider.get(f"/jobs/{job_id}").json["state"] == "released"
    assert provider.get(f"/jobs/{job_id}/outputs/table.csv").status_code == 403
    usage = provider.get("/usage").json["usage"]
    assert usage[0]["requester_id"] == requester.id and usage[0]["rows_read"] == 500


def test_blocked_output_content_is_refused(make_party: Any, make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    agent.post("/agent/tasks/next")
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "blocked", "rows_read": 1, "bytes_read": 1, "input_sha256": "b" * 64,
        "runner_image": "img", "outputs": [{"name": "raw.csv", "sha256": "c" * 64,
                                            "bytes": 3, "decision": "blocked",
                                            "content_b64": "YWJj"}]})
    assert r.status_code == 400 and r.json["field"] == "outputs[0].content_b64"
    assert requester.get(f"/jobs/{job_id}").json["state"] == "dispatched"


def test_released_content_must_match_hash(make_party: Any, make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    agent.post("/agent/tasks/next")
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "rows_read": 1, "bytes_read": 1, "input_sha256": "b" * 64,
        "runner_image": "img", "outputs": [{"name": "t.csv", "sha256": "c" * 64, "bytes": 3,
                                            "decision": "released", "content_b64": "YWJj"}]})
    assert r.status_code == 400 and r.json["field"] == "outputs[0].sha256"


def test_oversized_script(make_party: Any, make_agent: Any) -> None:
    _, requester, _, ds, permit_id = setup(make_party, make_agent)
    r = submit(requester, permit_id, ds["id"], "#" * (MAX_SCRIPT_BYTES + 1))
    assert r.status_code == 400 and r.json["field"] == "script"


def test_runs_are_capped_at_submission_and_dispatch(make_party: Any, make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent, max_runs=2)
    assert submit(requester, permit_id, ds["id"]).status_code == 201
    assert submit(requester, permit_id, ds["id"]).status_code == 201
    r = submit(requester, permit_id, ds["id"])
    assert r.status_code == 409 and r.json["error"] == "policy_violation"
    assert agent.post("/agent/tasks/next").json["task"] is not None
    assert agent.post("/agent/tasks/next").json["task"] is not None
    assert agent.post("/agent/tasks/next").json["task"] is None
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 2


def test_revocation_cancels_queued_jobs(make_party: Any, make_agent: Any) -> None:
    provider, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    r = provider.post(f"/permits/{permit_id}/revoke", {"reason": "purpose changed"})
    assert r.status_code == 200 and r.json["status"] == "revoked"
    assert requester.get(f"/jobs/{job_id}").json["state"] == "cancelled"
    assert agent.post("/agent/tasks/next").json["task"] is None
    assert submit(requester, permit_id, ds["id"]).status_code == 409


def test_expiry_is_rechecked_at_dispatch(app: Any, make_party: Any, make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    with app.extensions["sandbox"].sessions() as s:
        permit = s.get(Permit, permit_id)
        assert permit is not None
        permit.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        s.commit()
    assert agent.post("/agent/tasks/next").json["task"] is None
    job = requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "blocked" and "expired" in job["reason"]


def test_jobs_must_stay_in_one_domain(make_party: Any, make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    requester = make_party("requester")
    req = request_access(requester, ds_a, ds_b)
    from tests.api.helpers import approval

    a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve", approval())
    permit_id = b.post(f"/requests/{req['id']}/items/{ds_b['id']}/approve",
                       approval()).json["permit_id"]
    r = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_a["id"], ds_b["id"]],
                                 "script": SCRIPT})
    assert r.status_code == 400 and r.json["field"] == "dataset_ids"


def test_agent_only_gets_tasks_of_its_providers(make_party: Any, make_agent: Any) -> None:
    _, requester, _, ds, permit_id = setup(make_party, make_agent)
    submit(requester, permit_id, ds["id"])
    stranger = make_agent(make_party("provider"))
    assert stranger.post("/agent/tasks/next").json["task"] is None


def test_cancel_by_requester(make_party: Any, make_agent: Any) -> None:
    _, requester, _, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    assert requester.post(f"/jobs/{job_id}/cancel").json["state"] == "cancelled"
    assert requester.post(f"/jobs/{job_id}/cancel").status_code == 409


def test_dispatch_is_fair_across_requesters(make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    busy, patient = make_party("requester"), make_party("requester")
    ds, busy_permit = permit_for(busy, provider, agent, max_runs=10)
    from tests.api.helpers import approval, request_access

    req = request_access(patient, ds)
    patient_permit = provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve",
                                   approval()).json["permit_id"]
    burst = [submit(busy, busy_permit, ds["id"]).json["id"] for _ in range(4)]
    late = submit(patient, patient_permit, ds["id"]).json["id"]
    first = agent.post("/agent/tasks/next").json["task"]["job_id"]
    second = agent.post("/agent/tasks/next").json["task"]["job_id"]
    # The burst's first job goes first (oldest); then the other requester, who has nothing
    # in flight, goes before the rest of the burst although it submitted last.
    assert (first, second) == (burst[0], late)


def test_a_script_that_does_not_compile_is_refused_with_its_line(make_party: Any,
                                                                 make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent)
    r = submit(requester, permit_id, ds["id"], "import pandas as pd\nx = (\n")
    assert r.status_code == 400 and r.json["field"] == "script"
    assert "line 2" in r.json["rule"]
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 0
    assert agent.post("/agent/tasks/next").json["task"] is None  # nothing was queued


def test_the_requester_sees_the_input_size_rounded_the_provider_exactly(
        make_party: Any, make_agent: Any) -> None:
    provider, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    agent.post("/agent/tasks/next")
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "failed", "reason": "the script exited with an error status",
        "rows_read": 503, "bytes_read": 9031, "input_sha256": "a" * 64,
        "runner_image": "img", "outputs": []})
    assert r.status_code == 200, r.json
    mine = requester.get(f"/jobs/{job_id}").json
    assert (mine["rows_read"], mine["bytes_read"]) == (500, None)
    theirs = provider.get(f"/jobs/{job_id}").json
    assert (theirs["rows_read"], theirs["bytes_read"]) == (503, 9031)


def test_script_outputs_are_held_unless_every_provider_accepted_automatic_release(
        make_party: Any, make_agent: Any) -> None:
    """The controller's own guard: a released report under a review permit is held."""
    _, requester, agent, ds, permit_id = setup(make_party, make_agent,
                                               script_release="review")
    permit = requester.get(f"/permits/{permit_id}").json
    assert permit["script_release"] == "review"
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    agent.post("/agent/tasks/next")
    content = b"age_band,n\n0-17,12\n"
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "rows_read": 500, "bytes_read": 9000, "input_sha256": "a" * 64,
        "runner_image": "img", "outputs": [{
            "name": "t.csv", "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content), "decision": "released",
            "content_b64": base64.b64encode(content).decode()}]})
    assert r.status_code == 200 and r.json["state"] == "awaiting_review", r.json
    job = requester.get(f"/jobs/{job_id}").json
    assert "held for review" in job["reason"]
    assert [o["decision"] for o in job["outputs"]] == ["pending_review"]
    assert requester.get(f"/jobs/{job_id}/outputs/output-1").status_code == 404


def test_automatic_release_is_the_strictest_of_the_providers_choices(
        make_party: Any, make_agent: Any) -> None:
    a, b, requester = make_party("provider"), make_party("provider"), make_party("requester")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    req = request_access(requester, ds_a, ds_b)
    a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve", approval())
    r = b.post(f"/requests/{req['id']}/items/{ds_b['id']}/approve",
               approval(script_release="review"))
    assert requester.get(f"/permits/{r.json['permit_id']}").json["script_release"] == "review"


def test_a_failure_on_mock_data_gives_the_run_back(make_party: Any, make_agent: Any) -> None:
    _, requester, agent, ds, permit_id = setup(make_party, make_agent, max_runs=1)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    agent.post("/agent/tasks/next")
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 1
    # A mock failure carries nothing of a run on real data.
    for bad in ({"state": "released"}, {"rows_read": 5}, {"outputs": [{
            "name": "t.csv", "sha256": "0" * 64, "bytes": 0, "decision": "blocked"}]}):
        r = agent.post(f"/agent/jobs/{job_id}/result", {
            "state": "failed", "rows_read": 0, "bytes_read": 0, "outputs": [],
            "mock_failed": True, **bad})
        assert r.status_code == 400, (bad, r.json)
    console = "Traceback (most recent call last):\nKeyError: 'agegroup'\n"
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "failed", "reason": "the script failed on mock data", "rows_read": 0,
        "bytes_read": 0, "outputs": [], "log": console, "mock_failed": True})
    assert r.status_code == 200, r.json
    job = requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "failed" and job["log"] == console
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 0
    # The run given back is a run: the permit's only one can be used again, up to a cap of
    # free failures (each mock run uses the provider's agent).
    for i in range(1, MOCK_RETURNS_PER_RUN + 1):
        job_id = submit(requester, permit_id, ds["id"]).json["id"]
        agent.post("/agent/tasks/next")
        agent.post(f"/agent/jobs/{job_id}/result", {
            "state": "failed", "reason": "the script failed on mock data", "rows_read": 0,
            "bytes_read": 0, "outputs": [], "mock_failed": True})
        permit = requester.get(f"/permits/{permit_id}").json
        returned = min(i + 1, MOCK_RETURNS_PER_RUN)
        assert (permit["mock_returns"], permit["runs_used"]) == (
            returned, 0 if i < MOCK_RETURNS_PER_RUN else 1), i
    job = requester.get(f"/jobs/{job_id}").json
    assert "free failures on mock data are used up, so this one used a run" in job["reason"]
    assert submit(requester, permit_id, ds["id"]).status_code == 409  # no run left


def test_one_job_reads_one_version_of_a_code(make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    first = register(provider, agent, code="DS-VERSIONED")
    second = register(provider, agent, code="DS-VERSIONED")
    assert (first["version"], second["version"]) == (1, 2)
    req = request_access(requester, first, second)
    for ds in (first, second):
        provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval())
    permit_id = requester.get(f"/requests/{req['id']}").json["permit_id"]
    r = requester.post("/jobs", {"permit_id": permit_id, "script": SCRIPT,
                                 "dataset_ids": [first["id"], second["id"]]})
    assert r.status_code == 400 and "two versions of one dataset code" in r.json["rule"]
    assert submit(requester, permit_id, second["id"]).status_code == 201


def test_a_released_output_no_check_vouches_for_is_served_as_opaque_bytes(
        make_party: Any, make_agent: Any) -> None:
    """A name no agent check accepts (an older agent's, or a forged report's) has no kind:
    opaque bytes, an attachment, never sniffed; a checked table keeps its type."""
    _, requester, agent, ds, permit_id = setup(make_party, make_agent)
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    assert agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    files = {"notes.html": b"<script>alert(1)</script>", "table.csv": b"age_band,n\n0-17,12\n"}
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "img", "log": "", "outputs": [{
            "name": name, "sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c),
            "decision": "released", "reasons": [],
            "content_b64": base64.b64encode(c).decode()} for name, c in files.items()]})
    assert r.status_code == 200, r.json
    html = requester.get(f"/jobs/{job_id}/outputs/notes.html")
    assert html.mimetype == "application/octet-stream" and html.data == files["notes.html"]
    assert html.headers["Content-Disposition"] == 'attachment; filename="notes.html"'
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    table = requester.get(f"/jobs/{job_id}/outputs/table.csv")
    assert table.mimetype == "text/csv"
    assert table.headers["Content-Disposition"] == 'attachment; filename="table.csv"'
