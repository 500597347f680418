"""Vetted noise samplers for differential privacy: OpenDP's, never numpy's.

Textbook Laplace noise drawn in floating point (``numpy.random.laplace``) leaks through
the low bits of its results (Mironov, "On significance of the least significant bits for
differential privacy", CCS 2012), and rounding it to integers afterwards does not make it
the discrete mechanism its analysis assumes. OpenDP (the OpenDP Library, Harvard/IQSS;
Rust core) samples exactly: the discrete Laplace (two-sided geometric) mechanism for
integers (Canonne, Kamath & Steinke 2020), and for floats a Laplace mechanism that
samples on a discretized grid with exact arithmetic, so the float output is a
post-processing of an exactly sampled value. Randomness is the operating system's.

Each function takes the scale directly and returns the epsilon OpenDP's own privacy map
gives for the stated sensitivity, so the caller's accounting is OpenDP's, not a formula
repeated here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from compute.errors import InvalidInput


@functools.cache
def _opendp() -> ModuleType:
    """OpenDP, loaded on first use: its native library takes seconds to load, and an
    agent or controller that never noises anything should not start slower for it."""
    import opendp.prelude as dp

    # The measurements below are OpenDP's "contrib" constructors (vetted, not yet
    # proof-certified in OpenDP's own sense); enabling the feature is OpenDP's way of
    # asking the caller to opt in.
    dp.enable_features("contrib")
    return dp

DISCRETE_LAPLACE = "discrete_laplace"
LAPLACE = "laplace"


@dataclass(frozen=True)
class Noised:
    """Noised values, with the mechanism, its scale and the epsilon OpenDP's map gives."""

    values: list[float] | list[int]
    mechanism: str
    scale: float
    epsilon: float

    def describe(self) -> dict[str, object]:
        return {"mechanism": self.mechanism, "scale": self.scale, "epsilon": self.epsilon}


def _check(scale: float, sensitivity: float) -> None:
    if not (scale > 0 and sensitivity > 0):
        raise InvalidInput("dp", "range", "noise scale and sensitivity must be positive")


def integer_noise(values: Sequence[int], scale: float, sensitivity: int) -> Noised:
    """``values`` plus discrete Laplace noise of ``scale``; ``sensitivity``: L1, in
    records, of the whole vector (one record changes the vector by at most this)."""
    _check(scale, sensitivity)
    dp = _opendp()
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)),
                             dp.l1_distance(T=int), scale=float(scale))
    out = [int(v) for v in meas([int(v) for v in values])] if values else []
    return Noised(out, DISCRETE_LAPLACE, float(scale), float(meas.map(int(sensitivity))))


def real_noise(values: Sequence[float], scale: float, sensitivity: float) -> Noised:
    """``values`` plus Laplace noise of ``scale`` from OpenDP's exact sampler."""
    _check(scale, sensitivity)
    dp = _opendp()
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                             dp.l1_distance(T=float), scale=float(scale))
    out = [float(v) for v in meas([float(v) for v in values])] if values else []
    return Noised(out, LAPLACE, float(scale), float(meas.map(float(sensitivity))))
