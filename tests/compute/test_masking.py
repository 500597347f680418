"""Pairwise masking: exact cancellation, collusion resistance, dropouts, forged key sets."""

from __future__ import annotations

import base64
import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.backend import TensealCKKSBackend
from compute.disclosure import check_disclosure
from compute.errors import BadSignature, Conflict, TooFewProviders
from compute.layout import build_layout, pack
from compute.local_aggregate import local_aggregate
from compute.masking import (
    MASK_MODULUS,
    announce,
    new_mask_key,
    reduce,
    session,
    total_mask,
    verify_announcements,
)
from compute.protocol import RequesterKeys, combine, decrypt_aggregate, provider_submit
from compute.spec import JointSpec, parse_spec
from tests.compute.conftest import FULL_SPEC, SCHEMA
from tests.compute.harness import mask_sessions

AGENTS = {f"p{i}": Ed25519PrivateKey.generate() for i in range(4)}
PUBS = {p: k.public_key() for p, k in AGENTS.items()}
JOB = "jnt-mask"


@pytest.fixture(scope="module")
def spec() -> JointSpec:
    return parse_spec(FULL_SPEC, SCHEMA)


@pytest.fixture(scope="module")
def run(spec: JointSpec, keys: RequesterKeys, hospitals: dict[str, pd.DataFrame]
        ) -> dict[str, Any]:
    frames = {f"p{i}": f for i, f in enumerate([*hospitals.values(), *hospitals.values()][:4])}
    masks, anns = mask_sessions(JOB, AGENTS)
    layout = build_layout(spec)
    subs, plain = {}, {}
    for pid, frame in frames.items():
        agg = local_aggregate(spec.to_json(), frame)
        subs[pid], _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint,
                                       job_id=JOB, provider_id=pid, signing_key=AGENTS[pid],
                                       masking=masks[pid], min_cell_count=1)
        checked, _ = check_disclosure(agg, layout, 1)
        cv, rv = pack(layout, checked)
        plain[pid] = [x for v in cv + rv for x in v[1:]]  # the provider's true slot values
    return {"subs": subs, "anns": anns, "masks": masks, "plain": plain, "layout": layout}


def _decrypt_slots(keys: RequesterKeys, subs: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    """What a colluding controller + requester can compute: decrypt (a sum of) submissions."""
    be = TensealCKKSBackend()
    public = be.load_public(keys.public_bytes)
    out: list[float] = []
    for fam in ("count_ciphertexts", "real_ciphertexts"):
        for i in range(len(subs[0][fam])):
            ct = be.add(public, [base64.b64decode(s[fam][i]) for s in subs])
            out.extend(be.decrypt(keys.secret, ct)[1:])
    return np.array(out)


def test_masks_cancel_exactly(run: dict[str, Any]) -> None:
    n = 5000
    total = sum(total_mask(s, n, "layout") for s in run["masks"].values())
    assert np.all(total % MASK_MODULUS == 0)
    # ... and only for the full set: any strict subset leaves a mask behind.
    part = sum(total_mask(s, n, "layout") for p, s in run["masks"].items() if p != "p3")
    assert np.count_nonzero(part % MASK_MODULUS) > n * 0.99


def test_masked_run_is_exact(spec: JointSpec, keys: RequesterKeys, run: dict[str, Any]) -> None:
    subs = list(run["subs"].values())
    agg = combine(subs, keys.public_bytes, keys.fingerprint, PUBS,
                  mask_announcements=run["anns"])
    raw = _decrypt_slots(keys, subs)
    # CKKS error on masked slots (|slot| < 2^29 per provider): far below the 0.5 that
    # rounding tolerates, so the rounded, reduced sum is the exact sum of the digits.
    assert np.max(np.abs(raw - np.round(raw))) < 1e-3
    truth = np.sum([run["plain"][p] for p in AGENTS], axis=0)
    assert [reduce(int(x)) for x in np.round(raw)] == [int(x) for x in truth]
    sums = decrypt_aggregate(agg, keys, spec)
    assert sums.counts["rows"][0] == sum(run["plain"][p][0] + run["plain"][p][1] * 2**20
                                         for p in AGENTS)


def test_collusion_single_submission_is_uniform_noise(keys: RequesterKeys,
                                                      run: dict[str, Any]) -> None:
    """The requester's secret key plus every ciphertext the controller holds recovers no
    single provider's aggregate (nor any strict subset's sum)."""
    subs = run["subs"]
    for group in (["p0"], ["p1"], ["p0", "p2"], ["p0", "p1", "p2"]):
        raw = _decrypt_slots(keys, [subs[p] for p in group])
        got = np.array([reduce(int(x)) for x in np.round(raw)])
        truth = np.sum([run["plain"][p] for p in group], axis=0)
        # Not the truth, not even close: almost no slot matches ...
        assert np.mean(got == truth) < 0.01
        # ... the decrypted values are uniform on [-2^29, 2^29): chi-square over 64 equal
        # bins, below the 1e-4 critical value for 63 degrees of freedom (about 115) ...
        bins = np.bincount((got + MASK_MODULUS // 2) * 64 // MASK_MODULUS, minlength=64)
        expected = len(got) / 64
        assert float(np.sum((bins - expected) ** 2 / expected)) < 115
        # ... and unrelated to the true values (rank correlation near 0).
        rho = np.corrcoef(np.argsort(np.argsort(got)), np.argsort(np.argsort(truth)))[0, 1]
        assert abs(rho) < 0.1


def test_dropped_provider_fails_cleanly(keys: RequesterKeys, run: dict[str, Any]) -> None:
    subs = [run["subs"][p] for p in ("p0", "p1", "p2")]
    with pytest.raises(TooFewProviders, match="masks would not cancel"):
        combine(subs, keys.public_bytes, keys.fingerprint, PUBS,
                mask_announcements=run["anns"])


def test_key_set_is_bound(keys: RequesterKeys, run: dict[str, Any]) -> None:
    anns = run["anns"]
    with pytest.raises(Conflict, match="another job"):
        verify_announcements(anns, "another-job", PUBS)
    forged = copy.deepcopy(anns)
    forged[1]["public_key"] = new_mask_key().public_hex  # the controller swaps a key
    with pytest.raises(BadSignature):
        verify_announcements(forged, JOB, PUBS)
    with pytest.raises(Conflict, match="two mask keys"):
        verify_announcements([*anns, anns[0]], JOB, PUBS)
    with pytest.raises(BadSignature, match="no registered"):
        verify_announcements(anns, JOB, {"p0": PUBS["p0"]})
    # A provider refuses a key set that leaves its own key out.
    mine = new_mask_key()
    with pytest.raises(Conflict, match="own mask key"):
        session(mine, anns, job_id=JOB, provider_id="p0", agent_keys=PUBS)
    # Submissions masked under another key set are not combined.
    _, other_anns = mask_sessions(JOB, AGENTS)
    with pytest.raises(Conflict, match="another set of mask keys"):
        combine(list(run["subs"].values()), keys.public_bytes, keys.fingerprint, PUBS,
                mask_announcements=other_anns)
    assert announce(mine, job_id=JOB, provider_id="p0", signing_key=AGENTS["p0"]
                    )["public_key"] == mine.public_hex
