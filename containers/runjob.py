"""One run in the provider's domain: check what it left behind, build the report.

The file-level output checks, the hold for release review, the joint part's masked
submission, and what the agent needs around a run (the input's rare values, the timing
grain, the failure text). The job's directory (write, read back, outbox) is
:mod:`containers.jobdir`; re-deriving and auditing a script's tables is
:mod:`containers.script_audit`; statistics jobs are :mod:`containers.statistics_job`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.states import (
    HELD_FOR_REVIEW,
    HELD_UNVERIFIED,
    JobState,
    OutputDecision,
    ScriptRelease,
)
from authz.wire import OutputReport, RunReport, RunTask
from compute import cell_holders
from compute.masking import MaskSession
from compute.protocol import provider_submit
from compute.spec import spec_from_json
from containers import checks, datasets, rederive, script_audit
from containers.audit_store import AuditStore
from containers.executor import RunResult
from containers.hardening import read_outputs
from containers.runspec import ExecutorError


def _rare_values(in_dir: Path, k: int) -> frozenset[str]:
    rare: set[str] = set()
    for f in sorted(in_dir.iterdir()):
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
        rare |= datasets.rare_values(frame, k)
    return frozenset(rare)


def rare_values(task: RunTask, job_dir: Path) -> frozenset[str]:
    """The projected input's values rarer than the task's k (the agent reads them while the
    job runs: the input is read-only to the job)."""
    return _rare_values(job_dir / "in", task.min_cell_count)


def report(task: RunTask, job_dir: Path, result: RunResult, image: str,
           signing_key: Ed25519PrivateKey | None,
           rare_values: frozenset[str] | None = None,
           masking: Callable[[], MaskSession] | None = None,
           audit: AuditStore | None = None) -> RunReport:
    """Check what the run left behind; only what passed is in the report with content.
    ``rare_values``: :func:`rare_values` of this job if already read, else read here.
    ``masking``: for a joint part, waits for every provider's mask key (containers.joint_masks)."""
    stats = json.loads((job_dir / "input.json").read_text())
    k = task.min_cell_count
    if rare_values is None:
        rare_values = _rare_values(job_dir / "in", k)
    script_lines = (job_dir / "job" / "script.py").read_bytes().count(b"\n") + 1
    policy = checks.OutputPolicy(min_cell_count=k, rows_read=stats["rows"],
                                 blocked_columns=frozenset(task.blocked_columns),
                                 rare_values=rare_values, script_lines=script_lines,
                                 images_for_review=task.script_release != ScriptRelease.AUTOMATIC)
    def ran(state: JobState, outputs: list[OutputReport], reason: str | None = None
            ) -> RunReport:
        return RunReport(state=state, reason=reason, outputs=tuple(outputs),
                         rows_read=stats["rows"], bytes_read=stats["bytes"],
                         input_sha256=stats["sha256"], runner_image=image,
                         exit_code=result.exit_code,
                         log=checks.check_log(result.stdout, result.stderr, policy))

    if not result.ok:
        return ran(JobState.FAILED, [], failure(result))
    if task.joint is not None:
        if masking is None:
            raise ExecutorError("a joint part needs its providers' mask keys")
        return ran(JobState.RELEASED, [joint_submission(task, result.out_dir, signing_key,
                                                        masking)])
    verdicts = checks.check_outputs(result.out_dir, policy)
    blocked = [v for v in verdicts if v.decision == OutputDecision.BLOCKED]
    outputs: list[OutputReport] = []
    for v in verdicts:
        reasons = list(v.reasons)
        if blocked and v.decision == OutputDecision.RELEASED:
            # Nothing of a suspect run leaves: released-looking siblings are withheld too.
            reasons.append("withheld: another output of this run was blocked")
        outputs.append(OutputReport(
            name=v.name, sha256=v.sha256, bytes=v.size,
            decision=OutputDecision.BLOCKED if blocked else v.decision, reasons=tuple(reasons),
            content_b64=(base64.b64encode(v.content).decode()
                         if not blocked and v.content is not None else None)))
    if blocked:
        reason = "; ".join(f"{v.name}: {', '.join(v.reasons)}" for v in blocked)
        return ran(JobState.BLOCKED, outputs, reason[:2000])
    done = script_audit.script_rederived(task, job_dir, verdicts, audit)
    findings = [d.findings if d is not None else [] for d in done]
    automatic = task.script_release == ScriptRelease.AUTOMATIC
    if any(v.decision == OutputDecision.RELEASED for v in verdicts) and (
            not automatic or any(findings)):
        # The file-level checks cannot vouch for a script's tables (they do not know a
        # cell's true contributors), and re-derivation from the input did not verify every
        # one: they go to the providers' output checkers, with the findings, never to the
        # requester, until enough of them approve (release review).
        reason = HELD_FOR_REVIEW if not automatic else HELD_UNVERIFIED
        held = [o.model_copy(update={"decision": OutputDecision.PENDING_REVIEW,
                                     "findings": tuple(f.text() for f in found)[:200]})
                if o.decision == OutputDecision.RELEASED else o
                for o, found in zip(outputs, findings, strict=True)]
        return ran(JobState.AWAITING_REVIEW, held, reason)
    outputs = _rendered(outputs, done)
    if not any(v.decision == OutputDecision.RELEASED for v in verdicts):
        # Released, but with nothing in it: say why rather than hand back an empty result.
        return ran(JobState.RELEASED, outputs,
                   "the run wrote no table to /out: write aggregates as CSV or JSON files "
                   "there" if not outputs else
                   "no table released: the run wrote only files the checks cannot vouch for")
    return ran(JobState.RELEASED, outputs)


def _rendered(outputs: list[OutputReport], done: list[rederive.Rederived | None]
              ) -> list[OutputReport]:
    """Verified tables leave as the platform wrote them, named by position: the script's
    file name, spelling, precision and row order are text it chose. So do the file-level
    checks' notes on it (R10-2): whether the script's file held rows of counts below k
    (suppressed) was one bit a table of the script's choosing, and the rendered table
    holds exactly the groups of k or more whatever the file held."""
    out = []
    tables = 0
    for o, d in zip(outputs, done, strict=True):
        if d is None or d.rendered is None or o.decision != OutputDecision.RELEASED:
            out.append(o)
            continue
        tables += 1
        ext = o.name.rsplit(".", 1)[-1]
        out.append(o.model_copy(update={
            "name": f"table-{tables}.{ext}", "reasons": (),
            "sha256": hashlib.sha256(d.rendered).hexdigest(),
            "bytes": len(d.rendered),
            "content_b64": base64.b64encode(d.rendered).decode()}))
    return out


def joint_submission(task: RunTask, out_dir: Path, signing_key: Ed25519PrivateKey | None,
                     masking: Callable[[], MaskSession]) -> OutputReport:
    """Mask and encrypt the local aggregates; the plaintext never leaves the provider's
    domain, and the requester's key alone does not open the ciphertexts (masks)."""
    if signing_key is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
    assert task.joint is not None
    if cell_holders.needed(task.joint.spec, task.joint.min_providers):
        # A container's aggregates (an older agent's run) skipped the cell-holders rounds:
        # never submitted (containers.joint_part runs them).
        raise ExecutorError("a joint part with explicit cells is computed by the agent, "
                            "after its cell-holders rounds")
    files = read_outputs(out_dir, max_files=4, max_bytes=64 * 1024 * 1024)
    if set(files) != {"aggregates.json"}:
        raise ExecutorError("the local aggregation must write exactly aggregates.json")
    try:
        aggregates = json.loads(files["aggregates.json"])
    except ValueError:
        raise ExecutorError("aggregates.json is not JSON") from None
    return masked_submission(task, aggregates, signing_key, masking)


def masked_submission(task: RunTask, aggregates: dict[str, object],
                      signing_key: Ed25519PrivateKey,
                      masking: Callable[[], MaskSession]) -> OutputReport:
    """The part's output: its aggregates after the disclosure check, masked, encrypted and
    signed (``masking`` waits for the other providers' mask keys)."""
    joint = task.joint
    assert joint is not None
    schema = {f.name: f.type for ds in task.datasets for f in ds.fields}
    mask_session = masking()  # after the run: the peers' keys arrived meanwhile
    submission, disclosure = provider_submit(
        spec_from_json(joint.spec, schema), aggregates,
        base64.b64decode(joint.public_context_b64), joint.context_fingerprint,
        job_id=joint.joint_id, provider_id=task.datasets[0].provider_id,
        signing_key=signing_key, masking=mask_session, min_cell_count=task.min_cell_count)
    raw = json.dumps(submission, sort_keys=True).encode()
    # How many cells were suppressed stays in the domain: it is this provider's own figure,
    # and the requester learns the pooled count (encrypted) from the aggregate only.
    del disclosure
    note = ("masked and encrypted submission; cells below the minimum count suppressed "
            "before encryption")
    return OutputReport(name="submission.json", sha256=hashlib.sha256(raw).hexdigest(),
                        bytes=len(raw), decision=OutputDecision.RELEASED, reasons=(note,),
                        content_b64=base64.b64encode(raw).decode())


def seconds_to_grain(result: RunResult, grain_s: float, since: datetime | None = None
                     ) -> float:
    """How long to wait so the run's end is seen at a whole multiple of ``grain_s`` after
    the job started: ``since`` (when the agent started it), else its container's start
    (a warm container started before its job; 0 without a grain or a start time)."""
    origin = since or result.started_at
    if grain_s <= 0 or origin is None:
        return 0.0
    elapsed = (datetime.now(UTC) - origin).total_seconds()
    return max(0.0, math.ceil(max(elapsed, 1e-9) / grain_s) * grain_s - elapsed)


def failure(result: RunResult) -> str:
    """An outcome, never the exit status: the script chooses it (8 bits a run)."""
    if result.timed_out:
        return "timed out: killed at the wall-clock limit"
    if result.oom_killed:
        return "out of memory: killed at the memory limit"
    return "the script exited with an error status"
