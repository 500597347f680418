"""One run in the provider's domain: project the input, run, check, build the report.

Everything a run needs after its container started is on disk in the job directory
(``task.json``, ``input.json``, the projected input), so an agent restarted after a crash
can finish a run it did not see start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
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
from compute import release_audit, statistics
from compute.errors import InvalidInput
from compute.masking import MaskSession
from compute.protocol import provider_submit
from compute.sdc import SDCPolicy
from compute.sdc.audit import Sketches, sketch_cells, slots_for
from compute.sdc.combinations import differenced
from compute.spec import spec_from_json
from compute.statspec import StatisticsSpec, parse_statistics_spec
from containers import checks, datasets, rederive
from containers.audit_store import AuditStore
from containers.executor import Limits, RunResult, RunSpec
from containers.hardening import check_job_id, read_outputs
from containers.runspec import ExecutorError

CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROW_IDS = "rowids.npy"


def check_task(task: RunTask, work_root: Path) -> Path:
    """Validate what becomes a path before anything touches the disk; return the job dir.

    The controller is not trusted with the provider's file system: a job id or dataset
    code like ``../x`` must not write outside the agent's work root.
    """
    check_job_id(task.job_id)
    for ds in task.datasets:
        if not isinstance(ds.code, str) or not CODE.fullmatch(ds.code):
            raise InvalidInput("datasets.code", "must be a catalog code")
    if len({ds.code for ds in task.datasets}) != len(task.datasets):
        # Each input is written as <code>.csv: one would overwrite another.
        raise InvalidInput("datasets.code", "must be distinct")
    job_dir: Path = (work_root / task.job_id).resolve()
    if job_dir.parent != work_root.resolve():
        raise InvalidInput("job_id", "must name a directory inside the agent's work root")
    return job_dir


def prepare(task: RunTask, job_dir: Path, roots: Callable[[str], list[Path]],
            image: str, base_limits: Limits, audit: AuditStore | None = None) -> RunSpec:
    """Write the script and the permitted columns; record what was read (input.json).

    ``roots`` gives the data roots of one provider: a location resolves only under the
    roots of the provider that owns the dataset. With ``audit``, the keyed row identities
    of a one-dataset job are written beside its input (``rowids.npy``, outside ``in/``,
    never mounted into a container) for the differencing audit.
    """
    in_dir = job_dir / "in"
    in_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "task.json").write_text(task.model_dump_json())
    # job/ is mounted whole at /job in a warm container (containers.warm), the script
    # alone in a cold one; files of the job other than its input go there.
    script_path = job_dir / "job" / "script.py"
    script_path.parent.mkdir(mode=0o755, exist_ok=True)
    script_path.write_bytes(base64.b64decode(task.script_b64))
    single = len(task.datasets) == 1
    rows = size = 0
    digests = []
    for ds in task.datasets:
        src = datasets.resolve(ds.location, roots(ds.provider_id))
        name = "data.csv" if single else f"{ds.code}.csv"
        projected = datasets.project(src, ds.format, [f.name for f in ds.fields],
                                     in_dir / name)
        rows += projected.rows
        size += projected.size
        digests.append(projected.sha256)
        if audit is not None and single and task.joint is None:
            with audit.session() as store:
                key = store.row_key()
            np.save(job_dir / ROW_IDS, datasets.row_identities(src, ds.format, key))
    sha = digests[0] if single else hashlib.sha256("\n".join(digests).encode()).hexdigest()
    (job_dir / "input.json").write_text(json.dumps({"rows": rows, "bytes": size,
                                                    "sha256": sha}))
    for p in [in_dir, *in_dir.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return run_spec(task, job_dir, image, base_limits)


def load_task(job_dir: Path) -> RunTask:
    """The task as :func:`prepare` wrote it (an agent restarted after a crash reads it)."""
    return RunTask.model_validate_json((job_dir / "task.json").read_bytes())


REPORT = "report.json"


def save_report(job_dir: Path, report: RunReport) -> None:
    """Put a finished run's report in the job's outbox, durably (write, fsync, rename)."""
    if not job_dir.is_dir():
        return  # refused before anything was written: there is nothing to keep
    tmp = job_dir / f".{REPORT}.tmp"
    with open(tmp, "wb") as f:
        f.write(report.model_dump_json().encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, job_dir / REPORT)
    dir_fd = os.open(job_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_report(job_dir: Path) -> RunReport | None:
    """The report waiting in the job's outbox, if any (a torn one never exists: rename)."""
    try:
        return RunReport.model_validate_json((job_dir / REPORT).read_bytes())
    except FileNotFoundError:
        return None


def run_spec(task: RunTask, job_dir: Path, image: str, base_limits: Limits) -> RunSpec:
    extra: dict[str, Path] = {}
    if task.joint is not None:
        spec_path = job_dir / "job" / "spec.json"
        spec_path.write_text(json.dumps(task.joint.spec))
        extra["spec.json"] = spec_path
    # The controller's lease is sized for its timeout: never run longer than that.
    limits = replace(base_limits, timeout_s=min(base_limits.timeout_s, task.timeout_s))
    work = job_dir / "work"
    work.mkdir(exist_ok=True)
    return RunSpec(job_id=task.job_id, image=image, script_path=job_dir / "job" / "script.py",
                   input_dir=job_dir / "in", work_dir=work, limits=limits, extra_files=extra)


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
    done = script_rederived(task, job_dir, verdicts, audit)
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
    file name, spelling, precision and row order are text it chose."""
    out = []
    tables = 0
    for o, d in zip(outputs, done, strict=True):
        if d is None or d.rendered is None or o.decision != OutputDecision.RELEASED:
            out.append(o)
            continue
        tables += 1
        ext = o.name.rsplit(".", 1)[-1]
        out.append(o.model_copy(update={
            "name": f"table-{tables}.{ext}", "sha256": hashlib.sha256(d.rendered).hexdigest(),
            "bytes": len(d.rendered),
            "content_b64": base64.b64encode(d.rendered).decode()}))
    return out


def script_findings(task: RunTask, job_dir: Path, verdicts: list[checks.Verdict],
                    audit: AuditStore | None = None) -> list[list[rederive.Finding]]:
    """Per output: what re-deriving it from the permitted input found (empty: verified).
    Files the checks withheld (images) are never released anyway: no findings."""
    return [d.findings if d is not None else []
            for d in script_rederived(task, job_dir, verdicts, audit)]


def script_rederived(task: RunTask, job_dir: Path, verdicts: list[checks.Verdict],
                     audit: AuditStore | None = None) -> list[rederive.Rederived | None]:
    """Per output: its re-derivation (None for files the checks withheld).

    With ``audit``, the groups of verified tables are also checked against the
    populations already released to the requester from this dataset (rule
    ``differencing``) and against the permit's cap; when every output verifies and the
    permit releases automatically, they are recorded as released."""
    frame = None
    if len(task.datasets) == 1:
        frame = pd.read_csv(job_dir / "in" / "data.csv", dtype=str, keep_default_na=False)
    types = {f.name: f.type for ds in task.datasets for f in ds.fields}
    policy = statistics.policy_for(task.min_cell_count, task.disclosure)
    tables = [(v.name, v.content) for v in verdicts
              if v.decision == OutputDecision.RELEASED and v.content is not None]
    done = rederive.rederive_outputs(tables, frame, types, policy)
    if audit is not None and (job_dir / ROW_IDS).exists() and frame is not None:
        _audit_script(task, job_dir, [name for name, _ in tables], done, policy, audit)
    found = iter(done)
    return [next(found) if v.decision == OutputDecision.RELEASED
            and v.content is not None else None for v in verdicts]


def _audit_script(task: RunTask, job_dir: Path, names: list[str],
                  done: list[rederive.Rederived], policy: SDCPolicy, audit: AuditStore
                  ) -> None:
    """Check the rows of every re-derived table against the populations released (or
    held) before; record them as released when the run is released automatically, else
    as held for review (released only if a person approves: containers.review_audit)."""
    ids = np.load(job_dir / ROW_IDS)
    slots = slots_for(policy.min_count)
    requester = task.requester_id or f"permit:{task.permit_id}"
    dataset = task.datasets[0].id
    with audit.session() as store:
        seen = store.populations(requester, dataset, slots)
        before = count = store.released(task.permit_id, task.job_id)
        mine = []
        for out in done:
            pops = Sketches.empty(slots)
            if out.groups:
                member = np.full(len(ids), -1, dtype=np.int64)
                for r, mask in enumerate(out.groups):
                    member[mask] = r
                inside = member >= 0
                pops = sketch_cells(member[inside], ids[inside], len(out.groups), slots)
                # Held outputs are checked too: the finding tells their reviewer.
                for r in np.flatnonzero(differenced(pops, seen, policy.min_count)):
                    out.findings.append(rederive.Finding(
                        "differencing", "the records of this row differ from a population "
                        f"already released by fewer than {policy.min_count}", row=int(r) + 1))
            count += out.cells
            if count > policy.max_released_cells:
                out.findings.append(rederive.Finding(
                    "release_cap", f"the permit's cap of {policy.max_released_cells} "
                    "released cells would be exceeded"))
            mine.append(pops)
            seen = Sketches.concat([seen, pops], slots)
        if task.script_release == ScriptRelease.AUTOMATIC and not any(
                o.findings for o in done):
            store.record(requester, dataset, task.permit_id, task.job_id,
                         Sketches.concat(mine, slots), count - before)
        elif done:
            store.hold(requester, dataset, task.permit_id, task.job_id,
                       [(name, pops, out.cells)
                        for name, pops, out in zip(names, mine, done, strict=True)])


def joint_submission(task: RunTask, out_dir: Path, signing_key: Ed25519PrivateKey | None,
                     masking: Callable[[], MaskSession]) -> OutputReport:
    """Mask and encrypt the local aggregates; the plaintext never leaves the provider's
    domain, and the requester's key alone does not open the ciphertexts (masks)."""
    if signing_key is None:
        raise ExecutorError("this agent has no signing key for joint submissions")
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


STATISTICS_OUTPUT = "statistics.json"


def statistics_report(task: RunTask, job_dir: Path, image: str,
                      audit: AuditStore | None = None) -> RunReport:
    """Compute and check a statistics job's analyses from the projected input.

    The spec is parsed again here: the agent does not take the controller's word for which
    columns an analysis reads (only the task's permitted columns were projected anyway).
    With ``audit`` (the agent always gives it), the result is also checked against the
    populations already released to the requester from this dataset, and what it
    releases is recorded there, under the store's lock throughout.
    """
    assert task.statistics is not None
    stats = json.loads((job_dir / "input.json").read_text())
    fields = {f.name: f.type for ds in task.datasets for f in ds.fields}
    spec = parse_statistics_spec(task.statistics, fields)
    frame = statistics.load_frame(job_dir / "in" / "data.csv", fields)
    policy = statistics.policy_for(task.min_cell_count, task.disclosure)
    if audit is None:
        document = statistics.compute(frame, spec, policy)
    else:
        document = _audited(task, job_dir, frame, spec, policy, audit)
    raw = json.dumps(document, sort_keys=True, allow_nan=False).encode()
    out = OutputReport(name=STATISTICS_OUTPUT, sha256=hashlib.sha256(raw).hexdigest(),
                       bytes=len(raw), decision=OutputDecision.RELEASED,
                       reasons=("computed and checked by the platform",),
                       content_b64=base64.b64encode(raw).decode())
    return RunReport(state=JobState.RELEASED, outputs=(out,), rows_read=stats["rows"],
                     bytes_read=stats["bytes"], input_sha256=stats["sha256"],
                     runner_image=statistics.ENGINE, log="")


def _audited(task: RunTask, job_dir: Path, frame: pd.DataFrame, spec: StatisticsSpec,
             policy: SDCPolicy, audit: AuditStore) -> dict[str, object]:
    if not (job_dir / ROW_IDS).exists():
        # Prepared without the audit (an older agent): fail closed, never unaudited.
        raise ExecutorError("the job was prepared without row identities for the audit")
    ids = np.load(job_dir / ROW_IDS)
    if len(ids) != len(frame):
        raise ExecutorError("row identities do not match the projected input")
    requester = task.requester_id or f"permit:{task.permit_id}"
    dataset = task.datasets[0].id
    slots = slots_for(policy.min_count)
    with audit.session() as store:
        history = release_audit.History(
            ids=ids, prior=store.populations(requester, dataset, slots),
            released_before=store.released(task.permit_id, task.job_id))
        done = release_audit.compute_audited(frame, spec, policy, history)
        store.record(requester, dataset, task.permit_id, task.job_id, done.released,
                     done.cells_released)
    return done.document


def failure(result: RunResult) -> str:
    """An outcome, never the exit status: the script chooses it (8 bits a run)."""
    if result.timed_out:
        return "timed out: killed at the wall-clock limit"
    if result.oom_killed:
        return "out of memory: killed at the memory limit"
    return "the script exited with an error status"
