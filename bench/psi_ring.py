"""Private set intersection among three providers (the ring, compute/psi_ring.py) against
the two-party protocol (compute/psi.py) on the same sets.

Three registers: two of M identifiers overlapping by half, and a third holding every other
identifier of their union (3M/4). Two runs in one process (every provider's part
hop by hop, as the agents run them; the providers' times summed, as if one machine did all
the work; in production each hop's providers work in parallel):

* cardinality only: the ring over the three registers, and the two-party protocol over the
  first two (the same M x M);
* with 4 categories and a 10-bit value (counts and sums per category) at M / 5: 55 groups,
  each under its own key of the holder's.

Bytes exchanged: every message the controller relays (hop 0 and every later hop).

Last line: ratio=<three-party seconds / two-party seconds> (cardinality, same M).

    .venv/bin/python -m bench.psi_ring [--ids M]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from compute.psi import PSISpec, run_psi
from compute.psi_ring import run_ring_psi

CATEGORIES = ("A", "B", "C", "D")


def registers(m: int) -> list[pd.DataFrame]:
    a = [f"91310{i:013d}" for i in range(m)]
    b = [f"91310{i:013d}" for i in range(m // 2, m + m // 2)]
    c = [f"91310{i:013d}" for i in range(0, m + m // 2, 2)][:m]
    rng = np.random.default_rng(1)
    return [pd.DataFrame({"id": a}),
            pd.DataFrame({"id": b, "cat": rng.choice(CATEGORIES, len(b)),
                          "value": rng.integers(0, 1024, len(b))}),
            pd.DataFrame({"id": c})]


def want(frames: list[pd.DataFrame]) -> pd.DataFrame:
    common = set(frames[0]["id"]) & set(frames[2]["id"])
    return frames[1][frames[1]["id"].isin(common)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, default=10_000)
    m = ap.parse_args().ids
    frames = registers(m)
    t0 = time.perf_counter()
    out, sizes = run_ring_psi(PSISpec("id"), frames, holder=1, counter=0)
    t_ring = time.perf_counter() - t0
    assert out["intersection"] == len(want(frames))
    ring_bytes = sizes["hop0"] + sizes["relayed"]
    sets = " + ".join(f"{len(f):,}" for f in frames)
    print(f"PSI among 3 providers, cardinality: {sets} identifiers, intersection "
          f"{out['intersection']:,}: {t_ring:.2f} s, {ring_bytes:,} bytes relayed "
          f"({ring_bytes / sum(map(len, frames)):.1f} bytes per identifier)")
    t0 = time.perf_counter()
    two, two_sizes = run_psi(PSISpec("id"), frames[0], frames[1])
    t_two = time.perf_counter() - t0
    assert two["intersection"] == m - m // 2
    print(f"PSI between 2 providers, cardinality: 2 x {m:,} identifiers: {t_two:.2f} s, "
          f"{sum(two_sizes.values()):,} bytes exchanged")
    small = registers(m // 5)
    spec = PSISpec("id", "cat", CATEGORIES, "value", 10)
    t0 = time.perf_counter()
    out, sizes = run_ring_psi(spec, small, holder=1, counter=0)
    t_sums = time.perf_counter() - t0
    w = want(small)
    assert out["sum"] == int(w["value"].sum())
    sets = " + ".join(f"{len(f):,}" for f in small)
    print(f"PSI among 3 providers, 4 categories and 10-bit sums: {sets} identifiers, "
          f"intersection {out['intersection']:,}: {t_sums:.2f} s, "
          f"{sizes['hop0'] + sizes['relayed']:,} bytes relayed (the holder sends "
          f"{len(spec.groups())} sets, and one version of each non-holder's per set)")
    print(f"ratio={t_ring / t_two:.3f}")


if __name__ == "__main__":
    main()
