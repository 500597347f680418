"""Requester SDK for the trusted statistics route (one provider, a declared spec).

The platform computes and checks the spec in the provider's domain; what comes back is a
document of checked (or, with ``dp``, noised) tables. :class:`StatisticsResult` says which,
with the mechanism and its scale, so a noised figure is never mistaken for an exact one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from authz.wire import JobState
from sandbox.client import Client

OUTPUT = "statistics.json"


@dataclass(frozen=True)
class StatisticsResult:
    job: dict[str, Any]
    document: dict[str, Any] | None  # None unless the job was released

    @property
    def noised(self) -> bool:
        """True when the figures carry differential-privacy noise (not exact)."""
        return self.dp is not None

    @property
    def dp(self) -> dict[str, Any] | None:
        """Epsilon, delta and samplers of a noised job (each analysis has its scale)."""
        if self.document is not None and self.document.get("dp"):
            return dict(self.document["dp"])
        return self.job.get("dp")

    @property
    def privacy_unit(self) -> str | None:
        """What epsilon protects in a noised job: ``"person"`` (each contributing at most
        ``dp["max_records_per_person"]`` records) or ``"record"``; None if not noised."""
        return None if self.dp is None else self.dp.get("unit")

    @property
    def analyses(self) -> list[dict[str, Any]]:
        return list(self.document["analyses"]) if self.document else []


def run_statistics(client: Client, permit_id: str, dataset_id: str, spec: dict[str, Any],
                   timeout_s: float = 300.0) -> StatisticsResult:
    """Submit a statistics job, wait for it, and fetch its document if released."""
    job = client.call("jobs.submit", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                      "statistics": spec})
    job = client.wait_job(job["id"], timeout_s)
    document = None
    if job["state"] == JobState.RELEASED:
        document = json.loads(client.call("jobs.output", job_id=job["id"], name=OUTPUT))
    return StatisticsResult(job, document)


def describe(result: StatisticsResult) -> str:
    """One line for a console: noised (mechanism, epsilon) or checked."""
    if result.dp is None:
        return "exact figures, checked by the disclosure rules"
    unit = result.privacy_unit
    per = (f"per person of at most {result.dp.get('max_records_per_person')} records"
           if unit == "person" else f"per {unit}")
    return (f"differentially private: epsilon={result.dp.get('epsilon')} {per} "
            f"({result.dp.get('samplers') or result.dp.get('mechanism')}); figures are noised")
