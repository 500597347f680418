"""Differential privacy: a per-permit epsilon budget and noise added by the controller.

Who adds the noise: the CONTROLLER, homomorphically, to the encrypted aggregate before it
returns it (Laplace mechanism, Dwork et al., TCC 2006). Noise added by the requester after
decryption would protect nothing from the requester, who holds the key. The controller
sees only ciphertexts, and it is also the party that holds each permit's budget, so epsilon
cannot be charged without noise being added or vice versa. Trust assumption: the controller
does not collude with the requester (it knows the noise it drew; it never logs it). The
alternative -- each provider adding a share of the noise -- needs every provider honest
and is left for a later round (docs/joint-statistics.md, "Differential privacy").

Samplers: OpenDP's (:mod:`compute.noise`), discrete Laplace for counts and its exact
Laplace for sums, never numpy's floating-point Laplace.

Sensitivity: one record changes one cell per entry. Because providers suppress cells below
the minimum count k, adding one record can release a whole cell of k records, so count
entries have L1 sensitivity k and clipped sums k*B (B = max |bound - shift|). A GLM round's
entries have k times the per-record bound of :mod:`compute.glmdp`, derived from the clipping
bounds, the family and the round's public coefficients. Epsilon is split evenly over the
layout's entries (sequential composition); a model fit charges it once per round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compute import noise
from compute.errors import BudgetExceeded, InvalidInput
from compute.glmdp import row_sensitivities
from compute.layout import COUNT_LIMBS, DATA_SLOTS, LIMBS, Layout, build_layout, int_limbs, to_limbs
from compute.protocol import (
    Backend,
    _b64,
    aggregate_ciphertexts,
    ciphertexts_digest,
    default_backend,
)
from compute.spec import JointSpec


@dataclass
class PrivacyBudget:
    """Epsilon granted by one permit, and what has been charged against it."""

    permit_id: str
    total_epsilon: float
    charges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def spent(self) -> float:
        return math.fsum(c["epsilon"] for c in self.charges)

    @property
    def remaining(self) -> float:
        return self.total_epsilon - self.spent

    def can_charge(self, epsilon: float) -> bool:
        return epsilon > 0 and self.spent + epsilon <= self.total_epsilon + 1e-12

    def charge(self, job_id: str, epsilon: float) -> dict[str, Any]:
        """Record a charge; returns the ledger record. Raises BudgetExceeded, charging nothing."""
        if not self.can_charge(epsilon):
            raise BudgetExceeded(f"permit {self.permit_id}: epsilon {epsilon} exceeds the "
                                 f"remaining {self.remaining:.6g}")
        rec = {"permit_id": self.permit_id, "job_id": job_id, "epsilon": epsilon,
               "spent_after": self.spent + epsilon, "total": self.total_epsilon}
        self.charges.append(rec)
        return rec


def sensitivities(spec: JointSpec, layout: Layout, min_cell_count: int) -> dict[str, float]:
    k = max(1, min_cell_count)
    out: dict[str, float] = {}
    n_counts = len(layout.of_kind("count")) - 1
    glm_rows = {} if spec.glm is None else row_sensitivities(spec.glm, spec.dp_bounds)
    for e in layout.entries:
        if e.name == "disclosure.suppressed":
            out[e.name] = float(n_counts)  # one record flips at most one cell per entry
        elif e.name in glm_rows:
            out[e.name] = k * glm_rows[e.name]
        elif e.kind == "count":
            out[e.name] = float(k)
        else:
            col = e.name.split(".")[1]
            lo, hi = spec.dp_bounds[col]
            shift = spec.shift.get(col, 0.0)
            out[e.name] = k * max(abs(lo - shift), abs(hi - shift))
    return out


def add_dp_noise(aggregate: Mapping[str, Any], spec: JointSpec, public_context_bytes: bytes,
                 budgets: Sequence[PrivacyBudget], *, min_cell_count: int,
                 backend: Backend | None = None) -> dict[str, Any]:
    """Controller side: charge every permit's budget, then add Laplace noise homomorphically."""
    if spec.dp_epsilon is None:
        raise InvalidInput("dp", "required", "the spec does not ask for differential privacy")
    eps = spec.dp_epsilon
    short = [b for b in budgets if not b.can_charge(eps)]
    if short:  # check all first: a joint release charges every provider's permit or none
        left = ", ".join(f"{b.permit_id} has {max(0.0, b.remaining):g} left" for b in short)
        raise BudgetExceeded(f"epsilon {eps:g} exceeds the remaining budget ({left})")
    charges = [b.charge(str(aggregate["job_id"]), eps) for b in budgets]
    layout = build_layout(spec)
    sens = sensitivities(spec, layout, min_cell_count)
    eps_entry = eps / len(layout.entries)
    cnoise: list[float] = []
    rnoise: list[float] = []
    scales: dict[str, dict[str, object]] = {}
    for e in layout.entries:
        scale = sens[e.name] / eps_entry
        if e.kind == "count":
            # Integer noise keeps counts integers, exact under CKKS's integer limbs.
            drawn = noise.integer_noise([0] * e.length, scale, max(1, round(sens[e.name])))
            for d in drawn.values:
                cnoise.extend(float(x) for x in int_limbs(round(d), COUNT_LIMBS))
        else:
            drawn = noise.real_noise([0.0] * e.length, scale, sens[e.name])
            for i, d in enumerate(drawn.values):
                rnoise.extend(float(x) for x in to_limbs(float(d), f"dp.{e.name}[{i}]"))
        scales[e.name] = {"mechanism": drawn.mechanism, "scale": scale}
    be = backend or default_backend()
    public = be.load_public(public_context_bytes)
    counts, reals = aggregate_ciphertexts(aggregate)

    def noisy(cts: list[bytes], noise: list[float]) -> list[bytes]:
        return [be.add_plain(public, ct, [0.0, *noise[i * DATA_SLOTS:(i + 1) * DATA_SLOTS]])
                for i, ct in enumerate(cts)]

    assert len(rnoise) == layout.n_values("real") * LIMBS
    assert len(cnoise) == layout.n_values("count") * COUNT_LIMBS
    counts, reals = noisy(counts, cnoise), noisy(reals, rnoise)
    out = dict(aggregate)
    out.update(
        count_ciphertexts=[_b64(c) for c in counts], real_ciphertexts=[_b64(c) for c in reals],
        pre_noise_sha256=aggregate["aggregate_sha256"],
        aggregate_sha256=ciphertexts_digest(counts + reals),
        dp={"mechanism": "discrete_laplace (counts), laplace (sums); OpenDP samplers",
            "epsilon": eps, "epsilon_per_entry": eps_entry, "sensitivities": sens,
            "scales": scales, "min_cell_count": min_cell_count, "charges": charges},
    )
    return out
