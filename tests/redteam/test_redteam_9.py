"""Red team, ninth pass: differencing across routes (a joint job against single-provider
statistics jobs) and the joint route's new person units.

Same convention as ``test_redteam_3.py``: each test is an attack that computes what it
learns (``recovered``) and ends by asserting the defence, that this is not the secret.
While the leak is open that assertion fails and the test is marked ``leak`` (strict
xfail); the day a fix closes it strict xfail reports it and the marker goes (run with
``--runxfail`` to see each recovery).

Findings:

* R9-1 (medium-high, joint statistics against the statistics route; fixed): the joint
  route's promise beyond single records is that no party learns one provider's own
  aggregate (docs/joint-statistics.md: at least ``min_providers`` providers, "only the
  sum over all the job's providers is meaningful"; collusion with all providers but one
  is the stated limit). No collusion is needed. A requester holding a
  ``joint_statistics`` permit on hospitals A+B+C and ordinary ``statistics`` permits on
  B's and C's datasets (each granted by its own provider, for its own purpose) runs the
  joint job, then the same figure on B and on C through the statistics route, which
  releases a total over 800 episodes exactly (well above every threshold, no dominance).
  The pooled sum less the two is A's own exact total cost and count, to the cent; the
  same for every joint cell the statistics route releases at B and C (grouped sums,
  histograms, a model's sufficient statistics). ``authz.jobs.submit`` refuses plain jobs
  under the joint permit, and ``authz.joint.submit`` checks providers per job, but
  nothing looks at the requester's other permits: A, approving the joint item, cannot
  see them. Smallest fix: in ``authz.joint.submit``, refuse (``PolicyViolation``) a
  joint job when the requester holds a live permit of another ``use_kind`` (statistics,
  script) on datasets of ``n - 1`` or more of the job's ``n`` providers (and, in
  ``authz.access`` approval, refuse the converse grant while such a joint permit lives);
  docs/threat-model.md should then say the cross-permit case is covered. The in-process
  test below models the data flow; once the controller refuses, it is to be rewritten to
  submit through the API and assert the 409.
  R9-1b, the joint route alone: docs/joint-statistics.md requires a job's datasets to be
  exactly its permit's because "two joint jobs over different provider subsets (A+B+C
  and A+B+C+D) could otherwise be subtracted to give D's sums alone"; the check is per
  permit, so the same requester with two ``joint_statistics`` permits, one on A+B+C and
  one on A+B+C+D (two requests, each approved by its providers), subtracts them: D's
  exact total and count. The same holds for PSI (``authz.psi_jobs.submit`` checks the
  permit's datasets only): an intersection of T, S and one of T, C, S differ by the firms
  in T and S but not C. The same fix covers all three: compare with the requester's other
  live permits over the same providers, not only the job's own permit.
* R9-2 (high, PSI against the statistics route; fixed): a PSI release's per-category
  count and sum are over the server register's records that the client's set matches;
  the statistics route releases the same register's counts and sums per category over
  every record. Scenario 3 (tax register as client, social insurance as server): one
  Xuhui firm files social insurance but is missing from the tax register. The PSI
  release (every count 188-213, nothing suppressed or dominated) and an ordinary
  statistics job on the social insurance register (district, employees; no identifier)
  differ in Xuhui by one firm, and the two sums by its employee count, 4,321, exactly.
  Nothing compares the two: the PSI rules look at one release (primary, secondary and
  register-level dominance), the statistics route's differencing audit sketches only
  statistics and script populations, and no party could compare them in the protocol
  (only the client learns the cardinalities, only the server the register groups).
  The same works per category with 1..k-1 unmatched firms (their summed employees),
  and against a script's verified table of the register. Smallest fix: in
  ``authz.psi_jobs.submit``, refuse a PSI job when the requester holds a live permit of
  another ``use_kind`` on the holder's dataset (and refuse the converse at approval,
  ``authz.access``), since the register's own figures are the other side of every
  intersection figure; docs/joint-statistics.md (*Private set intersection*) should list
  the cross-route difference with the within-PSI ones it already lists.
* R9-3 (high, joint statistics against the statistics route's differencing audit; fixed):
  the audit compares a statistics or script cell with every population released to the
  requester from the same data, but a joint part's populations are never recorded in the
  provider's ``AuditStore``, so a joint release is an unaudited second release of the
  same records. The demo's own setup (a ``statistics`` request on each hospital and a
  ``joint_statistics`` one on all three): a joint job's total cost (no cell, no rule,
  every episode kept), less hospital A's cost-by-diagnosis margin and B's and C's
  totals (statistics route, each released: A's agent has released nothing before) is
  the one episode at A without a diagnosis: 31,337.25 exactly. Through the statistics
  route alone (A's total, then A's margin) R5-1's audit hits it. Smallest fix: in
  ``containers.joint_part.run_part``, after ``local_aggregate``, record in the provider's
  audit store, under the requester, the population of every statistic the part
  contributes (each summed column's kept present records, each explicit cell), in the
  spaces ``containers.audit_ids`` gives a statistics job, so later statistics and script
  cells are compared with them; and check the part's populations against those already
  released (a hit withdraws the records or fails the part, naming the rule), for the
  other order. Conservative (a pooled sum is compared as if it were the provider's own),
  which R9-1 shows it effectively is for a requester holding the other providers'
  figures.

Fixed, all four, by one rule at the controller (``authz/exclusive.py``): a requester's
pooled permit (joint statistics, PSI) shares no dataset with any other permit of the same
requester, unless both are the same pool asked for twice. A request that would is
refused at ``POST /requests`` (409 ``policy_violation``), as is a job under permits that
clash (issued before the rule). Each test below now first asks the controller for the
permits its attack needs, through the API, and is refused; the data flow after that is
kept to show what the permits would have given. Left open: two requester parties
colluding (docs/threat-model.md).

Also attacked and found stopped (one line each):

* joint persons: k episodes of one patient as a joint cell, and one patient's moderate
  episodes dominating a joint sum, are withdrawn per person (``compute.joint_units``;
  tests/containers/test_joint_persons.py); ``per_person``, ``cell_sizes``,
  ``value_holders`` and the GLM round's per-person totals were read for index and
  alignment errors (kept records, ``units[kept]``, ``units[ok]``): none found, and each
  rule is at least as strict by persons as by records (merging contributions only
  raises nk and p% concentration);
* joint vs statistics rule on signed values: the statistics and script routes take
  ``|sum|`` of a person's records, the joint route ``sum |x|``; a patient whose +A and
  -A records cancel is not dominant in a cell holding both, but a dimension that splits
  the two makes each cell dominated, and the margin only gives their sum (no recovery);
* three jobs across tables (A = B + C + one record with a missing dimension): every
  statistics-route table releases its ``All`` margin, so some pair of released
  populations differs by the record and the pairwise audit hits it (R5-1's family);
* the table-level ``differencing`` rule as a membership oracle: it says 1..k-1 records
  changed, which the withheld value's change would say anyway;
* the joint ``disclosure.suppressed`` count under a bisection of histogram edges: it
  answers "is some provider's tail bin 1..k-1 records", what the documented across-jobs
  count difference (docs/joint-statistics.md, *Limits*) already answers;
* a colluding operator registering two empty Sybil providers to pool with A alone: the
  operator controls parties and permits, which threat-model.md already lists as not
  defended (collusion on the permit itself).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from authz.wire import RunTask
from compute.psi import parse_psi_spec, run_psi
from compute.spec import parse_spec
from containers import jobdir, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from sandbox.demo_data import FIELDS, hospital_table
from tests.compute.harness import run_joint

MIN_CELL = 10
ROWS = 800
PERMITTED = ["age", "sex", "diagnosis", "los", "cost"]  # never patient_id
SCHEMA = {"age": "integer", "cost": "number", "los": "integer", "sex": "string",
          "diagnosis": "string"}


def controller_grants(make_party: Any, admin: Any, uses: list[tuple[str, list[int]]],
                      providers: int) -> bool:
    """Whether one requester gets every permit the attack needs, through the API: ``uses``
    are (use kind, provider numbers) requested in turn, each approved by its providers.
    Since R9's fix (authz/exclusive.py) a pooled permit sharing a dataset with another of
    the same requester's is refused at the request (409)."""
    from tests.api.helpers import approval, register
    from tests.conftest import Actor

    hs = []
    for i in range(providers):
        p = make_party("provider")
        r = admin.post("/agents", {"name": f"r9-{i}", "providers": [p.id]})
        hs.append((p, register(p, Actor(admin.client, r.json["id"], r.json["token"], "agent"))))
    requester = make_party("requester")
    for kind, which in uses:
        r = requester.post("/requests", {
            "purpose": "Figures for a review.", "use_kind": kind, "business_system": "r9",
            "items": [{"dataset_id": hs[i][1]["id"], "columns": ["age", "cost"]}
                      for i in which]})
        if r.status_code == 409:
            assert r.json["error"] == "policy_violation"
            return False
        assert r.status_code == 201, r.json
        for i in which:
            got = hs[i][0].post(f"/requests/{r.json['id']}/items/{hs[i][1]['id']}/approve",
                                approval())
            assert got.status_code == 200, got.json
    return True


def statistics_job_on(root: Path, frame: pd.DataFrame, spec: dict[str, Any],
                      fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One statistics job on one provider's dataset, run as its agent runs it (projection,
    checks, the differencing audit): the ``statistics.json`` the requester fetches.
    ``fields``: the permitted fields (default: the demo hospitals' but ``patient_id``)."""
    (root / "data").mkdir(parents=True)
    frame.to_csv(root / "data" / "episodes.csv", index=False)
    task = RunTask.model_validate({
        "job_id": "job_1", "kind": "statistics", "permit_id": "pmt_1",
        "requester_id": "req_1", "script_b64": base64.b64encode(b"{}").decode(),
        "script_sha256": "0" * 64, "min_cell_count": MIN_CELL, "timeout_s": 60,
        "statistics": spec,
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": fields or [f for f in FIELDS if f["name"] in PERMITTED]}]})
    store = AuditStore(root / "audit.sqlite")
    job_dir = root / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [root / "data"], "img", Limits(), store)
    report = statistics_job.statistics_report(task, job_dir, "img", store)
    assert report.outputs[0].decision == "released"
    doc: dict[str, Any] = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
    return doc


def _released(doc: dict[str, Any], analysis: int) -> float | None:
    a = doc["analyses"][analysis]
    cells = a["tables"][0]["cells"] if "tables" in a else a["cells"]
    total = cells[-1]  # the overall cell (the margin)
    return None if total["status"] != "ok" else float(total["value"])


def test_joint_total_less_two_statistics_jobs_is_one_providers_own(
        tmp_path: Path, make_party: Any, admin: Any) -> None:
    if not controller_grants(make_party, admin, [
            ("joint_statistics", [0, 1, 2]), ("statistics", [1]), ("statistics", [2])], 3):
        return  # refused: the attack never gets B's and C's own figures
    tables = {f"h{i}": hospital_table(90 + i, ROWS, f"H{i}") for i in range(3)}
    frames = {h: t.drop(columns="patient_id") for h, t in tables.items()}
    # The joint permit on A+B+C: the pooled total cost and count.
    joint = run_joint(parse_spec({"statistics": ["sum", "count"], "columns": ["cost"]},
                                 SCHEMA), frames, min_cell_count=MIN_CELL)
    pooled_sum, pooled_n = joint.columns["cost"]["sum"], joint.columns["cost"]["n"]
    # Ordinary statistics permits on B and C: the same figures, through their own agents.
    spec = {"analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["sum"]},
                         {"kind": "frequency", "dims": ["sex"]}]}
    others_sum, others_n = 0.0, 0
    for h in ("h1", "h2"):
        doc = statistics_job_on(tmp_path / h, tables[h], spec)
        s, n = _released(doc, 0), _released(doc, 1)
        assert s is not None and n is not None
        others_sum, others_n = others_sum + s, others_n + int(n)
    assert isinstance(pooled_sum, float) and isinstance(pooled_n, int)
    recovered = (pooled_n - others_n, round(pooled_sum - others_sum, 2))
    secret = (len(tables["h0"]), round(float(tables["h0"].cost.sum()), 2))
    assert recovered != secret, "disclosed: hospital A's own total cost and episode count"


DISTRICTS = ["Huangpu", "Xuhui", "Pudong", "Minhang"]
REGISTER_FIELDS = [{"name": "district", "type": "string", "sensitivity": "internal"},
                   {"name": "employees", "type": "integer", "sensitivity": "sensitive"}]
SECRET_EMPLOYEES = 4321


def test_psi_beside_the_registers_own_table_gives_the_unmatched_firm(
        tmp_path: Path, make_party: Any, admin: Any) -> None:
    if not controller_grants(make_party, admin, [
            ("verification", [0, 1]), ("statistics", [1])], 2):
        return  # refused: no statistics permit on the register beside the PSI one
    rng = np.random.default_rng(9)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=800, replace=False)]
    social = pd.DataFrame({  # the server: social insurance filings (scenario 3)
        "credit_code": codes, "district": rng.choice(DISTRICTS, 800),
        "employees": np.clip(rng.lognormal(5, 1, 800).round(), 1, 60000).astype(int)})
    # One Xuhui firm files social insurance but is not in the tax register (the client).
    target = int(np.flatnonzero(social["district"] == "Xuhui")[0])
    social.loc[target, "employees"] = SECRET_EMPLOYEES
    tax = pd.DataFrame({"credit_code": [c for i, c in enumerate(codes) if i != target]})
    spec = parse_psi_spec({"id": "credit_code",
                           "categories": {"column": "district", "values": DISTRICTS},
                           "value": {"column": "employees"}},
                          {"credit_code": "string", "district": "string",
                           "employees": "integer"})
    psi, _ = run_psi(spec, tax, social, MIN_CELL)  # a verification permit on both
    # An ordinary statistics permit on the social insurance register (no identifier).
    doc = statistics_job_on(tmp_path, social, {"analyses": [
        {"kind": "magnitude", "dims": ["district"], "value": "employees",
         "statistics": ["sum"]},
        {"kind": "frequency", "dims": ["district"]}]}, REGISTER_FIELDS)
    sums = {c["cell"]["district"]: c["value"] for c in doc["analyses"][0]["tables"][0]["cells"]}
    counts = {c["cell"]["district"]: c["value"] for c in doc["analyses"][1]["cells"]}
    matched = {c["category"]: c for c in psi["categories"]}
    recovered = None
    for d in DISTRICTS:
        n, s = matched[d]["count"], matched[d]["sum"]
        if None not in (n, s, counts[d], sums[d]) and counts[d] - n == 1:
            recovered = round(sums[d] - s)  # the one unmatched firm of the district
    assert recovered != SECRET_EMPLOYEES, "disclosed: the unmatched firm's employees"


def test_two_joint_permits_over_nested_provider_sets_give_the_fourth_providers_own(
        make_party: Any, admin: Any) -> None:
    if not controller_grants(make_party, admin, [
            ("joint_statistics", [0, 1, 2]), ("joint_statistics", [0, 1, 2, 3])], 4):
        return  # refused: one requester, one pool per dataset
    frames = {f"h{i}": hospital_table(70 + i, ROWS, f"H{i}").drop(columns="patient_id")
              for i in range(4)}
    spec = parse_spec({"statistics": ["sum", "count"], "columns": ["cost"]}, SCHEMA)
    # Permit 1 (A+B+C) and permit 2 (A+B+C+D): each job is exactly its permit's datasets.
    three = run_joint(spec, {h: frames[h] for h in ("h0", "h1", "h2")},
                      min_cell_count=MIN_CELL)
    four = run_joint(spec, frames, min_cell_count=MIN_CELL)
    s3, n3 = three.columns["cost"]["sum"], three.columns["cost"]["n"]
    s4, n4 = four.columns["cost"]["sum"], four.columns["cost"]["n"]
    assert isinstance(s3, float) and isinstance(s4, float)
    assert isinstance(n3, int) and isinstance(n4, int)
    recovered = (n4 - n3, round(s4 - s3, 2))
    secret = (len(frames["h3"]), round(float(frames["h3"].cost.sum()), 2))
    assert recovered != secret, "disclosed: hospital D's own total cost and episode count"


SECRET_COST = 31337.25


def test_joint_total_beside_statistics_margins_gives_the_undiagnosed_episode(
        tmp_path: Path, make_party: Any, admin: Any) -> None:
    if not controller_grants(make_party, admin, [
            ("statistics", [0]), ("statistics", [1]), ("statistics", [2]),
            ("joint_statistics", [0, 1, 2])], 3):
        return  # refused: the demo's two requests now go to two requesters
    tables = {f"h{i}": hospital_table(60 + i, ROWS, f"H{i}") for i in range(3)}
    # At hospital A one episode has no diagnosis yet: the only one anywhere.
    tables["h0"].loc[0, ["diagnosis", "cost"]] = [None, SECRET_COST]
    frames = {h: t.drop(columns="patient_id") for h, t in tables.items()}
    # The joint permit (A+B+C): the pooled total cost, every episode (no cell, no rule).
    joint = run_joint(parse_spec({"statistics": ["sum"], "columns": ["cost"]}, SCHEMA),
                      frames, min_cell_count=MIN_CELL)
    pooled = joint.columns["cost"]["sum"]
    assert isinstance(pooled, float)
    # Statistics permits on each hospital (the demo's two requests): A's cost by diagnosis
    # (its margin: the diagnosed episodes), B's and C's totals. Each agent's audit sees
    # only its own statistics releases: nothing before at A, so the margin is released.
    a = statistics_job_on(tmp_path / "h0", tables["h0"], {"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum"]}]})
    released = [_released(a, 0)]
    for h in ("h1", "h2"):
        released.append(_released(statistics_job_on(tmp_path / h, tables[h], {
            "analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["sum"]}]}), 0))
    recovered = None if None in released else round(
        pooled - sum(r for r in released if r is not None), 2)
    assert recovered != SECRET_COST, "disclosed: the undiagnosed episode's cost"
