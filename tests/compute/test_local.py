"""The container script, limbs and the disclosure check."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import compute.local_aggregate as la
from compute.disclosure import check_disclosure
from compute.errors import LayoutMismatch, MagnitudeOverflow
from compute.layout import (
    FRAC_BITS,
    LIMB_BITS,
    LIMBS,
    MAX_REAL,
    build_layout,
    from_limbs,
    pack,
    to_limbs,
)
from compute.spec import parse_spec
from tests.compute.conftest import FULL_SPEC, SCHEMA, hospital_frame


def test_script_is_self_contained() -> None:
    imports = [ln for ln in Path(la.__file__).read_text().splitlines()
               if ln.startswith(("import ", "from "))]
    mods = {ln.split()[1].split(".")[0] for ln in imports}
    assert mods <= {"__future__", "json", "math", "os", "sys", "collections", "typing", "numpy",
                    "pandas"}


def test_script_runs_on_csv_like_the_container(tmp_path: Path) -> None:
    spec = parse_spec(FULL_SPEC, SCHEMA)
    frame = hospital_frame(11, 800)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    frame.to_csv(tmp_path / "data.csv", index=False)
    env = {"JOINT_OUT": str(tmp_path / "agg.json")}
    subprocess.run([sys.executable, la.__file__, str(tmp_path / "spec.json"),
                    str(tmp_path / "data.csv")], check=True, env=env, timeout=60)
    from_csv = json.loads((tmp_path / "agg.json").read_text())
    direct = la.local_aggregate(spec.to_json(), frame)
    assert from_csv["counts"] == direct["counts"]
    for k, v in direct["reals"].items():
        assert from_csv["reals"][k] == pytest.approx(v, rel=1e-12, abs=1e-9)
    pack(build_layout(spec), from_csv)  # names and lengths match the layout exactly


@given(st.floats(min_value=-MAX_REAL, max_value=MAX_REAL, allow_nan=False))
def test_limbs_are_exact_and_small(x: float) -> None:
    limbs = to_limbs(x, "x")
    assert len(limbs) == LIMBS
    assert all(-(1 << (LIMB_BITS - 1)) <= d < (1 << (LIMB_BITS - 1)) for d in limbs)
    assert from_limbs(limbs) == Fraction(round(Fraction(x) * 2**FRAC_BITS), 2**FRAC_BITS)


@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1,
                max_size=8))
def test_limb_sums_recombine_to_the_fixed_point_sum(xs: list[float]) -> None:
    summed = [sum(col) for col in zip(*(to_limbs(x, "x") for x in xs), strict=True)]
    assert from_limbs(summed) == sum(from_limbs(to_limbs(x, "x")) for x in xs)


def test_limbs_refuse_overflow() -> None:
    for bad in (2 * MAX_REAL, float("inf"), float("nan")):
        with pytest.raises(MagnitudeOverflow):
            to_limbs(bad, "x")


def test_disclosure_suppresses_cells_and_their_sums() -> None:
    spec = parse_spec({"statistics": ["count", "mean", "grouped"], "columns": ["cost"],
                       "groups": {"by": "diagnosis", "categories": ["J18", "I21"],
                                  "values": ["cost"]}}, SCHEMA)
    frame = pd.DataFrame({"cost": [100.0] * 12 + [5.0] * 3,
                          "diagnosis": ["J18"] * 12 + ["I21"] * 3})
    frame.loc[0, "cost"] = None
    agg = la.local_aggregate(spec.to_json(), frame)
    assert agg["counts"]["grp.cost.n"] == [11, 3, 0]
    checked, report = check_disclosure(agg, build_layout(spec), 10)
    c, r = checked["counts"], checked["reals"]
    assert c["grp.cost.n"] == [11, 0, 0] and c["grp.rows"] == [12, 0, 0]
    assert r["grp.cost.s1"] == [1100.0, 0.0, 0.0]
    assert c["col.cost.missing"] == [0]  # 1 missing value is itself a small cell
    assert c["col.cost.n"] == [14] and r["col.cost.s1"] == [1115.0]
    assert report.suppressed_cells == c["disclosure.suppressed"][0] == 3
    assert agg["counts"]["grp.cost.n"] == [11, 3, 0]  # input untouched
    few = frame.iloc[:5]
    checked, _ = check_disclosure(la.local_aggregate(spec.to_json(), few), build_layout(spec), 10)
    assert checked["counts"]["col.cost.n"] == [0] and checked["reals"]["col.cost.s1"] == [0.0]
    del agg["reals"]["grp.cost.s1"]
    with pytest.raises(LayoutMismatch):
        check_disclosure(agg, build_layout(spec), 10)
