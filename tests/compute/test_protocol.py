"""Keys, signatures and the guards: nothing secret ships, nothing mismatched combines."""

from __future__ import annotations

import base64
import copy
import tempfile
from typing import Any

import pandas as pd
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute import protocol
from compute.backend import TensealCKKSBackend, fingerprint
from compute.errors import (
    BadSignature,
    Conflict,
    InvalidInput,
    KeyMismatch,
    LayoutMismatch,
    MagnitudeOverflow,
    TooFewProviders,
)
from compute.layout import DATA_SLOTS, build_layout
from compute.local_aggregate import local_aggregate
from compute.protocol import (
    RequesterKeys,
    _signed_body,
    decrypt_aggregate,
    provider_submit,
)
from compute.spec import JointSpec, parse_spec
from tests.compute.conftest import SCHEMA
from tests.compute.harness import mask_sessions

SPEC = {"columns": ["age", "cost"], "statistics": ["count", "mean", "variance"],
        "shift": {"cost": 8000.0}}
AGENTS = {f"h{i}": Ed25519PrivateKey.generate() for i in range(4)}
PUBS = {p: k.public_key() for p, k in AGENTS.items()}
# Mask keys for the three hospitals of the job, and for the job with a fourth provider.
MASK3, ANN3 = mask_sessions("j1", {p: AGENTS[p] for p in ("h0", "h1", "h2")})
MASK4, ANN4 = mask_sessions("j1", AGENTS)
MASKJ, _ = mask_sessions("j", AGENTS)


def combine(subs: list[dict[str, Any]], *args: Any, anns: Any = None, **kw: Any
            ) -> dict[str, Any]:
    return protocol.combine(subs, *args, mask_announcements=ANN3 if anns is None else anns,
                            **kw)


@pytest.fixture(scope="module")
def spec() -> JointSpec:
    return parse_spec(SPEC, SCHEMA)


def submit(spec: JointSpec, keys: RequesterKeys, frame: pd.DataFrame, pid: str,
           masks: Any = None, **kw: Any) -> dict[str, Any]:
    agg = local_aggregate(spec.to_json(), frame)
    sub, _ = provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id="j1",
                             provider_id=pid, signing_key=AGENTS[pid],
                             masking=(masks or MASK3)[pid], **kw)
    return sub


@pytest.fixture(scope="module")
def subs(spec: JointSpec, keys: RequesterKeys,
         hospitals: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    return [submit(spec, keys, f, f"h{i}") for i, f in enumerate(hospitals.values())]


def test_public_context_ships_no_secret(keys: RequesterKeys) -> None:
    public = ts.context_from(keys.public_bytes)
    assert not public.has_secret_key() and not public.is_private()
    assert not public.has_galois_keys() and not public.has_relin_keys()
    vec = ts.ckks_vector(public, [1.0, 2.0])
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    assert keys.fingerprint == fingerprint(keys.public_bytes)


def test_secret_key_bytes_absent_from_public_context(keys: RequesterKeys) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/sk"
        keys.secret.secret_key().data.save(path)
        with open(path, "rb") as fh:
            sk = fh.read()
    assert len(sk) > 1000
    window = sk[len(sk) // 2: len(sk) // 2 + 64]  # key material, past any header
    # The window is findable where the key IS shipped, so its absence below means something.
    assert window in keys.secret.serialize(save_secret_key=True)
    assert window not in keys.public_bytes


def test_roundtrip_and_check_slot(spec: JointSpec, keys: RequesterKeys,
                                  subs: list[dict[str, Any]]) -> None:
    agg = combine(subs, keys.public_bytes, keys.fingerprint, PUBS)
    sums = decrypt_aggregate(agg, keys, spec)
    assert sums.n_providers == 3 and agg["providers"] == ["h0", "h1", "h2"]
    assert set(agg["submission_sha256"]) == {"h0", "h1", "h2"}
    assert len(agg["aggregate_sha256"]) == 64
    # The ledger's digest of each submission is over the ciphertexts as sent (the hashes
    # checked against the signed list are reused, not the signed list itself).
    for sub in subs[:3]:
        cts = [base64.b64decode(c) for c in sub["ciphertexts"]]
        assert agg["submission_sha256"][sub["provider_id"]] == \
            protocol.ciphertexts_digest(cts)


def test_too_few_providers(keys: RequesterKeys, subs: list[dict[str, Any]]) -> None:
    with pytest.raises(TooFewProviders):
        combine(subs[:2], keys.public_bytes, keys.fingerprint, PUBS)


def test_wrong_fingerprint_and_foreign_key(spec: JointSpec, keys: RequesterKeys,
                                           other_keys: RequesterKeys,
                                           subs: list[dict[str, Any]],
                                           hospitals: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(KeyMismatch):
        combine(subs, other_keys.public_bytes, keys.fingerprint, PUBS)
    # A provider encrypts under another key but lies about the fingerprint: TenSEAL cannot
    # tell, the check slot can.
    frames = list(hospitals.values())
    subs4 = [submit(spec, keys, f, f"h{i}", MASK4) for i, f in enumerate(frames)]
    foreign = submit(spec, other_keys, frames[0], "h3", MASK4)
    foreign["context_fingerprint"] = keys.fingerprint
    foreign["signature"] = base64.b64encode(AGENTS["h3"].sign(_signed_body(foreign))).decode()
    agg = combine([*subs4, foreign], keys.public_bytes, keys.fingerprint, PUBS, anns=ANN4)
    with pytest.raises(KeyMismatch, match="check slot"):
        decrypt_aggregate(agg, keys, spec)
    with pytest.raises(KeyMismatch):
        decrypt_aggregate(combine(subs, keys.public_bytes, keys.fingerprint, PUBS), other_keys,
                          spec)


def test_signature_and_tampering(keys: RequesterKeys, subs: list[dict[str, Any]]) -> None:
    forged = copy.deepcopy(subs)
    forged[1]["provider_id"] = "h0"
    with pytest.raises(BadSignature):
        combine(forged, keys.public_bytes, keys.fingerprint, PUBS)
    swapped = copy.deepcopy(subs)
    swapped[0]["ciphertexts"] = swapped[1]["ciphertexts"]
    with pytest.raises(BadSignature, match="hashes"):
        combine(swapped, keys.public_bytes, keys.fingerprint, PUBS)
    with pytest.raises(BadSignature, match="no registered"):
        combine(subs, keys.public_bytes, keys.fingerprint, {"h0": PUBS["h0"]})
    with pytest.raises(Conflict):
        combine([*subs, subs[0]], keys.public_bytes, keys.fingerprint, PUBS)


def test_layout_mismatch(spec: JointSpec, keys: RequesterKeys, subs: list[dict[str, Any]],
                         hospitals: dict[str, pd.DataFrame]) -> None:
    other = parse_spec({**SPEC, "statistics": ["count", "mean"]}, SCHEMA)
    odd = submit(other, keys, next(iter(hospitals.values())), "h3", MASK4)
    with pytest.raises(LayoutMismatch):
        combine([*subs, odd], keys.public_bytes, keys.fingerprint, PUBS, anns=ANN4)
    old = copy.deepcopy(subs)
    old[0]["layout_version"] = 0
    with pytest.raises(LayoutMismatch):
        combine(old, keys.public_bytes, keys.fingerprint, PUBS)
    agg = combine(subs, keys.public_bytes, keys.fingerprint, PUBS)
    with pytest.raises(LayoutMismatch):
        decrypt_aggregate(agg, keys, other)
    with pytest.raises(LayoutMismatch):
        combine(subs, keys.public_bytes, keys.fingerprint, PUBS,
                expected_layout_digest=build_layout(other).digest)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_magnitude_overflow(spec: JointSpec, keys: RequesterKeys) -> None:
    frame = pd.DataFrame({"age": [1, 2, 3] * 5, "cost": [1e300, 2.0, 3.0] * 5})
    with pytest.raises(MagnitudeOverflow) as err:
        submit(spec, keys, frame, "h0", min_cell_count=1)
    assert err.value.http_status == 400 and err.value.field.startswith("col.cost.s")
    agg = local_aggregate(spec.to_json(), frame.iloc[:3])
    agg["counts"]["rows"] = [2**31]
    with pytest.raises(MagnitudeOverflow):
        provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id="j",
                        provider_id="h0", signing_key=AGENTS["h0"], masking=MASKJ["h0"],
                        min_cell_count=1)
    with pytest.raises(KeyMismatch):
        provider_submit(spec, agg, keys.public_bytes, "0" * 64, job_id="j",
                        provider_id="h0", signing_key=AGENTS["h0"], masking=MASKJ["h0"])
    with pytest.raises(InvalidInput):
        provider_submit(spec, agg, keys.public_bytes, keys.fingerprint, job_id="j",
                        provider_id="h0", signing_key=AGENTS["h0"], masking=MASKJ["h0"],
                        min_cell_count=0)


def test_backend_rejects_secret_as_public(keys: RequesterKeys) -> None:
    be = TensealCKKSBackend()
    with pytest.raises(KeyMismatch):
        be.load_public(keys.secret.serialize(save_secret_key=True))
    with pytest.raises(KeyMismatch):
        be.load_public(b"not a context")


def test_public_context_loaded_once_and_shared_safely(keys: RequesterKeys) -> None:
    """The loaded public context is cached by fingerprint and shared by threads encrypting
    at once (agents in one process, the controller); a secret context is never cached."""
    import threading

    be = TensealCKKSBackend()
    secret_bytes = keys.secret.serialize(save_secret_key=True)
    for _ in range(2):  # refused again, not served from the cache
        with pytest.raises(KeyMismatch):
            be.load_public(secret_bytes)
    public = be.load_public(keys.public_bytes)
    assert be.load_public(bytes(keys.public_bytes)) is public
    assert not public.has_secret_key()
    out: dict[int, bytes] = {}

    def encrypt(i: int) -> None:
        out[i] = be.encrypt(be.load_public(keys.public_bytes), [float(i + 1)] * 8)

    threads = [threading.Thread(target=encrypt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = be.decrypt(keys.secret, be.add(public, [out[i] for i in range(6)]))
    assert all(abs(x - 21.0) < 1e-3 for x in total[:8])


def test_count_and_real_slots_share_ciphertexts(spec: JointSpec, keys: RequesterKeys,
                                                subs: list[dict[str, Any]],
                                                hospitals: dict[str, pd.DataFrame]) -> None:
    """Layout 4: the count slots then the real slots, one stream. A small job's slots take
    one ciphertext; a larger job's cross ciphertext boundaries (a ciphertext holding both
    families' slots) and still decode exactly."""
    layout = build_layout(spec)
    assert layout.n_slots("count") + layout.n_slots("real") <= DATA_SLOTS
    assert all(len(s["ciphertexts"]) == 1 for s in subs)
    big = parse_spec({**SPEC, "statistics": [*SPEC["statistics"], "histogram"],
                      "bins": {"age": list(range(2101))}}, SCHEMA)
    big_layout = build_layout(big)
    assert DATA_SLOTS < big_layout.n_slots("count") < 2 * DATA_SLOTS < \
        big_layout.n_slots("count") + big_layout.n_slots("real") + DATA_SLOTS
    frames = list(hospitals.values())
    big_subs = [submit(big, keys, f, f"h{i}", min_cell_count=1) for i, f in enumerate(frames)]
    assert all(len(s["ciphertexts"]) == 2 for s in big_subs)
    sums = decrypt_aggregate(combine(big_subs, keys.public_bytes, keys.fingerprint, PUBS),
                             keys, big)
    plain = [local_aggregate(big.to_json(), f) for f in frames]
    for name in ("hist.age", "hist.age.missing", "col.cost.n", "rows"):
        assert sums.counts[name] == [sum(v) for v in
                                     zip(*(p["counts"][name] for p in plain), strict=True)]
    total = sum(p["reals"]["col.cost.s1"][0] for p in plain)
    assert float(sums.reals["col.cost.s1"][0]) == pytest.approx(total, rel=1e-12)
