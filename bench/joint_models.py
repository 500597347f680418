"""Joint logistic regression over providers vs statsmodels on the pooled data; PSI cost.

GLM: P providers x N rows x F features, logistic. The joint fit runs every IRLS round
through the real protocol steps in one process: a fresh requester key per round, mask-key
exchange, local aggregation (the container script), disclosure, masking, encryption,
transfer (serialize + deserialize), combination, decryption, the update. Providers' times
are summed, as if one machine did all the work (in production they run in parallel).
Baseline: ``statsmodels.GLM(..., Binomial()).fit()`` on the pooled frame already in memory.

PSI: two sets of M identifiers overlapping by half, cardinality only (openmined-psi):
time per role and bytes exchanged.

Last line: ratio=<joint GLM seconds / statsmodels seconds>.

    .venv/bin/python -m bench.joint_models [--rows N] [--providers P] [--psi-ids M]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.glm import fit_glm
from compute.layout import Sums
from compute.local_aggregate import local_aggregate
from compute.masking import local_sessions
from compute.protocol import combine, decrypt_aggregate, provider_submit, requester_keygen
from compute.psi import (
    PSISpec,
    client_cardinalities,
    client_request,
    run_psi,
    server_respond,
    server_setup,
)
from compute.spec import JointSpec, parse_spec


def frame(seed: int, rows: int, features: int, beta: np.ndarray[Any, Any]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, features))
    p = 1 / (1 + np.exp(-(0.3 + x @ beta)))
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(features)])
    df["y"] = (rng.random(rows) < p).astype(float)
    return df


def bench_glm(args: argparse.Namespace) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    beta = rng.normal(0.0, 0.5, args.features)
    frames = {f"p{i}": frame(i + 1, args.rows, args.features, beta)
              for i in range(args.providers)}
    cols = [f"x{i}" for i in range(args.features)]
    spec = parse_spec({"statistics": ["glm"], "glm": {"family": "binomial", "y": "y",
                                                      "x": cols}},
                      {c: "number" for c in [*cols, "y"]})
    agents = {p: Ed25519PrivateKey.generate() for p in frames}
    pubs = {p: k.public_key() for p, k in agents.items()}
    phases = {"keys": 0.0, "local": 0.0, "submit": 0.0, "combine": 0.0, "decrypt": 0.0}

    def run_round(round_spec: JointSpec) -> Sums:
        t = time.perf_counter()
        keys = requester_keygen()
        masks, anns = local_sessions("bench-glm", agents)
        phases["keys"] += time.perf_counter() - t
        wire = []
        for pid, df in frames.items():
            t = time.perf_counter()
            agg = local_aggregate(round_spec.to_json(), df)
            phases["local"] += time.perf_counter() - t
            t = time.perf_counter()
            sub, _ = provider_submit(round_spec, agg, keys.public_bytes, keys.fingerprint,
                                     job_id="bench-glm", provider_id=pid,
                                     signing_key=agents[pid], masking=masks[pid])
            wire.append(json.dumps(sub))
            phases["submit"] += time.perf_counter() - t
        t = time.perf_counter()
        aggregate = combine([json.loads(w) for w in wire], keys.public_bytes, keys.fingerprint,
                            pubs, mask_announcements=anns)
        phases["combine"] += time.perf_counter() - t
        t = time.perf_counter()
        sums = decrypt_aggregate(json.loads(json.dumps(aggregate)), keys, round_spec)
        phases["decrypt"] += time.perf_counter() - t
        return sums

    t0 = time.perf_counter()
    fit = fit_glm(spec, run_round)
    t_joint = time.perf_counter() - t0

    pooled = pd.concat(frames.values(), ignore_index=True)
    t0 = time.perf_counter()
    ref = sm.GLM(pooled["y"], sm.add_constant(pooled[cols]), family=sm.families.Binomial()
                 ).fit()
    t_sm = time.perf_counter() - t0
    err = max(abs(fit["coefficients"][n]["coef"] - ref.params.iloc[i]) /
              abs(ref.params.iloc[i]) for i, n in enumerate(["intercept", *cols]))
    se_err = max(abs(fit["coefficients"][n]["std_err"] - ref.bse.iloc[i]) / ref.bse.iloc[i]
                 for i, n in enumerate(["intercept", *cols]))
    print(f"GLM logistic: providers={args.providers} rows/provider={args.rows:,} "
          f"features={args.features} rounds={fit['rounds']}")
    for name, secs in phases.items():
        print(f"  {name:<8} (all rounds, providers summed) {secs:8.3f} s")
    print(f"  joint fit end to end                 {t_joint:8.3f} s")
    print(f"  statsmodels on pooled data           {t_sm:8.3f} s (iterations "
          f"{ref.fit_history['iteration']})")
    print(f"  max rel error coef {err:.2e}, std err {se_err:.2e}")
    return t_joint, t_sm


def bench_psi(args: argparse.Namespace) -> None:
    m = args.psi_ids
    a = [f"91310{i:013d}" for i in range(m)]
    b = [f"91310{i:013d}" for i in range(m // 2, m + m // 2)]
    server_frame = pd.DataFrame({"id": b})
    spec = PSISpec("id")
    t0 = time.perf_counter()
    skeys, setups = server_setup(spec, server_frame, len(a))
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckey, request = client_request(a)
    t_request = time.perf_counter() - t0
    t0 = time.perf_counter()
    responses = server_respond(skeys, request, min_request=10)
    t_response = time.perf_counter() - t0
    t0 = time.perf_counter()
    cards = client_cardinalities(ckey, setups, responses)
    t_count = time.perf_counter() - t0
    assert cards["all"] == m - m // 2
    total = t_setup + t_request + t_response + t_count
    response = sum(len(r) for r in responses.values())
    sent = sum(len(s) for s in setups.values()) + len(request) + response
    print(f"PSI cardinality: {m:,} x {m:,} identifiers, intersection {cards['all']:,}")
    print(f"  server setup {t_setup:.2f} s, client request {t_request:.2f} s, server "
          f"response {t_response:.2f} s, client count {t_count:.2f} s; total {total:.2f} s")
    print(f"  bytes exchanged {sent:,} (setup {sum(len(s) for s in setups.values()):,}, "
          f"request {len(request):,}, response {response:,})")
    print(f"  per identifier pair: {total / m * 1e6:.0f} us, {sent / m:.1f} bytes")
    # Counts and sums: one setup and one response per group (each under its own key).
    small = m // 5
    rng = np.random.default_rng(1)
    grouped = PSISpec("id", "cat", ("A", "B", "C", "D"), "value", 10)
    frame = pd.DataFrame({"id": b[:small], "cat": rng.choice(["A", "B", "C", "D"], small),
                          "value": rng.integers(0, 1024, small)})
    t0 = time.perf_counter()
    # The client's slice overlaps the server's by half.
    client_ids = a[m // 2 - small // 2:m // 2 + small - small // 2]
    out, sizes = run_psi(grouped, pd.DataFrame({"id": client_ids}), frame)
    assert out["intersection"] == small // 2
    t_grouped = time.perf_counter() - t0
    print(f"PSI, 4 categories and 10-bit sums ({len(grouped.groups())} groups): {small:,} x "
          f"{small:,} identifiers, intersection {out['intersection']:,}: {t_grouped:.2f} s, "
          f"{sum(sizes.values()):,} bytes exchanged (response {sizes['response']:,})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--providers", type=int, default=4)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--psi-ids", type=int, default=50_000)
    args = ap.parse_args()
    bench_psi(args)
    t_joint, t_sm = bench_glm(args)
    print(f"ratio={t_joint / t_sm:.3f}")


if __name__ == "__main__":
    main()
