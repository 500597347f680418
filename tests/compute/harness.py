"""In-process end-to-end run of the joint-statistics protocol, for tests.

``run_joint`` plays every party in one process -- requester keygen, each provider's local
aggregation (the same code the container runs), disclosure check, encrypt + sign, the
controller's combine (and, under DP, its budget charge; each provider noised its own
aggregates), then decrypt, round and derive. The product wires the
same step functions across the SDK (``sandbox/sdk.py``), the agent
(``containers/runjob.py``) and the controller (``authz/joint.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute import cell_holders
from compute.derive import JointResult, derive
from compute.dp import PrivacyBudget, record_dp_release
from compute.layout import Sums
from compute.local_aggregate import kept_records, local_aggregate
from compute.masking import MaskSession, local_sessions
from compute.protocol import (
    Backend,
    RequesterKeys,
    combine,
    decrypt_aggregate,
    default_backend,
    ledger_record,
    provider_submit,
    requester_keygen,
)
from compute.spec import DEFAULT_MIN_PROVIDERS, JointSpec


def mask_sessions(job_id: str, agents: Mapping[str, Ed25519PrivateKey]
                  ) -> tuple[dict[str, MaskSession], list[dict[str, Any]]]:
    """Every provider's mask session for one job, and the announcements the controller holds."""
    return local_sessions(job_id, agents)


def cell_holder_rounds(spec: dict[str, Any], provider_frames: Mapping[str, Any],
                       min_cell_count: int, min_providers: int,
                       masks: Mapping[str, MaskSession],
                       agent_keys: Mapping[str, Ed25519PrivateKey],
                       published: list[list[dict[str, Any]]] | None = None
                       ) -> dict[str, Any]:
    """The cell-holders rounds, every provider in this process: each provider's withdrawn
    records (None when the job has no round). ``published`` receives each round's vectors."""
    if not cell_holders.needed(spec, min_providers):
        return dict.fromkeys(provider_frames)
    pubs = {p: k.public_key() for p, k in agent_keys.items()}
    parties = {pid: cell_holders.CellHolderRounds(
        spec, frame, min_providers, masks[pid],
        lambda w, frame=frame: kept_records(spec, frame, min_cell_count, w))
        for pid, frame in provider_frames.items()}
    while True:
        vectors = [parties[p].publish(agent_keys[p]) for p in parties]
        if published is not None:
            published.append(vectors)
        settled = [party.settle(vectors, pubs) for party in parties.values()]
        assert len(set(settled)) == 1  # every provider computes the same holders
        if settled[0]:
            return {p: party.withdrawn for p, party in parties.items()}


def joint_sums(spec: JointSpec, provider_frames: Mapping[str, Any], min_cell_count: int = 10,
               min_providers: int = DEFAULT_MIN_PROVIDERS, *, job_id: str = "job-local",
               budgets: Sequence[PrivacyBudget] = (), backend: Backend | None = None,
               keys: RequesterKeys | None = None
               ) -> tuple[Sums, dict[str, Any]]:
    """One joint job, every party in this process: the decrypted pooled sums and the
    aggregate they came from."""
    be = backend or default_backend()
    keys = keys or requester_keygen(be)
    agent_keys = {pid: Ed25519PrivateKey.generate() for pid in provider_frames}
    normalized = spec.to_json()
    masks, announcements = mask_sessions(job_id, agent_keys)
    withdrawn = cell_holder_rounds(normalized, provider_frames, min_cell_count, min_providers,
                                   masks, agent_keys)
    subs = []
    for pid, frame in provider_frames.items():
        agg = local_aggregate(normalized, frame, min_cell_count, withdrawn[pid])
        sub, _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id=job_id,
                                 provider_id=pid, signing_key=agent_keys[pid],
                                 masking=masks[pid], min_cell_count=min_cell_count, backend=be)
        subs.append(sub)
    aggregate = combine(subs, keys.public_bytes, keys.fingerprint,
                        {p: k.public_key() for p, k in agent_keys.items()}, min_providers,
                        mask_announcements=announcements, backend=be)
    if spec.dp_epsilon is not None:
        aggregate = record_dp_release(aggregate, spec, budgets, min_cell_count=min_cell_count)
    return decrypt_aggregate(aggregate, keys, spec, be), aggregate


def run_joint(spec: JointSpec, provider_frames: Mapping[str, Any], min_cell_count: int = 10,
              min_providers: int = DEFAULT_MIN_PROVIDERS, *, job_id: str = "job-local",
              budgets: Sequence[PrivacyBudget] = (), backend: Backend | None = None) -> JointResult:
    sums, aggregate = joint_sums(spec, provider_frames, min_cell_count, min_providers,
                                 job_id=job_id, budgets=budgets, backend=backend)
    result = derive(spec, sums)
    result.dp = aggregate.get("dp")
    result.ledger = ledger_record(aggregate)
    return result
