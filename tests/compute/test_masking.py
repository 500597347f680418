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
from compute.layout import (
    COUNT_LIMBS,
    COUNT_MODULUS,
    LIMB_BITS,
    LIMBS,
    REAL_MODULUS,
    build_layout,
    centred,
    from_int_limbs,
    pack,
)
from compute.local_aggregate import local_aggregate
from compute.masking import (
    MASK_MODULUS,
    announce,
    new_mask_key,
    reduce,
    session,
    total_mask,
    total_offset,
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
    subs: dict[str, Any] = {}
    plain: dict[str, list[float]] = {}
    encoded: dict[str, list[float]] = {}
    for pid, frame in frames.items():
        agg = local_aggregate(spec.to_json(), frame)
        subs[pid], _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint,
                                       job_id=JOB, provider_id=pid, signing_key=AGENTS[pid],
                                       masking=masks[pid], min_cell_count=1)
        checked, _ = check_disclosure(agg, layout, 1)
        cv, rv = pack(layout, checked)
        plain[pid] = [x for v in cv + rv for x in v[1:]]  # the provider's true slot values
        cv, rv = pack(layout, checked, offsets=total_offset(
            masks[pid], layout.n_slots("count") + layout.n_slots("real"), layout.digest,
            LIMB_BITS))
        encoded[pid] = [x for v in cv + rv for x in v[1:]]  # ... as it encodes them
    return {"subs": subs, "anns": anns, "masks": masks, "plain": plain, "encoded": encoded,
            "layout": layout}


def _decrypt_slots(keys: RequesterKeys, subs: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    """What a colluding controller + requester can compute: decrypt (a sum of) submissions."""
    be = TensealCKKSBackend()
    public = be.load_public(keys.public_bytes)
    out: list[float] = []
    for i in range(len(subs[0]["ciphertexts"])):  # the count slots, then the real slots
        ct = be.add(public, [base64.b64decode(s["ciphertexts"][i]) for s in subs])
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
    # ... of the digits the providers encoded (their values plus carry offsets) ...
    limb_sums = [reduce(int(x)) for x in np.round(raw)]
    assert limb_sums == [int(x) for x in np.sum([run["encoded"][p] for p in AGENTS], axis=0)]
    # ... which recombine, modulo the limbs' modulus, to the sum of their true values.
    layout = run["layout"]
    n_c = layout.n_slots("count")
    plain = np.sum([run["plain"][p] for p in AGENTS], axis=0).astype(int).tolist()
    for start, width, modulus in ((0, COUNT_LIMBS, COUNT_MODULUS),
                                  (n_c, LIMBS, REAL_MODULUS)):
        end = n_c if start == 0 else len(plain)
        for i in range(start, end, width):
            assert centred(from_int_limbs(limb_sums[i:i + width]), modulus) == \
                from_int_limbs(plain[i:i + width])
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


# Issue 15 (item 1 residue): two splits of one total among three providers. Fixed point is
# 2^40 a unit, so 0.75 is limb 1 = -2^18 with a carry into limb 2, and 600,000 counted is
# digit 0 = 600,000 - 2^20 with a carry into digit 1: without carry offsets the limb sums of
# A and B differ (limb 2 of the sum: 3 against 2) though their totals are the same.
SPLITS = {"A": ([600_000, 600_000, 100], [0.75, 0.75, 0.5]),
          "B": ([300_000, 300_000, 600_100], [1.25, 0.25, 0.5])}


def _split_aggregates(split: str) -> dict[str, dict[str, Any]]:
    ns, s1 = SPLITS[split]
    return {f"q{i}": {"version": 1,
                      "counts": {"rows": [n], "disclosure.suppressed": [0], "col.cost.n": [n],
                                 "col.cost.missing": [0]},
                      "reals": {"col.cost.s1": [x]}}
            for i, (n, x) in enumerate(zip(ns, s1, strict=True))}


def test_collusion_limb_sums_do_not_show_how_the_total_splits(keys: RequesterKeys) -> None:
    """The requester's secret key and every ciphertext give the limb sums of the total, not
    only the total. Before the carry offsets these were each limb's sum over the providers'
    own digits, so they told A from B (whose providers' digits wrap differently) every
    time. The attack: decrypt the combined aggregate, round, unmask, and name the split
    whose old limb sums lie nearest. With carry offsets the limb sums depend on the total
    alone: the guess is right about half the time (at most 30 of 40 allowed: at a true rate
    of 1/2 more than 30 happens with probability 2e-4), while the total is exact every
    time."""
    spec = parse_spec({"statistics": ["count", "sum"], "columns": ["cost"]}, SCHEMA)
    layout = build_layout(spec)
    agents = {f"q{i}": Ed25519PrivateKey.generate() for i in range(3)}
    pubs = {p: k.public_key() for p, k in agents.items()}

    def own_limbs(agg: dict[str, Any]) -> list[float]:
        cv, rv = pack(layout, agg)
        return [x for v in cv + rv for x in v[1:]]

    old = {k: np.sum([own_limbs(a) for a in _split_aggregates(k).values()], axis=0)
           for k in SPLITS}
    assert np.any(old["A"] != old["B"])
    trials, right = 40, 0
    for t in range(trials):
        split = "AB"[t % 2]
        job = f"{JOB}-split-{t}"
        masks, anns = mask_sessions(job, agents)
        subs = [provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id=job,
                                provider_id=pid, signing_key=agents[pid], masking=masks[pid],
                                min_cell_count=1)[0]
                for pid, agg in _split_aggregates(split).items()]
        aggregate = combine(subs, keys.public_bytes, keys.fingerprint, pubs,
                            mask_announcements=anns)
        limb_sums = np.array([reduce(int(x)) for x in np.round(_decrypt_slots(keys, subs))])
        guess = min(SPLITS, key=lambda k: float(np.abs(limb_sums - old[k]).sum()))
        right += guess == split
        sums = decrypt_aggregate(aggregate, keys, spec)
        assert sums.counts["col.cost.n"] == [1_200_100]
        assert sums.reals["col.cost.s1"] == [2]
    assert right <= 30, f"the limb sums told the split {right}/{trials} times"


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
