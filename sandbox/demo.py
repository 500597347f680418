"""`make demo`: scenario 1 (an insurer and three hospitals), end to end, on embedded defaults.

An insurer asks three hospitals for average treatment cost by age band and diagnosis.
Every hospital keeps its table in its own domain, served by its own agent; jobs run in
isolated containers; only checked aggregates come out; a regulator verifies the ledger.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.wire import DatasetStatus, JobState
from containers.engine import docker_client
from containers.image import ensure_runner_image
from sandbox import create_app
from sandbox import regulator as reg
from sandbox.bootstrap import create_first_admin
from sandbox.client import ApiError, Client
from sandbox.demo_data import (
    COST_BY_AGE_AND_DIAGNOSIS,
    FIELDS,
    LOS_BY_DIAGNOSIS,
    RAW_ROW_DUMP,
    write_hospital,
)
from sandbox.demo_joint import joint_model, joint_statistics
from sandbox.demo_psi import bank_verification
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade

# What each hospital publishes about its columns' values: mock data is made from it.
DECLARED: dict[str, dict[str, Any]] = {
    "age": {"range": [0, 99]}, "sex": {"categories": ["F", "M"]},
    "diagnosis": {"categories": ["I21", "J18", "E11", "K35", "S72"]},
    "los": {"range": [1, 60]}, "cost": {"range": [100, 40000]}}
# A first try with a typo in a column name: it fails on the agent's mock run.
TYPO = COST_BY_AGE_AND_DIAGNOSIS.replace('groupby(["age_band", "diagnosis"]',
                                         'groupby(["age_band", "diagnosos"]')

HOSPITALS = [("City General Hospital", "H-CITY", 11, 2400),
             ("Riverside Hospital", "H-RIVER", 12, 1800),
             ("Mountain Clinic", "H-MOUNT", 13, 900)]


def step(n: int, text: str) -> None:
    print(f"\n[{n:02d}] {text}", flush=True)


def say(text: str) -> None:
    print(f"     {text}", flush=True)


def dataset_metadata(name: str, code: str, location: str) -> dict[str, Any]:
    return {"code": f"{code}-IPE", "name": f"{name} inpatient episodes", "category": "health",
            "summary": "One row per inpatient episode: age, sex, diagnosis, length of stay, "
                       "cost.", "format": "csv", "openness": "conditional",
            "update_cycle": "monthly", "publish_date": "2026-10-01",
            "fields": [{**f, **DECLARED.get(f["name"], {})} for f in FIELDS],
            "location": location}


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sandbox-demo-"))
    url = f"sqlite:///{work / 'sandbox.db'}"
    step(1, f"Embedded controller: SQLite at {work / 'sandbox.db'}, Alembic migrations applied")
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "LOG_ORIGIN": "demo.data-sandbox.local/log"})
    admin_token = create_first_admin(app, "Platform operator").token
    stack = EmbeddedStack(app).start()
    image = ensure_runner_image(docker_client())
    say(f"controller listening on {stack.url}; runner image {image.tag}")
    try:
        return run(stack, Client(stack.url, admin_token), image.tag, work)
    finally:
        stack.stop()


def run(stack: EmbeddedStack, admin: Client, image: str, work: Path) -> int:
    step(2, "Operator registers parties; each hospital gets its own agent and domain")
    hospitals = []
    for name, code, seed, rows in HOSPITALS:
        p = admin.post("/parties", {"name": name, "role": "provider", "code": code})
        root = work / "domains" / code
        write_hospital(root, seed, rows, code)
        key = Ed25519PrivateKey.generate()
        agent = admin.post("/agents", {"name": f"{code} agent", "providers": [p["id"]],
                                       "public_key": key.public_key().public_bytes_raw().hex()})
        stack.start_agent(agent["token"], [root], work / "jobs" / code, image, signing_key=key)
        hospitals.append({"name": name, "code": code, "id": p["id"], "rows": rows, "root": root,
                          "client": Client(stack.url, p["token"])})
        say(f"{name} ({code}): {rows} synthetic episodes in {root}")
    insurer_p = admin.post("/parties", {"name": "Harbor Mutual Insurance", "role": "requester"})
    insurer = Client(stack.url, insurer_p["token"])
    regulator_p = admin.post("/parties", {"name": "Municipal Data Bureau", "role": "regulator"})
    regulator_token = regulator_p["token"]
    regulator = Client(stack.url, regulator_token)
    say("requester: Harbor Mutual Insurance; regulator: Municipal Data Bureau")

    step(3, "Hospitals register datasets; each agent checks the file against the schema")
    for h in hospitals:
        ds = h["client"].post("/datasets", dataset_metadata(h["name"], h["code"],
                                                            "inpatient_episodes.csv"))
        h["dataset"] = ds["id"]
        say(f"{ds['code']}: {ds['status']}, {ds['rows']} rows (raw rows never leave)")
        if ds["status"] != DatasetStatus.ACTIVE:
            return 1
    bad = dataset_metadata("City General Hospital", "H-CITY", "inpatient_episodes.csv")
    bad["code"] = "H-CITY-WRONG"
    bad["fields"] = [{**f, "type": "integer"} if f["name"] == "cost" else f for f in FIELDS]
    try:
        hospitals[0]["client"].post("/datasets", bad)
    except ApiError as e:
        say(f"a mis-declared dataset is refused: HTTP {e.status} {e.body['field']}: "
            f"{e.body['rule']}")

    step(4, "Insurer applies for age, sex, diagnosis and cost of all three hospitals")
    req = insurer.post("/requests", {
        "purpose": "Average treatment cost by age band and diagnosis, for pricing review.",
        "use_kind": "statistics", "business_system": "harbor-pricing-2026",
        "items": [{"dataset_id": h["dataset"], "columns": ["age", "sex", "diagnosis", "cost"]}
                  for h in hospitals]})
    say(f"request {req['id']}: {req['status']}")

    step(5, "Each hospital approves its own item after a risk assessment")
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for i, h in enumerate(hospitals):
        r = h["client"].post(f"/requests/{req['id']}/items/{h['dataset']}/approve", {
            "expires_at": expires, "max_runs": 10, "min_cell_count": 10 + 5 * (i == 2),
            "risk_assessment": "aggregates by band only; identifiers not requested",
            # Each hospital accepts, for this use, that script outputs passing the automatic
            # checks are released without a human decision (the default holds them).
            "script_release": "automatic"})
        say(f"{h['code']} approved -> request {r['status']}")
    permit = insurer.get(f"/permits/{r['permit_id']}")
    say(f"permit {permit['id']}: max_runs={permit['max_runs']}, min_cell_count="
        f"{permit['min_cell_count']} (strictest wins), classification={permit['classification']}")

    step(6, "A second request asks for patient identifiers; the hospital denies it")
    req2 = insurer.post("/requests", {
        "purpose": "Link episodes to our policyholders by patient number.",
        "use_kind": "statistics", "business_system": "harbor-claims",
        "items": [{"dataset_id": hospitals[0]["dataset"], "columns": ["patient_id", "cost"]}]})
    r2 = hospitals[0]["client"].post(f"/requests/{req2['id']}/items/{hospitals[0]['dataset']}"
                                     "/deny", {"reason": "identifiers never leave the hospital"})
    say(f"request {req2['id']}: {r2['status']} ({r2['items'][0]['reason']})")

    step(7, "Insurer develops on mock data, then runs its analysis in each hospital's domain")
    mock = insurer.text(f"/datasets/{hospitals[0]['dataset']}/mock-data?rows=3").splitlines()
    say(f"mock data (from the declared fields only): {' | '.join(mock)}")
    job = insurer.wait_job(insurer.post("/jobs", {
        "permit_id": permit["id"], "dataset_ids": [hospitals[0]["dataset"]],
        "script": TYPO})["id"], timeout_s=180, poll_s=0.3)
    used = insurer.get(f"/permits/{permit['id']}")["runs_used"]
    say(f"a first try with a typo: {job['state']} on the agent's mock run, runs used: {used}")
    say(f"its whole console output comes back: {job['log'].strip().splitlines()[-1]}")
    if job["state"] != JobState.FAILED or used != 0:
        return 1
    for h in hospitals:
        job = insurer.post("/jobs", {"permit_id": permit["id"], "dataset_ids": [h["dataset"]],
                                     "script": COST_BY_AGE_AND_DIAGNOSIS})
        h["job"] = job["id"]
    checkers = ("Liu Yang", "Zhao Min", "Sun Li")
    for h, checker_name in zip(hospitals, checkers, strict=True):
        job = insurer.wait_job(h["job"], timeout_s=180, poll_s=0.3)
        if not job["outputs"]:
            print(f"{h['code']}: job {job['state']} without outputs: {job['reason']}")
            return 1
        if job["state"] == JobState.AWAITING_REVIEW:
            checked_by_a_person(stack, admin, h, checker_name, job)
            job = insurer.get(f"/jobs/{job['id']}")
        out = job["outputs"][0]
        say(f"{h['code']}: job {job['state']}, read {job['rows_read']} rows; "
            f"{out['name']} {out['decision']} {'; '.join(out['reasons'])}")
        table = fetch_output(insurer, h["job"], out["name"]).splitlines()
        for line in table[:4]:
            say(f"    {line}")
        if job["state"] != JobState.RELEASED:
            print("unexpected state", job)
            return 1

    step(8, "A hostile script dumps raw rows with a fake count column and prints them")
    job = insurer.post("/jobs", {"permit_id": permit["id"], "dataset_ids":
                                 [hospitals[0]["dataset"]], "script": RAW_ROW_DUMP})
    job = insurer.wait_job(job["id"], timeout_s=180, poll_s=0.3)
    say(f"job {job['state']}: {job['reason']}")
    say(f"console output the insurer receives: {job['log'].splitlines()[-1]}")
    if job["state"] != JobState.BLOCKED:
        return 1

    step(9, "Release review: people decide. City General's default holds script outputs for "
            "two output checkers")
    if not release_review(stack, admin, insurer, insurer_p["id"], hospitals[0]):
        return 1

    step(10, "Joint statistics over all three hospitals, combined under homomorphic encryption")
    joint_request = {
        "purpose": "Joint cost statistics across hospitals, encrypted; no hospital's own "
                   "figures to be revealed.", "use_kind": "joint_statistics",
        "business_system": "health-economics-2026",
        "items": [{"dataset_id": h["dataset"], "columns": ["age", "diagnosis", "cost", "los"]}
                  for h in hospitals]}
    try:
        insurer.post("/requests", joint_request)
        say("the insurer's joint request was accepted: it must not be")
        return 1
    except ApiError as e:
        say(f"the insurer asks too: HTTP {e.status} {e.body['error']}: it holds each "
            "hospital's own figures, which would subtract from a pooled one")
    institute_p = admin.post("/parties", {"name": "Harbor Health Economics Institute",
                                          "role": "requester"})
    institute = Client(stack.url, institute_p["token"])
    jreq = institute.post("/requests", joint_request)
    for h in hospitals:
        # One run per hospital for the statistics, one per hospital per model round.
        r = h["client"].post(f"/requests/{jreq['id']}/items/{h['dataset']}/approve", {
            "expires_at": expires, "max_runs": 30, "min_cell_count": 10,
            "risk_assessment": "encrypted aggregates over three hospitals only"})
    say(f"joint-statistics permit {r['permit_id']} for Harbor Health Economics Institute: "
        "approved by all three hospitals")
    if not joint_statistics(institute, r["permit_id"], hospitals, say):
        return 1
    if not joint_model(institute, r["permit_id"], hospitals, say):
        return 1

    step(11, "Scenario 3: a bank verifies a firm register against social-insurance filings "
             "by private set intersection")
    if not stack.hosts_any_domain:
        say("not on this stack: its agents are the three hospitals' of its compose file "
            "(`make demo` runs this step)")
    elif not bank_verification(stack, admin, image, work, expires, say):
        return 1

    step(12, "City General sees who used its data, when, for what and how much")
    for u in hospitals[0]["client"].get("/usage")["usage"]:
        say(f"{u['submitted_at'][:19]} {u['requester_name']} ({u['business_system']}): "
            f"{u['state']}, {u['rows_read']} rows, script {u['script_sha256'][:12]}")

    step(13, "Regulator verifies a result's receipt offline, then audits the whole log")

    vkey = regulator.text("/ledger/public-key")
    say(f"log public key: {vkey.strip()[:60]}...")
    receipt = wait_receipt(insurer, hospitals[0]["job"])
    say(f"the insurer hands over the receipt of job {hospitals[0]['job']} "
        f"(entry {receipt['index']}); ledger-verify checks it with the public key only:")
    ok = reg.verify_receipt(receipt, vkey, say)
    say("full audit with ledger-verify (rebuilds the Merkle tree from every entry):")
    ok = reg.audit(stack.url, regulator_token, vkey, work / "regulator-state", say) and ok
    print("\nledger verified" if ok else "\nLEDGER VERIFICATION FAILED", flush=True)
    return 0 if ok else 1


def person(stack: EmbeddedStack, admin: Client, party: Client, party_id: str, name: str,
           role: str) -> tuple[str, Client]:
    """A named, identified and accredited person of ``party_id``, signed in."""
    email = f"{name.lower().replace(' ', '.')}@{party_id}.example"
    password = secrets.token_urlsafe(18)
    made = party.post(f"/parties/{party_id}/people",
                      {"name": name, "email": email, "roles": [role], "password": password})
    admin.post(f"/people/{made['id']}/identity", {"method": "photo ID checked in person"})
    now = datetime.now(UTC)
    admin.post(f"/people/{made['id']}/accreditations", {
        "kind": "safe researcher training", "awarded_at": now.isoformat(),
        "expires_at": (now + timedelta(days=365)).isoformat()})
    token = Client(stack.url).post("/sign-in", {"email": email, "password": password})["token"]
    return made["id"], Client(stack.url, token)


def checked_by_a_person(stack: EmbeddedStack, admin: Client, hospital: dict[str, Any],
                        name: str, job: dict[str, Any]) -> None:
    """The age bands are the script's own (pd.cut), so the agent cannot re-derive the
    table from the input and holds it: one of the hospital's output checkers reads the
    code, the table and the findings, and decides."""
    checker_id, checker = person(stack, admin, hospital["client"], hospital["id"], name,
                                 "output_checker")
    seen = checker.get(f"/reviews/{job['id']}")
    out = seen["outputs"][0]
    say(f"{hospital['code']}: job {job['state']}: the agent could not re-derive the "
        f"script's age bands; {len(out['findings'])} finding(s) for the checker, e.g. "
        f"{out['findings'][-1]}")
    checker.post(f"/reviews/{job['id']}/outputs/{out['name']}", {
        "decision": "approve", "comment": "four wide age bands, cells above the minimum"})
    say(f"    output checker {checker_id} read the code and the table, and approved")


def release_review(stack: EmbeddedStack, admin: Client, insurer: Client, insurer_id: str,
                   hospital: dict[str, Any]) -> bool:
    analyst_id, analyst = person(stack, admin, insurer, insurer_id, "Li Na", "analyst")
    checkers = [person(stack, admin, hospital["client"], hospital["id"], name,
                       "output_checker") for name in ("Wang Fang", "Zhang Wei")]
    approver_id, approver = person(stack, admin, hospital["client"], hospital["id"],
                                   "Chen Jie", "approver")
    req = analyst.post("/requests", {
        "purpose": "Length of stay by diagnosis, for a care-pathway review.",
        "use_kind": "statistics", "business_system": "harbor-care-2026",
        "items": [{"dataset_id": hospital["dataset"], "columns": ["diagnosis", "los"]}]})
    r = approver.post(f"/requests/{req['id']}/items/{hospital['dataset']}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(), "max_runs": 3,
        "min_cell_count": 10, "risk_assessment": "one table by diagnosis; reviewed by two",
        "review_quorum": 2})
    say(f"permit {r['permit_id']} approved by {approver_id} (a person, on the ledger); "
        "outputs go to review, two checkers each")
    job = analyst.post("/jobs", {"permit_id": r["permit_id"],
                                 "dataset_ids": [hospital["dataset"]], "script": LOS_BY_DIAGNOSIS})
    job = analyst.wait_job(job["id"], timeout_s=180, poll_s=0.3)
    say(f"job {job['id']} by {analyst_id}: {job['state']}")
    if job["state"] != JobState.AWAITING_REVIEW:
        return False
    name = job["outputs"][0]["name"]
    analyst.post(f"/jobs/{job['id']}/outputs/{name}/justification",
                 {"justification": "Five diagnosis groups, each of hundreds of episodes."})
    for checker_id, checker in checkers:
        seen = checker.get(f"/reviews/{job['id']}")
        checker.post(f"/reviews/{job['id']}/outputs/{name}", {
            "decision": "approve", "comment": "groups well above the minimum; no extremes"})
        say(f"output checker {checker_id} read the code and {name} "
            f"({len(seen['outputs'][0]['content'].splitlines())} lines) and approved")
    job = analyst.get(f"/jobs/{job['id']}")
    say(f"job {job['state']} after {job['outputs'][0]['review_s']} s of review; "
        f"the insurer now downloads {name}")
    return bool(job["state"] == JobState.RELEASED)


def fetch_output(client: Client, job_id: str, name: str, timeout_s: float = 30) -> str:
    """A released output's content. With witnesses configured (the compose demo) it is
    served once a checkpoint covering the result is cosigned: 503 awaiting_witnesses
    until then, usually for a fraction of a second."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.http.get(f"{client.url}/api/v1/jobs/{job_id}/outputs/{name}", timeout=30)
        if r.status_code != 503 or time.monotonic() > deadline:
            return str(r.text)
        time.sleep(0.3)


def wait_receipt(client: Client, job_id: str, timeout_s: float = 10) -> dict[str, Any]:
    # The checkpointer signs within a fraction of a second of an append.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            receipt: dict[str, Any] = client.get(f"/jobs/{job_id}/receipt")
            return receipt
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
