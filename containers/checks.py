"""Output checks, run by the agent inside the provider's domain before anything leaves it.

Rules (docs/architecture.md, "Output checks", is the user-facing statement):
- Only regular files directly in /out, named ``[A-Za-z0-9][A-Za-z0-9._-]*.(csv|json)``, are
  candidates. Symlinks, hard links, directories, devices and FIFOs block the run; links are
  never followed and every path must resolve under /out.
- Each file must parse as a table: CSV with a header, or JSON (a list of flat records or
  one flat object). Size, row and file-count caps apply.
- A table is an aggregate only if it has a count column (``n`` or ``count``) stating how
  many records each row summarises: counts are non-negative integers, none above the rows
  read, and their sum is at most the rows read (one grouping per file, so no record is
  counted twice). Rows whose count is below the permit's minimum cell count are
  suppressed (removed), and that suppression happened (not how often) is recorded.
- A column named after a restricted or identifier field of the input blocks the output.
- A cell equal to a value that fewer than k input records hold in its column blocks the
  output: it reproduces an individual's value (a raw row, a minimum, a maximum), whatever
  the count column claims.
- Any blocked file blocks the whole run: nothing of a suspect run is released, and its
  outputs are reported by position only (no names, digests or sizes: those are numbers
  and text the script chose).
- Rows whose count is 0 are suppressed like small ones: their other cells are free text.
- Images (PNG, JPEG, PDF; never SVG) are withheld, or under a review permit carried to the
  output checkers; a PNG then as rebuilt from the chunks that draw it
  (:mod:`containers.image_canon`), so nothing a viewer never shows goes with it.

stdout/stderr are a leak channel too: the requester only ever receives the structure of the
last Python traceback on stderr: the line number of its innermost frame (only if the
submitted script has such a line) and the exception's class name if builtin, message
withheld. Everything else is withheld; that something was withheld is said, not how much.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.states import OutputDecision
from containers import image_canon
from containers.datasets import canonical

RELEASED, BLOCKED, WITHHELD = (OutputDecision.RELEASED, OutputDecision.BLOCKED,
                               OutputDecision.WITHHELD)

#: The digest recorded for an entry whose content was never read (a link, a directory, a bad
#: name, too many files): the controller requires a sha256 for every output, and "nothing
#: was read" must not look like a digest of the file a link points at.
NOTHING_READ_SHA256 = hashlib.sha256(b"").hexdigest()
NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.(csv|json)")
# Files no automatic check can vouch for: withheld (never released automatically), but a
# chart beside a checked table is an ordinary thing to write, so they block nothing.
IMAGE_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.(png|jpe?g|svg|pdf)")
COUNT_COLUMNS = ("n", "count")


@dataclass(frozen=True)
class OutputPolicy:
    min_cell_count: int
    rows_read: int
    blocked_columns: frozenset[str] = frozenset()
    # Canonical spellings of input values held by fewer than min_cell_count records.
    rare_values: frozenset[str] = frozenset()
    max_files: int = 20
    max_file_bytes: int = 1024 * 1024
    max_rows: int = 1000
    max_log_bytes: int = 4096
    # Lines in the submitted script: a traceback frame must point at one of them.
    script_lines: int = 0
    # The run's outputs go to human review: a PNG is then carried (rebuilt) to
    # the output checkers instead of being withheld. Never released without them.
    images_for_review: bool = False


@dataclass
class Verdict:
    name: str
    decision: OutputDecision
    reasons: list[str] = field(default_factory=list)
    content: bytes | None = None  # what would be released (after suppression)
    sha256: str = NOTHING_READ_SHA256  # of the bytes read (released: of ``content``)
    size: int = 0


class _Blocked(Exception):
    pass


def check_outputs(out_dir: Path, policy: OutputPolicy) -> list[Verdict]:
    root = os.path.realpath(out_dir)
    verdicts: list[Verdict] = []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    if len(entries) > policy.max_files:
        return [Verdict("outputs-dir", BLOCKED,
                        [f"more entries in /out than the {policy.max_files} allowed"])]
    for entry in entries:
        verdicts.append(_check_entry(root, entry, policy))
    if any(v.decision == BLOCKED for v in verdicts):
        return _withhold_all(verdicts)
    # A withheld file's name is text the script chose: it is reported by position.
    return [Verdict(f"withheld-{i}", WITHHELD, v.reasons) if v.decision == WITHHELD else v
            for i, v in enumerate(verdicts, 1)]


def _withhold_all(verdicts: list[Verdict]) -> list[Verdict]:
    """Nothing of a suspect run leaves, not even its file names, digests or sizes.

    Names are replaced by their position, because a name is text the script chose.
    """
    out = []
    for i, v in enumerate(verdicts, 1):
        reasons = v.reasons if v.decision == BLOCKED else [
            "withheld: another output of this run was blocked"]
        out.append(Verdict(f"output-{i}", BLOCKED, reasons))
    return out


def _check_entry(root: str, entry: os.DirEntry[str], policy: OutputPolicy) -> Verdict:
    name = entry.name
    # A hostile name is never echoed back: it is replaced by a digest of itself.
    safe_name = name if NAME_RX.fullmatch(name) else (
        "entry-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12])
    st = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return Verdict(safe_name, BLOCKED, ["symbolic link: links are never followed"])
    if not stat.S_ISREG(st.st_mode):
        return Verdict(safe_name, BLOCKED, ["not a regular file"])
    if st.st_nlink != 1:
        return Verdict(safe_name, BLOCKED, ["hard link: a file with other names is refused"])
    if IMAGE_RX.fullmatch(name):
        if policy.images_for_review and name.rsplit(".", 1)[1] in IMAGE_MAGIC:
            return _image_for_review(root, name, st, policy)
        if policy.images_for_review and name.rsplit(".", 1)[1] in UNCARRIED:
            return Verdict(safe_name, WITHHELD, [UNCARRIED_REASON])
        return Verdict(safe_name, WITHHELD, ["an image: the automatic checks cannot vouch for "
                                             "it, so it is never released automatically"])
    if not NAME_RX.fullmatch(name):
        return Verdict(safe_name, BLOCKED, ["name must be [A-Za-z0-9._-] ending in "
                                                     ".csv or .json"])
    path = os.path.join(root, name)
    if os.path.dirname(os.path.realpath(path)) != root:
        return Verdict(name, BLOCKED, ["path does not resolve inside /out"])
    if st.st_size > policy.max_file_bytes:
        return Verdict(name, BLOCKED, [f"larger than the {policy.max_file_bytes}-byte cap"])
    raw = _read_nofollow(path, st, policy.max_file_bytes)
    try:
        header, rows = _parse(name, raw)
        released, notes = _check_table(header, rows, policy)
    except _Blocked as e:
        # No digest and no size: both are numbers the script chooses, and a digest of a
        # short secret can be brute-forced offline.
        return Verdict(name, BLOCKED, [str(e)])
    content = _to_csv(header, released) if name.endswith(".csv") else _to_json(header, released)
    return Verdict(name, RELEASED, notes, content, hashlib.sha256(content).hexdigest(),
                   len(content))


#: The images review may release, by the signature their bytes must start with: PNG only,
#: which the agent rebuilds from the chunks that draw it. SVG is text (it can carry values,
#: and script when rendered); JPEG and PDF carry what no viewer shows (bytes after the end
#: marker, metadata segments, attachments, invisible text: R7-3b) and the agent does not
#: parse them, so neither goes to review.
IMAGE_MAGIC = {"png": b"\x89PNG\r\n\x1a\n"}
UNCARRIED = ("jpg", "jpeg", "pdf")
UNCARRIED_REASON = ("a JPEG or PDF file: never released, as it can carry data no viewer "
                    "shows; write the chart as PNG")
PNG_REFUSED = ("not a PNG the agent can read exactly: well-formed, not interlaced, its "
               "image data exactly the rows its header declares")


def _image_for_review(root: str, name: str, st: os.stat_result, policy: OutputPolicy
                      ) -> Verdict:
    """An image carried to the output checkers (they see what would be released): a PNG
    as rebuilt by :func:`containers.image_canon.canonical_png`."""
    path = os.path.join(root, name)
    if st.st_size > policy.max_file_bytes:
        return Verdict(name, BLOCKED, [f"larger than the {policy.max_file_bytes}-byte cap"])
    try:
        raw = _read_nofollow(path, st, policy.max_file_bytes)
    except _Blocked as e:
        return Verdict(name, BLOCKED, [str(e)])
    kind = name.rsplit(".", 1)[1]
    if not raw.startswith(IMAGE_MAGIC[kind]):
        return Verdict(name, BLOCKED, ["not the image type its name says"])
    notes = ["an image: the automatic checks cannot vouch for it; released only if the "
             "output checkers approve"]
    if kind == "png":
        # What the checkers look at is all that leaves: no chunk or byte a viewer never
        # draws (R7-3).
        try:
            raw = image_canon.canonical_png(raw)
        except image_canon.NotCanonical:
            # One reason for every way a PNG can be unreadable: which way is the script's
            # choice, so naming it would widen a blocked run's channel.
            return Verdict(name, BLOCKED, [PNG_REFUSED])
        notes.append("rebuilt from the chunks that draw it: metadata and trailing data "
                     "dropped")
    return Verdict(name, RELEASED, notes, raw, hashlib.sha256(raw).hexdigest(), len(raw))


def _read_nofollow(path: str, st: os.stat_result, cap: int) -> bytes:
    # O_NOFOLLOW plus an inode comparison: the file read is the file that was checked.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fst = os.fstat(fd)
        if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(fst.st_mode):
            raise _Blocked("file changed while being checked")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(cap + 1)[:cap]
    finally:
        os.close(fd)


def _parse(name: str, raw: bytes) -> tuple[list[str], list[list[str]]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Blocked("not UTF-8 text") from None
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or not rows[0]:
            raise _Blocked("CSV without a header row")
        header = rows[0]
        body = [r for r in rows[1:] if r]
        if any(len(r) != len(header) for r in body):
            raise _Blocked("CSV rows differ in length from the header")
        return header, body
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise _Blocked("malformed JSON") from None
    records = [data] if isinstance(data, dict) else data
    if not isinstance(records, list) or not records or not all(
            isinstance(r, dict) for r in records):
        raise _Blocked("JSON must be a flat object or a list of flat objects")
    header = list(records[0].keys())
    out = []
    for r in records:
        if list(r.keys()) != header:
            raise _Blocked("JSON records must all have the same keys")
        if not all(v is None or isinstance(v, str | int | float | bool) for v in r.values()):
            raise _Blocked("JSON values must be scalars (no nesting)")
        out.append(["" if v is None else json.dumps(v) if not isinstance(v, str) else v
                    for v in r.values()])
    return header, out


def _check_table(header: list[str], rows: list[list[str]], policy: OutputPolicy
                 ) -> tuple[list[list[str]], list[str]]:
    lowered = [h.strip().lower() for h in header]
    if len(set(lowered)) != len(lowered):
        raise _Blocked("duplicate column names")
    blocked = sorted(set(lowered) & {c.lower() for c in policy.blocked_columns})
    if blocked:
        raise _Blocked(f"carries high-sensitivity or identifier column(s): {', '.join(blocked)}")
    if len(rows) > policy.max_rows:
        raise _Blocked(f"more rows than the {policy.max_rows} an aggregate may have")
    count_idx = next((i for i, h in enumerate(lowered) if h in COUNT_COLUMNS), None)
    if count_idx is None:
        raise _Blocked("no count column ('n' or 'count'): every row must state how many "
                       "records it aggregates")
    counts = []
    for r in rows:
        try:
            c = float(r[count_idx])
        except ValueError:
            raise _Blocked("count column holds a non-number") from None
        # NaN and infinity first: int() of either raises, which would crash the agent's run.
        if not math.isfinite(c) or c != int(c) or c < 0 or c > policy.rows_read:
            raise _Blocked("count column holds a non-integer, negative or impossible count")
        counts.append(int(c))
    if sum(counts) > policy.rows_read:
        raise _Blocked("counts sum to more than the rows read: one grouping per file")
    kept = [r for r, c in zip(rows, counts, strict=True)
            if c >= policy.min_cell_count]
    if policy.rare_values:
        for r in kept:
            for i, cell in enumerate(r):
                if i != count_idx and cell.strip() and canonical(cell) in policy.rare_values:
                    # By position, never by name: a column name is job-chosen text.
                    raise _Blocked(f"column {i + 1} reproduces a value that fewer than "
                                   f"{policy.min_cell_count} input records hold (an individual"
                                   " value, a raw row, a minimum or a maximum)")
    notes = []
    if len(kept) != len(rows):
        # How many is not said: the script chooses that number.
        notes.append(f"rows with counts below {policy.min_cell_count} were suppressed")
    return kept, notes


def _to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _to_json(header: list[str], rows: list[list[str]]) -> bytes:
    def value(v: str) -> Any:
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v

    return json.dumps([{h: value(v) for h, v in zip(header, r, strict=True)} for r in rows],
                      sort_keys=False).encode()


TRACEBACK = "Traceback (most recent call last):"
FRAME_RX = re.compile(r'  File "/job/[\w.-]{1,64}", line (\d{1,7}), in ([\w<>]{1,100})')
# A script that does not compile has no "Traceback" header, only its one frame.
SYNTAX_FRAME_RX = re.compile(r'  File "/job/script\.py", line (\d{1,7})')
SYNTAX_ERRORS = frozenset({"SyntaxError", "IndentationError", "TabError"})
EXC_RX = re.compile(r"([A-Za-z_][\w.]{0,100})(:.*)?")
MAX_FRAMES = 1
#: Exception classes the log may name: the builtin ones. A job can define a class named
#: after a value (``class E1234567Error``), so any other name is withheld.
BUILTIN_EXCEPTIONS = frozenset(n for n, o in vars(builtins).items()
                               if isinstance(o, type) and issubclass(o, BaseException))


def _syntax_error(err_lines: list[str], policy: OutputPolicy) -> list[str]:
    """The line and class of a script that did not compile (its last frame and error)."""
    frame = next((m for ln in reversed(err_lines) if (m := SYNTAX_FRAME_RX.fullmatch(ln))),
                 None)
    last = err_lines[-1] if err_lines else ""
    name = last.split(":", 1)[0]
    if frame is None or name not in SYNTAX_ERRORS or \
            not 1 <= int(frame.group(1)) <= policy.script_lines:
        return []
    return [f'  File "/job/script.py", line {frame.group(1)}', f"{name}: <message withheld>"]


def check_log(stdout: bytes, stderr: bytes, policy: OutputPolicy) -> str:
    """What of the job's console output the requester may see: traceback structure only.

    Every line is job-controlled, so structure is a channel too; it is kept narrow: stdout
    is withheld entirely (Python writes tracebacks to stderr); of stderr only the LAST
    traceback is kept, at most its MAX_FRAMES innermost frame(s) of the job script, each
    reduced to its line number (function names are job-chosen identifiers), then the
    exception's class if builtin, message withheld.
    """
    out_lines = [ln for ln in stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
    err_lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(err_lines) if ln == TRACEBACK]
    kept: list[str] = []
    if starts:
        frames: list[str] = []
        exc: str | None = None
        for line in err_lines[starts[-1] + 1:]:
            if m := FRAME_RX.fullmatch(line):
                # A script can print a traceback of its own: a line number is kept only
                # if the script has that line, and only the innermost frame, so at most
                # log2(script lines) bits leave per run this way.
                if 1 <= int(m.group(1)) <= policy.script_lines:
                    fn = "<module>" if m.group(2) == "<module>" else "<function>"
                    frames.append(f'  File "/job/script.py", line {m.group(1)}, in {fn}')
            elif not line.startswith(" ") and (e := EXC_RX.fullmatch(line)):
                name = e.group(1)
                exc = name if name in BUILTIN_EXCEPTIONS else "<exception class withheld>"
                exc += ": <message withheld>" if e.group(2) else ""
                break
        if frames or exc:
            kept = [TRACEBACK, *frames[-MAX_FRAMES:], *([exc] if exc else [])]
    else:
        kept = _syntax_error(err_lines, policy)
    # Whether anything was withheld, not how much: a count is a number the script chooses.
    if len(out_lines) + len(err_lines) > len(kept):
        kept.append("[console output withheld: console output can carry raw data]")
    text = "\n".join(kept)
    return text[-policy.max_log_bytes:]
