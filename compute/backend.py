"""The homomorphic-encryption backend behind one small interface.

Only additions are needed (sums of providers' vectors), so any additively homomorphic scheme
fits: TenSEAL CKKS today; OpenFHE threshold CKKS (no single key holder) or a secure
aggregation protocol could replace it by implementing :class:`HEBackend`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import tenseal as ts

from compute.errors import KeyMismatch

SecretT = TypeVar("SecretT")
PublicT = TypeVar("PublicT")

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
GLOBAL_SCALE = 2.0**40
# Loaded public contexts kept per process, by fingerprint: deserializing one (~0.1 s) was a
# good part of a small joint job's cost, paid again by the controller at submission and at
# combination, and by every part an agent runs in one process. A public context holds no
# secret, so sharing the loaded object costs no confidentiality.
PUBLIC_CACHE_SIZE = 8
# HomomorphicEncryption.org security standard (Albrecht et al., 2018), Table 1: for
# N = 8192, ternary secret, 128-bit classical security allows log2(q) <= 218.
MAX_LOGQ_128 = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


class HEBackend(Protocol[SecretT, PublicT]):
    slot_count: int

    def keygen(self) -> SecretT: ...
    def export_public(self, secret: SecretT) -> bytes: ...
    def load_public(self, public_bytes: bytes) -> PublicT: ...
    def encrypt(self, public: PublicT, values: Sequence[float]) -> bytes: ...
    def add(self, public: PublicT, ciphertexts: Sequence[bytes]) -> bytes: ...
    def add_plain(self, public: PublicT, ciphertext: bytes, values: Sequence[float]) -> bytes: ...
    def decrypt(self, secret: SecretT, ciphertext: bytes) -> list[float]: ...


class ThresholdHEBackend(HEBackend[SecretT, PublicT], Protocol):
    """Where a threshold scheme plugs in (e.g. OpenFHE's multiparty CKKS, once a Python 3.11
    build imports here): no single party holds the decryption key.

    ``joint_keygen`` gives each of ``parties`` key holders a share and the joint public
    context; ``partial_decrypt`` is what one holder contributes; ``combine_partials`` yields
    the slots once ``threshold`` partials are in. The protocol needs nothing else: the
    combined slots go through :func:`compute.layout.unpack` (rounding, unmasking, limbs)
    exactly like ``decrypt``'s, and the pairwise masks still hide every single submission
    from any coalition of key holders below the full set of providers.
    """

    def joint_keygen(self, parties: int, threshold: int) -> tuple[list[SecretT], bytes]: ...
    def partial_decrypt(self, share: SecretT, ciphertext: bytes) -> bytes: ...
    def combine_partials(self, partials: Sequence[bytes]) -> list[float]: ...


def fingerprint(public_bytes: bytes) -> str:
    """SHA-256 of the public context bytes: names the key a job's ciphertexts must be under."""
    return hashlib.sha256(public_bytes).hexdigest()


_public_cache: OrderedDict[str, Any] = OrderedDict()
_public_lock = threading.Lock()


class TensealCKKSBackend:
    """CKKS (Cheon-Kim-Kim-Song, ASIACRYPT 2017) via TenSEAL/Microsoft SEAL.

    Ciphertexts are only ever added, never multiplied or rescaled, so they stay at the top
    level with modulus q = 2^(60+40+40) and decryption is correct while |slot| < 2^99; the
    binding limit is encoding precision, handled by the layout's magnitude guard.
    """

    slot_count = POLY_MODULUS_DEGREE // 2

    def __init__(self) -> None:
        total = sum(COEFF_MOD_BIT_SIZES)
        assert total <= MAX_LOGQ_128[POLY_MODULUS_DEGREE], "parameters below 128-bit security"

    def keygen(self) -> Any:
        # Galois keys are never generated: no rotations are needed, and none can leak.
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS_DEGREE,
                         coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES))
        ctx.global_scale = GLOBAL_SCALE
        return ctx

    def export_public(self, secret: Any) -> bytes:
        return bytes(secret.serialize(save_public_key=True, save_secret_key=False,
                                      save_galois_keys=False, save_relin_keys=False))

    def load_public(self, public_bytes: bytes) -> Any:
        """The loaded public context; the same object for the same bytes while cached (only
        contexts that passed the checks below are cached)."""
        key = fingerprint(public_bytes)
        with _public_lock:
            ctx = _public_cache.get(key)
            if ctx is not None:
                _public_cache.move_to_end(key)
                return ctx
        try:
            ctx = ts.context_from(public_bytes)
        except Exception as exc:
            raise KeyMismatch(f"public context does not deserialize: {exc}") from exc
        if ctx.has_secret_key() or not ctx.has_public_key():
            raise KeyMismatch("a public context must hold the public key and no secret key")
        with _public_lock:
            _public_cache[key] = ctx
            while len(_public_cache) > PUBLIC_CACHE_SIZE:
                _public_cache.popitem(last=False)
        return ctx

    def encrypt(self, public: Any, values: Sequence[float]) -> bytes:
        return bytes(ts.ckks_vector(public, list(values)).serialize())

    def _load(self, public: Any, ciphertext: bytes) -> Any:
        try:
            return ts.ckks_vector_from(public, ciphertext)
        except Exception as exc:
            raise KeyMismatch(f"ciphertext does not deserialize under the context: {exc}") \
                from exc

    def add(self, public: Any, ciphertexts: Sequence[bytes]) -> bytes:
        acc = self._load(public, ciphertexts[0])
        for ct in ciphertexts[1:]:
            nxt = self._load(public, ct)
            if nxt.size() != acc.size():
                raise KeyMismatch("ciphertexts of different lengths cannot be added")
            acc += nxt
        return bytes(acc.serialize())

    def add_plain(self, public: Any, ciphertext: bytes, values: Sequence[float]) -> bytes:
        acc = self._load(public, ciphertext)
        acc += list(values)
        return bytes(acc.serialize())

    def decrypt(self, secret: Any, ciphertext: bytes) -> list[float]:
        vec = self._load(secret, ciphertext)
        return [float(x) for x in vec.decrypt()]
