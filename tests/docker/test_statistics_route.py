"""The trusted statistics route end to end: a declared spec, computed and checked by the
platform in the provider's domain, released as one document with per-cell metadata."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from compute.sdc import MARGIN, POOLED
from tests.docker.helpers import (
    MIN_CELL,
    Stack,
    Target,
    fetch_output,
    make_target,
    run_entry,
    wait_job,
)

pytestmark = pytest.mark.docker

SPEC = {"analyses": [
    {"kind": "frequency", "dims": ["sex", "diagnosis"]},
    {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
     "statistics": ["sum", "mean", "median"]},
    {"kind": "ols", "y": "cost", "x": ["age"]},
    {"kind": "chi_square", "dims": ["sex", "diagnosis"]},
]}


@pytest.fixture(scope="module")
def target(stack: Stack) -> Target:
    return make_target(stack, "main", "stats.csv", 51)


def _run(stack: Stack, t: Target, spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    job = stack.requester.post("/jobs", {"permit_id": t.permit_id,
                                         "dataset_ids": [t.dataset_id], "statistics": spec})
    job = wait_job(stack.requester, job["id"])
    assert job["state"] == "released", (job["state"], job["reason"])
    status, raw = fetch_output(stack.requester, job["id"], "statistics.json")
    assert status == 200, raw[:200]
    doc: dict[str, Any] = json.loads(raw)
    return job, doc


def test_a_statistics_job_is_released_checked_cell_by_cell(stack: Stack,
                                                           target: Target) -> None:
    job, doc = _run(stack, target, SPEC)
    source = pd.read_csv(target.source)
    freq, mag, ols, chi = doc["analyses"]
    truth = source.groupby(["sex", "diagnosis"]).size()
    for cell in freq["cells"]:
        key = (cell["cell"].get("sex"), cell["cell"].get("diagnosis"))
        if cell["status"] == "ok" and MARGIN not in key:
            assert cell["value"] == truth[key], cell
        if cell["value"] is not None:
            assert cell["value"] == 0 or cell["value"] >= MIN_CELL, cell  # threshold held
    # A median is reported as the 0.5 quantile.
    assert {t["statistic"] for t in mag["tables"]} == {"sum", "mean", "q0.5"}
    assert ols["kind"] == "ols" and chi["kind"] == "chi_square"
    # The document carries no record's own value: no exact cost of any record.
    text = json.dumps(doc)
    assert not [v for v in target.values if f'"{v}"' in text or f" {v}," in text]
    # The run is on the ledger like any other, its spec's digest standing for the code.
    entry = run_entry(stack.regulator, job["id"])
    assert entry["body"]["script_sha256"] == job["script_sha256"]
    assert entry["body"]["runner_image"].startswith("data-sandbox-statistics/")


def test_a_cell_of_one_record_is_suppressed_with_its_rule(stack: Stack,
                                                          target: Target) -> None:
    _, doc = _run(stack, target, {"analyses": [{"kind": "frequency",
                                                "dims": ["age", "diagnosis"]}]})
    cells = doc["analyses"][0]["cells"]
    # An age fewer than k patients have is not a label: it is pooled with the other rare
    # ages, and the bucket's cells are checked like any.
    held = pd.read_csv(target.source).age.value_counts()
    labels = {c["cell"]["age"] for c in cells}
    assert POOLED in labels and held.min() < MIN_CELL
    assert all(held[a] >= MIN_CELL for a in labels - {MARGIN, POOLED})
    small = [c for c in cells if c["status"] != "ok"]
    assert small, "ages by diagnosis are fine-grained: some cells hold fewer than k records"
    for c in small:  # alike: which rule hid a cell would tell about its records
        assert c["value"] is None and c["status"] == "suppressed" and c["rules"] == [], c
    assert "threshold" in doc["analyses"][0]["rules"]  # the table says why
