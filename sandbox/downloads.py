"""A job's output as a file to download: the one response the API, the requester's pages
and the output checkers' pages all serve (so they never disagree on what a file is).

Its media type is the kind the agent's checks verified the file to be
(:func:`authz.output_names.checked_kind`), not a guess from the name the requester sees:
an output released by review keeps its positional name ``output-<i>``, which has no
extension. A name no check accepts is served as opaque bytes. Always an attachment, with
``nosniff``: a browser never renders or sniffs job-produced content in the platform's
origin, whatever the bytes look like.
"""

from __future__ import annotations

import re

from flask import Response

from authz import output_names
from authz.models import JobOutput
from authz.output_names import OutputKind

MEDIA_TYPES = {OutputKind.CSV: "text/csv", OutputKind.JSON: "application/json",
               OutputKind.PNG: "image/png"}
OPAQUE = "application/octet-stream"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def media_type(kind: OutputKind | None) -> str:
    return MEDIA_TYPES[kind] if kind is not None else OPAQUE


def file_name(name: str, kind: OutputKind | None) -> str:
    """A file name safe in a quoted Content-Disposition and on any file system, ending in
    the extension of its checked kind (``output-2`` released as a PNG: ``output-2.png``)."""
    # Output names are already [A-Za-z0-9._-] (authz/wire.py); this holds for older rows
    # too, and keeps quotes, separators and a leading dot out of the header and the path.
    safe = _UNSAFE.sub("_", name).lstrip(".")[:200] or "output"
    if kind is not None and not safe.endswith(f".{kind.value}"):
        safe = f"{safe}.{kind.value}"
    return safe


def output_file(out: JobOutput) -> Response:
    """``out``'s content (the caller checked it may be served) as an attachment."""
    if out.content is None:
        raise ValueError("an output without content is never served")
    kind = output_names.checked_kind(out)
    return Response(out.content, mimetype=media_type(kind), headers={
        "Content-Disposition": f'attachment; filename="{file_name(out.name, kind)}"',
        "X-Content-Type-Options": "nosniff"})
