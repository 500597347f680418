"""Differential privacy for joint statistics: each provider noises its own aggregates.

Who adds the noise: EACH PROVIDER'S AGENT, to its own local aggregates, after the
disclosure check and BEFORE they are split into fixed-point limbs, masked and encrypted
(:func:`noise_aggregates`, called from ``compute.protocol.provider_submit``). Every entry
of the layout is noised: counts with OpenDP's discrete Laplace, real sums with OpenDP's
Laplace (:mod:`compute.noise`), each at scale ``sensitivity / (epsilon / entries)``.

Why there and not on the encrypted total (red-team finding R7-1): the requester decrypts
every limb of a sum, and limbs add without carries, so noise added to the total as its own
limbs leaves every limb above the noise's magnitude an exact sum of the providers' digits
-- a noise-free threshold oracle on each provider's sum. Noise added to the VALUE before it
is split cannot be stepped around that way. The argument:

* Provider p's noised vector ``v_p + n_p`` is epsilon-DP with respect to p's records: each
  entry is an OpenDP Laplace measurement at ``sensitivity / eps_entry`` and the entries
  compose sequentially (``len(layout.entries) * eps_entry = epsilon``). The sensitivities
  are per provider already (below: a provider's own check releases or suppresses its own
  cells), and under DP nothing a provider computes depends on another provider's records
  (no cell-holders round under ``dp``: ``compute.cell_holders.layout_size``).
* A record lies at one provider, so adding or removing it changes one provider's input
  only; the tuple of all noised vectors is then epsilon-DP for it (parallel composition).
* Everything after the noise is a function of that tuple and of randomness independent
  of the data: clamping to the encodable range, the limb split, the pairwise masks (they
  cancel in the sum), encryption, the controller's addition, the requester's decryption
  of every limb and its recombination. Post-processing: the requester's whole view,
  limbs included, is epsilon-DP.

Trust: the controller no longer draws noise and need not be trusted not to collude with
the requester for DP (it sees only ciphertexts). A provider that does not noise, or noises
less, exposes only its own records. The cost is accuracy: the released total carries the
sum of P independent draws, sqrt(P) times the standard deviation of one draw at the same
scale (docs/joint-statistics.md, "Differential privacy").

Budget: the controller still charges every permit's epsilon -- reserved at submission
under the permit's row lock (``authz.joint.submit``) and recorded with the release by
:func:`record_dp_release` after the combination, which refuses the release if a budget
cannot take it; the ``dp`` record of the aggregate names the mechanism, the epsilon split,
the per-entry scales and sensitivities (all from the spec and the permit, none from data).

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
from compute.errors import BudgetExceeded, InvalidInput, MagnitudeOverflow
from compute.glmdp import row_sensitivities
from compute.layout import MAX_COUNT, MAX_REAL, Layout, build_layout
from compute.spec import JointSpec

MECHANISM = "discrete_laplace (counts), laplace (sums); OpenDP samplers"
NOISED_BY = "each provider, before encoding"  # who drew the noise, on every dp record


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
    # A person changes at most ``dp_max_records_per_person`` records of a provider's aggregate
    # (the agent keeps no more of any person's where the dataset declares identifier
    # fields; without them every record is a person): every sensitivity scales by it.
    k = max(1, min_cell_count) * spec.dp_max_records_per_person
    out: dict[str, float] = {}
    n_counts = len(layout.of_kind("count")) - 1
    glm_rows = {} if spec.glm is None else row_sensitivities(spec.glm, spec.dp_bounds)
    for e in layout.entries:
        if e.name == "disclosure.suppressed":
            # one record flips at most one cell per entry
            out[e.name] = float(n_counts * spec.dp_max_records_per_person)
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


def dp_plan(spec: JointSpec, layout: Layout, min_cell_count: int
            ) -> tuple[float, dict[str, float], dict[str, float]]:
    """The epsilon per entry, each entry's sensitivity and its noise scale: public values
    only (the spec and the permit's minimum count), the same at every provider."""
    if spec.dp_epsilon is None:
        raise InvalidInput("dp", "required", "the spec does not ask for differential privacy")
    sens = sensitivities(spec, layout, min_cell_count)
    eps_entry = spec.dp_epsilon / len(layout.entries)
    return eps_entry, sens, {name: s / eps_entry for name, s in sens.items()}


def noise_aggregates(aggregates: Mapping[str, Any], spec: JointSpec, layout: Layout,
                     min_cell_count: int) -> dict[str, Any]:
    """Agent side: the provider's checked aggregates with every entry noised.

    The noise goes into the value through OpenDP's measurement (never a draw added to the
    value afterwards in floating point). Noised counts may be negative; the result is
    clamped to the range the limbs encode (counts to +-MAX_COUNT, sums to +-MAX_REAL), a
    post-processing that costs no privacy and, unlike a refusal, says nothing about the
    data. Returns a new mapping; ``aggregates`` is left as it was."""
    _, sens, scales = dp_plan(spec, layout, min_cell_count)
    counts = dict(aggregates["counts"])
    reals = dict(aggregates["reals"])
    for e in layout.entries:
        if e.kind == "count":
            drawn = noise.integer_noise([int(v) for v in counts[e.name]], scales[e.name],
                                        max(1, math.ceil(sens[e.name])))
            counts[e.name] = [max(-MAX_COUNT, min(MAX_COUNT, int(v))) for v in drawn.values]
        else:
            values = [float(v) for v in reals[e.name]]
            for i, v in enumerate(values):
                if not math.isfinite(v):  # as compute.layout.to_limbs refuses it unnoised
                    raise MagnitudeOverflow(f"{e.name}[{i}]", f"{e.name}[{i}]: not finite")
            got = noise.real_noise(values, scales[e.name], sens[e.name])
            reals[e.name] = [max(-MAX_REAL, min(MAX_REAL, float(v))) for v in got.values]
    return {**aggregates, "counts": counts, "reals": reals}


def record_dp_release(aggregate: Mapping[str, Any], spec: JointSpec,
                      budgets: Sequence[PrivacyBudget], *, min_cell_count: int
                      ) -> dict[str, Any]:
    """Controller side: charge every permit's budget for the release and attach the
    ``dp`` record; the ciphertexts are left as the providers noised them.

    Every budget is checked before any is charged: a joint release charges every
    provider's permit or none, and a release no budget can take is refused
    (BudgetExceeded) and never returned."""
    if spec.dp_epsilon is None:
        raise InvalidInput("dp", "required", "the spec does not ask for differential privacy")
    eps = spec.dp_epsilon
    short = [b for b in budgets if not b.can_charge(eps)]
    if short:
        left = ", ".join(f"{b.permit_id} has {max(0.0, b.remaining):g} left" for b in short)
        raise BudgetExceeded(f"epsilon {eps:g} exceeds the remaining budget ({left})")
    charges = [b.charge(str(aggregate["job_id"]), eps) for b in budgets]
    layout = build_layout(spec)
    eps_entry, sens, scales = dp_plan(spec, layout, min_cell_count)
    out = dict(aggregate)
    out["dp"] = {
        "mechanism": MECHANISM, "noised_by": NOISED_BY, "epsilon": eps,
        "epsilon_per_entry": eps_entry, "sensitivities": sens,
        "scales": {e.name: {"mechanism": noise.DISCRETE_LAPLACE if e.kind == "count"
                            else noise.LAPLACE, "scale": scales[e.name]}
                   for e in layout.entries},
        "min_cell_count": min_cell_count, "charges": charges}
    return out
