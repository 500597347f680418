"""Unit tests of ``containers.checks`` (pure: no engine, no docker mark)."""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

import pytest

from containers.checks import (
    NOTHING_READ_SHA256,
    UNCARRIED_REASON,
    OutputPolicy,
    Verdict,
    check_log,
    check_outputs,
)
from containers.datasets import canonical

HEX64 = re.compile(r"[0-9a-f]{64}")
POLICY = OutputPolicy(min_cell_count=10, rows_read=100)


def check(tmp_path: Path, files: dict[str, str | bytes], policy: OutputPolicy = POLICY
          ) -> list[Verdict]:
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (out / name).write_bytes(data)
    return check_outputs(out, policy)


def one(verdicts: list[Verdict]) -> Verdict:
    assert len(verdicts) == 1
    v = verdicts[0]
    # Every verdict can be reported to the controller: a name and a 64-hex digest.
    assert HEX64.fullmatch(v.sha256), v
    return v


def released_rows(v: Verdict) -> list[str]:
    assert v.decision == "released", v.reasons
    assert v.content is not None
    return v.content.decode().splitlines()


# ---- counts and suppression --------------------------------------------------------------


def test_rows_below_k_are_suppressed_and_noted(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.csv": "band,n\na,50\nb,9\nc,10\nd,1\n"}))
    assert released_rows(v) == ["band,n", "a,50", "c,10"]
    assert v.reasons == ["rows with counts below 10 were suppressed"]


def test_zero_count_rows_are_suppressed(tmp_path: Path) -> None:
    # A zero-count row aggregates nobody, so its other cells would be free text: the
    # review showed 999 rows of per-record data riding on n=0.
    v = one(check(tmp_path, {"t.csv": "band,count\na,0\nb,40\np1_Alice,0\n"}))
    assert released_rows(v) == ["band,count", "b,40"]
    assert v.reasons == ["rows with counts below 10 were suppressed"]


def test_missing_count_column_blocks(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.csv": "band,mean\na,3.5\n"}))
    assert v.decision == "blocked"
    assert "no count column" in v.reasons[0]
    assert v.content is None


def test_counts_summing_above_rows_read_block(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.csv": "band,n\na,60\nb,60\n"}))
    assert v.decision == "blocked"
    assert v.reasons == ["counts sum to more than the rows read: one grouping per file"]


@pytest.mark.parametrize("cell", ["12.5", "-20", "abc", "101", "nan", "inf", "-inf", "1e9"])
def test_non_integer_negative_or_impossible_counts_block(tmp_path: Path, cell: str) -> None:
    v = one(check(tmp_path, {"t.csv": f"band,n\na,{cell}\n"}))
    assert v.decision == "blocked"
    assert "count column" in v.reasons[0]


def test_integral_float_counts_are_accepted(tmp_path: Path) -> None:
    assert one(check(tmp_path, {"t.csv": "band,n\na,20.0\n"})).decision == "released"


# ---- column names and rare values --------------------------------------------------------


@pytest.mark.parametrize("column", ["patient_id", "Patient_ID", " PATIENT_ID "])
def test_blocked_column_names_case_insensitive(tmp_path: Path, column: str) -> None:
    policy = OutputPolicy(10, 100, blocked_columns=frozenset({"patient_id"}))
    v = one(check(tmp_path, {"t.csv": f"{column},n\nall,50\n"}, policy))
    assert v.decision == "blocked"
    assert "identifier column(s): patient_id" in v.reasons[0]


def test_duplicate_column_names_block(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.csv": "n,N\n10,10\n"}))
    assert v.decision == "blocked"


@pytest.mark.parametrize("cell", ["12.5", "12.50", " 12.500 ", "1.25e1"])
def test_rare_values_block_whatever_their_spelling(tmp_path: Path, cell: str) -> None:
    policy = OutputPolicy(10, 100, rare_values=frozenset({canonical("12.5")}))
    v = one(check(tmp_path, {"t.csv": f'max_cost,n\n"{cell}",50\n'}, policy))
    assert v.decision == "blocked"
    assert "reproduces a value" in v.reasons[0]


def test_rare_value_in_a_suppressed_row_does_not_block(tmp_path: Path) -> None:
    policy = OutputPolicy(10, 100, rare_values=frozenset({canonical("12.5")}))
    v = one(check(tmp_path, {"t.csv": "x,n\n12.5,3\ncommon,40\n"}, policy))
    assert released_rows(v) == ["x,n", "common,40"]


def test_rare_value_reason_never_echoes_a_column_name(tmp_path: Path) -> None:
    policy = OutputPolicy(10, 100, rare_values=frozenset({canonical("12.5")}))
    name = "smuggled_" + "9" * 600
    v = one(check(tmp_path, {"t.csv": f"{name},n\n12.5,50\n"}, policy))
    assert v.decision == "blocked"
    assert "smuggled" not in v.reasons[0]
    assert len(v.reasons[0]) <= 500  # the controller's cap on a reason


# ---- JSON ---------------------------------------------------------------------------------


def test_json_flat_object(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.json": json.dumps({"n": 42, "mean": 3.5})}))
    assert v.decision == "released"
    assert v.content is not None
    assert json.loads(v.content) == [{"n": 42, "mean": 3.5}]


def test_json_list_of_records_with_suppression(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.json": json.dumps([{"g": "a", "n": 30}, {"g": "b", "n": 2}])}))
    assert v.decision == "released"
    assert v.content is not None
    assert json.loads(v.content) == [{"g": "a", "n": 30}]


@pytest.mark.parametrize("doc", [
    {"n": 10, "rows": [{"age": 40}]},  # nested list
    {"n": 10, "inner": {"age": 40}},  # nested object
    [{"n": 10}, {"n": 10, "extra": 1}],  # records with different keys
    [1, 2, 3],  # not records
    [],  # empty
])
def test_json_nested_or_irregular_blocks(tmp_path: Path, doc: object) -> None:
    v = one(check(tmp_path, {"t.json": json.dumps(doc)}))
    assert v.decision == "blocked"
    assert v.content is None


def test_malformed_json_blocks(tmp_path: Path) -> None:
    assert one(check(tmp_path, {"t.json": "{n: 1"})).decision == "blocked"


def test_non_utf8_blocks(tmp_path: Path) -> None:
    v = one(check(tmp_path, {"t.csv": b"band,n\n\xff\xfe,50\n"}))
    assert v.decision == "blocked"
    assert v.reasons == ["not UTF-8 text"]


# ---- the /out directory itself -----------------------------------------------------------


def test_too_many_files_block(tmp_path: Path) -> None:
    policy = OutputPolicy(10, 100, max_files=3)
    verdicts = check(tmp_path, {f"t{i}.csv": "n\n10\n" for i in range(4)}, policy)
    v = one(verdicts)
    assert v.decision == "blocked"
    assert v.reasons == ["more entries in /out than the 3 allowed"]


def test_oversized_file_blocks_without_reading(tmp_path: Path) -> None:
    policy = OutputPolicy(10, 100, max_file_bytes=1024)
    v = one(check(tmp_path, {"t.csv": "n\n" + "10\n" * 1000}, policy))
    assert v.decision == "blocked"
    assert v.reasons == ["larger than the 1024-byte cap"]
    assert v.content is None and v.size == 0


def test_hard_link_blocks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere.csv").write_text("n\n10\n")
    os.link(tmp_path / "elsewhere.csv", out / "t.csv")
    v = one(check_outputs(out, POLICY))
    assert v.decision == "blocked"
    assert "hard link" in v.reasons[0]


def test_symlink_blocks_and_is_never_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "data.csv"
    target.write_text("n\n10\n")
    os.symlink(target, out / "data.csv")
    v = one(check_outputs(out, POLICY))
    assert v.decision == "blocked"
    assert "symbolic link" in v.reasons[0]
    assert v.content is None
    assert v.size == 0  # nothing was read through the link
    (tmp_path / "x").mkdir()
    assert v.sha256 != one(check(tmp_path / "x", {"data.csv": "n\n10\n"})).sha256


def test_dangling_symlink_blocks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/nonexistent/secret", out / "t.csv")
    assert one(check_outputs(out, POLICY)).decision == "blocked"


def test_fifo_blocks_without_blocking_the_checker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "t.csv")
    v = one(check_outputs(out, POLICY))
    assert (v.decision, v.reasons) == ("blocked", ["not a regular file"])


def test_subdirectory_blocks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub.csv").mkdir(parents=True)
    ((out / "sub.csv") / "t.csv").write_text("n\n10\n")
    v = one(check_outputs(out, POLICY))
    assert (v.decision, v.reasons) == ("blocked", ["not a regular file"])


@pytest.mark.parametrize("name", [
    "../escape.csv.txt", "12345.67,F,I21.csv ", ".hidden.csv", "t.txt", "a b.csv",
    "x" * 200 + ".csv", "ünïcode.csv", "new\nline.csv",
])
def test_weird_file_names_block_and_are_never_echoed(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    safe = name.replace("/", "_")
    (out / safe).write_text("n\n10\n")
    v = one(check_outputs(out, POLICY))
    assert v.decision == "blocked"
    assert v.name == "output-1"
    assert safe not in " ".join(v.reasons)


def test_released_sibling_is_listed_with_its_digest(tmp_path: Path) -> None:
    verdicts = check(tmp_path, {"a.csv": "n\n10\n", "b.json": '{"n": 20}'})
    assert [(v.name, v.decision) for v in verdicts] == [("a.csv", "released"),
                                                        ("b.json", "released")]


# ---- console log -------------------------------------------------------------------------

REAL_TRACEBACK = b"""\
Traceback (most recent call last):
  File "/job/script.py", line 4, in <module>
    df = pd.read_csv("/in/nope.csv")
         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/pandas/io/parsers/readers.py", line 912, in read_csv
    return _read(filepath_or_buffer, kwds)
  File "/job/script.py", line 9, in helper_12345
FileNotFoundError: [Errno 2] No such file or directory: '/in/12345.67,F,I21'
"""


def test_check_log_keeps_only_traceback_structure() -> None:
    policy = OutputPolicy(10, 100, script_lines=20)
    log = check_log(b"12345.67,F,I21\nrows read: 300\n", REAL_TRACEBACK, policy)
    assert log.splitlines() == [
        "Traceback (most recent call last):",
        '  File "/job/script.py", line 9, in <function>',
        "FileNotFoundError: <message withheld>",
        "[console output withheld: console output can carry raw data]",
    ]
    assert "12345" not in log


def test_check_log_withholds_forged_frames_and_exception_names() -> None:
    forged_out = b"".join(b'  File "/job/script.py", line %d, in <module>\n' % v
                          for v in range(1000001, 1000040))
    forged_err = (b"Traceback (most recent call last):\n"
                  + b"".join(b'  File "/job/script.py", line 1, in f%d\n' % v
                             for v in range(2000001, 2000040))
                  + b"E3000001Error: 3000002\n")
    log = check_log(forged_out, forged_err, OutputPolicy(10, 100, script_lines=5))
    assert "1000001" not in log and "2000001" not in log and "3000001" not in log
    frames = [ln for ln in log.splitlines() if ln.startswith("  File")]
    assert len(frames) == 1
    assert "<exception class withheld>: <message withheld>" in log


def test_frames_must_point_at_a_line_of_the_script() -> None:
    # A forged traceback as the last thing on stderr: values as line numbers (cents).
    forged = (b"Traceback (most recent call last):\n"
              + b"".join(b'  File "/job/script.py", line %d, in <module>\n' % v
                         for v in (1848393, 2210455, 77))
              + b"ValueError: x\n")
    log = check_log(b"", forged, OutputPolicy(10, 100, script_lines=40))
    assert "1848393" not in log and "2210455" not in log and "line 77" not in log
    assert log.splitlines()[:2] == ["Traceback (most recent call last):",
                                    "ValueError: <message withheld>"]


def test_check_log_without_traceback_keeps_nothing() -> None:
    log = check_log(b"a\nb\n", b"KeyError: 'x'\n", POLICY)
    assert log == "[console output withheld: console output can carry raw data]"


def test_check_log_is_capped() -> None:
    policy = OutputPolicy(10, 100, max_log_bytes=64)
    assert len(check_log(b"", REAL_TRACEBACK, policy)) <= 64


def test_log_does_not_reveal_how_much_was_withheld() -> None:
    policy = OutputPolicy(min_cell_count=10, rows_read=100)
    few = check_log(b"a\n", b"", policy)
    many = check_log(b"a\n" * 500, b"b\n" * 77, policy)
    assert few == many == "[console output withheld: console output can carry raw data]"


def test_a_blocked_run_reports_no_names_digests_or_sizes(tmp_path: Path) -> None:
    verdicts = check(tmp_path, {"secret-53210.csv": "53210\n", "fine.csv": "n\n10\n"})
    assert [v.name for v in verdicts] == ["output-1", "output-2"]
    assert all(v.decision == "blocked" and v.content is None for v in verdicts)
    assert {v.sha256 for v in verdicts} == {NOTHING_READ_SHA256}
    assert {v.size for v in verdicts} == {0}
    # Sorted by name: "fine.csv" comes first and is withheld because of its sibling.
    assert verdicts[0].reasons == ["withheld: another output of this run was blocked"]


# ---- files the checks cannot vouch for; scripts that do not compile ------------------------

def test_an_image_is_withheld_without_blocking_the_checked_tables(tmp_path: Path) -> None:
    verdicts = check(tmp_path, {"chart.png": b"\x89PNG\r\n\x1a\n12345.67", "t.csv": "n\n10\n"})
    assert [(v.name, v.decision) for v in verdicts] == [("withheld-1", "withheld"),
                                                        ("t.csv", "released")]
    image = verdicts[0]
    # Nothing of it leaves: no content, no name the script chose, no digest, no size.
    assert image.content is None and image.size == 0 and image.sha256 == NOTHING_READ_SHA256


def _png(meta: bytes = b"", *, rebuilt: bool = False) -> bytes:
    """A 2x1 grey PNG (dark, light), optionally with a text chunk (written by hand: no
    image library); ``rebuilt``: as the agent writes it again, 8-bit RGB, each channel
    rounded to one of eight levels (black, white), no filter."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header, rows = ("0800000000", b"\x00\x10\xf0") if not rebuilt else (
        "0802000000", b"\x00" + b"\x00" * 3 + b"\xff" * 3)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", bytes.fromhex("0000000200000001")
                                                   + bytes.fromhex(header)),
                     chunk(b"tEXt", meta) if meta else b"",
                     chunk(b"IDAT", zlib.compress(rows, 9)), chunk(b"IEND", b"")])


def test_under_review_an_image_goes_to_the_checkers_if_it_is_one(tmp_path: Path) -> None:
    png = _png(b"Comment\x00age,cost")
    policy = OutputPolicy(10, 100, images_for_review=True)
    verdicts = check(tmp_path / "a", {"chart.png": png, "plot.svg": "<svg/>"}, policy)
    # Carried for the output checkers (the agent marks it pending) as the chunks that draw
    # it (tests/redteam/test_redteam_7_surfaces.py, R7-3); SVG is text, never carried.
    assert [(v.name, v.decision) for v in verdicts] == [("chart.png", "released"),
                                                        ("withheld-2", "withheld")]
    assert verdicts[0].content == _png(rebuilt=True)
    # Not a PNG the agent can read exactly (truncated): blocked.
    [cut] = check(tmp_path / "c", {"cut.png": png[:-20]}, policy)
    assert cut.decision == "blocked"
    # Blocked when its bytes are not what its name says.
    [fake] = check(tmp_path / "b", {"fake.png": "age\n41\n"}, policy)
    assert fake.decision == "blocked" and fake.reasons == ["not the image type its name says"]
    # JPEG and PDF never go to review: they carry what no viewer shows (R7-3b).
    held = check(tmp_path / "d", {"a.jpg": b"\xff\xd8\xff", "b.pdf": b"%PDF-1.4"}, policy)
    assert [v.decision for v in held] == ["withheld", "withheld"]
    assert all(v.content is None and v.reasons == [UNCARRIED_REASON] for v in held)


def test_an_image_beside_a_blocked_table_is_withheld_by_position(tmp_path: Path) -> None:
    verdicts = check(tmp_path, {"chart.png": b"\x89PNG", "raw.csv": "age\n41\n"})
    assert [v.decision for v in verdicts] == ["blocked", "blocked"]
    assert [v.name for v in verdicts] == ["output-1", "output-2"]


SYNTAX_ERROR = b"""\
  File "/job/script.py", line 3
    df = pd.read_csv("/in/data.csv"
                    ^
SyntaxError: '(' was never closed
"""


def test_check_log_keeps_a_syntax_errors_line_and_class() -> None:
    policy = OutputPolicy(min_cell_count=10, rows_read=0, script_lines=5)
    assert check_log(b"", SYNTAX_ERROR, policy).splitlines() == [
        '  File "/job/script.py", line 3', "SyntaxError: <message withheld>",
        "[console output withheld: console output can carry raw data]"]


def test_a_forged_syntax_error_at_a_line_the_script_lacks_is_withheld() -> None:
    policy = OutputPolicy(min_cell_count=10, rows_read=0, script_lines=2)
    assert "line" not in check_log(b"", SYNTAX_ERROR, policy)
