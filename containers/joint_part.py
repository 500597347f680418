"""A provider's part of a joint statistics job, computed by its agent (no container).

The local aggregation is the platform's own code (compute/local_aggregate.py), like a
statistics job's analyses: the agent runs its own copy on the projected permitted columns,
never a script the controller sent, so a container adds nothing but its start-up time
(most of a small joint job's cost). What leaves is what left before: the aggregates after
the disclosure check, pairwise-masked, encrypted under the requester's public context and
signed (containers.runjob.masked_submission).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.wire import JobState, RunReport, RunTask
from compute import cell_holders
from compute.errors import SandboxError
from compute.local_aggregate import SmallCells, local_aggregate
from compute.masking import MaskSession
from compute.protocol import default_backend
from containers.jobdir import UNIT_IDS
from containers.runjob import masked_submission
from containers.runspec import ExecutorError

ENGINE = "data-sandbox-joint/1"


class CellRounds(Protocol):
    def __call__(self, frame: pd.DataFrame, session: MaskSession, *, units: Any = None,
                 small_cells: SmallCells | None = None) -> object: ...


def run_part(task: RunTask, job_dir: Path, signing_key: Ed25519PrivateKey | None,
             masking: Callable[[], MaskSession], cell_rounds: CellRounds | None = None
             ) -> RunReport:
    """Aggregate the projected input, then mask, encrypt and sign; failures raise
    (SandboxError: the part fails and nothing is submitted). A job with explicit cells
    first runs its cell-holders rounds (``cell_rounds``, containers.joint_cell_holders):
    the records of cells too few providers hold are withdrawn before aggregating. Where the
    dataset declares identifier fields, the rules count its persons (``unitids.npy``,
    written by containers.jobdir.prepare), not its records."""
    joint = task.joint
    assert joint is not None
    if signing_key is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
    context_loaded = _load_context_meanwhile(joint.public_context_b64)
    stats = json.loads((job_dir / "input.json").read_text())
    # Read as the container script reads it (compute/local_aggregate.py main).
    frame = pd.read_csv(job_dir / "in" / "data.csv")
    units = np.load(job_dir / UNIT_IDS) if (job_dir / UNIT_IDS).exists() else None
    withdrawn = None
    # The rounds' last vector and the aggregation withdraw the same small cells: once.
    small_cells = None if task.min_cell_count is None or joint.spec.get("dp") else \
        SmallCells(joint.spec, frame, task.min_cell_count, units)
    if cell_holders.needed(joint.spec, joint.min_providers):
        if cell_rounds is None:
            raise ExecutorError("a joint part with explicit cells needs its cell-holders "
                                "rounds")
        mask_session = masking()  # the rounds mask under the job's pairwise keys too
        withdrawn = cell_rounds(frame, mask_session, units=units, small_cells=small_cells)
        masking = lambda: mask_session  # noqa: E731  (waited for once)
    aggregates = local_aggregate(joint.spec, frame, task.min_cell_count, withdrawn, units,
                                 small_cells=small_cells)
    del frame
    context_loaded.join()  # provider_submit finds it loaded (compute/backend.py's cache)
    out = masked_submission(task, aggregates, signing_key, masking)
    return RunReport(state=JobState.RELEASED, outputs=(out,), rows_read=stats["rows"],
                     bytes_read=stats["bytes"], input_sha256=stats["sha256"],
                     runner_image=ENGINE, log="")


def _load_context_meanwhile(public_context_b64: str) -> threading.Thread:
    """Deserialize the requester's public context (each joint job has its own: ~15 ms of
    CPU a part) in the background while the part reads its input and waits for its peers
    (mask keys, cell-holders rounds), rather than after them, when the part encrypts.
    Loaded into the backend's per-process cache only, which holds contexts that passed its
    checks (public key present, no secret key); what fails to load here is refused, as
    before, when the part encrypts."""

    def load() -> None:
        # What fails here fails again in provider_submit, which fails the part with why.
        with contextlib.suppress(SandboxError, ValueError):
            default_backend().load_public(base64.b64decode(public_context_b64))

    thread = threading.Thread(target=load, name="joint-context", daemon=True)
    thread.start()
    return thread
