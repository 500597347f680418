"""The agent's side of a joint job's pairwise masks (compute/masking.py).

The agent draws one X25519 key per joint part, keeps its private half in the part's job
directory (mode 0600, inside the provider's domain, so a restarted agent masks with the
same key it announced), announces the public half signed with its Ed25519 key (with the
part's start notice: one request), and before encrypting waits (a long poll) until every
provider of the job has announced one. If the others do not
announce in time the part fails: nothing unmasked is ever sent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from authz.wire import RunTask
from compute.errors import SandboxError
from compute.masking import MaskKey, MaskSession, announce, session
from containers.runspec import ExecutorError

log = logging.getLogger("data-sandbox.agent")
KEY_FILE = "mask.key"
ANNOUNCED_FILE = "mask.announced"
POLL_S = 0.2
POLL_FIRST_S = 0.01


#: How long one long poll for the key set may be held by the controller.
LONG_POLL_S = 5.0


class MaskKeyChannel(Protocol):
    def mask_key(self, job_id: str, announcement: dict[str, object]) -> None: ...
    def mask_keys(self, job_id: str, wait_s: float = 0.0) -> dict[str, object]: ...


class StartChannel(Protocol):
    def started(self, job_id: str, mask_key: dict[str, object] | None = None
                ) -> dict[str, Any]: ...


def mask_key(job_dir: Path) -> MaskKey:
    """This part's key: created once, then read back (a restart must not draw a new one)."""
    path = job_dir / KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        job_dir.mkdir(parents=True, exist_ok=True)
        key = X25519PrivateKey.generate()
        raw = key.private_bytes_raw()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
    key = X25519PrivateKey.from_private_bytes(raw)
    return MaskKey(key, key.public_key().public_bytes_raw().hex())


def announce_key(channel: MaskKeyChannel, task: RunTask, job_dir: Path,
                 signing_key: Ed25519PrivateKey | None) -> MaskKey:
    if signing_key is None or task.joint is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
    key = mask_key(job_dir)
    marker = job_dir / ANNOUNCED_FILE
    if marker.exists():
        return key  # the controller has it (a second call would be a no-op round trip)
    channel.mask_key(task.job_id, announce(key, job_id=task.joint.joint_id,
                                           provider_id=task.datasets[0].provider_id,
                                           signing_key=signing_key))
    marker.touch()
    return key


def start_and_announce(channel: StartChannel, task: RunTask, job_dir: Path,
                       signing_key: Ed25519PrivateKey | None) -> dict[str, object] | None:
    """Tell the controller the part started, with its mask key in the same request (one
    transaction, ``job.running`` then ``joint.mask_key``); the key is then marked announced
    so :func:`wait_for_session` does not announce it again. The job's complete key set
    when the answer carries it (this part's key was the last), for
    :func:`wait_for_session`, which verifies it as it verifies a polled one."""
    if signing_key is None or task.joint is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
    key = mask_key(job_dir)
    marker = job_dir / ANNOUNCED_FILE
    if marker.exists():
        channel.started(task.job_id)
        return None
    answer = channel.started(task.job_id, announce(key, job_id=task.joint.joint_id,
                                                   provider_id=task.datasets[0].provider_id,
                                                   signing_key=signing_key))
    if "announced" in answer:
        marker.touch()
    # else a controller that took the notice without the key (an earlier release): the key
    # is announced on its own before masking.
    keys = answer.get("key_set")
    return keys if isinstance(keys, dict) and keys.get("complete") else None


def wait_for_session(channel: MaskKeyChannel, task: RunTask, job_dir: Path,
                     signing_key: Ed25519PrivateKey | None, timeout_s: float,
                     stop: threading.Event | None = None,
                     known: dict[str, object] | None = None) -> MaskSession:
    """Announce (idempotent), then wait for every provider's key and verify them all.
    ``known``: the complete key set the start notice's answer carried (not asked again;
    verified all the same)."""
    try:
        key = announce_key(channel, task, job_dir, signing_key)
        assert task.joint is not None
        deadline = time.monotonic() + timeout_s
        pause = POLL_FIRST_S
        while True:
            # A long poll: the controller answers as soon as the last key is committed.
            wait_s = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            asked = time.monotonic()
            got, known = known or channel.mask_keys(task.job_id, wait_s), None
            if got.get("complete"):
                anns = got.get("announcements")
                agents = got.get("agent_keys")
                assert isinstance(anns, list) and isinstance(agents, dict)
                return session(key, anns, job_id=task.joint.joint_id,
                               provider_id=task.datasets[0].provider_id,
                               agent_keys={p: bytes.fromhex(str(k)) for p, k in agents.items()})
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise ExecutorError("the other providers' mask keys did not arrive in time: "
                                    "nothing was submitted")
            if time.monotonic() - asked < wait_s / 2:
                # Answered before the wait was up yet incomplete: a controller that does
                # not hold the answer (an earlier release). Poll it, backing off.
                time.sleep(pause)
                pause = min(pause * 1.5, POLL_S)
    except SandboxError:
        raise
    except (RuntimeError, AssertionError, ValueError, KeyError) as e:
        # ControllerRefused/Unreachable and malformed answers: the part fails, unmasked
        # figures are never sent.
        raise ExecutorError(f"mask keys unavailable: {type(e).__name__}") from e
