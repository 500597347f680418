"""A provider's part of a private set intersection, run by its agent (no container).

The platform's own code (compute/psi.py) reads the projected permitted columns, like a
statistics job; the blinded messages go through the controller (authz/psi_jobs.py). The
client releases the counts and sums, each suppressed below the permit's minimum count;
the server releases nothing. Waiting on the other part is bounded by the task's timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Protocol

import pandas as pd

from authz.states import OutputDecision
from authz.wire import JobState, OutputReport, RunReport, RunTask
from compute.errors import SandboxError
from compute.psi import (
    client_cardinalities,
    client_request,
    identifiers,
    parse_psi_spec,
    release,
    request_size,
    server_respond,
    server_setup,
)
from containers.runspec import ExecutorError

ENGINE = "data-sandbox-psi/1"
RELEASE = "psi.json"
POLL_S = 0.2


class PsiChannel(Protocol):
    def psi_post(self, job_id: str, name: str, data: bytes) -> None: ...
    def psi_get(self, job_id: str, name: str) -> bytes | None: ...


def _wait(channel: PsiChannel, job_id: str, name: str, deadline: float,
          stop: threading.Event | None) -> bytes:
    while True:
        data = channel.psi_get(job_id, name)
        if data is not None:
            return data
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            raise ExecutorError(f"the other provider's {name} did not arrive in time")
        time.sleep(POLL_S)


def run_part(channel: PsiChannel, task: RunTask, job_dir: Path, timeout_s: float,
             stop: threading.Event | None = None) -> RunReport:
    part = task.psi
    assert part is not None
    stats = json.loads((job_dir / "input.json").read_text())
    raw = part.spec
    id_col = str(raw.get("id"))
    deadline = time.monotonic() + timeout_s
    frame = pd.read_csv(job_dir / "in" / "data.csv", dtype={id_col: str},
                        keep_default_na=True)
    outputs: list[OutputReport] = []
    try:
        if part.role == "client":
            # Validated against the server's schema at submission; here only its shape.
            cats = (raw.get("categories") or {}).get("column")
            val = (raw.get("value") or {}).get("column")
            shape = {id_col: "string", **({cats: "string"} if cats else {}),
                     **({val: "integer"} if val else {})}
            spec = parse_psi_spec(raw, shape)
            key, request = client_request(identifiers(frame, id_col))
            channel.psi_post(task.job_id, "request", request)
            setups = {g: base64.b64decode(s) for g, s in json.loads(
                _wait(channel, task.job_id, "setup", deadline, stop)).items()}
            response = _wait(channel, task.job_id, "response", deadline, stop)
            result = release(spec, client_cardinalities(key, setups, response),
                             task.min_cell_count)
            body = json.dumps(result, sort_keys=True).encode()
            outputs.append(OutputReport(
                name=RELEASE, sha256=hashlib.sha256(body).hexdigest(), bytes=len(body),
                decision=OutputDecision.RELEASED,
                reasons=("computed by the platform; counts below the minimum suppressed",),
                content_b64=base64.b64encode(body).decode()))
        else:
            spec = parse_psi_spec(raw, {f.name: f.type for f in task.datasets[0].fields})
            request = _wait(channel, task.job_id, "request", deadline, stop)
            skey, setups = server_setup(spec, frame, request_size(request))
            response = server_respond(skey, request, min_request=task.min_cell_count)
            channel.psi_post(task.job_id, "setup", json.dumps(
                {g: base64.b64encode(s).decode() for g, s in setups.items()}).encode())
            channel.psi_post(task.job_id, "response", response)
    except SandboxError as e:
        return RunReport.failed(f"{type(e).__name__}: {e}")
    except (RuntimeError, ValueError, KeyError) as e:
        # The controller refused or went away, or a message did not parse: the part fails.
        return RunReport.failed(f"PSI part failed: {type(e).__name__}")
    return RunReport(state=JobState.RELEASED, outputs=tuple(outputs), rows_read=stats["rows"],
                     bytes_read=stats["bytes"], input_sha256=stats["sha256"],
                     runner_image=ENGINE, log="",
                     reason=None if outputs else "the server part releases nothing")
