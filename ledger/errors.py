"""The ledger's exception hierarchy.

Callers (the controller, the CLI, tests) catch these instead of ValueError/IndexError so a
bad proof from an untrusted server can never be confused with a programming error.

Every class survives ``pickle``: the audit raises them in worker processes. An exception
is rebuilt as ``cls(*args)``, so a class whose ``__init__`` takes other arguments than the
message defines ``__reduce__``; an unpicklable one kills the pool's result reader.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class VerificationError(LedgerError):
    """A proof, signature, checkpoint, receipt or entry did not verify."""


class MalformedProofError(VerificationError):
    """A proof is structurally wrong (hash length, proof length, sizes)."""


class MalformedNoteError(VerificationError):
    """A signed note, checkpoint, key or cosignature cannot be parsed."""


class MalformedEntryError(VerificationError):
    """An entry's bytes are not a valid version-1 canonical entry."""


class AuditError(VerificationError):
    """A full audit found a bad entry; ``index`` names the first one (-1: not an entry)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}" if index >= 0 else reason)
        self.index = index
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.index, self.reason), self.__dict__


class AuditIncompleteError(VerificationError):
    """The audit stopped before checking every entry: a worker process failed or died.

    Nothing is known about the entries it did not check, so the audit does not pass.
    """


class InvalidEntryError(LedgerError):
    """An append was refused: the kind, actor or body is not acceptable."""


class EntryNotFoundError(LedgerError):
    """No entry has the requested leaf hash or index."""


class ProofRequestError(LedgerError):
    """A proof or root was asked for sizes/indexes the log does not have."""


class CheckpointUnavailableError(LedgerError):
    """No signed checkpoint covers the requested entry yet."""


class KeyConfigError(LedgerError):
    """The log or witness key is missing, unreadable or malformed."""


class WitnessError(LedgerError):
    """A witness refused or failed to cosign."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.status), self.__dict__


class QuorumError(WitnessError):
    """Fewer than the required number of witnesses cosigned."""


class SequencerError(LedgerError):
    """The group-commit sequencer refused or failed a unit of work (see ledger.sequencer)."""


class SequencerClosedError(SequencerError):
    """Work was submitted to a sequencer that is not running (never started, or closed)."""


class BatchCommitError(SequencerError):
    """The batch holding this unit could not be committed: the unit is not acknowledged.

    The whole batch was rolled back. Only if the database connection was lost during
    COMMIT itself can the outcome be unknown, as for any client of a SQL database.
    """


class SequencerTimeoutError(SequencerError, TimeoutError):
    """``Sequencer.run`` gave up waiting; ``started`` tells whether the unit was in a batch.

    ``started=False``: the unit was withdrawn from the queue and will never run.
    ``started=True``: its batch was already running; it may still commit.
    """

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError (via TimeoutError) pickles as cls(*args): without this, cls(message).
        return type(self), (self.args[0], self.started), self.__dict__
