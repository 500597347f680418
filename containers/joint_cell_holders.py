"""The agent's side of a joint job's cell-holders rounds (compute/cell_holders.py).

Before aggregating, the agent publishes its signed, masked vector of each round through
the controller, waits (a long poll) for every provider's vector of the round, verifies each
against the agent keys the job's mask keys were verified with, and adds them itself: the
controller relays and decides nothing. Cells too few providers hold are withdrawn and the
next round follows, until a round forces nothing new. If a round does not complete in time,
or does not settle within the cap, the part fails: nothing is submitted.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.wire import RunTask
from compute.cell_holders import CellHolderRounds
from compute.errors import SandboxError
from compute.local_aggregate import SmallCells, kept_records
from compute.masking import MaskSession
from containers.joint_masks import LONG_POLL_S, POLL_FIRST_S, POLL_S
from containers.runspec import ExecutorError


class CellHoldersChannel(Protocol):
    def cell_holders(self, job_id: str, vector: dict[str, object]
                     ) -> dict[str, object] | None: ...
    def cell_holders_round(self, job_id: str, rnd: int, wait_s: float = 0.0
                           ) -> dict[str, object]: ...


def withdrawn_records(channel: CellHoldersChannel, task: RunTask, frame: Any,
                      session: MaskSession, signing_key: Ed25519PrivateKey | None,
                      timeout_s: float, stop: threading.Event | None = None,
                      units: Any = None, small_cells: SmallCells | None = None) -> Any:
    """The records to withdraw before aggregating (a boolean per record of ``frame``).
    ``units``: each record's person, as the part's aggregation counts them;
    ``small_cells``: the part's own small-cell withdrawal for them, shared with its
    aggregation (computed once for the last round)."""
    joint = task.joint
    assert joint is not None and joint.min_providers is not None
    if signing_key is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
    spec, k = joint.spec, task.min_cell_count
    rounds = CellHolderRounds(spec, frame, joint.min_providers, session,
                              (lambda withdrawn: small_cells(withdrawn)[0])
                              if small_cells is not None else
                              lambda withdrawn: kept_records(spec, frame, k, withdrawn,
                                                               units))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            answer = channel.cell_holders(task.job_id, rounds.publish(signing_key))
            # The last vector of the round: the answer carries the round (verified below
            # like a polled one), no need to ask for it.
            known = answer.get("round_set") if isinstance(answer, dict) and \
                answer.get("round") == rounds.round else None
            pause = POLL_FIRST_S
            while True:
                wait_s = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
                asked = time.monotonic()
                got, known = (known if isinstance(known, dict) else
                              channel.cell_holders_round(task.job_id, rounds.round, wait_s),
                              None)
                if got.get("complete"):
                    break
                if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                    raise ExecutorError("the other providers' cell-holders vectors did not "
                                        "arrive in time: nothing was submitted")
                if time.monotonic() - asked < wait_s / 2:
                    # Answered early yet incomplete (a controller holding polls for less
                    # than asked): back off rather than ask again at once.
                    time.sleep(pause)
                    pause = min(pause * 1.5, POLL_S)
            vectors = got.get("vectors")
            assert isinstance(vectors, list)
            # Checked against the keys the mask keys were verified with, not the keys that
            # came with the round: the relay cannot swap them between the two.
            if rounds.settle(vectors, session.agent_keys):
                return rounds.withdrawn
    except SandboxError:
        raise
    except (RuntimeError, AssertionError, ValueError, KeyError, TypeError) as e:
        # ControllerRefused/Unreachable and malformed answers: the part fails, nothing sent.
        raise ExecutorError(f"cell-holders round failed: {type(e).__name__}") from e
