"""SDC engine: a checked 4-D frequency table vs pandas.crosstab, side by side in one run.

1,000,000 records, 4 categorical dimensions of 10 x 8 x 6 x 5 categories, with a few rare
categories so that primary and secondary suppression both happen. Engine:
``frequency_table`` with all margins (every marginal sub-table), threshold, zeros, class
disclosure and secondary suppression. Baseline: ``pandas.crosstab`` of the same four
columns with ``margins=True`` (grand margins only, no checks). Best of 3 each.
Last line: ratio=<engine seconds / pandas seconds>.

    .venv/bin/python -m bench.sdc [--rows N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pandas as pd

from compute.sdc import CellStatus, frequency_table

SIZES = {"region": 10, "age_band": 8, "diagnosis": 6, "payer": 5}
# Share of the records in each dimension's last category: rare enough that its cells
# fall below the threshold (primary), which forces secondary suppression in their lines.
RARE = {"region": 3e-4, "age_band": 0.02, "diagnosis": 5e-5, "payer": 0.05}
T = TypeVar("T")


def frame(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {}
    for name, k in SIZES.items():
        p = np.full(k, (1 - RARE[name]) / (k - 1))
        p[-1] = RARE[name]
        cols[name] = rng.choice([f"{name[0]}{i}" for i in range(k)], rows, p=p / p.sum())
    return pd.DataFrame(cols)


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    best, out = float("inf"), fn()  # one warm-up run, not timed
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    df = frame(args.rows)
    dims = list(SIZES)
    t_engine, table = best_of(args.repeat, lambda: frequency_table(df, dims))
    t_pandas, _ = best_of(args.repeat, lambda: pd.crosstab(
        [df[dims[0]], df[dims[1]]], [df[dims[2]], df[dims[3]]], margins=True))
    status = table.status
    print(f"rows={args.rows}")
    print(f"cells={len(status)}")
    print(f"suppressed_primary={int((status == CellStatus.SUPPRESSED_PRIMARY).sum())}")
    print(f"suppressed_secondary={int((status == CellStatus.SUPPRESSED_SECONDARY).sum())}")
    print(f"engine_s={t_engine:.3f}")
    print(f"pandas_crosstab_s={t_pandas:.3f}")
    print(f"ratio={t_engine / t_pandas:.2f}")


if __name__ == "__main__":
    main()
