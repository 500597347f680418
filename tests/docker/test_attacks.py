"""Hostile job scripts, submitted through the API like any other job.

Each test asserts the job's final state (blocked or failed), that nothing of the data comes
out (no released output, no fetchable output, no input value in the requester's log), and
that the outcome is on the ledger (a ``run.finished`` entry with that state and job id).

NETWORK SAFETY: the only network attack aims at 127.0.0.1, and only after the script has
checked that ``lo`` is its sole interface; otherwise it sends nothing and exits with 5.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import textwrap
import threading
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from containers.executor import Limits
from tests.docker.helpers import (
    COLUMNS,
    MIN_CELL,
    TEST_LABELS,
    Stack,
    Target,
    add_hospital,
    fetch_output,
    grant,
    ledger_entries,
    make_target,
    person,
    run_entry,
    sha256,
    submit,
    submit_as,
    wait_job,
)

pytestmark = pytest.mark.docker




@pytest.fixture(scope="module")
def target(stack: Stack) -> Target:
    return make_target(stack, "main", "attacked.csv", 31)


@pytest.fixture(scope="module")
def tight_target(stack: Stack) -> Target:
    """A dataset served by the agent with small limits (5 s, 128 MB)."""
    return make_target(stack, "tight", "tight.csv", 32)


def run_attack(stack: Stack, t: Target, script: str) -> dict[str, Any]:
    job_id = submit(stack, t.permit_id, t.dataset_id, textwrap.dedent(script))
    return wait_job(stack.requester, job_id)


def exit_status(t: Target, job: dict[str, Any]) -> int:
    """The script's exit status: in the provider's view only, never the requester's."""
    assert "exit_code" not in job, job
    code: int = t.provider.client.get(f"/jobs/{job['id']}")["exit_code"]
    return code


def assert_nothing_out(stack: Stack, t: Target, job: dict[str, Any], state: str) -> None:
    assert job["state"] == state, job
    # Nothing released, nothing fetchable, whatever the outputs were called.
    assert all(o["decision"] == "blocked" for o in job["outputs"]), job["outputs"]
    for o in job["outputs"]:
        code, content = fetch_output(stack.requester, job["id"], o["name"])
        assert code == 404, content[:200]
    # The requester's console log carries no input value.
    log = job["log"] or ""
    leaked = sorted(v for v in t.values if v in log)
    assert not leaked, f"log carries input values: {leaked[:5]}"
    for text in (job["reason"] or "", str(job["outputs"])):
        assert not [v for v in t.values if v in text]
    # The outcome is on the ledger, with this job id and this state.
    entry = run_entry(stack.regulator, job["id"])
    assert entry["body"]["state"] == state
    assert entry["body"]["outputs"] == [
        {"name": o["name"], "sha256": o["sha256"], "bytes": o["bytes"], "decision": "blocked"}
        for o in job["outputs"]]


@contextlib.contextmanager
def host_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on the HOST's 127.0.0.1; records whatever connects to it."""
    received: list[bytes] = []
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    received.append(conn.recv(65536) or b"<connected>")

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], received
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()


def test_a_socket_to_loopback_carries_nothing_out(stack: Stack, target: Target) -> None:
    # The container has its own network namespace: its 127.0.0.1 is not the host's. The
    # script sends nothing unless lo is its only interface (exit 5 then).
    with host_listener() as (port, received):
        job = run_attack(stack, target, f"""
            import os, socket, sys
            import pandas as pd
            rows = pd.read_csv("/in/data.csv").to_csv(index=False).encode()
            if sorted(os.listdir("/sys/class/net")) != ["lo"]:
                sys.exit(5)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", {port}))
                s.sendall(rows)
            except ConnectionRefusedError:
                sys.exit(3)
            except OSError:
                sys.exit(6)
            sys.exit(4)
        """)
    assert received == []
    assert exit_status(target, job) == 3, job  # refused: nothing listens on the job's own loopback
    assert_nothing_out(stack, target, job, "failed")


def test_b_writing_to_the_input_fails(stack: Stack, target: Target) -> None:
    before = sha256(target.source.read_bytes())
    job = run_attack(stack, target, """
        import os, sys

        def attempt(fn):
            try:
                fn()
                return "ok"
            except OSError as e:
                return e.errno

        results = [
            attempt(lambda: open("/in/data.csv", "a").write("30,F,I21,1.00\\n")),
            attempt(lambda: open("/in/data.csv", "w").close()),
            attempt(lambda: os.remove("/in/data.csv")),
            attempt(lambda: os.rename("/in/data.csv", "/in/moved.csv")),
            attempt(lambda: open("/in/new.csv", "w").close()),
            attempt(lambda: os.chmod("/in/data.csv", 0o666)),
        ]
        sys.exit(4 if "ok" in results else 3)
    """)
    assert exit_status(target, job) == 3, job  # every write attempt failed inside the container
    assert sha256(target.source.read_bytes()) == before
    assert_nothing_out(stack, target, job, "failed")


def test_c_raw_rows_without_a_count_column_are_blocked(stack: Stack, target: Target) -> None:
    job = run_attack(stack, target, """
        import pandas as pd
        pd.read_csv("/in/data.csv").to_csv("/out/rows.csv", index=False)
    """)
    assert_nothing_out(stack, target, job, "blocked")
    assert "no count column" in job["reason"]


def test_c_a_nan_count_is_blocked_not_a_crash(stack: Stack, target: Target) -> None:
    # float("nan") passes a float() parse; int() of it raised inside the agent's checks.
    job = run_attack(stack, target, """
        import pandas as pd
        df = pd.read_csv("/in/data.csv").head(5)
        df["n"] = "nan"
        df.to_csv("/out/rows.csv", index=False)
    """)
    assert_nothing_out(stack, target, job, "blocked")
    assert "count column" in job["reason"]


def test_d_raw_rows_with_a_fake_count_column_are_blocked(stack: Stack,
                                                          target: Target) -> None:
    job = run_attack(stack, target, f"""
        import pandas as pd
        df = pd.read_csv("/in/data.csv").head(10)
        df["n"] = {MIN_CELL * 2}  # claims 20 records per row: 200 <= rows read
        df.to_csv("/out/summary.csv", index=False)
    """)
    assert_nothing_out(stack, target, job, "blocked")
    assert "reproduces a value that fewer than" in job["reason"]


def test_e_raw_rows_printed_to_the_console_are_withheld(stack: Stack,
                                                         target: Target) -> None:
    job = run_attack(stack, target, """
        import sys
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        print(df.to_csv(index=False))
        print(df.to_string(), file=sys.stderr)
        for row in df.itertuples():
            print(f"  File \\"/job/script.py\\", line 1, in {row.cost}")
        raise ValueError(df.head(30).to_csv(index=False))
    """)
    assert_nothing_out(stack, target, job, "failed")
    log = job["log"]
    # What is kept is the traceback's structure; the message is withheld.
    assert "Traceback (most recent call last):" in log
    assert "ValueError: <message withheld>" in log
    assert "console output withheld" in log


def test_e_forged_traceback_lines_carry_no_values(stack: Stack, target: Target) -> None:
    # Console lines shaped like traceback frames, with values hidden in the line number,
    # the function name and the exception's class name.
    job = run_attack(stack, target, """
        import sys
        import pandas as pd
        cents = [int(round(c * 100)) for c in pd.read_csv("/in/data.csv")["cost"]]
        for c in cents:
            print(f'  File "/job/script.py", line {c}, in <module>')
            print(f'  File "/job/script.py", line 1, in f{c}', file=sys.stderr)
        print("Traceback (most recent call last):", file=sys.stderr)
        for c in cents[:50]:
            print(f'  File "/job/script.py", line 1, in f{c}', file=sys.stderr)
        raise type(f"E{cents[0]}Error", (Exception,), {})("x")
    """)
    assert_nothing_out(stack, target, job, "failed")
    frame = pd.read_csv(target.source, dtype=str, keep_default_na=False)
    cents = {str(round(float(c) * 100)) for c in frame["cost"]}
    leaked = sorted(c for c in cents if c in job["log"])
    assert not leaked, f"the log carries {len(leaked)} input value(s), e.g. {leaked[:3]}"


def test_e_column_names_of_a_blocked_output_are_not_echoed(stack: Stack,
                                                            target: Target) -> None:
    # A blocked output's reasons reach the requester: a column name must not smuggle rows
    # out through them (nor, being long, wedge the run: reasons are capped by the API).
    job = run_attack(stack, target, """
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        name = "_".join(df["cost"].astype(str).head(60))
        pd.DataFrame({name: [df["cost"][0]], "n": [20]}).to_csv("/out/t.csv", index=False)
    """)
    assert_nothing_out(stack, target, job, "blocked")
    assert "reproduces a value that fewer than" in job["reason"]


def test_f_symlink_to_the_input_is_blocked_never_followed(stack: Stack,
                                                          target: Target) -> None:
    job = run_attack(stack, target, """
        import os
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        pd.DataFrame({"n": [len(df)]}).to_csv("/out/total.csv", index=False)
        os.symlink("/in/data.csv", "/out/data.csv")
    """)
    assert_nothing_out(stack, target, job, "blocked")
    # A blocked run's outputs are reported by position (sorted names: data.csv, total.csv).
    by_name = {o["name"]: o for o in job["outputs"]}
    assert "symbolic link" in " ".join(by_name["output-1"]["reasons"])
    # Not followed: the blocked link's record is not the digest of the input it points at.
    assert by_name["output-1"]["sha256"] != job["input_sha256"]
    assert by_name["output-1"]["bytes"] == 0
    # The harmless sibling is withheld too: nothing of a suspect run is released.
    assert any("withheld" in r for r in by_name["output-2"]["reasons"])


def test_g_identifier_column_is_blocked(stack: Stack, target: Target) -> None:
    permit_id = grant(stack, target.provider, target.dataset_id, ["patient_id", *COLUMNS])
    job_id = submit(stack, permit_id, target.dataset_id, textwrap.dedent("""
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        pd.DataFrame({"patient_id": ["all"], "n": [len(df)]}).to_csv("/out/ids.csv",
                                                                     index=False)
    """))
    job = wait_job(stack.requester, job_id)
    assert_nothing_out(stack, target, job, "blocked")
    assert "identifier column" in job["reason"]
    assert "patient_id" in job["reason"]


def test_h_memory_bomb_fails_out_of_memory(stack: Stack, tight_target: Target) -> None:
    # No pandas: importing it takes seconds of the 5 s limit under gVisor on a loaded
    # machine, and the run then ended at the time limit before the memory limit.
    job = run_attack(stack, tight_target, """
        with open("/in/data.csv", "rb") as f:
            hoard = [f.read()]
        while True:
            hoard.append(b"x" * (16 << 20))  # touched pages, 16 MiB at a time
    """)
    assert_nothing_out(stack, tight_target, job, "failed")
    assert "out of memory" in job["reason"]


def test_h_sleeping_past_the_deadline_fails_timed_out(stack: Stack,
                                                      tight_target: Target) -> None:
    job = run_attack(stack, tight_target, """
        import time
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        pd.DataFrame({"n": [len(df)]}).to_csv("/out/total.csv", index=False)
        time.sleep(120)
    """)
    assert_nothing_out(stack, tight_target, job, "failed")
    assert "timed out" in job["reason"]
    assert job["outputs"] == []  # the file written before the sleep never leaves


def test_a_chart_beside_a_checked_table_withholds_only_the_chart(stack: Stack,
                                                                 target: Target) -> None:
    job = run_attack(stack, target, """
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        pd.DataFrame({"n": [len(df)]}).to_csv("/out/t.csv", index=False)
        open("/out/chart.png", "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + df.to_csv().encode())
    """)
    assert job["state"] == "released", job["reason"]
    # The table leaves as the platform renders it, named by position among the tables.
    assert sorted((o["name"], o["decision"]) for o in job["outputs"]) == [
        ("output-1", "withheld"), ("table-1.csv", "released")]
    assert fetch_output(stack.requester, job["id"], "output-1")[0] == 404
    assert fetch_output(stack.requester, job["id"], "chart.png")[0] == 404


def test_an_empty_out_is_released_with_a_hint(stack: Stack, target: Target) -> None:
    job = run_attack(stack, target, "print('hello')\n")
    assert job["state"] == "released" and job["outputs"] == []
    assert "wrote no table to /out" in job["reason"]


def test_run_time_is_seen_only_in_whole_grains(stack: Stack) -> None:
    """A script that ends at once is reported no sooner than one grain after its start,
    so the time it took (a channel the script controls) is never seen finer."""
    add_hospital(stack, "grain", f"H-GRAIN-{uuid.uuid4().hex[:6]}", Limits(timeout_s=60),
                 TEST_LABELS, timing_grain_s=3.0)
    t = make_target(stack, "grain", "grain.csv", 7)
    job = run_attack(stack, t, "pass\n")
    assert job["state"] == "released", job
    # From submission, which comes before the container's start (the grain's origin; the
    # controller's started_at is the agent's later notice). A lower bound only: a loaded
    # machine makes runs longer, never shorter.
    submitted = datetime.fromisoformat(job["submitted_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    assert (finished - submitted).total_seconds() >= 3.0, job
    assert "exit_code" not in job
    assert "exit_code" not in run_entry(stack.regulator, job["id"])["body"]


def _grey_png() -> bytes:
    """The 2x1 grey PNG the review script writes (dark, light), as the agent rebuilds it:
    8-bit RGB, each channel rounded to one of eight levels (black, white), no filter."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes.fromhex("00000002000000010802000000"))
            + chunk(b"IDAT", zlib.compress(b"\x00" + b"\x00" * 3 + b"\xff" * 3, 9))
            + chunk(b"IEND", b""))


def test_release_review_end_to_end_two_checkers(stack: Stack) -> None:
    """A review permit: the agent holds the script's table for the providers' output
    checkers; two different people approve it (the two-person rule); then, and only then,
    the requester gets it, and the ledger names both."""
    t = make_target(stack, "main", "review.csv", 61)
    p = t.provider
    checkers = [person(stack, p.client, p.id, "output_checker") for _ in range(2)]
    analyst = person(stack, stack.requester, stack.requester.get("/me")["id"], "analyst")
    req = analyst.post("/requests", {
        "purpose": "Counts by sex, to check the review default.", "use_kind": "statistics",
        "business_system": "harbor-pricing-2026",
        "items": [{"dataset_id": t.dataset_id, "columns": COLUMNS}]})
    permit_id = p.client.post(f"/requests/{req['id']}/items/{t.dataset_id}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(), "max_runs": 5,
        "min_cell_count": MIN_CELL, "risk_assessment": "review default",
        "review_quorum": 2})["permit_id"]
    job = wait_job(analyst, submit_as(analyst, permit_id, t.dataset_id, """
import pandas as pd
df = pd.read_csv("/in/data.csv")
df.groupby("sex").size().rename("n").reset_index().to_csv("/out/by_sex.csv", index=False)
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
open("/out/chart.png", "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", bytes.fromhex(
    "00000002000000010800000000")) + chunk(b"IDAT", zlib.compress(b"\\x00\\x10\\xf0", 9))
    + chunk(b"IEND", b""))
"""))
    assert job["state"] == "awaiting_review" and "held for review" in job["reason"], job
    # Held outputs by position: the script's names are for the checkers only.
    assert [(o["name"], o["decision"]) for o in job["outputs"]] == [
        ("output-1", "pending_review"), ("output-2", "pending_review")]
    assert fetch_output(analyst, job["id"], "output-1")[0] == 404
    seen = checkers[0].get(f"/reviews/{job['id']}")
    table = seen["outputs"][0]["content"]
    assert [o["script_name"] for o in seen["outputs"]] == ["by_sex.csv", "chart.png"]
    assert table.splitlines()[0] == "sex,n" and "df.groupby" in seen["script"]
    # An image reaches the checkers only through review, as what a viewer draws of it,
    # coarsened (R7-3, R7-3c).
    png = base64.b64decode(seen["outputs"][1]["content_b64"])
    assert png == _grey_png()
    for checker in checkers:
        for name in ("output-1", "output-2"):
            checker.post(f"/reviews/{job['id']}/outputs/{name}",
                         {"decision": "approve", "comment": "two groups, both above k"})
    job = analyst.get(f"/jobs/{job['id']}")
    assert job["state"] == "released", job
    status, body = fetch_output(analyst, job["id"], "output-1")
    assert status == 200 and body.decode() == table
    decided = [e for e in ledger_entries(stack.regulator) if e["kind"] == "review.decided"
               and e["body"]["job_id"] == job["id"]]
    assert sorted(e["actor"] for e in decided) == sorted(2 * [c.person_id for c in checkers])
    assert fetch_output(analyst, job["id"], "output-2") == (200, png)
