"""Errors raised by the joint-statistics protocol, placed in the project's hierarchy.

Input the requester or a provider can fix is an :class:`~authz.errors.InvalidInput` (HTTP 400,
naming the field and the rule); protocol state that forbids the step is a ``Conflict`` (409).
"""

from __future__ import annotations

from authz.errors import Conflict, Forbidden, InvalidInput, PolicyViolation


class MagnitudeOverflow(InvalidInput):
    """A value would leave the range in which CKKS slots decode exactly (see the docs)."""

    code = "magnitude_overflow"

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(field, "magnitude", message)


class KeyMismatch(Conflict):
    """A ciphertext or context belongs to another key: fingerprint or check slot disagrees."""

    code = "key_mismatch"


class LayoutMismatch(Conflict):
    """Submissions, aggregate and spec disagree on the slot layout or its version."""

    code = "layout_mismatch"


class TooFewProviders(Conflict):
    """Fewer providers than the minimum: each could subtract its own share from the total."""

    code = "too_few_providers"


class BadSignature(Forbidden):
    """A submission's Ed25519 signature does not verify under its agent's registered key."""

    code = "bad_signature"


class BudgetExceeded(PolicyViolation):
    """Spending this epsilon would exceed the permit's differential-privacy budget."""

    code = "budget_exceeded"
