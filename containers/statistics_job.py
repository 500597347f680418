"""A statistics job: the platform's own analyses, computed and checked by the agent.

No container runs: the agent computes the requested analyses on the projected permitted
columns, checks them under the disclosure policy and the differencing audit, and reports
one document. Kept apart from a script's run (:mod:`containers.runjob`), which it shares
nothing with but the job directory (:mod:`containers.jobdir`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from authz.states import (
    JobState,
    OutputDecision,
)
from authz.wire import OutputReport, RunReport, RunTask
from compute import release_audit, statistics
from compute.sdc import SDCPolicy
from compute.sdc.audit import holding_slots, slots_for
from compute.statspec import StatisticsSpec, parse_statistics_spec
from containers import audit_ids, jobdir
from containers.audit_store import (
    HOLDINGS,
    PERSONS,
    RECORDS,
    AuditStore,
    audit_keys,
    audit_persons,
    lineage,
    refuse_records_after_persons,
)
from containers.runspec import ExecutorError

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
    frame = statistics.with_units(statistics.load_frame(job_dir / "in" / "data.csv", fields),
                                  _units(task, job_dir))
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


def _units(task: RunTask, job_dir: Path) -> np.ndarray | None:
    """The records' contributor numbers where the dataset declares identifier fields:
    persons, not records, are then the contributors of every cell."""
    if not task.datasets[0].identifiers:
        return None  # nothing says which records are one person's: each is its own
    if not (job_dir / jobdir.UNIT_IDS).exists():
        # Prepared without them (an older agent): fail closed, never count records.
        raise ExecutorError("the job was prepared without its contributors")
    units: np.ndarray = np.load(job_dir / jobdir.UNIT_IDS)
    rows = json.loads((job_dir / "input.json").read_text())["rows"]
    if len(units) != rows:
        raise ExecutorError("contributors do not match the projected input")
    return units


def _audited(task: RunTask, job_dir: Path, frame: pd.DataFrame, spec: StatisticsSpec,
             policy: SDCPolicy, audit: AuditStore) -> dict[str, object]:
    if not (job_dir / jobdir.ROW_IDS).exists():
        # Prepared without the audit (an older agent): fail closed, never unaudited.
        raise ExecutorError("the job was prepared without row identities for the audit")
    records = np.load(job_dir / jobdir.ROW_IDS)
    if len(records) != len(frame):
        raise ExecutorError("row identities do not match the projected input")
    requester = task.requester_id or f"permit:{task.permit_id}"
    ds = task.datasets[0]
    slots = slots_for(policy.min_count)
    persons = audit_persons(task, job_dir, len(frame))
    ids = audit_ids.load(job_dir, records, persons)
    keys = audit_keys(ds)
    with audit.session() as store:
        released_before = store.released(task.permit_id, task.job_id)
        space = ids.space
        more = audit_ids.context(store, requester, ds, slots, policy.min_count, ids)
        if persons is None:
            refuse_records_after_persons(store, requester, keys)
            history = release_audit.History(
                ids=records, prior=store.populations(requester, keys, slots, RECORDS, space),
                released_before=released_before, **more)
        else:
            history = release_audit.History(
                ids=persons, prior=store.populations(requester, keys, slots, PERSONS,
                                                     space),
                released_before=released_before, persons=True, records=records,
                record_prior=store.populations(requester, keys, slots, RECORDS, space),
                holdings=store.populations(requester, keys,
                                           holding_slots(policy.min_count), HOLDINGS,
                                           space),
                bare=store.bare_persons(requester, keys, slots, space), **more)
        done = release_audit.compute_audited(frame, spec, policy, history)
        store.record(requester, lineage(ds), task.permit_id, task.job_id, done.released,
                     done.cells_released, PERSONS if persons is not None else RECORDS,
                     done.holdings, space, done.labels)
        store.edition(requester, lineage(ds), task.job_id, audit_ids.signatures(ids))
    return done.document

