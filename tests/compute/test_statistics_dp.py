"""Differential privacy on the statistics route: OpenDP samplers, marked everywhere."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import noise, sdc, statistics
from compute.errors import InvalidInput
from compute.statspec import parse_statistics_spec

SCHEMA = {"ward": "string", "sex": "string", "cost": "number"}
DP_SPEC: dict[str, Any] = {
    "analyses": [{"kind": "frequency", "dims": ["ward", "sex"]},
                 {"kind": "magnitude", "dims": ["ward"], "value": "cost",
                  "statistics": ["sum", "mean"]}],
    "dp": {"epsilon": 1.0, "bounds": {"cost": [0, 10000]}}}


def _frame(rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({"ward": rng.choice(list("ABCD"), rows),
                         "sex": rng.choice(["F", "M"], rows),
                         "cost": rng.gamma(4.0, 900.0, rows)})


@pytest.mark.parametrize(("change", "field"), [
    ({"analyses": [{"kind": "chi_square", "dims": ["ward", "sex"]}]},
     "statistics.analyses[0].kind"),
    ({"analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["median"]}]},
     "statistics.analyses[0].statistics"),
    ({"dp": {"epsilon": 1.0}}, "statistics.dp.bounds.cost"),
    ({"dp": {"epsilon": 1.0, "bounds": {"cost": [5, 5]}}}, "statistics.dp.bounds.cost"),
    ({"dp": {"epsilon": 0}}, "statistics.dp.epsilon"),
    # Labels are not noised: a number column's values would come out whole.
    ({"analyses": [{"kind": "frequency", "dims": ["cost"]}]},
     "statistics.analyses[0].dims[0]"),
])
def test_dp_specs_are_refused_where_no_mechanism_fits(change: dict[str, Any],
                                                      field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_statistics_spec({**DP_SPEC, **change}, SCHEMA)
    assert e.value.field == field, e.value


def test_noised_tables_say_so_and_add_up() -> None:
    spec = parse_statistics_spec(DP_SPEC, SCHEMA)
    frame = _frame()
    doc = statistics.compute(frame, spec, statistics.policy_for(10, None))
    json.dumps(doc, allow_nan=False)
    assert doc["dp"]["epsilon"] == 1.0 and "OpenDP" in doc["dp"]["samplers"]
    freq, mag = doc["analyses"]
    # Half of epsilon each (two analyses): discrete Laplace of scale 1 / 0.5 on counts.
    assert freq["dp"]["mechanism"] == noise.DISCRETE_LAPLACE
    assert freq["dp"]["scale"] == pytest.approx(2.0)
    assert freq["dp"]["epsilon"] == pytest.approx(0.5)
    assert mag["dp"]["sums"]["mechanism"] == noise.LAPLACE
    assert mag["dp"]["sums"]["scale"] == pytest.approx(10000 / 0.25)
    assert {c["status"] for c in freq["cells"]} == {"noised"}
    truth = frame.groupby(["ward", "sex"]).size()
    inner = {(c["cell"]["ward"], c["cell"]["sex"]): c["value"] for c in freq["cells"]
             if "All" not in c["cell"].values()}
    assert all(isinstance(v, int) for v in inner.values())
    assert any(inner[k] != truth[k] for k in inner)  # noised (P(all exact) < 1e-9)
    total = next(c["value"] for c in freq["cells"] if set(c["cell"].values()) == {"All"})
    assert total == sum(inner.values())  # margins are sums of the noised interior


def test_a_small_noised_count_is_not_shown() -> None:
    spec = parse_statistics_spec({**DP_SPEC, "analyses": DP_SPEC["analyses"][:1]}, SCHEMA)
    frame = pd.concat([_frame(), pd.DataFrame({"ward": ["Z"], "sex": ["F"], "cost": [1.0]})])
    doc = statistics.compute(frame, spec, statistics.policy_for(50, None))
    cells = doc["analyses"][0]["cells"]
    # Ward Z, one record, is not published under its own label: it is the pooled bucket.
    assert "Z" not in {c["cell"]["ward"] for c in cells}
    z = [c for c in cells if c["cell"]["ward"] == sdc.POOLED and c["cell"]["sex"] == "F"]
    assert z[0]["value"] is None and z[0]["status"] == "suppressed" and z[0]["rules"] == []
    assert doc["analyses"][0]["rules"] == ["threshold"]


def test_opendp_maps_the_scale_to_epsilon() -> None:
    drawn = noise.integer_noise([5, 7], scale=4.0, sensitivity=2)
    assert drawn.epsilon == pytest.approx(0.5) and len(drawn.values) == 2
    with pytest.raises(InvalidInput):
        noise.real_noise([1.0], scale=0.0, sensitivity=1.0)
