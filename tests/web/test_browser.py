"""Each role's main journey in real headless Chromium, in English and in 简体中文.

The controller is a real server on 127.0.0.1 (sandbox.embedded, no agent process: jobs
are seen queued, progress and revocation included). Screenshots of every page visited:
build/web-screenshots/.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ledger.note import generate_signer
from sandbox import create_app
from sandbox.bootstrap import create_first_admin
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade
from tests.conftest import PASSWORD
from tests.web.browser import WAIT_S, Api, Page

pytestmark = pytest.mark.browser
SCRIPT = "import pandas as pd\nprint('mean cost by age band')\n"


@dataclass
class Live:
    url: str
    admin: Api
    admin_id: str
    stack: EmbeddedStack


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("web-live")
    url = f"sqlite:///{tmp / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(tmp / "log.key"),
                      "SCHEMA_CHECK_WAIT_S": 0.0, "AGENT_POLL_WAIT_S": 0.0,
                      "CHECKPOINT_INTERVAL_S": 0.2,
                      # Many sign-ins from one address within a minute in these tests.
                      "AUTH_FAILURES_PER_ADDRESS_PER_MIN": 1000})
    issued = create_first_admin(app, "operator")
    stack = EmbeddedStack(app).start()
    yield Live(stack.url, Api(stack.url, issued.token), issued.id, stack)
    stack.stop()


def org(live: Live, role: str) -> tuple[str, Api]:
    body = {"name": f"{role.title()} {uuid.uuid4().hex[:4]}", "role": role}
    if role == "provider":
        body["code"] = f"H-{uuid.uuid4().hex[:6]}"
    made = live.admin.post("/parties", body)
    return made["id"], Api(live.url, made["token"])


def person(live: Live, party_id: str, *roles: str) -> str:
    email = f"{uuid.uuid4().hex[:10]}@example.org"
    made = live.admin.post(f"/parties/{party_id}/people", {
        "name": f"{roles[0].title()} Person", "email": email, "roles": list(roles),
        "password": PASSWORD})
    # Identity verified and accredited, as the operator records before anyone acts.
    now = datetime.now(UTC)
    live.admin.post(f"/people/{made['id']}/identity", {"method": "passport seen in person"})
    live.admin.post(f"/people/{made['id']}/accreditations", {
        "kind": "safe researcher training", "awarded_at": (now - timedelta(days=1)).isoformat(),
        "expires_at": (now + timedelta(days=365)).isoformat()})
    return email


def browser(pages: list[Page], live: Live, name: str, lang: str) -> Page:
    page = Page(live.url, name, lang)
    pages.append(page)
    return page


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_provider_and_requester_journey(live: Live, pages: list[Page], lang: str) -> None:
    zh = lang.startswith("zh")
    provider_id, _ = org(live, "provider")
    requester_id, requester_api = org(live, "requester")
    agent = live.admin.post("/agents", {"name": "agent", "providers": [provider_id]})
    agent_api = Api(live.url, agent["token"])
    steward = browser(pages, live, f"{lang}-provider", lang)
    steward.sign_in(person(live, provider_id, "dataset_steward", "approver", "output_checker"))
    assert ("待办" if zh else "Inbox") in steward.find("header nav").text
    assert steward.find("html").get_attribute("lang") == ("zh-Hans" if zh else "en")

    # Register a dataset through the form, with the field editor's extra row.
    code = f"EP-{uuid.uuid4().hex[:6]}"
    steward.open("/provider/datasets/new")
    steward.fill({"#code": code, "#name": "Inpatient episodes", "#category": "health",
                  "#summary": "One row per inpatient episode.", "#location": "episodes.csv"})
    steward.driver.execute_script(
        "document.getElementById('publish_date').value = '2026-01-15'")
    names = ["patient_id", "age", "sex", "diagnosis", "cost", "ward"]
    steward.find("#add-field").click()
    rows = steward.driver.find_elements(By.CSS_SELECTOR, "#field-editor tr.field-row")
    assert len(rows) == 7  # six empty rows, one added by the script
    levels = {"patient_id": "identifier", "cost": "sensitive"}
    for row, field in zip(rows, names, strict=False):
        row.find_element(By.NAME, "field_name").send_keys(field)
        row.find_element(By.CSS_SELECTOR, f"select[name=field_sensitivity] option[value="
                                          f"{levels.get(field, 'internal')}]").click()
        if field in ("age", "cost"):
            row.find_element(By.CSS_SELECTOR, "select[name=field_type] option[value="
                                              "integer]").click()
    steward.submit("main form button[type=submit]:not(#add-field)", "dataset-registered")
    assert "registered=" in steward.driver.current_url, steward.text()
    dataset_id = steward.driver.current_url.split("registered=")[1]
    agent_api.post(f"/agent/datasets/{dataset_id}/schema", {"ok": True, "rows": 500})
    steward.open("/provider/datasets")
    assert code in steward.text()

    # The analyst finds it, reads its fields and asks for two columns.
    analyst = browser(pages, live, f"{lang}-requester", lang)
    analyst.sign_in(person(live, requester_id, "analyst"))
    analyst.open(f"/requester/catalog?q={code}&field=cost")
    assert code in analyst.text()
    analyst.find(f"main table a[href$='{dataset_id}']").click()
    analyst.settle("dataset")
    assert "identifier" in analyst.text()
    assert "mock-data.csv" in (analyst.find("#mock-data").get_attribute("href") or "")
    analyst.find("#request-access").click()
    analyst.settle("request-form")
    analyst.find("#col-age").click()
    analyst.find("#col-cost").click()
    analyst.fill({"#purpose": "Average treatment cost by age band, for pricing.",
                  "#business_system": "pricing-v2"})
    analyst.submit("main form button[type=submit]", "request-sent")
    assert ("待决定" if zh else "pending") in analyst.find("#requests").text

    # The approver decides with conditions.
    steward.open("/provider/inbox")
    assert "pricing-v2" in steward.text() and "age, cost" in steward.text()
    steward.fill({"section.card input[name=max_runs]": "3",
                  "section.card textarea[name=risk_assessment]": "aggregates only"})
    # In English the script's outputs are held for release review; in 简体中文, automatic.
    review = not zh
    release = "review" if review else "automatic"
    steward.find(f"section.card select[name=script_release] option[value={release}]").click()
    steward.submit("section.card form button[type=submit]", "approved")
    permit_id = requester_api.get("/requests")["requests"][0]["permit_id"]
    assert permit_id

    # The analyst sees what is left of the permit and submits a script.
    analyst.open("/requester/requests")
    assert "3 / 3" in analyst.find("#permits").text
    analyst.open("/requester/jobs/new")
    analyst.find(f"input[name=dataset_ids][value='{dataset_id}']").click()
    analyst.fill({"#script": SCRIPT})
    analyst.submit("main form button[type=submit]", "job-submitted")
    assert "/requester/jobs/job_" in analyst.driver.current_url
    assert analyst.text_of("#job-state") == ("排队中" if zh else "queued")
    assert analyst.text_of("ol.steps li[aria-current=step]") == ("排队中" if zh else "queued")

    # The provider's agent runs it (over the agent API, as the agent process does); the
    # job page, refreshing itself, shows the released table and offers the receipt.
    job_id = analyst.driver.current_url.rsplit("/", 1)[1]
    finish_run(agent_api, job_id, held=review)
    if review:  # an output checker reads the code and the table, and approves it
        steward.open("/provider/review/")
        steward.find(f"#review-queue a[href$='{job_id}']").click()
        steward.settle("review")
        assert "mean cost by age band" in steward.text_of("#job-code")
        assert "40-64,3105.2" in steward.text_of("pre.output-content")
        steward.find("section.card input[name=decision][value=approve]").click()
        steward.fill({"section.card textarea[name=comment]": "three wide age bands"})
        steward.submit("section.card form button[type=submit]", "review-decided")
        assert "three wide age bands" in steward.find("ul.decisions").text
    WebDriverWait(analyst.driver, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "table.result"))
    analyst.settle("job-released")
    table = analyst.find("table.result")
    assert [c.text for c in table.find_elements(By.CSS_SELECTOR, "th")] == ["age_band",
                                                                           "mean_cost"]
    assert "40-64" in table.text
    bars = analyst.driver.find_elements(By.CSS_SELECTOR, "section.output figure.chart rect")
    assert len(bars) == 3  # mean_cost by age_band, beside the table
    fetch_receipt = ("const done = arguments[0]; fetch(document.querySelector("
                     "'a[href$=\"/receipt\"]').href).then(async (r) => done([r.status, "
                     "r.headers.get('content-disposition'), (await r.json()).format]));")
    deadline = time.monotonic() + WAIT_S
    receipt = analyst.driver.execute_async_script(fetch_receipt)
    while receipt[0] != 200 and time.monotonic() < deadline:  # until a checkpoint covers it
        time.sleep(0.2)
        receipt = analyst.driver.execute_async_script(fetch_receipt)
    assert receipt[0] == 200 and "attachment" in receipt[1]
    assert receipt[2] == "sandbox-ledger-receipt/v1"

    # A second job stays queued: revocation will cancel it.
    analyst.open("/requester/jobs/new")
    analyst.find(f"input[name=dataset_ids][value='{dataset_id}']").click()
    analyst.fill({"#script": SCRIPT})
    analyst.submit("main form button[type=submit]", "second-job-submitted")

    # Cookie flags as the browser holds them.
    cookie = analyst.driver.get_cookie("sandbox_web")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "sandbox_web" not in analyst.driver.current_url

    # Usage with its chart, then revocation, which cancels the queued job.
    steward.open("/provider/usage")
    assert len(steward.driver.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")) >= 2
    steward.open("/provider/permits")
    steward.fill({f"#why-{permit_id}": "study ended early"})
    steward.submit(f"form[action$='{permit_id}/revoke'] button", "revoked")
    assert ("已撤销" if zh else "revoked") in steward.find("#permits").text
    analyst.open("/requester/jobs")
    assert ("已取消" if zh else "cancelled") in analyst.text()


def test_regulator_verifies_an_entry_in_the_browser_and_exports(
        live: Live, pages: list[Page]) -> None:
    regulator_id, regulator_api = org(live, "regulator")
    auditor = browser(pages, live, "en-regulator", "en")
    auditor.sign_in(person(live, regulator_id, "auditor"))
    auditor.open("/regulator/ledger?kind=party.")
    assert "party.created" in auditor.find("#entries").text
    first = auditor.find("#entries tbody a")
    index = int(first.text)
    deadline = time.monotonic() + WAIT_S
    while int(regulator_api_checkpoint_size(regulator_api)) <= index:
        assert time.monotonic() < deadline, "no checkpoint covers the entry"
        time.sleep(0.2)
    first.click()
    auditor.settle("entry")
    result = auditor.find("#verify-result")
    auditor.find("#verify-button").click()
    WebDriverWait(auditor.driver, WAIT_S).until(
        lambda d: result.get_attribute("data-state") in ("verified", "failed"))
    auditor.settle("entry-verified")
    assert result.get_attribute("data-state") == "verified", result.text
    consistency = auditor.find("#consistency-result")
    assert consistency.get_attribute("data-state") == "saved", consistency.text
    # The log grows; verified again, the browser proves it extends the saved checkpoint.
    seen = regulator_api_checkpoint_size(regulator_api)
    org(live, "requester")
    deadline = time.monotonic() + WAIT_S
    while regulator_api_checkpoint_size(regulator_api) <= seen:
        assert time.monotonic() < deadline, "no new checkpoint"
        time.sleep(0.2)
    auditor.find("#verify-button").click()
    WebDriverWait(auditor.driver, WAIT_S).until(
        lambda d: consistency.get_attribute("data-state") in ("consistent", "failed"))
    auditor.settle("entry-consistent")
    assert consistency.get_attribute("data-state") == "consistent", consistency.text
    refused = auditor.driver.execute_async_script(FORK_JS)
    assert refused == ["rollback: the log is smaller than the saved checkpoint",
                       "the consistency proof does not match the roots",
                       "same size, different roots: the log forked"], refused
    # A key the checkpoint was not signed with: the browser refuses, whatever the server says.
    other = generate_signer("other.example/log")
    box = auditor.find("#vkey")
    box.clear()
    box.send_keys(other.verifier.vkey())
    auditor.find("#verify-button").click()
    WebDriverWait(auditor.driver, WAIT_S).until(
        lambda d: result.get_attribute("data-state") == "failed")
    auditor.settle("entry-wrong-key")
    assert "no valid signature" in result.text
    # The same rules as ledger-verify on altered receipts: entry, proof, checkpoint.
    outcomes = auditor.driver.execute_async_script(TAMPER_JS, auditor.find("#verify")
                                                   .get_attribute("data-receipt-url"))
    assert outcomes == {
        "intact": "ok",
        "entry": "the inclusion proof does not lead to the signed root",
        "proof": "the inclusion proof does not lead to the signed root",
        "size": "the receipt's tree size differs from the checkpoint's",
        "checkpoint": "a signature by data-sandbox.local/log on the checkpoint fails to "
                      "verify"}, outcomes
    auditor.open("/regulator/report")
    href = auditor.find("#csv-link").get_attribute("href")
    assert href and "report.csv" in href
    assert "report.pdf" in (auditor.find("#pdf-link").get_attribute("href") or "")


TAMPER_JS = """
const [url, done] = arguments;
const key = document.getElementById("vkey").dataset.serverVkey
  || document.getElementById("verify").dataset.serverVkey;
const flip = (b64text) => {
  const bytes = Uint8Array.from(atob(b64text), (c) => c.charCodeAt(0));
  bytes[bytes.length - 2] ^= 1;
  return btoa(String.fromCharCode(...bytes));
};
(async () => {
  const receipt = await (await fetch(url)).json();
  const cases = {
    intact: (r) => r,
    entry: (r) => ({...r, entry: flip(r.entry), leaf_hash: undefined}),
    proof: (r) => ({...r, inclusion_proof: [flip(r.inclusion_proof[0]),
                                            ...r.inclusion_proof.slice(1)]}),
    size: (r) => ({...r, tree_size: r.tree_size + 1}),
    checkpoint: (r) => ({...r, checkpoint: r.checkpoint.replace(/\\n[0-9]+\\n/,
      (m) => "\\n" + (parseInt(m.trim(), 10) + 1) + "\\n")}),
  };
  const out = {};
  for (const [name, change] of Object.entries(cases)) {
    try { await verifyReceipt(change(receipt), key); out[name] = "ok"; }
    catch (e) { out[name] = e.message; }
  }
  done(out);
})();
"""


FORK_JS = """
const done = arguments[0];
const root = new Uint8Array(32), other = new Uint8Array(32).fill(7);
const h = new Uint8Array(32).fill(1);
(async () => {
  const out = [];
  for (const args of [[5n, 3n, root, root, []], [3n, 5n, root, other, [h, h, h, h]],
                      [4n, 4n, root, other, []]]) {
    try { await verifyConsistency(...args); out.push("ok"); } catch (e) { out.push(e.message); }
  }
  done(out);
})();
"""


def finish_run(agent: Api, job_id: str, held: bool = False) -> None:
    """What the provider's agent reports after running the job: one checked table
    (``held``: waiting for release review)."""
    task = agent.post("/agent/tasks/next")["task"]
    assert task["job_id"] == job_id
    agent.post(f"/agent/jobs/{job_id}/started")
    content = b"age_band,mean_cost\n0-17,1520.5\n18-39,2210.0\n40-64,3105.2\n"
    agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "awaiting_review" if held else "released", "exit_code": 0,
        "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "data-sandbox-runner:test", "log": "",
        "outputs": [{"name": "table.csv", "sha256": hashlib.sha256(content).hexdigest(),
                     "bytes": len(content),
                     "decision": "pending_review" if held else "released", "reasons": [],
                     "content_b64": base64.b64encode(content).decode()}]})


def regulator_api_checkpoint_size(api: Api) -> int:
    r = requests.get(f"{api.url}/api/v1/ledger/checkpoint", timeout=30,
                     headers={"Authorization": f"Bearer {api.token}"})
    return int(r.text.split("\n")[1]) if r.status_code == 200 else 0


def test_operator_overview_and_language_switch(live: Live, pages: list[Page]) -> None:
    operator = browser(pages, live, "zh-operator", "zh-CN")
    operator.sign_in(person(live, live.admin_id, "admin"))
    assert operator.find("h1").text == "运营"
    assert "operator" in operator.find("#parties").text
    operator.find("#lang-choice option[value=en]").click()
    operator.submit("form.lang button", "switched-to-english")
    assert operator.find("h1").text == "Operations"


def test_csrf_refusal_and_policy_in_the_browser(live: Live, pages: list[Page]) -> None:
    requester_id, _ = org(live, "requester")
    analyst = browser(pages, live, "en-csrf", "en")
    analyst.sign_in(person(live, requester_id, "analyst"))
    analyst.open("/requester/catalog")
    # A forged form: the token field altered before the post.
    analyst.driver.execute_script(
        "document.querySelector('header form input[name=csrf_token]').value = 'forged'")
    analyst.submit("header .who form button", "csrf-refused")
    assert "Security check failed" in analyst.find("h1").text
    analyst.open("/requester/jobs")  # still signed in: the forged sign-out did nothing
    assert "My jobs" in analyst.find("h1").text
    answer = requests.get(f"{live.url}/sign-in", timeout=30)
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    # The browser enforces the policy: an injected inline script does not run.
    analyst.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = "
        "'document.body.dataset.injected = 1'; document.body.appendChild(s);")
    assert analyst.driver.execute_script("return document.body.dataset.injected") is None
    assert any("Content Security Policy" in e["message"] for e in analyst.console())
