"""Requester SDK for joint statistics: the secret key is made, kept and used here only.

A fresh CKKS context per joint job; only its public part is uploaded. The aggregate comes
back encrypted; it is decrypted and rounded here before anything is derived or shown.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz.wire import JointJobState
from compute.derive import JointResult, derive
from compute.glm import DEFAULT_MAX_ROUNDS, DEFAULT_TOL, fit_glm, model_request, round_request
from compute.layout import Sums
from compute.protocol import RequesterKeys, decrypt_aggregate, ledger_record, requester_keygen
from compute.spec import JointSpec, parse_spec
from sandbox.client import Client

#: How long one ``GET /joint-jobs/<id>?wait=`` asks the controller to hold its answer.
LONG_POLL_S = 5.0


@dataclass
class JointRun:
    joint_id: str
    spec: JointSpec
    keys: RequesterKeys


class JointStatistics:
    def __init__(self, client: Client) -> None:
        self.client = client
        # A permit's columns are fixed when it is granted: one model fit asks once, not
        # 1 + one call per dataset again for every round.
        self._schemas: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    def schema(self, permit_id: str, dataset_ids: Sequence[str]) -> dict[str, str]:
        """Column types all datasets agree on, among the permit's columns (as the server)."""
        key = (permit_id, tuple(dataset_ids))
        if key not in self._schemas:
            self._schemas[key] = self._schema(permit_id, dataset_ids)
        return dict(self._schemas[key])

    def _schema(self, permit_id: str, dataset_ids: Sequence[str]) -> dict[str, str]:
        permit = self.client.call("access.get_permit", permit_id=permit_id)
        schema: dict[str, str] | None = None
        for ds_id in dataset_ids:
            dataset = self.client.call("catalog.get_dataset", dataset_id=ds_id)
            fields = {f["name"]: f["type"] for f in dataset["fields"]}
            mine = {c: fields[c] for c in permit["columns"][ds_id]}
            schema = mine if schema is None else {c: t for c, t in schema.items()
                                                  if mine.get(c) == t}
        return schema or {}

    def submit(self, permit_id: str, dataset_ids: Sequence[str], spec: dict[str, Any]
               ) -> JointRun:
        parsed = parse_spec(spec, self.schema(permit_id, dataset_ids))
        keys = requester_keygen()
        joint = self.client.call("joint.submit", {
            "permit_id": permit_id, "dataset_ids": list(dataset_ids), "spec": spec,
            "public_context_b64": base64.b64encode(keys.public_bytes).decode(),
            "context_fingerprint": keys.fingerprint,
        })
        return JointRun(joint["id"], parsed, keys)

    def wait(self, run: JointRun, timeout_s: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        pause = 0.02
        while True:
            # A long poll: the controller answers as soon as the last part is combined.
            wait = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            asked = time.monotonic()
            joint: dict[str, Any] = self.client.call("joint.get", joint_id=run.joint_id,
                                                     query={"wait": wait})
            if joint["state"] not in (JointJobState.RUNNING, JointJobState.AWAITING_WITNESSES) or \
                    time.monotonic() > deadline:
                return joint
            if time.monotonic() - asked < wait / 2:
                # Answered early yet not done: awaiting the witnesses (not held), or a
                # controller that does not hold the answer. Look again, backing off.
                time.sleep(pause)
                pause = min(pause * 1.5, 0.1)

    def result(self, run: JointRun, joint: dict[str, Any]) -> JointResult:
        if joint["state"] != JointJobState.COMBINED:
            raise RuntimeError(f"joint job {run.joint_id} {joint['state']}: {joint['reason']}")
        sums = decrypt_aggregate(joint["aggregate"], run.keys, run.spec)
        result = derive(run.spec, sums)
        # Noised figures say so wherever they are shown (format_result, the CLI).
        result.dp = joint["aggregate"].get("dp")
        result.ledger = ledger_record(joint["aggregate"])
        return result

    def sums(self, run: JointRun, joint: dict[str, Any]) -> Sums:
        """The decrypted, rounded pooled sums of a combined joint job."""
        if joint["state"] != JointJobState.COMBINED:
            raise RuntimeError(f"joint job {run.joint_id} {joint['state']}: {joint['reason']}")
        return decrypt_aggregate(joint["aggregate"], run.keys, run.spec)

    def glm(self, permit_id: str, dataset_ids: Sequence[str], model: dict[str, Any], *,
            max_rounds: int = DEFAULT_MAX_ROUNDS, tol: float = DEFAULT_TOL,
            timeout_s: float = 300, epsilon: float | None = None,
            bounds: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
        """Fit a GLM across the providers by IRLS: one joint job per round.

        ``model``: ``{"family": "poisson" | "binomial" | "negative_binomial", "y": col,
        "x": [cols], "alpha": float (negative binomial)}``. Each round is submitted at the
        coefficients the previous round's pooled sums gave, decrypted here, and never leaves
        this process in the clear except as the next round's coefficients. The permit's runs
        cap the rounds (one part per provider each); ``max_rounds`` caps them here too.

        ``epsilon`` (per round) and ``bounds`` (``{col: [lo, hi]}`` for ``y`` and every
        regressor) make every round differentially private: each round's sums are noised
        by the controller and charged ``epsilon`` against the permit's budget, so the fit
        costs ``rounds * epsilon``; the result's ``dp`` says so. A noised fit usually needs a
        looser ``tol`` (1e-3, say); one still moving at ``max_rounds`` is returned with
        ``converged: false``. When the budget runs out the next round is refused (409).
        """
        schema = self.schema(permit_id, dataset_ids)
        base = parse_spec(model_request(model, epsilon, bounds), schema)

        def run_round(spec: JointSpec) -> Sums:
            run = self.submit(permit_id, dataset_ids, round_request(spec))
            return self.sums(run, self.wait(run, timeout_s))

        return fit_glm(base, run_round, max_rounds=max_rounds, tol=tol)


class PrivateSetIntersection:
    """Record linkage between two or more providers keyed by an identifier (compute/psi.py
    for two, compute/psi_ring.py for more)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def submit(self, permit_id: str, client_dataset_id: str, server_dataset_id: str,
               spec: dict[str, Any]) -> str:
        joint: dict[str, Any] = self.client.call("psi.submit", {
            "permit_id": permit_id, "client_dataset_id": client_dataset_id,
            "server_dataset_id": server_dataset_id, "spec": spec})
        return str(joint["id"])

    def submit_among(self, permit_id: str, dataset_ids: list[str], holder_dataset_id: str,
                     spec: dict[str, Any], counter_dataset_id: str | None = None) -> str:
        """Every dataset of the permit (one per provider); the holder's has the category and
        value columns; the counter's (default: the first other) intersects and releases."""
        joint: dict[str, Any] = self.client.call("psi.submit", {
            "permit_id": permit_id, "dataset_ids": dataset_ids,
            "holder_dataset_id": holder_dataset_id, "counter_dataset_id": counter_dataset_id,
            "spec": spec})
        return str(joint["id"])

    def wait(self, psi_id: str, timeout_s: float = 300) -> dict[str, Any]:
        """The released counts and sums (``null`` where suppressed below the minimum)."""
        deadline = time.monotonic() + timeout_s
        while True:
            joint: dict[str, Any] = self.client.call("joint.get", joint_id=psi_id)
            if joint["state"] == JointJobState.COMBINED:
                out: dict[str, Any] = joint["aggregate"]
                return out
            if joint["state"] != JointJobState.RUNNING and \
                    joint["state"] != JointJobState.AWAITING_WITNESSES:
                raise RuntimeError(f"PSI job {psi_id} {joint['state']}: {joint['reason']}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"PSI job {psi_id} still running after {timeout_s:g} s")
            time.sleep(0.3)
