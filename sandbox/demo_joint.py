"""Demo scenario 1, its joint steps: statistics and a model pooled across the hospitals.

The requester (a health economics institute) keeps the CKKS secret key; each hospital's
part is aggregated, masked and encrypted inside its own domain, and the controller adds
the ciphertexts without a key.
Kept apart from the rest of the scenario (:mod:`sandbox.demo`), which reaches these
steps once the joint permit is granted; like :mod:`sandbox.demo_psi`, it is given the
demo's ``say``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from authz.wire import JointJobState
from compute.derive import format_result
from compute.errors import SandboxError
from sandbox.client import ApiError, Client
from sandbox.sdk import JointStatistics

JOINT_SPEC = {
    "version": 1, "columns": ["age", "cost"],
    "statistics": ["count", "mean", "std", "correlation", "ols", "histogram", "grouped"],
    "ols": {"y": "cost", "x": ["age"]}, "bins": {"age": [0, 18, 40, 65, 120]},
    "groups": {"by": "diagnosis", "categories": ["I21", "J18", "E11", "K35", "S72"],
               "values": ["cost"]},
}


def joint_statistics(requester: Client, permit_id: str, hospitals: list[dict[str, Any]],
                     say: Callable[[str], None]) -> bool:
    """Count, means, spread, correlation, a linear model, a histogram and grouped means,
    pooled across the hospitals under CKKS: each part is encrypted in its own domain."""
    sdk = JointStatistics(requester)
    run = sdk.submit(permit_id, [h["dataset"] for h in hospitals], JOINT_SPEC)
    say(f"joint job {run.joint_id}: the institute keeps the CKKS secret key; only the public "
        f"context (fingerprint {run.keys.fingerprint[:12]}) was uploaded")
    joint = sdk.wait(run)
    names = {h["id"]: h["code"] for h in hospitals}
    for part in joint["parts"]:
        say(f"part {part['job_id']} at {names[part['provider_id']]}: {part['state']}, "
            f"{part['rows_read']} rows aggregated and encrypted inside the hospital's domain")
    if joint["state"] != JointJobState.COMBINED:
        say(f"joint job {joint['state']}: {joint['reason']}")
        return False
    say(f"the controller added {len(joint['parts'])} encrypted submissions without a key; "
        f"aggregate sha256 {joint['aggregate']['aggregate_sha256'][:16]}")
    say("what each hospital could see: its own rows only, inside its own domain")
    for h in hospitals:
        own = pd.read_csv(h["root"] / "inpatient_episodes.csv")
        say(f"    {h['code']:<8} n={len(own):>5}  mean age={own['age'].mean():7.2f}  "
            f"mean cost={own['cost'].mean():10,.2f}   (others' figures: none)")
    say("what the institute decrypts, rounded before use (no single hospital's figures):")
    for line in format_result(sdk.result(run, joint)).splitlines():
        say(f"    {line}")
    return True


def joint_model(requester: Client, permit_id: str, hospitals: list[dict[str, Any]],
                say: Callable[[str], None]) -> bool:
    """A Poisson model of length of stay on age and cost, fitted across the hospitals by
    IRLS: one masked joint job per round, the institute updating the coefficients."""
    sdk = JointStatistics(requester)
    say("joint Poisson model of length of stay ~ age + cost, one encrypted round per "
        "iteration (each hospital's part masked so no single part decrypts):")
    try:
        fit = sdk.glm(permit_id, [h["dataset"] for h in hospitals],
                      {"family": "poisson", "y": "los", "x": ["age", "cost"]})
    except (SandboxError, ApiError, RuntimeError) as e:
        say(f"model not fitted: {e}")
        return False
    say(f"    converged in {fit['rounds']} rounds over n={fit['n']:,}; deviance "
        f"{fit['deviance']:,.2f}, AIC {fit['aic']:,.2f}")
    say(f"    {'term':<10}{'coef':>12}{'std err':>12}{'z':>9}{'p':>10}   95 % CI")
    for term, c in fit["coefficients"].items():
        say(f"    {term:<10}{c['coef']:>12.6g}{c['std_err']:>12.4g}{c['z']:>9.2f}"
            f"{c['p_value']:>10.3g}   [{c['ci_low']:.4g}, {c['ci_high']:.4g}]")
    return True
