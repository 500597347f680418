from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ledger.log import TransparencyLog


def run_finished_body(i: int) -> dict[str, Any]:
    return {
        "job_id": f"job-{i}", "permit_id": "permit-1", "state": "released",
        "audit": {"authorizing_system": "authz", "authorizing_operator": "provider:h1",
                  "business_system": "insurer-analytics", "user": "user:alice",
                  "access_method": "sandbox-job", "access_time": "2025-03-01T10:00:00Z",
                  "data_volume": {"rows": 1200, "bytes": 48000}},
        "script_sha256": "a" * 64, "runner_image": "sandbox-runner:1",
        "input_sha256": "b" * 64,
        "outputs": [{"name": "means.csv", "sha256": "c" * 64, "bytes": 310,
                     "decision": "released"}],
        "reasons": [],
    }


def fill_realistic(factory: sessionmaker[Session], log: TransparencyLog, n: int) -> None:
    kinds = ["party.created", "dataset.registered", "request.approved", "job.submitted",
             "job.dispatched", "run.finished", "output.released"]
    with factory() as s:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            body = run_finished_body(i) if kind == "run.finished" else {"id": f"x{i}", "i": i}
            log.append(s, kind, f"party:{i % 4}", body)
            if i % 5 == 4:
                s.commit()
        s.commit()
