"""The executor against the real engine: happy path, limits, idempotency, restarts."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from compute.errors import InvalidInput
from containers.executor import DockerExecutor, RunResult, RunState, read_outputs
from containers.hardening import runtime_pids
from containers.runspec import ExecutorError
from tests.containers.conftest import TEST_LABEL, TEST_PREFIX, SpecFactory
from tests.docker.runtimes import gvisor

pytestmark = pytest.mark.docker

SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(3600)\n"


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def test_happy_path(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    spec = make_spec("""
        import pandas as pd
        df = pd.read_csv("/in/data.csv")
        df.groupby(df.age >= 40).cost.mean().to_csv("/out/result.csv")
        print("rows", len(df))
    """)
    r = executor.run(spec)
    assert r.ok and r.exit_code == 0 and not r.timed_out and not r.oom_killed, r
    assert r.stdout == b"rows 3\n" and r.stderr == b""
    assert r.out_dir == spec.work_dir / "out"
    files = read_outputs(r.out_dir)
    assert files["result.csv"].splitlines()[1:] == [b"False,100.0", b"True,250.0"]
    assert r.started_at is not None and r.finished_at is not None
    assert r.started_at <= r.finished_at
    executor.cleanup(spec.job_id)


def test_failing_script_reports_exit_code_and_stderr(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    r = executor.run(make_spec("raise SystemExit('nope')"))
    assert r.exit_code == 1 and r.error == "exit code 1" and not r.oom_killed
    assert b"nope" in r.stderr


def test_memory_bomb_is_oom_killed(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    r = executor.run(make_spec("""
        print("allocating", flush=True)
        hog = []
        while True:
            hog.append(b"\\x01" * (8 * 1024 * 1024))
    """, memory_mb=64))
    assert r.oom_killed and not r.timed_out and r.exit_code == 137, r
    assert r.stdout == b"allocating\n"  # captured although the job was killed


def test_endless_sleep_is_killed_at_the_deadline(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=2)
    r = executor.run(spec)
    assert r.timed_out and not r.oom_killed and r.exit_code == 137, r
    assert r.stdout == b"started\n"
    assert executor.state(spec.job_id) == RunState.EXITED


def test_fork_bomb_is_contained_and_the_next_job_runs(
    executor: DockerExecutor, make_spec: SpecFactory, runtime: str
) -> None:
    r = executor.run(make_spec("""
        import os, time
        made = failed = 0
        while failed < 20:
            try:
                pid = os.fork()
            except OSError:
                failed += 1
                continue
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            made += 1
        print(made, flush=True)
    """, pids=32))
    if gvisor(runtime) and (r.exit_code == 2 or r.oom_killed):
        # gVisor: the job's processes are the sandbox's, and its kernel (a Go program) exits
        # with status 2 when the pids cgroup refuses it a thread, or the memory cgroup kills
        # the sandbox holding every fork: the job ends, contained.
        assert r.stdout == b"", r
    else:
        assert r.exit_code == 0, r
        # The init and the parent count too (gVisor: its own threads, not the job's count)
        assert 0 < int(r.stdout) < runtime_pids(32, runtime)
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks
    again = executor.run(make_spec("print('fine')"))
    assert again.ok and again.stdout == b"fine\n"


def test_out_is_capped(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    r = executor.run(make_spec("""
        total = 0
        try:
            with open("/out/big.bin", "wb") as f:
                while True:
                    f.write(b"\\x00" * 65536)
                    f.flush()
                    total += 65536
        except OSError as e:
            print(total, e.errno, flush=True)
    """, out_mb=4, fsize_mb=16))
    total, errno = (int(x) for x in r.stdout.split())
    assert r.exit_code == 0 and errno == 28  # ENOSPC
    assert total <= 4 * 1024 * 1024
    assert (r.out_dir / "big.bin").stat().st_size <= 4 * 1024 * 1024


def test_single_file_size_is_capped_by_fsize(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    r = executor.run(make_spec("""
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            with open("/tmp/f", "wb") as f:
                f.write(b"\\x00" * (3 * 1024 * 1024))
        except OSError as e:
            print("EFBIG", e.errno)
    """, fsize_mb=1))
    assert r.stdout == b"EFBIG 27\n", r


def test_runaway_stdout_is_bounded(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    r = executor.run(make_spec("""
        import sys
        line = "y" * 1023 + "\\n"
        for _ in range(8 * 1024):
            sys.stdout.write(line)
    """, log_bytes=4096))
    assert r.exit_code == 0
    assert len(r.stdout) == 4096 and r.stdout_truncated
    assert not r.stderr_truncated


def test_start_twice_is_idempotent(
    client: docker.DockerClient, executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=60)
    executor.start(spec)
    first = client.containers.get(executor.container_name(spec.job_id)).id
    deadline = executor.deadline(spec.job_id)
    executor.start(spec)
    assert client.containers.get(executor.container_name(spec.job_id)).id == first
    assert executor.deadline(spec.job_id) == deadline
    assert executor.state(spec.job_id) == RunState.RUNNING
    ours = client.containers.list(all=True, filters={"label": f"{TEST_PREFIX}.job={spec.job_id}"})
    assert len(ours) == 1 and ours[0].labels[TEST_LABEL] == "1"


def test_cleanup_twice_leaves_nothing(
    client: docker.DockerClient, executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=60)
    executor.start(spec)
    out = spec.work_dir / "out"
    assert mounted(out)
    executor.cleanup(spec.job_id)
    executor.cleanup(spec.job_id)
    assert executor.state(spec.job_id) == RunState.ABSENT
    assert not client.containers.list(all=True, filters={"name": executor.container_name(
        spec.job_id)})
    assert not mounted(out) and not out.exists()
    executor.cleanup("never-existed")  # cleaning an unknown job is fine too


def test_list_jobs_sees_a_running_job_and_its_deadline(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    before = datetime.now(UTC)
    spec = make_spec(SLEEPER, timeout_s=120)
    executor.start(spec)
    after = datetime.now(UTC)
    jobs = {j: (s, d) for j, s, d in executor.list_jobs()}
    state, deadline = jobs[spec.job_id]
    assert state == RunState.RUNNING
    assert before + timedelta(seconds=120) <= deadline <= after + timedelta(seconds=120)


def test_deadline_survives_an_agent_restart(
    client: docker.DockerClient, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=2)
    DockerExecutor(client, label_prefix=TEST_PREFIX).start(spec)
    # a new agent process: nothing in memory, only what the engine kept
    r = DockerExecutor(client, label_prefix=TEST_PREFIX).wait(spec.job_id)
    assert r.timed_out and r.stdout == b"started\n"
    # and yet another one after the kill still reports the same facts
    again = DockerExecutor(client, label_prefix=TEST_PREFIX).wait(spec.job_id)
    assert again.timed_out and again.exit_code == 137 and not again.oom_killed
    DockerExecutor(client, label_prefix=TEST_PREFIX).cleanup(spec.job_id)


def test_read_outputs_skips_links_and_fifos(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    r = executor.run(make_spec("""
        import os
        open("/out/ok.txt", "w").write("ok")
        os.symlink("/etc/shadow", "/out/shadow")
        os.symlink("/in/data.csv", "/out/data.csv")
        os.mkfifo("/out/pipe")
        os.mkdir("/out/sub")
    """))
    assert r.ok, r.stderr.decode()
    assert read_outputs(r.out_dir) == {"ok.txt": b"ok"}


def test_wait_result_is_repeatable(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    spec = make_spec("print('once')")
    first: RunResult = executor.run(spec)
    assert executor.wait(spec.job_id) == first


def test_invalid_specs_are_refused(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    spec = make_spec("print(1)")
    for bad in ["", "../x", "a/b", "x" * 80, "-rf"]:
        with pytest.raises(InvalidInput):
            executor.start(type(spec)(**{**spec.__dict__, "job_id": bad}))
    for env in [{"DB_PASSWORD": "x"}, {"API_KEY": "x"}, {"HOME": "/"}, {"lower": "x"}]:
        with pytest.raises(InvalidInput):
            executor.start(type(spec)(**{**spec.__dict__, "env": env}))
    assert executor.state(spec.job_id) == RunState.ABSENT
    with pytest.raises(ExecutorError):
        executor.wait(spec.job_id)


def test_out_mount_fails_closed(executor: DockerExecutor, make_spec: SpecFactory,
                                tmp_path: Path) -> None:
    spec = make_spec("print(1)")
    spec.work_dir.mkdir()
    (spec.work_dir / "out").symlink_to(tmp_path)
    with pytest.raises(ExecutorError, match="symlink"):
        executor.start(spec)
    assert executor.state(spec.job_id) == RunState.ABSENT


def test_env_reaches_the_job(executor: DockerExecutor, make_spec: SpecFactory) -> None:
    spec = make_spec("import os, json; print(json.dumps(dict(os.environ)))")
    spec = type(spec)(**{**spec.__dict__, "env": {"JOB_PURPOSE": "cost by age"}})
    env = json.loads(executor.run(spec).stdout)
    assert env["JOB_PURPOSE"] == "cost by age" and env["HOME"] == "/tmp"


def test_refuses_an_engine_without_seccomp(
    client: docker.DockerClient, make_spec: SpecFactory
) -> None:
    ex = DockerExecutor(client, label_prefix=TEST_PREFIX, extra_labels={TEST_LABEL: "1"})
    ex._facts = dataclasses.replace(ex.hardening_report(), seccomp=False)  # as if built without
    spec = make_spec("print(1)")
    with pytest.raises(ExecutorError, match="seccomp"):
        ex.start(spec)
    assert ex.state(spec.job_id) == RunState.ABSENT
    assert not mounted(spec.work_dir / "out")


def test_list_jobs_reports_an_orphaned_out_mount(
    client: docker.DockerClient, executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=60)
    executor.start(spec)
    client.containers.get(executor.container_name(spec.job_id)).remove(force=True)
    jobs = {j: s for j, s, _ in executor.list_jobs()}
    assert jobs[spec.job_id] == RunState.ABSENT
    executor.cleanup(spec.job_id)
    assert spec.job_id not in {j for j, _, _ in executor.list_jobs()}
    assert not mounted(spec.work_dir / "out")


def test_backstop_kills_without_an_agent_watching(
    client: docker.DockerClient, executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec(SLEEPER, timeout_s=1)
    executor.start(spec)
    # nobody calls wait(): the in-container backstop ends the job shortly after the deadline
    client.api.wait(client.containers.get(executor.container_name(spec.job_id)).id,
                    timeout=60)
    r = executor.wait(spec.job_id)
    assert r.timed_out and r.exit_code == 137 and not r.oom_killed, r


def test_extra_files_are_mounted_read_only(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    spec = make_spec("""
        import json
        print(json.load(open("/job/spec.json"))["columns"])
        try:
            open("/job/spec.json", "a")
        except OSError as e:
            print(e.errno)
    """)
    extra = spec.script_path.with_name("spec.json")
    extra.write_text('{"columns": ["age", "cost"]}')
    extra.chmod(0o666)  # only the read-only mount stops the write
    r = executor.run(dataclasses.replace(spec, extra_files={"spec.json": extra}))
    assert r.stdout == b"['age', 'cost']\n30\n", r  # 30 = EROFS


def test_limits_out_of_range_are_refused(
    executor: DockerExecutor, make_spec: SpecFactory
) -> None:
    with pytest.raises(InvalidInput, match="memory_mb"):
        executor.start(make_spec("print(1)", memory_mb=1))
    with pytest.raises(InvalidInput, match="extra_files"):
        spec = make_spec("print(1)")
        executor.start(dataclasses.replace(spec, extra_files={"../x": spec.script_path}))


def test_gvisor_runtime_when_installed(
    client: docker.DockerClient, make_spec: SpecFactory
) -> None:
    # `make engine` registers runsc: its absence is a broken setup, not a reason to skip.
    assert "runsc" in (client.info().get("Runtimes") or {}), "run `make engine`"
    ex = DockerExecutor(client, label_prefix=TEST_PREFIX, runtime="runsc",
                        extra_labels={TEST_LABEL: "1"})
    spec = make_spec("import os; print(sorted(os.listdir('/sys/class/net')), os.uname().release)")
    r = ex.run(spec)
    ex.cleanup(spec.job_id)
    nets, release = r.stdout.decode().rsplit(" ", 1)
    assert r.ok and nets == "['lo']", r
    assert release.strip() == "4.4.0"  # gVisor's own kernel answers, not the host's
