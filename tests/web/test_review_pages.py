"""Release review and script approval through the provider's pages, and the requester's
mock data and job code (Flask's test client, SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from tests.api.helpers import permit_for, register
from tests.web.conftest import World
from tests.web.helpers import Browser

TABLE = b"diagnosis,n\n<script>alert(1)</script>,12\nJ45,40\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SCRIPT = "import pandas as pd\nprint('<b>bold</b>')\n"


def held_job(world: World, permit_id: str, ds_id: str, *outputs: tuple[str, bytes]) -> str:
    """A job whose run ended with ``outputs`` held for review, as the agent reports it."""
    r = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                       "script": SCRIPT})
    assert r.status_code == 201, r.json
    job_id: str = r.json["id"]
    assert world.agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    r = world.agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "awaiting_review", "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "img", "outputs": [{
            "name": name, "sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c),
            "decision": "pending_review", "reasons": ["passed the file checks"],
            "content_b64": base64.b64encode(c).decode()} for name, c in outputs]})
    assert r.status_code == 200 and r.json["state"] == "awaiting_review", r.json
    return job_id


def review_permit(world: World, quorum: int) -> tuple[dict[str, Any], str]:
    return permit_for(world.requester, world.provider, world.agent,
                      script_release="review", review_quorum=quorum)


def test_the_review_page_shows_outputs_escaped_beside_findings_code_and_justification(
        world: World, person: Any) -> None:
    ds, permit_id = review_permit(world, 1)
    job_id = held_job(world, permit_id, ds["id"], ("t.csv", TABLE), ("chart.png", PNG))
    r = world.requester.post(f"/jobs/{job_id}/outputs/output-1/justification",
                             {"justification": "Counts by <i>diagnosis</i>, ten or more."})
    assert r.status_code == 200, r.json
    checker: Browser = person(world.provider, "output_checker")
    queue = checker.get("/provider/review/").get_data(as_text=True)
    assert job_id in queue and "/provider/review/" in checker.get(
        "/provider/inbox").get_data(as_text=True)  # the navigation links the queue
    page = checker.get(f"/provider/review/{job_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "print(&#39;&lt;b&gt;bold&lt;/b&gt;&#39;)" in page  # the code, escaped
    assert "Counts by &lt;i&gt;diagnosis&lt;/i&gt;" in page  # the justification, escaped
    assert "passed the file checks" in page  # the findings
    # The checker sees the script's own names beside the positional ones.
    assert "<code class=\"script-name\">t.csv</code>" in page
    assert "<code class=\"script-name\">chart.png</code>" in page
    # The image is never in the page: a download, as an attachment of its own type.
    assert "<img" not in page and "data:image" not in page
    img = checker.client.get(f"/provider/review/{job_id}/outputs/output-2")
    assert img.status_code == 200 and img.data == PNG and img.mimetype == "image/png"
    assert img.headers["Content-Disposition"].startswith("attachment")
    assert img.headers["X-Content-Type-Options"] == "nosniff"
    # Another provider's checker sees nothing of it; an approver is not a checker.
    outsider: Browser = person(world.other_provider, "output_checker")
    assert job_id not in outsider.get("/provider/review/").get_data(as_text=True)
    assert outsider.get(f"/provider/review/{job_id}").status_code == 404
    assert outsider.get(f"/provider/review/{job_id}/outputs/output-1").status_code == 404
    r = outsider.post(f"/provider/review/{job_id}/outputs/output-1",
                      {"decision": "approve", "comment": "looks fine to me"})
    assert r.status_code == 404
    approver: Browser = person(world.provider, "approver")
    assert approver.get(f"/provider/review/{job_id}").status_code == 403
    analyst: Browser = person(world.requester, "analyst")
    assert analyst.get("/provider/review/").status_code == 403
    assert world.requester.get(f"/jobs/{job_id}").json["state"] == "awaiting_review"


def test_two_checkers_release_through_the_page_and_the_quorum_is_shown(
        world: World, person: Any) -> None:
    ds, permit_id = review_permit(world, 2)
    job_id = held_job(world, permit_id, ds["id"], ("t.csv", TABLE))
    first: Browser = person(world.provider, "output_checker")
    second: Browser = person(world.provider, "output_checker")
    path = f"/provider/review/{job_id}/outputs/output-1"
    first.get(f"/provider/review/{job_id}")
    approve = {"decision": "approve", "comment": "bands of ten or more"}
    for bad in ({"csrf_token": ""}, {"csrf_token": "forged"}):
        assert first.post(path, {**approve, **bad}).status_code == 403
    r = first.post(path, {"decision": "approve", "comment": "x"})
    assert r.status_code == 400 and "comment" in r.get_data(as_text=True)
    assert world.requester.get(f"/jobs/{job_id}").json["outputs"][0]["reviews"] == []
    r = first.post(path, approve)
    assert r.status_code == 302
    after = first.get(r.headers["Location"]).get_data(as_text=True)
    assert "bands of ten or more" in after and 'name="decision"' not in after
    # The same person again: the service's refusal, on the page.
    r = first.post(path, approve)
    assert r.status_code == 409 and "different people" in r.get_data(as_text=True)
    assert world.requester.get(f"/jobs/{job_id}").json["state"] == "awaiting_review"
    # The second checker sees the first's decision and completes the quorum.
    page = second.get(f"/provider/review/{job_id}").get_data(as_text=True)
    assert "bands of ten or more" in page and 'name="decision"' in page
    assert second.post(path, {"decision": "approve", "comment": "agreed"}).status_code == 302
    job = world.requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "released" and len(job["outputs"][0]["reviews"]) == 2
    assert job_id not in second.get("/provider/review/").get_data(as_text=True)


def test_a_return_discards_the_output_and_the_requester_sees_why(
        world: World, person: Any) -> None:
    ds, permit_id = review_permit(world, 1)
    job_id = held_job(world, permit_id, ds["id"], ("chart.png", PNG))
    checker: Browser = person(world.provider, "output_checker")
    checker.get(f"/provider/review/{job_id}")
    r = checker.post(f"/provider/review/{job_id}/outputs/output-1",
                     {"decision": "return", "comment": "label the axes, band ages"})
    assert r.status_code == 302
    assert checker.client.get(f"/provider/review/{job_id}/outputs/output-1").status_code == 404
    job = world.requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "blocked" and job["outputs"][0]["decision"] == "returned"


def test_scripts_awaiting_approval_in_the_inbox(world: World, person: Any) -> None:
    ds, permit_id = permit_for(world.requester, world.provider, world.agent,
                               approve_scripts=True)
    first = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                           "script": SCRIPT}).json
    second = world.requester.post("/jobs", {"permit_id": permit_id,
                                            "dataset_ids": [ds["id"]],
                                            "script": SCRIPT + "# v2\n"}).json
    assert first["state"] == second["state"] == "awaiting_approval"
    approver: Browser = person(world.provider, "approver")
    inbox = approver.get("/provider/inbox").get_data(as_text=True)
    assert first["id"] in inbox and second["id"] in inbox
    assert "print(&#39;&lt;b&gt;bold&lt;/b&gt;&#39;)" in inbox and "<b>bold" not in inbox
    outsider: Browser = person(world.other_provider, "approver")
    assert first["id"] not in outsider.get("/provider/inbox").get_data(as_text=True)
    assert outsider.post(f"/provider/scripts/{first['id']}/approve").status_code == 404
    checker: Browser = person(world.provider, "output_checker")
    checker.get("/provider/inbox")
    assert checker.post(f"/provider/scripts/{first['id']}/approve").status_code == 403
    assert approver.post(f"/provider/scripts/{first['id']}/approve",
                         {"csrf_token": "forged"}).status_code == 403
    assert approver.post(f"/provider/scripts/{first['id']}/approve").status_code == 302
    assert world.requester.get(f"/jobs/{first['id']}").json["state"] == "queued"
    r = approver.post(f"/provider/scripts/{second['id']}/refuse", {"reason": "no"})
    assert r.status_code == 400  # too short: the service's rule, on the page
    r = approver.post(f"/provider/scripts/{second['id']}/refuse",
                      {"reason": "reads every column; narrow it"})
    assert r.status_code == 302
    job = world.requester.get(f"/jobs/{second['id']}").json
    assert job["state"] == "blocked" and "narrow it" in job["reason"]


def test_mock_data_download_and_the_job_s_code_for_the_requester(
        world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    page = analyst.get(f"/requester/datasets/{world.dataset['id']}").get_data(as_text=True)
    link = f"/requester/datasets/{world.dataset['id']}/mock-data.csv"
    assert link in page
    r = analyst.get(link)
    api = world.requester.get(f"/datasets/{world.dataset['id']}/mock-data")
    assert r.status_code == 200 and r.mimetype == "text/csv" and r.data == api.data
    assert r.headers["Content-Disposition"].startswith("attachment")
    # A dataset its provider's agent has not checked yet is nobody else's to see.
    unchecked = register(world.other_provider)
    assert analyst.get(f"/requester/datasets/{unchecked['id']}/mock-data.csv"
                       ).status_code == 404
    ds, permit_id = permit_for(world.requester, world.provider, world.agent)
    job = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                         "script": SCRIPT}).json
    page = analyst.get(f"/requester/jobs/{job['id']}").get_data(as_text=True)
    assert "print(&#39;&lt;b&gt;bold&lt;/b&gt;&#39;)" in page and "<b>bold" not in page


def test_a_released_chart_downloads_as_the_api_serves_it(world: World, person: Any) -> None:
    """The requester's page download and the API's are one response: the checked kind's
    type (not text/csv for everything not JSON), nosniff, a file name with its extension."""
    ds, permit_id = review_permit(world, 1)
    job_id = held_job(world, permit_id, ds["id"], ("t.csv", TABLE), ("chart.png", PNG))
    checker: Browser = person(world.provider, "output_checker")
    checker.get(f"/provider/review/{job_id}")
    for name in ("output-1", "output-2"):
        assert checker.post(f"/provider/review/{job_id}/outputs/{name}", {
            "decision": "approve", "comment": "bands of ten or more"}).status_code == 302
    analyst: Browser = person(world.requester, "analyst")
    page = analyst.get(f"/requester/jobs/{job_id}").get_data(as_text=True)
    assert "PNG" not in page  # the chart's bytes are never shown as text in the page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the table is, escaped
    for name, ext, mimetype in [("output-1", "csv", "text/csv"),
                                ("output-2", "png", "image/png")]:
        web = analyst.client.get(f"/requester/jobs/{job_id}/outputs/{name}")
        api = world.requester.get(f"/jobs/{job_id}/outputs/{name}")
        for r in (web, api):
            assert r.status_code == 200 and r.mimetype == mimetype
            assert r.headers["Content-Disposition"] == f'attachment; filename="{name}.{ext}"'
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert web.data == api.data
