"""Pairwise masking of providers' packed aggregates (secure aggregation, Bonawitz et al.,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017).

Why: the requester holds the CKKS secret key and the controller holds every provider's
ciphertext. If the two collude, an unmasked submission decrypts to that provider's own
figures. Masked, it decrypts to values uniform modulo ``MASK_MODULUS`` whatever the data.

How (see docs/joint-statistics.md, "Pairwise masking"):

1. For each joint job every provider's agent draws a fresh X25519 key pair and announces the
   public half, signed with its registered Ed25519 key over the job id (an *announcement*).
   The controller records the announcements in the ledger and hands them to every agent.
2. Each pair of providers (i, j) agrees on a secret ``X25519(sk_i, pk_j)``; HKDF-SHA256,
   salted with the job id and bound to the pair, the full key set and the slot layout,
   expands it to a 256-bit seed, and ChaCha20 stretches the seed into one mask per slot.
3. Provider i adds the pair's mask if i sorts before j and subtracts it otherwise, modulo
   ``MASK_MODULUS`` = 2^30, to every data slot before encrypting. Every slot holds a
   balanced base-2^20 limb (|limb| < 2^19), so masked slots lie in [-2^29, 2^29).
4. In the sum of all providers the masks cancel exactly (integer arithmetic; CKKS adds the
   encoded integers and the decryptor rounds). Reducing each rounded slot modulo 2^30 into
   [-2^29, 2^29) gives the exact sum of limbs as long as it is below 2^29 in magnitude,
   which holds for up to ``MAX_PROVIDERS`` providers.

The slot masks hide each submission, but the sum of limbs is exact: limbs add without
carries, so every limb sum ``L_k = sum_p limb_k(V_p)`` would show how the total splits
among the providers (whose digits wrapped). So each pair also draws *carry offsets* from
the same agreement (a second HKDF output, domain-separated by ``OFFSET_INFO``): one
uniform base-2^20 digit per slot, hence per value a uniform integer R_ij modulo M (the
limbs' modulus, compute/layout.py). Provider i encodes ``V_i + sum_{j>i} R_ij -
sum_{j<i} R_ji`` modulo M before the limb split (:func:`total_offset`); the offsets sum to
zero over the providers, so the limb sums recombine to V modulo M, and the tuple of
offset values is uniform given V whatever the split: the limb sums depend on V alone.

A provider that never submits leaves its masks in the sum: the rest decrypts to noise, so
the controller refuses to combine anything but the full announced set (the job fails; no
recovery of a dropped provider's masks is attempted, so nothing about anyone is revealed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from compute.errors import BadSignature, Conflict, InvalidInput

ANNOUNCEMENT_TYPE = "joint-mask-key"
ANNOUNCE_DOMAIN = b"data-sandbox/joint-mask-key/v1\x00"  # no signature reuse across formats
SEED_INFO = b"data-sandbox/joint-mask-seed/v1\x00"
# The carry offsets' seed: another HKDF output of the same agreement, so neither stream says
# anything about the other and the slot masks are the ones they always were.
OFFSET_INFO = b"data-sandbox/joint-carry-offset/v1\x00"
MASK_BITS = 30
MASK_MODULUS = 1 << MASK_BITS
# Why 500 (the requester recovers a total from its residue modulo M, compute/layout.py):
# * a total of counts (each in [-2^30, 2^30], DP-noised ones down to -2^30) is at most
#   500 * 2^30 < 2^39 = M/2 in magnitude for M = 2^40 (two limbs); 512 providers would not fit;
# * a total of reals (each |V_p| <= 2^70 * 2^40 = 2^110 fixed point) is at most
#   500 * 2^110 < 2^119 = M/2 for M = 2^120 (six limbs);
# * a slot's limb sum (each digit in [-2^19, 2^19)) is below 500 * 2^19 < 2^28, inside the
#   [-2^29, 2^29) that unmasking modulo 2^30 recovers exactly.
# compute/layout.py asserts the first two against its constants.
MAX_PROVIDERS = 500


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _signed(ann: Mapping[str, Any]) -> bytes:
    return ANNOUNCE_DOMAIN + canonical({k: ann.get(k) for k in
                                        ("type", "job_id", "provider_id", "public_key")})


@dataclass(frozen=True)
class MaskKey:
    """One provider's X25519 key for one joint job; the private half never leaves its agent."""

    private: X25519PrivateKey
    public_hex: str


def new_mask_key() -> MaskKey:
    key = X25519PrivateKey.generate()
    return MaskKey(key, key.public_key().public_bytes_raw().hex())


def announce(key: MaskKey, *, job_id: str, provider_id: str,
             signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed announcement of a job's mask key (what the controller stores and logs)."""
    ann: dict[str, Any] = {"type": ANNOUNCEMENT_TYPE, "job_id": job_id,
                           "provider_id": provider_id, "public_key": key.public_hex}
    ann["signature"] = base64.b64encode(signing_key.sign(_signed(ann))).decode("ascii")
    return ann


def verify_announcement(ann: Mapping[str, Any], job_id: str,
                        agent_key: Ed25519PublicKey | bytes) -> str:
    """Check one announcement against the job and the agent's registered key; its provider."""
    pid = ann.get("provider_id")
    if ann.get("type") != ANNOUNCEMENT_TYPE or not isinstance(pid, str):
        raise InvalidInput("mask_key", "type", "mask_key: not a mask-key announcement")
    if ann.get("job_id") != job_id:
        raise Conflict(f"{pid}: mask key announced for another job")
    pub = ann.get("public_key")
    try:
        assert isinstance(pub, str) and len(pub) == 64
        X25519PublicKey.from_public_bytes(bytes.fromhex(pub))
        sig = base64.b64decode(str(ann.get("signature")), validate=True)
    except (AssertionError, ValueError, binascii.Error) as exc:
        raise InvalidInput("mask_key.public_key", "format",
                           "mask_key: not a 32-byte X25519 key with a base64 signature") from exc
    vk = agent_key if isinstance(agent_key, Ed25519PublicKey) else \
        Ed25519PublicKey.from_public_bytes(agent_key)
    try:
        vk.verify(sig, _signed(ann))
    except InvalidSignature as exc:
        raise BadSignature(f"{pid}: mask key announcement does not verify") from exc
    return pid


def mask_keys_digest(announcements: Sequence[Mapping[str, Any]]) -> str:
    """Names the key set: every provider's submission and the aggregate carry it."""
    pairs = sorted([str(a["provider_id"]), str(a["public_key"])] for a in announcements)
    return hashlib.sha256(canonical(pairs)).hexdigest()


@dataclass(frozen=True)
class MaskSession:
    """What a provider masks with: its own key and every provider's verified announcement."""

    job_id: str
    provider_id: str
    key: MaskKey
    announcements: tuple[Mapping[str, Any], ...]
    # The agents' verifying keys the announcements were checked against: later signed
    # messages of the job (compute/cell_holders.py) are checked against the same keys.
    agent_keys: Mapping[str, Ed25519PublicKey | bytes] = field(
        default_factory=dict, compare=False, hash=False)

    @property
    def digest(self) -> str:
        return mask_keys_digest(self.announcements)

    @property
    def peers(self) -> dict[str, str]:
        return {str(a["provider_id"]): str(a["public_key"]) for a in self.announcements}


def verify_announcements(announcements: Sequence[Mapping[str, Any]], job_id: str,
                         agent_keys: Mapping[str, Ed25519PublicKey | bytes]) -> str:
    """Verify a job's announcements (job, signature, one per provider); the key set's digest."""
    ids = []
    for a in announcements:
        pid = str(a.get("provider_id"))
        if pid not in agent_keys:
            raise BadSignature(f"no registered agent key for provider {pid!r}")
        ids.append(verify_announcement(a, job_id, agent_keys[pid]))
    if len(set(ids)) != len(ids):
        raise Conflict("two mask keys announced for one provider")
    if len(ids) > MAX_PROVIDERS:
        raise InvalidInput("providers", "too_many", f"at most {MAX_PROVIDERS} providers")
    return mask_keys_digest(announcements)


def session(key: MaskKey, announcements: Sequence[Mapping[str, Any]], *, job_id: str,
            provider_id: str, agent_keys: Mapping[str, Ed25519PublicKey | bytes]
            ) -> MaskSession:
    """The agent's view: every announcement verified, its own key among them."""
    verify_announcements(announcements, job_id, agent_keys)
    mine = {a["provider_id"]: a["public_key"] for a in announcements}.get(provider_id)
    if mine != key.public_hex:
        raise Conflict("the announced key set does not hold this provider's own mask key")
    return MaskSession(job_id, provider_id, key, tuple(announcements), dict(agent_keys))


def _pair_seed(s: MaskSession, peer: str, peer_key: str, layout_digest: str,
               domain: bytes = SEED_INFO) -> bytes:
    shared = s.key.private.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(peer_key)))
    info = domain + canonical({"pair": sorted([s.provider_id, peer]), "keys": s.digest,
                                  "layout": layout_digest})
    return HKDF(algorithm=hashes.SHA256(), length=32,
                salt=hashlib.sha256(s.job_id.encode()).digest(), info=info).derive(shared)


def _stream(seed: bytes, n: int, bits: int = MASK_BITS) -> np.ndarray[Any, np.dtype[np.int64]]:
    """n values uniform in [0, 2^bits): ChaCha20 as the PRG (a fresh key per pair and job)."""
    enc = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    words = np.frombuffer(enc.update(b"\x00" * (4 * n)), dtype="<u4").astype(np.int64)
    return words & ((1 << bits) - 1)


def _pairwise_sum(s: MaskSession, n_slots: int, layout_digest: str, domain: bytes,
                  bits: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The sum of ± this provider's pairwise streams (+ where it sorts first): summed over
    all the job's providers every slot is exactly 0."""
    acc = np.zeros(n_slots, dtype=np.int64)
    for peer, pub in sorted(s.peers.items()):
        if peer == s.provider_id:
            continue
        r = _stream(_pair_seed(s, peer, pub, layout_digest, domain), n_slots, bits)
        acc = acc + r if s.provider_id < peer else acc - r
    return acc


def total_mask(s: MaskSession, n_slots: int, layout_digest: str
               ) -> np.ndarray[Any, np.dtype[np.int64]]:
    """This provider's mask: the sum of ± its pairwise masks, modulo 2^30."""
    return _pairwise_sum(s, n_slots, layout_digest, SEED_INFO, MASK_BITS) % MASK_MODULUS


def total_offset(s: MaskSession, n_slots: int, layout_digest: str, bits: int
                 ) -> np.ndarray[Any, np.dtype[np.int64]]:
    """This provider's carry offsets, one base-2^bits digit per slot: the sum of ± its
    pairwise digits, not reduced (|sum| < MAX_PROVIDERS * 2^bits), so that summed over all
    the job's providers every slot is exactly 0. The digits of one value's limbs read as one
    integer are that value's ``sum_{j>i} R_ij - sum_{j<i} R_ji``, each R uniform modulo
    2^(bits * limbs); compute.layout.pack adds it before the limb split."""
    return _pairwise_sum(s, n_slots, layout_digest, OFFSET_INFO, bits)


def apply_mask(vectors: Sequence[Sequence[float]], mask: np.ndarray[Any, np.dtype[np.int64]],
               offset: int) -> list[list[float]]:
    """Mask the data slots (slot 0, the check slot, stays 1.0) into [-2^29, 2^29)."""
    out = []
    pos = offset
    for vec in vectors:
        data = np.asarray(vec[1:], dtype=np.int64)
        m = mask[pos:pos + len(data)]
        pos += len(data)
        masked = (data + m + MASK_MODULUS // 2) % MASK_MODULUS - MASK_MODULUS // 2
        out.append([float(vec[0]), *masked.astype(np.float64).tolist()])
    return out


def reduce(value: int) -> int:
    """The balanced representative of an unmasked slot sum modulo 2^30."""
    return (value + MASK_MODULUS // 2) % MASK_MODULUS - MASK_MODULUS // 2


def local_sessions(job_id: str, signing_keys: Mapping[str, Ed25519PrivateKey]
                   ) -> tuple[dict[str, MaskSession], list[dict[str, Any]]]:
    """Every provider's session and the announcements, for runs that play all parties in one
    process (tests, benchmarks); the product exchanges them through the controller."""
    keys = {pid: new_mask_key() for pid in signing_keys}
    anns = [announce(keys[pid], job_id=job_id, provider_id=pid, signing_key=sk)
            for pid, sk in signing_keys.items()]
    pubs = {pid: k.public_key() for pid, k in signing_keys.items()}
    return {pid: session(keys[pid], anns, job_id=job_id, provider_id=pid, agent_keys=pubs)
            for pid in signing_keys}, anns
