"""In-process end-to-end run of the joint-statistics protocol, for tests.

``run_joint`` plays every party in one process -- requester keygen, each provider's local
aggregation (the same code the container runs), disclosure check, encrypt + sign, the
controller's combine (and DP noise), then decrypt, round and derive. The product wires the
same step functions across the SDK (``sandbox/sdk.py``), the agent
(``containers/runjob.py``) and the controller (``authz/joint.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.derive import JointResult, derive
from compute.dp import PrivacyBudget, add_dp_noise
from compute.local_aggregate import local_aggregate
from compute.protocol import (
    Backend,
    combine,
    decrypt_aggregate,
    default_backend,
    ledger_record,
    provider_submit,
    requester_keygen,
)
from compute.spec import DEFAULT_MIN_PROVIDERS, JointSpec


def run_joint(spec: JointSpec, provider_frames: Mapping[str, Any], min_cell_count: int = 10,
              min_providers: int = DEFAULT_MIN_PROVIDERS, *, job_id: str = "job-local",
              budgets: Sequence[PrivacyBudget] = (), backend: Backend | None = None) -> JointResult:
    be = backend or default_backend()
    keys = requester_keygen(be)
    agent_keys = {pid: Ed25519PrivateKey.generate() for pid in provider_frames}
    normalized = spec.to_json()
    subs = []
    for pid, frame in provider_frames.items():
        agg = local_aggregate(normalized, frame)
        sub, _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id=job_id,
                                 provider_id=pid, signing_key=agent_keys[pid],
                                 min_cell_count=min_cell_count, backend=be)
        subs.append(sub)
    aggregate = combine(subs, keys.public_bytes, keys.fingerprint,
                        {p: k.public_key() for p, k in agent_keys.items()}, min_providers,
                        backend=be)
    if spec.dp_epsilon is not None:
        aggregate = add_dp_noise(aggregate, spec, keys.public_bytes, budgets,
                                 min_cell_count=min_cell_count, backend=be)
    result = derive(spec, decrypt_aggregate(aggregate, keys, spec, be))
    result.dp = aggregate.get("dp")
    result.ledger = ledger_record(aggregate)
    return result
