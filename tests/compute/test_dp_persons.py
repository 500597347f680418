"""A joint DP aggregate protects persons: at most L records of a person enter it.

Before, a joint spec's epsilon was per record: a patient's twelve episodes at one provider
were protected at 12 epsilon only. Where the dataset declares identifier fields the agent
now keeps at most ``dp.max_records_per_person`` (L, default 1) of each person's records, chosen
at random, and every sensitivity scales by L.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from compute import local_aggregate as la
from compute.dp import sensitivities
from compute.errors import InvalidInput
from compute.joint_units import at_most_per_person
from compute.layout import build_layout
from compute.spec import parse_spec, spec_from_json
from tests.compute.conftest import SCHEMA, hospital_frame

DP = {"statistics": ["count", "mean", "histogram"], "columns": ["cost"],
      "bins": {"age": [0, 40, 120]}, "shift": {"cost": 10000.0}}


def spec_with(**dp: Any) -> Any:
    return parse_spec({**DP, "dp": {"epsilon": 1.0, "bounds": {"cost": [0, 30000]}, **dp}},
                      SCHEMA)


@pytest.mark.parametrize("bad", [0, 1001, 2.0, "2", True])
def test_records_per_person_is_a_bounded_integer(bad: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        spec_with(max_records_per_person=bad)
    assert (refused.value.field, refused.value.rule) == ("dp.max_records_per_person", "range")


def test_an_unknown_dp_field_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        spec_with(per_record=True)
    assert (refused.value.field, refused.value.rule) == ("dp.per_record", "unknown_field")


def test_the_bound_travels_with_the_spec_and_the_default_leaves_it_unwritten() -> None:
    assert "max_records_per_person" not in spec_with().to_json()["dp"]
    three = spec_with(max_records_per_person=3)
    assert three.to_json()["dp"]["max_records_per_person"] == 3
    assert spec_from_json(three.to_json(), SCHEMA).dp_max_records_per_person == 3


def test_every_sensitivity_scales_by_the_bound() -> None:
    one, three = spec_with(), spec_with(max_records_per_person=3)
    s1 = sensitivities(one, build_layout(one), 10)
    s3 = sensitivities(three, build_layout(three), 10)
    assert s1.keys() == s3.keys()
    assert all(s3[name] == pytest.approx(3 * s1[name]) for name in s1)


def test_at_most_l_records_of_each_person_are_kept_at_random() -> None:
    units = np.repeat(np.arange(50), np.arange(1, 51))  # person i has i + 1 records
    picks = []
    for seed in range(5):
        keep = at_most_per_person(units, 3, np.random.default_rng(seed))
        held = np.bincount(units[keep], minlength=50)
        assert (held == np.minimum(np.arange(1, 51), 3)).all()
        picks.append(np.flatnonzero(keep))
    assert any(not np.array_equal(picks[0], p) for p in picks[1:])  # not always the first


def test_a_dp_part_counts_each_patient_at_most_l_times() -> None:
    frame = hospital_frame(95, 400).dropna(subset=["cost"]).reset_index(drop=True)
    units = np.arange(len(frame), dtype=np.int64)
    units[:12] = 0  # one patient's twelve episodes
    for per_person, rows in ((1, len(frame) - 11), (4, len(frame) - 8)):
        spec = spec_with(max_records_per_person=per_person).to_json()
        agg = la.local_aggregate(spec, frame, 10, None, units)  # exact here; noised later
        assert agg["counts"]["rows"] == [rows]
    # Without identifier fields each record is a person: nothing is dropped.
    assert la.local_aggregate(spec_with().to_json(), frame, 10)["counts"]["rows"] == [len(frame)]


def test_a_dp_part_sums_only_the_records_it_keeps() -> None:
    """The sums, not only the counts, hold at most L records of a person: a patient's
    twelve episodes add one episode's cost, not twelve (the noise is scaled for L)."""
    frame = hospital_frame(95, 400).dropna(subset=["cost"]).reset_index(drop=True)
    units = np.arange(len(frame), dtype=np.int64)
    units[:12] = 0
    shifted = frame["cost"].to_numpy(dtype=float) - 10000.0  # DP["shift"]["cost"]
    others = float(shifted[12:].sum())
    for _ in range(3):  # the record kept of the patient's twelve is drawn at random
        agg = la.local_aggregate(spec_with().to_json(), frame, 10, None, units)
        s1 = agg["reals"]["col.cost.s1"][0]
        assert agg["counts"]["col.cost.n"] == [len(frame) - 11]
        assert any(s1 == pytest.approx(others + v) for v in shifted[:12]), s1
