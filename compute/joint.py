"""In-process end-to-end run of the joint-statistics protocol, and a text report.

``run_joint`` plays every party in one process -- requester keygen, each provider's local
aggregation (the same code the container runs), disclosure check, encrypt + sign, the
controller's combine (and DP noise), then decrypt, round and derive -- for demos and tests.
In production the lead wires the same step functions across SDK, agent and controller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.derive import JointResult, derive
from compute.dp import PrivacyBudget, add_dp_noise
from compute.local_aggregate import local_aggregate
from compute.protocol import (
    DEFAULT_MIN_PROVIDERS,
    Backend,
    combine,
    decrypt_aggregate,
    default_backend,
    provider_submit,
    requester_keygen,
)
from compute.spec import JointSpec


def ledger_record(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """What the lead writes to the transparency ledger for one joint release."""
    dp = aggregate.get("dp") or {}
    return {
        "job_id": aggregate["job_id"],
        "context_fingerprint": aggregate["context_fingerprint"],
        "layout_digest": aggregate["layout_digest"],
        "submission_sha256": dict(aggregate["submission_sha256"]),
        "aggregate_sha256": aggregate["aggregate_sha256"],
        "pre_noise_sha256": aggregate.get("pre_noise_sha256"),
        "epsilon_spent": dp.get("epsilon"),
        "budget_charges": dp.get("charges", []),
    }


def run_joint(spec: JointSpec, provider_frames: Mapping[str, Any], min_cell_count: int = 10,
              min_providers: int = DEFAULT_MIN_PROVIDERS, *, job_id: str = "job-local",
              budgets: Sequence[PrivacyBudget] = (), backend: Backend | None = None,
              dp_seed: int | None = None) -> JointResult:
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
                                 min_cell_count=min_cell_count, backend=be, seed=dp_seed)
    result = derive(spec, decrypt_aggregate(aggregate, keys, spec, be))
    result.dp = aggregate.get("dp")
    result.ledger = ledger_record(aggregate)
    return result


def _f(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:,.6g}"
    return str(x)


def format_result(res: JointResult) -> str:
    out = [f"joint statistics over {res.n_providers} providers, {res.rows:,} rows "
           f"({res.suppressed_cells} cell(s) suppressed below the minimum count)"]
    if res.columns:
        stats = sorted({k for v in res.columns.values() for k in v}, key=["n", "missing", "sum",
                       "mean", "variance", "std"].index)
        out.append("  " + "column".ljust(14) + "".join(s.rjust(14) for s in stats))
        for c, v in res.columns.items():
            out.append("  " + c.ljust(14) + "".join(_f(v.get(s)).rjust(14) for s in stats))
    for title, m in (("covariance", res.covariance), ("correlation", res.correlation)):
        if m:
            out.append(f"{title} (n={m['n']}, complete cases)")
            out.append("  " + "".ljust(10) + "".join(c[:10].rjust(12) for c in m["columns"]))
            for c, row in zip(m["columns"], m["matrix"], strict=True):
                out.append("  " + c[:10].ljust(10) + "".join(_f(x).rjust(12) for x in row))
    if res.ols:
        o = res.ols
        out.append(f"OLS {o['y']} ~ {' + '.join(o['x'])}: n={o['n']} R2={_f(o['r2'])}")
        for k, b in (o["beta"] or {}).items():
            out.append(f"  {k:<14}{_f(b):>14}")
    for c, h in res.histograms.items():
        out.append(f"histogram {c}: below={h['underflow']} above={h['overflow']} "
                   f"missing={h['missing']}")
        for i, n in enumerate(h["counts"]):
            out.append(f"  [{h['edges'][i]:g}, {h['edges'][i + 1]:g})".ljust(22) + f"{n:>10}")
    if res.contingency:
        t = res.contingency
        out.append(f"contingency {t['rows']} x {t['cols']} (missing={t['missing']})")
        out.append("  " + "".ljust(10) + "".join(str(c)[:9].rjust(10)
                                                  for c in t["col_categories"]))
        for r, row in zip(t["row_categories"], t["counts"], strict=True):
            out.append("  " + str(r)[:10].ljust(10) + "".join(f"{n:>10}" for n in row))
    if res.grouped:
        g = res.grouped
        out.append(f"grouped by {', '.join(g['by'])} (missing key: {g['missing']})")
        for cell in g["cells"]:
            vals = "".join(f"  {v}: n={cell[v]['n']} mean={_f(cell[v]['mean'])}"
                           for v in g["values"])
            out.append(f"  {' / '.join(cell['key']):<24} rows={cell['rows']:<8}{vals}")
    for c, q in res.quantiles.items():
        vals = ", ".join(f"p{p:g}={_f(v)}" for p, v in zip(q["probs"], q["values"], strict=True))
        out.append(f"quantiles {c} (+/- {q['resolution']:g}): {vals}")
    if res.dp:
        out.append(f"differential privacy: epsilon={res.dp['epsilon']} (Laplace, added by the "
                   "controller before release)")
    out.append(f"aggregate sha256 {res.ledger.get('aggregate_sha256', '-')}")
    return "\n".join(out)
