"""What the requester, and the ledger everyone audits, may see of a run's outputs.

A script chooses its outputs' file names, contents and so digests and sizes after reading
the data: about a hundred characters a name, twenty files a run, and a digest of a short
secret can be brute-forced offline. Only what was released says any of that. So:

- every output that is not released when its run is recorded (held for review, blocked,
  withheld) is named by its position in the run's report, ``output-<i>``, with no
  extension and no mark of its decision: the script chooses each file's kind and the
  order of its files, so a kind a position (csv, json, an image, one always withheld)
  would let it spell a value in the names of a held run before anyone reviewed it;
  the name the agent reported is kept beside it for the output checkers (who judge the
  file as the script wrote it) and for the agent's differencing audit;
- it keeps that positional name for good, released by review or not: a name is the key
  the requester, the checkers and the ledger use for the output, and its sealed content
  is bound to it;
- its digest and size are shown as those of empty content (the convention for what was
  never read) until it is released, in the job view and in every ledger body;
- its kind (:class:`OutputKind`) is what the agent's checks verified its file to be, read
  from the name the agent reported: once it is released its content is the requester's,
  and it is served as that kind, never by the positional name's lack of an extension.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

from authz.job_fields import OutputFields
from authz.models import JobOutput
from authz.states import OutputDecision

#: The digest shown for an output whose content is not the requester's to know of (the
#: agent's digest of a file never read, containers/checks.py ``NOTHING_READ_SHA256``).
NOT_SHOWN_SHA256 = hashlib.sha256(b"").hexdigest()


def positional(i: int) -> str:
    """The name of the ``i``-th output (from 1) of a report, when it is not released: the
    same form whatever the output's kind or decision, so the sequence of names says
    nothing but how many files the run left."""
    return f"output-{i}"


def shown_name(i: int, name: str, decision: OutputDecision) -> str:
    """What the requester and the ledger call the ``i``-th output (from 1) of a report that
    the agent named ``name``: its name if released, else its position. ``sandbox dev-run``
    shows a mock run's outputs by it too, so a dry run names them as the real one will."""
    return name if decision == OutputDecision.RELEASED else positional(i)


def name_by_position(outputs: list[JobOutput]) -> None:
    """Rename the outputs of a report that were not released, in place; keep what the agent
    called them in ``script_name``. A blocked or withheld output's content never reached
    the controller: its digest and size are dropped too."""
    for i, out in enumerate(outputs, 1):
        name = shown_name(i, out.name, out.decision)
        if out.name != name:
            out.script_name, out.name = out.name, name
        if out.decision not in (OutputDecision.RELEASED, OutputDecision.PENDING_REVIEW):
            out.sha256, out.size = NOT_SHOWN_SHA256, 0


def agents_name(out: JobOutput) -> str:
    """The name the agent reported the output under (its differencing audit's key)."""
    return out.script_name or out.name


class OutputKind(enum.StrEnum):
    """What the agent's checks (containers/checks.py) verified an output's file to be, by the
    extension of the name it had in /out: a CSV or JSON table the agent parsed and wrote out
    again, or a PNG it rebuilt from the chunks that draw it. Nothing else is ever released
    (JPEG, PDF and SVG are withheld), so anything else has no kind."""

    CSV = "csv"
    JSON = "json"
    PNG = "png"


def checked_kind(out: JobOutput) -> OutputKind | None:
    """The kind the checks verified ``out`` to be, or None for a name no check accepts (the
    agent's patterns are lower-case: ``x.PNG`` was never checked as an image)."""
    name = agents_name(out)
    ext = name.rsplit(".", 1)[1] if "." in name else ""
    try:
        return OutputKind(ext)
    except ValueError:
        return None


def shown(out: OutputFields) -> dict[str, Any]:
    """An output as the requester and the ledger see it: name, digest, size, decision."""
    released = out.decision == OutputDecision.RELEASED
    return {"name": out.name, "sha256": out.sha256 if released else NOT_SHOWN_SHA256,
            "bytes": out.size if released else 0, "decision": out.decision}
