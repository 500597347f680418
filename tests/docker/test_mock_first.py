"""A run is not burned by a script error: each new script runs on mock data first.

On a real embedded stack whose agent runs jobs mock-first (the other suites' agents test
the real run itself). Also ``sandbox dev-run``: the same run and checks, locally.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from containers.executor import Limits
from sandbox.cli import main
from tests.docker.helpers import (
    COLUMNS,
    TEST_LABELS,
    Stack,
    add_hospital,
    grant,
    ledger_entries,
    register,
    submit,
    wait_job,
    write_table,
)

DECLARED: list[dict[str, Any]] = [
    {"name": "patient_id", "type": "string", "sensitivity": "identifier"},
    {"name": "age", "type": "integer", "sensitivity": "internal", "range": [0, 99]},
    {"name": "sex", "type": "string", "sensitivity": "internal", "categories": ["F", "M"]},
    {"name": "diagnosis", "type": "string", "sensitivity": "sensitive",
     "categories": ["I21", "J18", "E11", "K35", "S72"]},
    {"name": "los", "type": "integer", "sensitivity": "sensitive", "range": [1, 60]},
    {"name": "cost", "type": "number", "sensitivity": "sensitive", "range": [100, 40000]},
]


class Setup:
    def __init__(self, stack: Stack) -> None:
        add_hospital(stack, "mockfirst", f"H-MOCK-{uuid.uuid4().hex[:6]}",
                     Limits(timeout_s=60), TEST_LABELS, mock_first=True)
        self.provider = stack.providers["mockfirst"]
        source = write_table(self.provider.root, "episodes.csv", seed=23)
        status, ds = register(self.provider, "episodes.csv", DECLARED)
        assert status == 201, ds
        self.dataset_id: str = ds["id"]
        real = pd.read_csv(source, dtype=str, keep_default_na=False)
        self.real_costs = set(real["cost"])
        self.work_root: Path = stack.work / "jobs" / "mockfirst"

    def permit(self, stack: Stack, max_runs: int = 5) -> str:
        return grant(stack, self.provider, self.dataset_id, COLUMNS, max_runs=max_runs)


@pytest.fixture(scope="module")
def setup(stack: Stack) -> Setup:
    return Setup(stack)


def runs_used(stack: Stack, permit_id: str) -> int:
    used: int = stack.requester.get(f"/permits/{permit_id}")["runs_used"]
    return used


def test_a_script_error_costs_no_run_and_shows_its_whole_console(stack: Stack,
                                                                  setup: Setup) -> None:
    permit_id = setup.permit(stack)
    job = wait_job(stack.requester, submit(stack, permit_id, setup.dataset_id, """
import pandas as pd
df = pd.read_csv("/in/data.csv")
print("columns:", list(df.columns))
print(df.head(3).to_string())
raise KeyError("agegroup: no such column " + str(df["cost"].iloc[0]))
"""))
    assert job["state"] == "failed", job
    assert "failed on mock data" in job["reason"] and "no run of the permit" in job["reason"]
    log = job["log"]
    assert "columns: ['age', 'sex', 'diagnosis', 'cost']" in log
    assert "KeyError: 'agegroup: no such column" in log  # the message, not withheld
    assert not any(c in log for c in setup.real_costs)  # mock data only
    assert runs_used(stack, permit_id) == 0
    returned = [e for e in ledger_entries(stack.regulator)
                if e["kind"] == "permit.run_returned" and e["body"]["job_id"] == job["id"]]
    assert len(returned) == 1 and returned[0]["body"]["runs_used"] == 0
    assert not any(e["kind"] == "run.finished" and e["body"]["job_id"] == job["id"]
                   for e in ledger_entries(stack.regulator))  # never ran on real data


COUNTS = """
import pandas as pd
df = pd.read_csv("/in/data.csv")
t = df.groupby("sex").size().reset_index(name="n")
t.to_csv("/out/by_sex.csv", index=False)
"""


def test_a_passing_script_runs_on_real_data_and_skips_the_mock_run_next_time(
        stack: Stack, setup: Setup) -> None:
    permit_id = setup.permit(stack)
    script = COUNTS + f"# {uuid.uuid4().hex}\n"  # a hash of its own
    passed = setup.work_root / ".mock-passed"
    before = passed.read_text().split() if passed.exists() else []
    first = wait_job(stack.requester, submit(stack, permit_id, setup.dataset_id, script))
    assert first["state"] == "released", first
    after_first = passed.read_text().split()
    assert len(after_first) == len(before) + 1
    second = wait_job(stack.requester, submit(stack, permit_id, setup.dataset_id, script))
    assert second["state"] == "released", second
    assert passed.read_text().split() == after_first  # no second mock run
    assert runs_used(stack, permit_id) == 2


def test_a_failure_on_real_data_still_costs_its_run(stack: Stack, setup: Setup) -> None:
    permit_id = setup.permit(stack)
    # Passes on the 200 mock rows, fails on the provider's 300.
    script = "import sys\nsys.exit(0 if sum(1 for _ in open('/in/data.csv')) == 201 else 3)\n"
    job = wait_job(stack.requester, submit(stack, permit_id, setup.dataset_id, script))
    assert job["state"] == "failed" and "mock" not in job["reason"], job
    assert runs_used(stack, permit_id) == 1


def _dev_run(stack: Stack, script: Path, *args: str) -> Any:
    token = stack.requester.http.headers["Authorization"].split()[1]
    return CliRunner(mix_stderr=False).invoke(main, [
        "--url", stack.url, "--token", str(token), "dev-run", str(script),
        "--runtime", stack.runtime, *args])


# Outputs that do not depend on the input: the checks must find the same in both runs.
FIXED = """
import pandas as pd
df = pd.read_csv("/in/data.csv")
print("mock rows:", len(df))
print(df.head(2).to_string())
open("/out/small.csv", "w").write("group,n\\na,3\\nb,50\\n")
open("/out/nocount.csv", "w").write("group,total\\na,3\\n")
"""


def test_dev_run_finds_what_the_agent_finds(stack: Stack, setup: Setup,
                                            tmp_path: Path) -> None:
    permit_id = setup.permit(stack)
    script = tmp_path / "analysis.py"
    script.write_text(FIXED)
    r = _dev_run(stack, script, "--dataset", setup.dataset_id, "--permit", permit_id,
                 "--out", str(tmp_path / "out"))
    assert r.exit_code == 1, r.stderr  # blocked
    assert "mock rows: 200" in r.stdout  # the whole console output
    assert not any(c in r.stdout for c in setup.real_costs)
    assert "pandas 1.5.3" in r.stderr  # the image's version, and how it differs
    assert "pandas: runner image 1.5.3, here" in r.stderr
    assert (tmp_path / "out" / "nocount.csv").read_text() == "group,total\na,3\n"
    job = wait_job(stack.requester, submit(stack, permit_id, setup.dataset_id, FIXED))
    assert job["state"] == "blocked", job
    for o, name in zip(job["outputs"], ["nocount.csv", "small.csv"], strict=True):
        assert f"  {o['name']}: {o['decision']}: {'; '.join(o['reasons'])}  [{name}]" \
            in r.stdout
    assert f"run: blocked ({job['reason']})" in r.stdout


def test_dev_run_shows_a_script_error_whole(stack: Stack, setup: Setup,
                                            tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import pandas as pd\ndf = pd.read_csv('/in/data.csv')\n"
                      "df.groupby('age_band').size()\n")
    r = _dev_run(stack, script, "--dataset", setup.dataset_id)
    assert r.exit_code == 1
    assert "KeyError: 'age_band'" in r.stdout
    assert "the script failed on mock data: the script exited with an error status" \
        in r.stdout
