"""The joint-statistics protocol steps, one function per party (see docs/joint-statistics.md).

requester SDK: :func:`requester_keygen`, :func:`decrypt_aggregate`
provider agent: :func:`provider_submit` (disclosure check, pack, mask, encrypt, sign)
controller: :func:`combine` (verify, add ciphertexts; never holds a secret key)

Every submission is masked with pairwise masks (compute/masking.py) that cancel only in the
sum of all the job's providers, so the requester's key opens no single provider's part, and
its values are offset by pairwise zero-sum carry offsets before the limb split, so the limb
sums of the total do not show how it splits among the providers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from compute.backend import HEBackend, TensealCKKSBackend, fingerprint
from compute.disclosure import DisclosureReport, check_disclosure
from compute.dp import noise_aggregates
from compute.errors import (
    BadSignature,
    Conflict,
    InvalidInput,
    KeyMismatch,
    LayoutMismatch,
    TooFewProviders,
)
from compute.layout import (
    CHECK_TOLERANCE,
    DATA_SLOTS,
    LAYOUT_VERSION,
    LIMB_BITS,
    Layout,
    Sums,
    build_layout,
    canonical_json,
    pack,
    unpack,
)
from compute.masking import (
    MaskSession,
    apply_mask,
    total_mask,
    total_offset,
    verify_announcements,
)
from compute.spec import DEFAULT_MIN_PROVIDERS, JointSpec

SUBMISSION_TYPE = "joint-submission"
AGGREGATE_TYPE = "joint-aggregate"
SIGNING_DOMAIN = b"data-sandbox/joint-submission/v1\x00"  # no signature reuse across formats
Backend = HEBackend[Any, Any]


def default_backend() -> Backend:
    return TensealCKKSBackend()


@dataclass(frozen=True)
class RequesterKeys:
    """Held by the requester only. ``public_bytes`` is all that is ever uploaded."""

    secret: Any
    public_bytes: bytes
    fingerprint: str


def requester_keygen(backend: Backend | None = None) -> RequesterKeys:
    """A fresh key pair per joint job, so aggregates of different jobs cannot be mixed."""
    be = backend or default_backend()
    secret = be.keygen()
    public = be.export_public(secret)
    return RequesterKeys(secret, public, fingerprint(public))


def ciphertexts_digest(ciphertexts: Sequence[bytes]) -> str:
    """SHA-256 over the ordered list of per-ciphertext SHA-256s: what the ledger records."""
    return hashes_digest([hashlib.sha256(c).hexdigest() for c in ciphertexts])


def hashes_digest(hashes: Sequence[str]) -> str:
    """:func:`ciphertexts_digest` from the ciphertexts' SHA-256s (hex), already computed."""
    return hashlib.sha256(canonical_json(list(hashes))).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(where, "type", f"{where}: must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(where, "base64", f"{where}: not base64") from exc


def _signed_body(sub: Mapping[str, Any]) -> bytes:
    header = {k: v for k, v in sub.items() if k not in ("signature", "ciphertexts")}
    return SIGNING_DOMAIN + canonical_json(header)


def provider_submit(spec: JointSpec, aggregates: Mapping[str, Any], public_context_bytes: bytes,
                    expected_fingerprint: str, *, job_id: str, provider_id: str,
                    signing_key: Ed25519PrivateKey, masking: MaskSession,
                    min_cell_count: int = 10, backend: Backend | None = None
                    ) -> tuple[dict[str, Any], DisclosureReport]:
    """Agent side: disclosure check, DP noise (a ``dp`` spec), carry offsets and pack, mask,
    encrypt under the public context, sign."""
    be = backend or default_backend()
    if fingerprint(public_context_bytes) != expected_fingerprint:
        raise KeyMismatch("public context does not match the job's fingerprint")
    if masking.job_id != job_id or masking.provider_id != provider_id:
        raise Conflict("the mask keys belong to another job or provider")
    layout = build_layout(spec)
    if aggregates.get("version") != 1:
        raise LayoutMismatch("local aggregates are not version 1")
    checked, report = check_disclosure(aggregates, layout, min_cell_count)
    noised = spec.dp_epsilon is not None
    if noised:
        # Under DP the provider noises its own values before they become limbs (R7-1:
        # noise added to the encrypted limbs leaves the limbs above it exact); compute/dp.py.
        checked = noise_aggregates(checked, spec, layout, min_cell_count)
    n_count = layout.n_slots("count")
    n_slots = n_count + layout.n_slots("real")
    # Carry offsets go in before the limb split (what the limb sums would otherwise show of
    # how the total splits among providers, compute/layout.py), the slot masks after it.
    offsets = total_offset(masking, n_slots, layout.digest, LIMB_BITS)
    count_vecs, real_vecs = pack(layout, checked, noised=noised, offsets=offsets)
    mask = total_mask(masking, n_slots, layout.digest)
    count_vecs, real_vecs = apply_mask(count_vecs, mask, 0), apply_mask(real_vecs, mask, n_count)
    public = be.load_public(public_context_bytes)
    cts = [be.encrypt(public, v) for v in _one_stream(count_vecs, real_vecs)]
    sub: dict[str, Any] = {
        "type": SUBMISSION_TYPE,
        "layout_version": LAYOUT_VERSION,
        "layout_digest": layout.digest,
        "context_fingerprint": expected_fingerprint,
        "job_id": job_id,
        "provider_id": provider_id,
        "mask_keys_sha256": masking.digest,
        "ciphertext_sha256": [hashlib.sha256(c).hexdigest() for c in cts],
        "ciphertexts": [_b64(c) for c in cts],
    }
    sub["signature"] = _b64(signing_key.sign(_signed_body(sub)))
    return sub, report


def _one_stream(count_vecs: Sequence[Sequence[float]], real_vecs: Sequence[Sequence[float]]
                ) -> list[list[float]]:
    """The count slots then the real slots as one stream, DATA_SLOTS of them a ciphertext
    after its check slot (layout version 4). Every data slot holds a masked digit in
    [-2^29, 2^29) whichever family it belongs to, so sharing a ciphertext changes no slot's
    encoding error; a small job's slots (e.g. 38 count and 96 real) then take one
    ciphertext instead of two: half the encryption, transfer and combination."""
    data = [x for v in count_vecs for x in v[1:]] + [x for v in real_vecs for x in v[1:]]
    return [[1.0, *data[i:i + DATA_SLOTS]] for i in range(0, len(data), DATA_SLOTS)]


def _families(layout: Layout, slots: Sequence[Sequence[float]], n_providers: int
              ) -> tuple[list[list[float]], list[list[float]]]:
    """Decrypted ciphertexts (:func:`_one_stream`) back into the layout's count and real
    vectors for :func:`compute.layout.unpack`; every ciphertext's check slot is checked here
    (each rebuilt vector's check slot is then the number of providers)."""
    total = layout.n_slots("count") + layout.n_slots("real")
    if [len(s) for s in slots] != [1 + min(DATA_SLOTS, total - i)
                                   for i in range(0, total, DATA_SLOTS)]:
        raise LayoutMismatch("decrypted vectors do not match the layout's slot counts")
    for i, s in enumerate(slots):
        if abs(s[0] - n_providers) > CHECK_TOLERANCE:
            raise KeyMismatch(f"ciphertext[{i}]: the check slot does not decrypt to the number "
                              "of providers: a ciphertext is under another key or corrupted")
    data = [x for s in slots for x in s[1:]]
    n_count = layout.n_slots("count")
    counts, reals = data[:n_count], data[n_count:]

    def split(values: list[float], lengths: list[int]) -> list[list[float]]:
        out, pos = [], 0
        for n in lengths:
            out.append([float(n_providers), *values[pos:pos + n - 1]])
            pos += n - 1
        return out

    return split(counts, layout.slot_lengths("count")), split(reals, layout.slot_lengths("real"))


def _public_key(raw: Ed25519PublicKey | bytes) -> Ed25519PublicKey:
    return raw if isinstance(raw, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class _Checked:
    provider_id: str
    ciphertexts: list[bytes]
    # The SHA-256 of each ciphertext, as checked against the signed list:
    # the submission's ledger digest is taken over these rather than hashing ~0.9 MB again.
    hashes: list[str]


def _verify(sub: Mapping[str, Any], expected_fingerprint: str,
            keys: Mapping[str, Ed25519PublicKey | bytes]) -> _Checked:
    if not isinstance(sub, Mapping) or sub.get("type") != SUBMISSION_TYPE:
        raise InvalidInput("submission", "type", "not a joint submission")
    pid = sub.get("provider_id")
    if sub.get("layout_version") != LAYOUT_VERSION:
        raise LayoutMismatch(f"{pid}: layout version {sub.get('layout_version')!r}, "
                             f"expected {LAYOUT_VERSION}")
    if sub.get("context_fingerprint") != expected_fingerprint:
        raise KeyMismatch(f"{pid}: encrypted under another context")
    if not isinstance(pid, str) or pid not in keys:
        raise BadSignature(f"no registered agent key for provider {pid!r}")
    cts = [_unb64(c, f"{pid}.ciphertexts") for c in sub.get("ciphertexts", [])]
    hashes = [hashlib.sha256(c).hexdigest() for c in cts]
    if hashes != sub.get("ciphertext_sha256"):
        raise BadSignature(f"{pid}: ciphertexts do not match their signed hashes")
    try:
        _public_key(keys[pid]).verify(_unb64(sub.get("signature"), f"{pid}.signature"),
                                      _signed_body(sub))
    except InvalidSignature as exc:
        raise BadSignature(f"{pid}: signature does not verify") from exc
    return _Checked(pid, cts, hashes)


def combine(submissions: Sequence[Mapping[str, Any]], public_context_bytes: bytes,
            expected_fingerprint: str, agent_public_keys: Mapping[str, Ed25519PublicKey | bytes],
            min_providers: int = DEFAULT_MIN_PROVIDERS, *,
            mask_announcements: Sequence[Mapping[str, Any]],
            expected_layout_digest: str | None = None, backend: Backend | None = None
            ) -> dict[str, Any]:
    """Controller side: verify every submission, then add ciphertexts slot-wise.

    With two providers each could subtract its own share from the decrypted total and learn
    the other's, hence ``min_providers=3`` by default (still only protects if the requester
    is not itself colluding with all but one provider). Only the full set of providers that
    announced mask keys is ever combined: a strict subset still carries the missing
    providers' masks, so its sum would decrypt to noise (a dropped provider fails the job).
    """
    be = backend or default_backend()
    if fingerprint(public_context_bytes) != expected_fingerprint:
        raise KeyMismatch("public context does not match the job's fingerprint")
    if len(submissions) < min_providers:
        raise TooFewProviders(f"{len(submissions)} submission(s); at least {min_providers} "
                              "providers are needed")
    checked = [_verify(s, expected_fingerprint, agent_public_keys) for s in submissions]
    ids = [c.provider_id for c in checked]
    if len(set(ids)) != len(ids):
        raise Conflict("a provider submitted twice")
    if len({s.get("job_id") for s in submissions}) != 1:
        raise Conflict("submissions belong to different jobs")
    digests = {s.get("layout_digest") for s in submissions}
    if len(digests) != 1 or (expected_layout_digest and digests != {expected_layout_digest}):
        raise LayoutMismatch("submissions disagree on the slot layout")
    shapes = {len(c.ciphertexts) for c in checked}
    if len(shapes) != 1:
        raise LayoutMismatch("submissions carry different numbers of ciphertexts")
    job_id = str(submissions[0].get("job_id"))
    masks = verify_announcements(mask_announcements, job_id, agent_public_keys)
    if {str(a["provider_id"]) for a in mask_announcements} != set(ids):
        raise TooFewProviders("the submissions are not exactly the providers that announced "
                              "mask keys: the masks would not cancel")
    if {s.get("mask_keys_sha256") for s in submissions} != {masks}:
        raise Conflict("submissions were masked under another set of mask keys")
    public = be.load_public(public_context_bytes)
    cts = [be.add(public, [c.ciphertexts[i] for c in checked]) for i in range(shapes.pop())]
    return {
        "type": AGGREGATE_TYPE,
        "layout_version": LAYOUT_VERSION,
        "layout_digest": digests.pop(),
        "context_fingerprint": expected_fingerprint,
        "job_id": submissions[0]["job_id"],
        "providers": sorted(ids),
        "n_providers": len(ids),
        "submission_sha256": {c.provider_id: hashes_digest(c.hashes) for c in checked},
        "mask_keys_sha256": masks,
        "ciphertexts": [_b64(c) for c in cts],
        "aggregate_sha256": ciphertexts_digest(cts),
        "dp": None,
    }


def aggregate_ciphertexts(aggregate: Mapping[str, Any]) -> list[bytes]:
    cts = [_unb64(c, "aggregate.ciphertexts") for c in aggregate["ciphertexts"]]
    if ciphertexts_digest(cts) != aggregate.get("aggregate_sha256"):
        raise KeyMismatch("aggregate ciphertexts do not match aggregate_sha256")
    return cts


def check_aggregate(aggregate: Mapping[str, Any], layout: Layout, fp: str) -> None:
    if aggregate.get("type") != AGGREGATE_TYPE or aggregate.get("layout_version") != \
            LAYOUT_VERSION or aggregate.get("layout_digest") != layout.digest:
        raise LayoutMismatch("aggregate was built for another layout or version")
    if aggregate.get("context_fingerprint") != fp:
        raise KeyMismatch("aggregate is under another context than the requester's")


def decrypt_aggregate(aggregate: Mapping[str, Any], keys: RequesterKeys, spec: JointSpec,
                      backend: Backend | None = None) -> Sums:
    """Requester side: decrypt, then round every slot to an integer before anything is used.

    Rounding is what is released: raw CKKS decryptions carry the encryption noise, from
    which the secret key can be recovered (Li & Micciancio, EUROCRYPT 2021, section 4), so
    the noisy floats never leave this function.
    """
    be = backend or default_backend()
    layout = build_layout(spec)
    check_aggregate(aggregate, layout, keys.fingerprint)
    cts = aggregate_ciphertexts(aggregate)
    n = aggregate.get("n_providers")
    if not isinstance(n, int) or n < 1:
        raise InvalidInput("aggregate.n_providers", "type", "must be a positive integer")
    counts, reals = _families(layout, [be.decrypt(keys.secret, c) for c in cts], n)
    return unpack(layout, counts, reals, n)


def ledger_record(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """What the controller writes to the transparency log for one joint release."""
    dp = aggregate.get("dp") or {}
    return {
        "job_id": aggregate["job_id"],
        "context_fingerprint": aggregate["context_fingerprint"],
        "layout_digest": aggregate["layout_digest"],
        "mask_keys_sha256": aggregate.get("mask_keys_sha256"),
        "submission_sha256": dict(aggregate["submission_sha256"]),
        "aggregate_sha256": aggregate["aggregate_sha256"],
        "epsilon_spent": dp.get("epsilon"),
        "dp_noised_by": dp.get("noised_by"),
        "budget_charges": dp.get("charges", []),
    }
