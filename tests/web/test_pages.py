"""The web UI through Flask's test client: sessions, CSRF, cookies, the page policy, and
the API's authorization matrix applied to pages (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from pypdf import PdfReader
from sqlalchemy import select

from authz.models import Person
from authz.web_sessions import WebSession
from compute.errors import Unauthenticated
from ledger.receipt import verify_receipt
from sandbox import auth, db
from tests.api.helpers import permit_for, request_access
from tests.api.test_read_path import selects
from tests.conftest import PASSWORD, Actor
from tests.web.conftest import World
from tests.web.helpers import Browser

REQUEST_FORM = {"purpose": "Average treatment cost by age band, for pricing.",
                "use_kind": "statistics", "business_system": "pricing-v2",
                "columns": ["age", "cost"]}


def _cookie_header(r: Any, name: str) -> str:
    found = [h for h in r.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert found, f"no {name} cookie set"
    return str(found[0])


def _ledger(reader: Actor) -> list[dict[str, Any]]:
    r = reader.get("/ledger/entries?start=0&end=100000")
    return [json.loads(base64.b64decode(e["data"])) for e in r.json["entries"]]


def test_sign_in_starts_a_server_side_session_with_a_hardened_cookie(
        app: Flask, world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    r = analyst.get("/requester/catalog")
    assert r.status_code == 200 and world.dataset["code"] in r.get_data(as_text=True)
    fresh = Browser(app.test_client(), analyst.email)
    fresh.get("/sign-in")
    signed = fresh.post("/sign-in", {"email": analyst.email, "password": PASSWORD})
    header = _cookie_header(signed, "sandbox_web")
    assert "HttpOnly" in header and "SameSite=Lax" in header
    assert "Secure" not in header  # plain HTTP on loopback, WEB_COOKIE_SECURE=auto
    secret = header.split("=", 1)[1].split(";", 1)[0]
    assert secret not in signed.headers.get("Location", "")  # never in a URL
    with app.app_context():
        stored = db.services().sessions().scalars(select(WebSession)).all()
        assert stored and all(secret not in (w.id + w.csrf_token) for w in stored)


def test_secure_cookies_when_configured(app: Flask, world: World, person: Any) -> None:
    app.config["WEB_COOKIE_SECURE"] = "always"
    analyst: Browser = person(world.requester, "analyst")
    again = Browser(app.test_client(), analyst.email)
    r = again.sign_in()
    assert "Secure" in _cookie_header(r, "sandbox_web")


def test_pages_have_a_policy_without_inline_script_and_the_api_keeps_its_own(
        world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    r = analyst.get("/requester/catalog")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    html = r.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
    assert " style=" not in html and "<style" not in html
    api = world.requester.get("/datasets")
    assert api.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_a_form_without_its_csrf_token_changes_nothing(
        world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    path = f"/requester/requests/new?dataset_id={world.dataset['id']}"
    analyst.get(path)
    for bad in ({"csrf_token": ""}, {"csrf_token": "forged"}):
        r = analyst.post(path, {**REQUEST_FORM, **bad})
        assert r.status_code == 403
    r = analyst.post(path, REQUEST_FORM, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert world.requester.get("/requests").json["requests"] == []
    ok = analyst.post(path, REQUEST_FORM)
    assert ok.status_code == 302
    assert len(world.requester.get("/requests").json["requests"]) == 1


def test_sign_in_itself_needs_the_anonymous_csrf_token(app: Flask, world: World,
                                                       person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    stranger = app.test_client()
    r = stranger.post("/sign-in", data={"email": analyst.email, "password": PASSWORD})
    assert r.status_code == 403


def test_a_wrong_password_or_code_is_one_401(app: Flask, world: World, person: Any,
                                             admin: Actor) -> None:
    analyst: Browser = person(world.requester, "analyst")
    other = Browser(app.test_client(), analyst.email)
    r = other.sign_in(password="wrong password entirely")
    assert r.status_code == 401 and "sandbox_web=" not in str(r.headers.getlist("Set-Cookie"))
    # With TOTP enrolled, the password alone is not enough.
    with app.app_context():
        s = db.services().sessions()
        row = s.scalars(select(Person).where(Person.email == analyst.email)).one()
        row.totp_secret, row.totp_enabled = pyotp.random_base32(), True
        secret = row.totp_secret
        s.commit()
    assert Browser(app.test_client(), analyst.email).sign_in().status_code == 401
    r = Browser(app.test_client(), analyst.email).sign_in(totp=pyotp.TOTP(secret).now())
    assert r.status_code == 302


def test_sign_out_idle_expiry_and_deactivation_end_the_session(
        app: Flask, world: World, person: Any, admin: Actor) -> None:
    analyst: Browser = person(world.requester, "analyst")
    assert analyst.get("/requester/jobs").status_code == 200
    analyst.get("/requester/jobs")
    analyst.post("/sign-out")
    assert analyst.get("/requester/jobs").status_code == 302  # to the sign-in page
    # Idle: a session whose last request is older than WEB_IDLE_S is over.
    analyst.sign_in()
    assert analyst.get("/requester/jobs").status_code == 200
    with app.app_context():
        s = db.services().sessions()
        for row in s.scalars(select(WebSession)).all():
            row.last_seen_at = row.last_seen_at - timedelta(
                seconds=int(app.config["WEB_IDLE_S"]) + 1)
        s.commit()
    assert analyst.get("/requester/jobs").status_code == 302
    analyst.sign_in()
    assert analyst.get("/requester/jobs").status_code == 200
    pid = analyst.person_id  # type: ignore[attr-defined]
    assert admin.post(f"/people/{pid}/deactivate").status_code == 200
    assert analyst.get("/requester/jobs").status_code == 302
    # Deactivating the party ends its people's sessions too (checked on every request).
    steward: Browser = person(world.other_provider, "approver")
    assert steward.get("/provider/usage").status_code == 200
    assert admin.post(f"/parties/{world.other_provider.id}/deactivate").status_code == 200
    assert steward.get("/provider/usage").status_code == 302


def test_a_page_reads_its_party_and_person_only_if_still_active(
        app: Flask, world: World, person: Any, admin: Actor) -> None:
    # The session check reads plain columns; the party's and person's rows, read later
    # only for a view that needs them, are checked active again (fail closed).
    steward: Browser = person(world.other_provider, "approver")
    pid = steward.person_id  # type: ignore[attr-defined]
    assert admin.post(f"/parties/{world.other_provider.id}/deactivate").status_code == 200
    with app.test_request_context("/provider/usage"):
        auth.act_as_checked(world.other_provider.id, pid)
        with pytest.raises(Unauthenticated):
            auth.party()
        with pytest.raises(Unauthenticated):
            auth.person()


def test_pages_apply_the_api_role_matrix(world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    checker: Browser = person(world.provider, "output_checker")
    approver: Browser = person(world.provider, "approver")
    assert analyst.get("/provider/inbox").status_code == 403
    assert approver.get("/regulator/ledger").status_code == 403
    assert analyst.get("/operator/").status_code == 403
    req = request_access(world.requester, world.dataset)
    checker.get("/provider/inbox")
    path = f"/provider/inbox/{req['id']}/{world.dataset['id']}/approve"
    form = {"columns": ["age"], "days": "30", "max_runs": "3", "min_cell_count": "10",
            "risk_assessment": "aggregates only", "script_release": "automatic"}
    assert checker.post(path, form).status_code == 403  # an output checker may not decide
    assert checker.get("/provider/datasets/new").status_code == 403  # nor register
    approver.get("/provider/inbox")
    assert approver.post(path, form).status_code == 302
    assert world.requester.get(f"/requests/{req['id']}").json["status"] == "approved"


def test_a_web_action_names_the_person_on_the_ledger(world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    path = f"/requester/requests/new?dataset_id={world.dataset['id']}"
    analyst.get(path)
    assert analyst.post(path, REQUEST_FORM).status_code == 302
    created = [e for e in _ledger(world.regulator) if e["kind"] == "request.created"]
    assert created[-1]["actor"] == analyst.person_id  # type: ignore[attr-defined]
    assert created[-1]["body"]["acting_for"] == world.requester.id
    signed = [e for e in _ledger(world.regulator) if e["kind"] == "person.signed_in"
              and e["body"].get("channel") == "web"]
    assert signed


def test_a_page_never_shows_another_party_s_objects(
        world: World, person: Any) -> None:
    ds, permit_id = permit_for(world.requester, world.provider, world.agent)
    job = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                         "script": "print('hi')\n"}).json
    other_analyst: Browser = person(world.other_requester, "analyst")
    other_approver: Browser = person(world.other_provider, "approver")
    assert other_analyst.get(f"/requester/jobs/{job['id']}").status_code == 404
    assert other_analyst.get(f"/requester/jobs/{job['id']}/receipt").status_code == 404
    for page_path in ("/requester/jobs", "/requester/requests"):
        assert job["id"] not in other_analyst.get(page_path).get_data(as_text=True)
        assert permit_id not in other_analyst.get(page_path).get_data(as_text=True)
    for page_path in ("/provider/inbox", "/provider/usage", "/provider/permits",
                      "/provider/datasets"):
        text = other_approver.get(page_path).get_data(as_text=True)
        assert job["id"] not in text and permit_id not in text and ds["id"] not in text
    mine: Browser = person(world.requester, "analyst")
    assert job["id"] in mine.get("/requester/jobs").get_data(as_text=True)
    assert mine.get(f"/requester/jobs/{job['id']}").status_code == 200


def test_the_job_list_page_shows_the_api_s_plain_rows_newest_first(
        app: Flask, world: World, person: Any) -> None:
    ds, permit_id = permit_for(world.requester, world.provider, world.agent)
    ids = [world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                          "script": "print('hi')\n"}).json["id"]
           for _ in range(3)]
    mine: Browser = person(world.requester, "analyst")
    assert mine.get("/requester/jobs").status_code == 200
    with selects(app) as seen:
        text = mine.get("/requester/jobs").get_data(as_text=True)
    assert sorted(ids, key=text.index) == ids[::-1]
    # The list is the API's one statement (authz/job_list.py), not the ORM's rows read
    # again per job for its outputs; the party comes from the checked session.
    on_jobs = [st for st in seen if " jobs" in st.split("WHERE")[0]]
    assert len(on_jobs) == 1, seen
    assert not [st for st in seen if "FROM parties" in st.split("JOIN")[0]
                and "web_sessions" not in st], seen


def test_approval_with_conditions_and_revocation_through_pages(
        world: World, person: Any) -> None:
    req = request_access(world.requester, world.dataset)
    approver: Browser = person(world.provider, "approver")
    approver.get("/provider/inbox")
    r = approver.post(f"/provider/inbox/{req['id']}/{world.dataset['id']}/approve", {
        "columns": ["age", "cost"], "days": "10", "max_runs": "4", "min_cell_count": "15",
        "risk_assessment": "aggregates only", "script_release": "review"})
    assert r.status_code == 302
    permit_id = world.requester.get(f"/requests/{req['id']}").json["permit_id"]
    permit = world.requester.get(f"/permits/{permit_id}").json
    assert permit["max_runs"] == 4 and permit["min_cell_count"] == 15
    assert permit["columns"] == {world.dataset["id"]: ["age", "cost"]}
    approver.get("/provider/permits")
    r = approver.post(f"/provider/permits/{permit_id}/revoke", {"reason": "no"})
    assert r.status_code == 400  # too short: the service's rule, shown on the page
    assert "reason" in r.get_data(as_text=True)
    r = approver.post(f"/provider/permits/{permit_id}/revoke", {"reason": "study ended"})
    assert r.status_code == 302
    assert world.requester.get(f"/permits/{permit_id}").json["status"] == "revoked"


def test_a_job_submitted_through_the_page_and_its_progress(
        world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    ds, permit_id = permit_for(world.requester, world.provider, world.agent,
                               people=(analyst.person_id,))  # type: ignore[attr-defined]
    analyst.get("/requester/jobs/new")
    r = analyst.post("/requester/jobs/new", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                             "kind": "script", "script": "print(1\n"})
    assert r.status_code == 400 and "syntax error at line" in r.get_data(as_text=True)
    r = analyst.post("/requester/jobs/new", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                             "kind": "script", "script": "print(1)\n"})
    assert r.status_code == 302
    page = analyst.get(r.headers["Location"]).get_data(as_text=True)
    assert 'http-equiv="refresh"' in page and "aria-current=\"step\"" in page
    jobs = world.requester.get("/jobs").json["jobs"]
    assert len(jobs) == 1 and jobs[0]["state"] == "queued"


def test_the_regulator_explores_filters_and_exports(world: World, person: Any) -> None:
    request_access(world.requester, world.dataset)
    auditor: Browser = person(world.regulator, "auditor")
    text = auditor.get("/regulator/ledger?kind=request.").get_data(as_text=True)
    assert "request.created" in text and "dataset.registered" not in text
    text = auditor.get(f"/regulator/ledger?party={world.other_provider.id}").get_data(
        as_text=True)
    assert "request.created" not in text
    assert auditor.get("/regulator/ledger?kind=%3Cscript%3E").status_code == 400
    csv = auditor.get("/regulator/report.csv?quarter=2026Q4")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert csv.get_data(as_text=True).lstrip("\ufeff").startswith("index,time,job")
    assert "attachment" in csv.headers["Content-Disposition"]
    assert auditor.get("/regulator/report?quarter=2026Q5").status_code == 400


def test_language_follows_the_browser_and_the_switch(world: World, person: Any) -> None:
    analyst: Browser = person(world.requester, "analyst")
    zh = analyst.get("/requester/catalog", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert 'lang="zh-Hans"' in zh.get_data(as_text=True)
    assert "数据目录" in zh.get_data(as_text=True)
    analyst.post("/language", {"lang": "en", "next": "/requester/catalog"})
    en = analyst.get("/requester/catalog", headers={"Accept-Language": "zh-CN"})
    assert 'lang="en"' in en.get_data(as_text=True) and "Catalog" in en.get_data(as_text=True)
    for elsewhere in ("//evil.example/", "/\\evil.example", "/\t/evil.example",
                      "https://evil.example/"):
        unsafe = analyst.post("/language", {"lang": "zh", "next": elsewhere})
        assert unsafe.headers["Location"] == "/"  # never to another site


def test_the_operator_sees_parties_people_agents_and_the_queue(
        world: World, person: Any, admin: Actor) -> None:
    operator: Browser = person(admin, "admin")
    text = operator.get("/operator/").get_data(as_text=True)
    assert world.provider.id in text and world.agent.id in text and 'id="queue"' in text
    assert 'class="agent-seen">never<' in text  # the agent has not polled yet
    # Agent health: each poll says the agent's runtime and slots; the controller counts
    # the slots its jobs hold.
    bad = world.agent.post("/agent/tasks/next", {"runtime": "run sc;", "slots": 2})
    assert bad.status_code == 400 and bad.json["field"] == "runtime"
    ds, permit_id = permit_for(world.requester, world.provider, world.agent)
    job_id = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                            "script": "print(1)\n"}).json["id"]
    task = world.agent.post("/agent/tasks/next", {"runtime": "runsc", "slots": 2}).json
    assert task["task"]["job_id"] == job_id
    text = operator.get("/operator/").get_data(as_text=True)
    assert 'class="agent-seen">never<' not in text and "<code>runsc</code>" in text
    assert re.search(r'class="agent-busy">1 / 2<', text)


def test_released_outputs_are_shown_escaped_downloaded_and_receipted(
        app: Flask, world: World, person: Any) -> None:
    ds, permit_id = permit_for(world.requester, world.provider, world.agent)
    job_id = world.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                            "script": "print(1)\n"}).json["id"]
    assert world.agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    world.agent.post(f"/agent/jobs/{job_id}/started")
    content = b"diagnosis,n\n<script>alert(1)</script>,12\n"
    r = world.agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "runner:test", "log": "done",
        "outputs": [{"name": "table.csv", "sha256": hashlib.sha256(content).hexdigest(),
                     "bytes": len(content), "decision": "released", "reasons": [],
                     "content_b64": base64.b64encode(content).decode()}]})
    assert r.status_code == 200, r.json
    analyst: Browser = person(world.requester, "analyst")
    page = analyst.get(f"/requester/jobs/{job_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'http-equiv="refresh"' not in page  # ended: no more refreshing
    out = analyst.get(f"/requester/jobs/{job_id}/outputs/table.csv")
    assert out.data == content and out.headers["Content-Disposition"].startswith("attachment")
    assert analyst.get(f"/requester/jobs/{job_id}/receipt").status_code == 404  # not yet
    with app.app_context():
        db.services(app).checkpointer.sign_now()
    receipt = analyst.get(f"/requester/jobs/{job_id}/receipt")
    assert receipt.status_code == 200 and "attachment" in receipt.headers["Content-Disposition"]
    assert verify_receipt(receipt.data, db.services(app).signer.vkey())["body"]["job_id"] \
        == job_id
    assert page.count("<rect") == 1  # the table's n by diagnosis, as a chart
    auditor: Browser = person(world.regulator, "auditor")
    now = datetime.now(UTC)
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    report = auditor.get(f"/regulator/report?quarter={quarter}").get_data(as_text=True)
    assert job_id in report and report.count("<rect") == 2  # per user, per dataset
    csv = auditor.get(f"/regulator/report.csv?quarter={quarter}").get_data(as_text=True)
    assert job_id in csv and "table.csv" in csv
    pdf = auditor.client.get(f"/regulator/report.pdf?quarter={quarter}",
                             headers={"Accept-Language": "zh-CN"})
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"].startswith("attachment")
    # Wrapped cells break lines: compare without whitespace.
    text = "".join("".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages
                           ).split())
    assert "季度报告" in text and job_id in text and "table.csv" in text

