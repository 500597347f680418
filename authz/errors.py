"""The project's error hierarchy.

Every package except ``ledger`` (whose verifier must run with only the standard library
and ``cryptography``) raises subclasses of :class:`SandboxError`; the controller maps
them to HTTP statuses in one place. ``ledger.errors.LedgerError`` is mapped alongside.
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


class ExecutorError(SandboxError):
    """The executor could not do what was asked; the job is failed with this reason."""

    code = "executor_error"


class RetryableExecutorError(ExecutorError):
    """A transient engine failure: the same idempotent call may be made again."""

    code = "executor_retry"
