"""``sandbox dev-run``: a requester's script on mock data, on the requester's own machine.

The run is the agent's (:mod:`containers.mockrun`): the same runner image, the same
executor and limits, the same output checks, on the mock tables ``sandbox mock-data``
downloads. What differs is what is shown: all of it (the console output whole, every
file written to /out, and each check's finding), because the input is mock data.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from authz.states import ScriptRelease
from authz.wire import DatasetTask, RunTask
from containers import mockrun
from containers.executor import DockerExecutor, Limits

VERSIONS_SCRIPT = ("import sys, numpy, pandas; "
                   "print(sys.version.split()[0], numpy.__version__, pandas.__version__)")


@dataclass(frozen=True)
class Versions:
    python: str
    numpy: str
    pandas: str

    def differences(self, other: Versions) -> list[str]:
        return [f"{name}: runner image {getattr(self, name)}, here {getattr(other, name)}"
                for name in ("python", "numpy", "pandas")
                if getattr(self, name) != getattr(other, name)]


def local_versions() -> Versions:
    import sys

    import numpy
    import pandas

    return Versions(sys.version.split()[0], numpy.__version__, pandas.__version__)


def image_versions(client: docker.DockerClient, image: str, runtime: str | None) -> Versions:
    """The versions the runner image runs scripts with (asked of the image itself)."""
    # Not containers.run: it returns no output under the engine's "local" log driver.
    c = client.containers.create(image, ["python3", "-c", VERSIONS_SCRIPT], entrypoint=[],
                                 network_mode="none", runtime=runtime,
                                 labels={"data-sandbox.dev-run": "versions"})
    try:
        c.start()
        c.wait(timeout=60)
        out: bytes = c.logs(stdout=True, stderr=False)
    finally:
        c.remove(force=True)
    python, numpy, pandas = out.decode().split()
    return Versions(python, numpy, pandas)


def dataset_task(dataset: dict[str, Any], columns: Sequence[str] | None = None
                 ) -> DatasetTask:
    """A catalog entry (``GET /datasets/<id>``) as the agent's task would carry it; only
    ``columns`` (a permit's) if given. Its location is never used: mock data replaces it."""
    fields = {f["name"]: f for f in dataset["fields"]}
    chosen = [fields[c] for c in columns] if columns is not None else list(fields.values())
    return DatasetTask.model_validate({
        "id": dataset["id"], "code": dataset["code"], "provider_id": dataset["provider_id"],
        "format": "csv", "location": f"{dataset['code']}.csv", "fields": chosen})


def run(executor: DockerExecutor, script: bytes, datasets: Sequence[DatasetTask], image: str,
        *, min_cell_count: int, blocked_columns: Sequence[str], limits: Limits | None = None,
        rows: int = mockrun.MOCK_ROWS, seed: int = mockrun.MOCK_SEED,
        work_root: Path | None = None,
        script_release: ScriptRelease = ScriptRelease.AUTOMATIC) -> mockrun.MockRun:
    """Run ``script`` on the datasets' mock data as the agent runs a job, checks included.

    The checks are applied as under a permit with ``script_release``: under review, the
    outputs that pass wait for the output checkers and a PNG is carried to them (rebuilt,
    or blocking the run if the agent cannot read it exactly), as on the agent; with
    automatic release an image is withheld.
    """
    limits = limits or Limits()
    task = RunTask(job_id=f"dev-{secrets.token_hex(6)}", kind="script", permit_id="dev-run",
                   script_b64=base64.b64encode(script).decode(),
                   script_sha256=hashlib.sha256(script).hexdigest(),
                   datasets=tuple(datasets), min_cell_count=min_cell_count,
                   blocked_columns=tuple(sorted(set(blocked_columns))),
                   timeout_s=limits.timeout_s, script_release=script_release)
    root = work_root or Path(tempfile.mkdtemp(prefix="sandbox-dev-run-"))
    return mockrun.run(executor, task, root, image, limits, timeout_s=limits.timeout_s,
                       rows=rows, seed=seed)
