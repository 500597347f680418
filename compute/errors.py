"""The project's error hierarchy, and the errors of the joint-statistics protocol.

Every package except ``ledger`` (whose verifier must run with only the standard library
and ``cryptography``) raises subclasses of :class:`SandboxError`; the controller maps
them to HTTP statuses in one place. ``ledger.errors.LedgerError`` is mapped alongside.

The kernel lives here because ``compute`` is the package the others build on and that
imports none of them: ``authz`` (the controller's domain) and ``containers`` (the
provider-side agent) both import it, so neither has to import the other for its errors.
Errors of one component live beside it (``containers.runspec.ExecutorError``).

Input the requester or a provider can fix is an :class:`InvalidInput` (HTTP 400, naming
the field and the rule); state that forbids the step is a :class:`Conflict` (409).
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error the project raises on purpose."""

    http_status = 500
    code = "internal"

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self)}


class InvalidInput(SandboxError):
    """Input broke a rule. Names the field and the rule so the caller can fix it."""

    http_status = 400
    code = "invalid_input"

    def __init__(self, field: str, rule: str, message: str | None = None) -> None:
        self.field = field
        self.rule = rule
        super().__init__(message or f"{field}: {rule}")

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "field": self.field, "rule": self.rule, "message": str(self)}


class Unauthenticated(SandboxError):
    http_status = 401
    code = "unauthenticated"


class Forbidden(SandboxError):
    """The caller is known but its role may not do this."""

    http_status = 403
    code = "forbidden"


class NotFound(SandboxError):
    """Absent, or not visible to the caller: the two are indistinguishable on purpose."""

    http_status = 404
    code = "not_found"


class Conflict(SandboxError):
    """The object's current state does not allow the action."""

    http_status = 409
    code = "conflict"


class PolicyViolation(Conflict):
    """A permit or catalog rule forbids the action (expired, revoked, column not allowed)."""

    code = "policy_violation"



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


class SealingError(SandboxError):
    """A sealed (encrypted-at-rest) value cannot be opened or written: fail closed.

    The message names the table, column and key id, never the value.
    """

    code = "sealing_failed"
