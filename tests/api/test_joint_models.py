"""Joint GLM rounds through the API: each IRLS round is one masked joint job, capped by the
permit's runs, and the fit equals statsmodels on the pooled data; noised rounds are charged
to the permit's epsilon budget one by one."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import statsmodels.api as sm

from compute.glm import fit_glm, model_request, round_request, round_spec
from compute.layout import Sums
from compute.protocol import decrypt_aggregate
from compute.spec import JointSpec, parse_spec
from tests.api.test_joint import keys, play_agents, submit, world
from tests.conftest import Actor

__all__ = ["keys"]  # the module-scoped requester key pair fixture
MODEL = {"family": "poisson", "y": "cost", "x": ["age"]}
SCHEMA = {"age": "integer", "cost": "number"}


class RoundRefused(Exception):
    pass


def api_runner(w: dict[str, Any], keys: Any) -> Any:
    def run_round(spec: JointSpec) -> Sums:
        assert spec.glm is not None
        r = submit(w, keys, spec={"statistics": ["glm"], "glm": spec.glm.to_json()})
        if r.status_code != 201:
            raise RoundRefused(r.json["message"])
        play_agents(w["hospitals"])
        joint = w["requester"].get(f"/joint-jobs/{r.json['id']}").json
        assert joint["state"] == "combined", joint["reason"]
        return decrypt_aggregate(joint["aggregate"], keys, spec)
    return run_round


def test_glm_rounds_through_the_api(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3, max_runs=60)
    fit = fit_glm(parse_spec({"statistics": ["glm"], "glm": MODEL}, SCHEMA),
                  api_runner(w, keys))
    pooled = pd.concat([h["frame"] for h in w["hospitals"]])
    ref = sm.GLM(pooled["cost"], sm.add_constant(pooled[["age"]]),
                 family=sm.families.Poisson()).fit(tol=1e-12)
    for i, name in enumerate(["intercept", "age"]):
        got = fit["coefficients"][name]
        assert abs(got["coef"] - ref.params.iloc[i]) <= 1e-6 * abs(ref.params.iloc[i])
        assert abs(got["std_err"] - ref.bse.iloc[i]) <= 1e-6 * abs(ref.bse.iloc[i])
    assert abs(fit["deviance"] - ref.deviance) <= 1e-6 * ref.deviance


def test_round_cap_is_the_permit(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3, max_runs=10)  # 3 rounds of 3 parts
    with pytest.raises(RoundRefused, match="round cap reached"):
        fit_glm(parse_spec({"statistics": ["glm"], "glm": MODEL}, SCHEMA), api_runner(w, keys))
    r = submit(w, keys, spec={"statistics": ["glm"], "glm": MODEL})
    assert r.status_code == 409 and r.json["error"] == "policy_violation"


def test_glm_rounds_cover_every_provider(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    r = submit(w, keys, spec={"statistics": ["glm"], "glm": MODEL},
               dataset_ids=[h["ds"]["id"] for h in w["hospitals"][:2]])
    assert r.status_code == 400 and r.json["field"] == "dataset_ids"


def test_noised_rounds_are_charged_until_the_budget_refuses(make_party: Any, admin: Actor,
                                                            keys: Any) -> None:
    w = world(make_party, admin, 3, epsilon=0.0, max_runs=60)  # strictest budget: 1.0
    base = parse_spec(model_request(MODEL, 0.4, {"cost": [0, 60000], "age": [0, 100]}),
                      SCHEMA)
    body = round_request(round_spec(base, (0.0, 0.0)))
    for spent in (0.4, 0.8):
        r = submit(w, keys, spec=body)
        assert r.status_code == 201, r.json
        play_agents(w["hospitals"])
        joint = w["requester"].get(f"/joint-jobs/{r.json['id']}").json
        assert joint["state"] == "combined", joint["reason"]
        dp = joint["aggregate"]["dp"]
        assert dp["epsilon"] == 0.4 and dp["sensitivities"]["glm.xwx"] > 0
        assert w["requester"].get(f"/permits/{w['permit']}").json["epsilon_spent"] == \
            pytest.approx(spent)
    r = submit(w, keys, spec=body)  # a third round: 0.2 left, 0.4 asked
    assert r.status_code == 409 and "budget has 0.2 epsilon left" in r.json["message"]
    r = submit(w, keys, spec={**body, "dp": {"epsilon": 0.1}})  # no clipping bounds
    assert r.status_code == 400 and r.json["field"] == "dp.bounds.cost"
