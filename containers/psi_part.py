"""A provider's part of a private set intersection, run by its agent (no container).

The platform's own code (compute/psi.py, compute/psi_ring.py) reads the projected
permitted columns, like a statistics job; the blinded messages go through the controller
(authz/psi_relay.py). The client (the ring's counter) releases the counts and sums, each
suppressed below the permit's minimum count (and more, so that no hidden count is the
intersection less the shown ones: compute/psi.py ``shown_cells``); every other part
releases nothing. Waiting on the other parts is bounded by the task's timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from authz.states import OutputDecision
from authz.wire import JobState, OutputReport, RunReport, RunTask
from compute.errors import SandboxError
from compute.psi import (
    PSISpec,
    client_cardinalities,
    client_request,
    identifiers,
    parse_psi_spec,
    release,
    request_size,
    server_respond,
    server_setup,
)
from compute.psi_ring import (
    blind_own,
    cardinalities,
    holder_keys,
    message,
    new_key,
    own_sets,
    reblind,
    reblind_per_group,
    route,
    unpack,
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


def _release(result: dict[str, object]) -> OutputReport:
    body = json.dumps(result, sort_keys=True).encode()
    return OutputReport(
        name=RELEASE, sha256=hashlib.sha256(body).hexdigest(), bytes=len(body),
        decision=OutputDecision.RELEASED,
        reasons=("computed by the platform; counts below the minimum suppressed, and "
                 "others so that none is the total less the rest",),
        content_b64=base64.b64encode(body).decode())


def _holder_spec(raw: dict[str, Any], task: RunTask, *, holder: bool) -> PSISpec:
    """The spec, checked against this dataset's schema if it holds the columns; otherwise
    only its shape (it was validated against the holder's schema at submission)."""
    if holder:
        return parse_psi_spec(raw, {f.name: f.type for f in task.datasets[0].fields})
    cats = (raw.get("categories") or {}).get("column")
    val = (raw.get("value") or {}).get("column")
    shape = {str(raw.get("id")): "string", **({cats: "string"} if cats else {}),
             **({val: "integer"} if val else {})}
    return parse_psi_spec(raw, shape)


def _ring_part(channel: PsiChannel, task: RunTask, frame: pd.DataFrame, deadline: float,
               stop: threading.Event | None) -> list[OutputReport]:
    """One ring member's hops (compute/psi_ring.py): blind its own sets, then every set whose
    route passes here, lowest hop first (so no two members wait on each other); the counter
    then intersects every fully blinded set and releases."""
    part = task.psi
    assert part is not None and part.ring is not None
    me, n, holder = part.ring.position, part.ring.size, part.ring.holder
    spec = _holder_spec(part.spec, task, holder=me == holder)
    # This job's only, one per group for the holder: they never leave this function.
    key, hkeys = new_key(), holder_keys(spec) if me == holder else {}
    mine = own_sets(spec, frame, holder=me == holder)
    channel.psi_post(task.job_id, f"ring.{me}.0",
                     message(blind_own(hkeys if me == holder else key, mine)))
    todo = sorted((r.index(me) + 1, o) for o in range(n) if me in (r := route(n, holder, o)))
    for hop, origin in todo:
        sets = unpack(_wait(channel, task.job_id, f"ring.{origin}.{hop - 1}", deadline, stop))
        out = reblind_per_group(hkeys, sets, min_size=task.min_cell_count) if me == holder \
            else reblind(key, sets, min_size=task.min_cell_count)
        channel.psi_post(task.job_id, f"ring.{origin}.{hop}", message(out))
    if me != part.ring.counter:
        return []
    final = {o: unpack(_wait(channel, task.job_id, f"ring.{o}.{n - 1}", deadline, stop))
             for o in range(n)}
    members = [final[o] for o in range(n) if o != holder]
    cards = cardinalities(spec, members, final[holder])
    return [_release(release(spec, cards, task.min_cell_count))]


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
        if part.role == "ring":
            outputs = _ring_part(channel, task, frame, deadline, stop)
        elif part.role == "client":
            spec = _holder_spec(raw, task, holder=False)
            key, request = client_request(identifiers(frame, id_col))
            channel.psi_post(task.job_id, "request", request)
            setups = {g: base64.b64decode(s) for g, s in json.loads(
                _wait(channel, task.job_id, "setup", deadline, stop)).items()}
            responses = {g: _wait(channel, task.job_id, f"response.{g}", deadline, stop)
                         for g in spec.groups()}
            outputs.append(_release(release(
                spec, client_cardinalities(key, setups, responses), task.min_cell_count)))
        else:
            spec = _holder_spec(raw, task, holder=True)
            request = _wait(channel, task.job_id, "request", deadline, stop)
            skeys, setups = server_setup(spec, frame, request_size(request))
            responses = server_respond(skeys, request, min_request=task.min_cell_count)
            channel.psi_post(task.job_id, "setup", json.dumps(
                {g: base64.b64encode(s).decode() for g, s in setups.items()}).encode())
            # One message per group: each is the size of the request, so together they
            # could exceed what one relayed message may hold.
            for g, response in responses.items():
                channel.psi_post(task.job_id, f"response.{g}", response)
    except SandboxError as e:
        return RunReport.failed(f"{type(e).__name__}: {e}")
    except (RuntimeError, ValueError, KeyError) as e:
        # The controller refused or went away, or a message did not parse: the part fails.
        return RunReport.failed(f"PSI part failed: {type(e).__name__}")
    return RunReport(state=JobState.RELEASED, outputs=tuple(outputs), rows_read=stats["rows"],
                     bytes_read=stats["bytes"], input_sha256=stats["sha256"],
                     runner_image=ENGINE, log="",
                     reason=None if outputs else "this part releases nothing")
