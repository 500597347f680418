"""The authorized-run loop on real components, driven only through the HTTP API.

Embedded controller (SQLite) + a real agent in a thread + the real Docker engine: a provider
registers a dataset (its agent checks the file), bad registrations are refused with the
field named, a requester's aggregate job is released, and the regulator finds the run's
data-flow audit record on the ledger, with hashes that match what was submitted and fetched.
"""

from __future__ import annotations

import csv
import io
import os

import pandas as pd
import pytest

from authz.lifecycle import BYTE_BASE, rounded
from sandbox.demo_data import FIELDS
from tests.docker.helpers import (
    COLUMNS,
    MIN_CELL,
    ROWS,
    Stack,
    fetch_output,
    grant,
    register,
    run_entry,
    sha256,
    submit,
    wait_job,
    write_table,
)

pytestmark = pytest.mark.docker

AUDIT_FIELDS = ("authorizing_system", "authorizing_operator", "business_system", "user",
                "access_method", "access_time", "data_volume")


def test_registration_is_checked_by_the_agent(stack: Stack) -> None:
    p = stack.providers["main"]
    write_table(p.root, "episodes.csv", seed=21)

    status, ds = register(p, "episodes.csv")
    assert status == 201, ds
    assert ds["status"] == "active"
    assert ds["rows"] == ROWS

    # The file's cost column holds decimals; declaring it an integer is refused, naming it.
    wrong = [{**f, "type": "integer"} if f["name"] == "cost" else f for f in FIELDS]
    status, body = register(p, "episodes.csv", wrong)
    assert status == 422, body
    assert body["field"] == "fields[cost].type"
    assert body["dataset"]["status"] == "rejected"

    # A declared field the file lacks, and a column the declaration lacks.
    status, body = register(p, "episodes.csv", [*FIELDS, {"name": "ward", "type": "string",
                                                          "sensitivity": "internal"}])
    assert (status, body["field"]) == (422, "fields"), body
    assert "ward" in body["rule"]
    status, body = register(p, "episodes.csv", [f for f in FIELDS if f["name"] != "los"])
    assert (status, body["field"]) == (422, "fields"), body
    # Named by position, never by its header (a headerless file's header is a record).
    los_at = [f["name"] for f in FIELDS].index("los") + 1
    assert body["rule"] == f"file has 1 undeclared column(s), the first at position {los_at}"


@pytest.mark.parametrize("location", [
    "missing.csv",  # inside the data root, but no such file
    "/etc/passwd",  # absolute path outside the data roots
    "../x",  # relative escape
    "../../../../../../etc/passwd",
    "link-out.csv",  # a symlink inside the root pointing outside it
])
def test_location_outside_the_data_roots_is_refused(stack: Stack, location: str) -> None:
    p = stack.providers["main"]
    link = p.root / "link-out.csv"
    if not link.is_symlink():
        os.symlink("/etc/passwd", link)
    status, body = register(p, location)
    assert status == 422, body
    assert body["field"] == "location"
    # The refusal never carries the file's content.
    assert "root:" not in str(body)


#: A table the agent can re-derive from the input (keys are input columns, the count is
#: the group's size, the mean is the mean rounded): released automatically. The demo's
#: age-band table has a derived key, so it waits for a person (tests/redteam).
COST_BY_SEX_AND_DIAGNOSIS = """\
import pandas as pd

df = pd.read_csv("/in/data.csv")
table = (df.groupby(["sex", "diagnosis"])["cost"]
           .agg(n="size", mean_cost="mean").reset_index())
table["mean_cost"] = table["mean_cost"].round(2)
table.to_csv("/out/cost_by_sex_and_diagnosis.csv", index=False)
"""


def test_authorized_aggregate_run_is_released_and_audited(stack: Stack) -> None:
    p = stack.providers["main"]
    source = write_table(p.root, "audited.csv", seed=22)
    status, ds = register(p, "audited.csv")
    assert status == 201, ds
    permit_id = grant(stack, p, ds["id"], COLUMNS)

    job_id = submit(stack, permit_id, ds["id"], COST_BY_SEX_AND_DIAGNOSIS)
    job = wait_job(stack.requester, job_id)
    assert job["state"] == "released", job
    assert job["rows_read"] == ROWS
    assert job["script_sha256"] == sha256(COST_BY_SEX_AND_DIAGNOSIS.encode())
    assert [o["decision"] for o in job["outputs"]] == ["released"]

    out = job["outputs"][0]
    code, content = fetch_output(stack.requester, job_id, out["name"])
    assert code == 200
    table = list(csv.DictReader(io.StringIO(content.decode())))
    assert table, "the aggregate has rows"
    assert set(table[0]) == {"sex", "diagnosis", "n", "mean_cost"}
    # Every released cell passed suppression; counts can never exceed what was read.
    counts = [int(r["n"]) for r in table]
    assert all(c >= MIN_CELL for c in counts)
    assert sum(counts) <= ROWS

    # The provider sees the use (可溯源) but cannot fetch results.
    assert job_id in {u["job_id"] for u in p.client.get("/usage")["usage"]}
    code, _ = fetch_output(p.client, job_id, out["name"])
    assert code in (403, 404)

    entry = run_entry(stack.regulator, job_id)
    body = entry["body"]
    assert body["state"] == "released"
    audit = body["audit"]
    for f in AUDIT_FIELDS:
        assert audit.get(f), f"audit field {f} missing or empty"
    assert audit["authorizing_operator"] == p.id
    assert audit["business_system"] == "harbor-pricing-2026"
    assert job["requester_id"] in audit["user"]
    assert "network none" in audit["access_method"]
    assert audit["access_time"] == job["started_at"]
    # data volume: the rows and bytes of the projected input (permitted columns only).
    assert audit["data_volume"]["rows"] == ROWS
    # The projection is the permitted columns as CSV: recompute it on the provider's side.
    projected = (pd.read_csv(source, dtype=str, keep_default_na=False)[COLUMNS]
                 .to_csv(index=False).encode())
    # Rounded to 1 KiB on the ledger (the requester's receipt carries this entry).
    assert audit["data_volume"]["bytes"] == rounded(len(projected), BYTE_BASE)
    assert len(projected) < source.stat().st_size
    assert body["permit_id"] == permit_id
    assert body["dataset_ids"] == [ds["id"]]
    assert body["script_sha256"] == sha256(COST_BY_SEX_AND_DIAGNOSIS.encode())
    assert body["runner_image"] == stack.image
    assert body["input_sha256"] == job["input_sha256"] == sha256(projected)
    assert [(o["name"], o["sha256"], o["decision"]) for o in body["outputs"]] == [
        (out["name"], sha256(content), "released")]
    assert body["outputs"][0]["bytes"] == len(content)
    assert entry["actor"].startswith("agent:")
