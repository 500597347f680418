"""Joint statistics under CKKS vs plain pandas on the pooled data, side by side in one run.

5 providers x 1,000,000 rows x 10 numeric columns, the full statistic set. HE path: local
aggregation (the container script), disclosure check, encryption, transfer (serialize +
deserialize), combination, decryption, derivation. Baseline: pandas/numpy computing the same
statistics on the pooled frame already in memory. ``kernel_ratio`` compares with the same
aggregation kernel (the container script) run once on the pooled frame: what encryption,
masking and the protocol add. Last line: ratio=<HE seconds / pandas>.

    .venv/bin/python bench/he_joint_stats.py [--rows N] [--providers P] [--combine-n C]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.derive import derive
from compute.local_aggregate import local_aggregate
from compute.masking import (
    MAX_PROVIDERS,
    announce,
    local_sessions,
    mask_keys_digest,
    new_mask_key,
)
from compute.protocol import (
    _b64,
    _signed_body,
    combine,
    decrypt_aggregate,
    provider_submit,
    requester_keygen,
)
from compute.spec import parse_spec

COLS = [f"c{i}" for i in range(10)]
CATS = list(range(8))
EDGES = [float(x) for x in np.linspace(-5, 5, 21)]
QEDGES = [float(x) for x in np.linspace(-10, 110, 2401)]
PROBS = [0.1, 0.5, 0.9]


def frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    x[:, 0] = 50 + 10 * x[:, 0] + 3 * x[:, 2] - 2 * x[:, 3]
    df = pd.DataFrame(x, columns=COLS[:8])
    df["c8"] = rng.integers(0, 8, rows).astype(float)
    df["c9"] = rng.integers(0, 8, rows).astype(float)
    df.loc[rng.random(rows) < 0.01, "c1"] = np.nan
    return df


SPEC: dict[str, Any] = {
    "columns": COLS,
    "statistics": ["count", "sum", "mean", "variance", "std", "covariance", "correlation",
                   "ols", "histogram", "contingency", "grouped", "quantiles"],
    "shift": {"c0": 50.0},
    "ols": {"y": "c0", "x": COLS[1:8]},
    "bins": {"c1": EDGES},
    "contingency": {"rows": "c8", "cols": "c9", "row_categories": CATS, "col_categories": CATS},
    "groups": {"by": "c8", "categories": CATS, "values": ["c0", "c1"]},
    "quantiles": {"c0": {"probs": PROBS, "edges": QEDGES}},
}


def pandas_baseline(df: pd.DataFrame) -> dict[str, Any]:
    num = df[COLS]
    out: dict[str, Any] = {
        "count": num.count(), "sum": num.sum(), "mean": num.mean(), "var": num.var(),
        "std": num.std(), "cov": num.dropna().cov(), "corr": num.dropna().corr(),
    }
    cc = df[COLS[:8]].dropna()
    design = np.column_stack([np.ones(len(cc)), cc[COLS[1:8]].to_numpy()])
    out["ols"] = np.linalg.lstsq(design, cc["c0"].to_numpy(), rcond=None)[0]
    out["hist"] = pd.cut(df["c1"], EDGES, right=False).value_counts(sort=False)
    out["ct"] = pd.crosstab(df["c8"], df["c9"])
    out["grouped"] = df.groupby("c8")[["c0", "c1"]].agg(["count", "sum", "mean"])
    out["quantiles"] = df["c0"].quantile(PROBS)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--providers", type=int, default=5)
    # combine() refuses more providers than decode exactly (compute/masking.py).
    ap.add_argument("--combine-n", type=int, default=MAX_PROVIDERS)
    args = ap.parse_args()
    if not 1 <= args.combine_n <= MAX_PROVIDERS:
        ap.error(f"--combine-n must be 1 to {MAX_PROVIDERS}")
    spec = parse_spec(SPEC, {c: "number" for c in COLS})
    frames = {f"p{i}": frame(i, args.rows) for i in range(args.providers)}
    agents = {p: Ed25519PrivateKey.generate() for p in frames}

    t0 = time.perf_counter()
    keys = requester_keygen()
    masks, announcements = local_sessions("bench", agents)  # mask-key exchange
    t_local = t_submit = 0.0
    wire: list[str] = []
    for pid, df in frames.items():
        t = time.perf_counter()
        agg = local_aggregate(spec.to_json(), df)
        t_local += time.perf_counter() - t
        t = time.perf_counter()
        sub, _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id="bench",
                                 provider_id=pid, signing_key=agents[pid],
                                 masking=masks[pid])
        wire.append(json.dumps(sub))  # transfer = serialize ...
        t_submit += time.perf_counter() - t
    t = time.perf_counter()
    subs = [json.loads(w) for w in wire]  # ... and deserialize
    aggregate = combine(subs, keys.public_bytes, keys.fingerprint,
                        {p: k.public_key() for p, k in agents.items()},
                        mask_announcements=announcements)
    t_combine = time.perf_counter() - t
    t = time.perf_counter()
    result = derive(spec, decrypt_aggregate(json.loads(json.dumps(aggregate)), keys, spec))
    t_decrypt = time.perf_counter() - t
    t_he = time.perf_counter() - t0

    pooled = pd.concat(frames.values(), ignore_index=True)
    t = time.perf_counter()
    ref = pandas_baseline(pooled)
    t_pd = time.perf_counter() - t
    # The same aggregation kernel on the pooled frame: what the HE path costs beyond the
    # arithmetic itself (encryption, masking, the protocol).
    t = time.perf_counter()
    local_aggregate(spec.to_json(), pooled)
    t_kernel = time.perf_counter() - t

    mean_err = max(abs(result.columns[c]["mean"] - ref["mean"][c])
                   for c in COLS)
    n_ct = len(subs[0]["ciphertexts"])
    ct_bytes = sum(len(c) * 3 // 4 for c in subs[0]["ciphertexts"])

    many = []
    many_keys = {f"x{i}": Ed25519PrivateKey.generate() for i in range(args.combine_n)}
    many_anns = [announce(new_mask_key(), job_id="bench", provider_id=pid, signing_key=k)
                 for pid, k in many_keys.items()]
    for pid, key in many_keys.items():
        s = dict(subs[0])
        s["provider_id"] = pid
        s["mask_keys_sha256"] = mask_keys_digest(many_anns)
        s["signature"] = _b64(key.sign(_signed_body(s)))
        many.append((s, key.public_key()))
    t = time.perf_counter()
    combine([s for s, _ in many], keys.public_bytes, keys.fingerprint,
            {s["provider_id"]: k for s, k in many}, mask_announcements=many_anns)
    t_many = time.perf_counter() - t

    print(f"providers={args.providers} rows/provider={args.rows:,} columns={len(COLS)}")
    print(f"local aggregation (all providers)   {t_local:8.3f} s")
    print(f"disclosure+pack+encrypt+sign+ser    {t_submit:8.3f} s")
    print(f"deserialize+verify+combine          {t_combine:8.3f} s")
    print(f"decrypt+round+derive                {t_decrypt:8.3f} s")
    print(f"HE end to end                       {t_he:8.3f} s")
    print(f"pandas on pooled data               {t_pd:8.3f} s")
    print(f"ciphertexts per provider            {n_ct} ({ct_bytes:,} bytes)")
    print(f"public context bytes                {len(keys.public_bytes):,}")
    print(f"combine {args.combine_n} submissions         {t_many:8.3f} s")
    print(f"same kernel on pooled data          {t_kernel:8.3f} s")
    print(f"max |mean error| vs pandas          {mean_err:.3g}")
    print(f"kernel_ratio={t_he / t_kernel:.3f}")
    print(f"ratio={t_he / t_pd:.3f}")


if __name__ == "__main__":
    main()
