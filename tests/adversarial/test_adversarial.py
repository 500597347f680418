"""One hostile job per attack, each submitted through the API like any other job.

Convention of the scripts (see PRELUDE): a script that observes that its attack was refused
raises ``SystemExit(3)``, so the run ends ``failed`` (the provider's view shows status 3); it
exits 0 (which asks for a release) only if the attack SUCCEEDED, and every test then fails,
because it asserts the run is failed or blocked. Other exit codes: 4 = the attack went
further than a limit should allow, 5 = network probe skipped because an interface other than
``lo`` exists (nothing was sent), 7 = DNS probe skipped because /etc/resolv.conf names a
non-loopback server (nothing was sent), 6 = a gVisor-only probe found the host's kernel
(nothing was written).

A few attacks are about what the agent does with what a job leaves behind (links in /out,
thousands of files): those scripts plant their objects and exit 0 on purpose, and the test
asserts the agent's checks BLOCK the run.

Every test asserts the outcome, that nothing of the input reaches the requester (log,
reason, outputs: ``tests.docker.test_attacks.assert_nothing_out``), and that the outcome is
on the ledger: a ``run.finished`` entry with the job id, the state and the reason. The exit
status reaches the provider's view only: the requester and the ledger see the outcome.

NETWORK SAFETY: network probes send only to 127.0.0.1 / ::1, and only after the script
checked that ``lo`` is its only interface. The DNS lookup is attempted only if
/etc/resolv.conf names no server or only loopback servers. Writes to kernel interfaces
(/proc/sys, /proc/sysrq-trigger, cgroups) only OPEN the file for writing (where the kernel
checks permission) and never write a byte, so a hole could not hurt the host; the one
exception writes cgroup limits only under gVisor, into its own emulated cgroupfs, after
checking that gVisor's kernel answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.wire import TERMINAL
from containers import hardening, mounts, stage
from containers.checks import NOTHING_READ_SHA256
from containers.engine import docker_client
from tests.adversarial.conftest import MAIN_LIMITS, TIGHT_LIMITS, Adversary
from tests.docker.helpers import (
    Target,
    job_containers,
    run_entry,
    sha256,
    submit,
    wait_job,
)
from tests.docker.runtimes import gvisor
from tests.docker.test_attacks import assert_nothing_out, host_listener

pytestmark = [pytest.mark.docker]

#: Prepended to every attack script.
PRELUDE = '''\
import errno, os, sys


def refused():
    """The attack did not work: fail the run on purpose."""
    raise SystemExit(3)


def succeeded():
    """The attack worked: exit 0 asks for a release, which the test must catch."""
    raise SystemExit(0)


def only_loopback():
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def denied(fn):
    """True if fn() raised OSError: the operation was refused."""
    try:
        fn()
    except OSError:
        return True
    return False


'''

#: A trivial aggregate (no pandas): what an honest job does after an attack.
BENIGN = """\
n = sum(1 for _ in open("/in/data.csv")) - 1
open("/out/total.csv", "w").write(f"n\\n{n}\\n")
"""


# ---- helpers ------------------------------------------------------------------------------

def run(adv: Adversary, t: Target, body: str, timeout_s: float = 90) -> dict[str, Any]:
    job_id = submit(adv.stack, t.permit_id, t.dataset_id, PRELUDE + textwrap.dedent(body))
    return wait_job(adv.stack.requester, job_id, timeout_s)


def exit_status(t: Target, job: dict[str, Any]) -> int | None:
    """The script's self-report: in the provider's view only, never the requester's."""
    assert "exit_code" not in job, job
    code: int | None = t.provider.client.get(f"/jobs/{job['id']}")["exit_code"]
    return code


def assert_outcome(adv: Adversary, t: Target, job: dict[str, Any], state: str, *,
                   exit_code: int | None = None, reason: str | None = None
                   ) -> dict[str, Any]:
    """State, exit code and reason; nothing of the input out; the same facts on the ledger."""
    assert job["state"] == state, (job["state"], job["reason"], exit_status(t, job))
    status = exit_status(t, job)
    if exit_code is not None:
        assert status == exit_code, (
            f"exit code {status}, expected {exit_code} "
            f"(0: the attack succeeded; 4: it went past a limit): {job}")
    assert job["reason"], job
    if reason is not None:
        assert reason in job["reason"], job["reason"]
    assert_nothing_out(adv.stack, t, job, state)
    entry = run_entry(adv.stack.regulator, job["id"])
    assert entry["body"]["job_id"] == job["id"]
    assert entry["body"]["reasons"] == [job["reason"]]
    assert "exit_code" not in entry["body"]
    return entry


def refused(adv: Adversary, t: Target, body: str) -> dict[str, Any]:
    """Run an attack whose script reports its own refusal (exit 3)."""
    job = run(adv, t, body)
    assert_outcome(adv, t, job, "failed", exit_code=3, reason="exited with an error status")
    return job


def assert_next_job_released(adv: Adversary, t: Target) -> None:
    job = run(adv, t, BENIGN)
    assert job["state"] == "released", job
    assert run_entry(adv.stack.regulator, job["id"])["body"]["state"] == "released"


def assert_cleaned_up(adv: Adversary, agent: str, job_id: str, timeout_s: float = 20) -> None:
    """No container, no /out tmpfs, no stage, no job directory left on the host."""
    job_dir = str(adv.job_dir(agent, job_id)) + "/"
    client = docker_client()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = {
                "mounts": [p for p, _ in mounts.mountinfo() if p.startswith(job_dir)],
                "stages": [st.dir for st in stage.stages(stage.STAGE_ROOT)
                           if st.owner().get("job") == job_id],
                "containers": job_containers(client, job_id),
                "job dir": adv.job_dir(agent, job_id).exists(),
            }
            if not any(left.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind by {job_id}: {left}")
            time.sleep(0.2)
    finally:
        client.close()


# ---- network ------------------------------------------------------------------------------

@contextlib.contextmanager
def loopback_catchers() -> Iterator[tuple[int, int, list[bytes]]]:
    """A TCP listener on the host's ::1 (when it has one) and a UDP socket on its 127.0.0.1;
    records whatever reaches them. Yields (tcp6 port or 0, udp port, received)."""
    received: list[bytes] = []
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    tcp6: socket.socket | None = None
    with contextlib.suppress(OSError):
        tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        tcp6.bind(("::1", 0))
        tcp6.listen(4)
        tcp6.settimeout(0.2)
    stop = threading.Event()

    def catch() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                received.append(udp.recv(65536))
            if tcp6 is not None:
                with contextlib.suppress(OSError):
                    conn, _ = tcp6.accept()
                    with conn:
                        received.append(b"<tcp6 connected>")

    th = threading.Thread(target=catch, daemon=True)
    th.start()
    try:
        yield (tcp6.getsockname()[1] if tcp6 else 0), udp.getsockname()[1], received
    finally:
        stop.set()
        th.join(timeout=5)
        udp.close()
        if tcp6 is not None:
            tcp6.close()


def test_network_by_raw_ip_reaches_no_host_listener(adversary: Adversary) -> None:
    t = adversary.main
    with host_listener() as (port4, got4), loopback_catchers() as (port6, port_udp, got):
        job = run(adversary, t, f"""
            import socket
            rows = open("/in/data.csv", "rb").read()[:8192]
            if not only_loopback():
                raise SystemExit(5)  # an interface besides lo: send nothing at all
            reached = []
            targets = [(socket.AF_INET, ("127.0.0.1", {port4}))]
            if {port6}:
                targets.append((socket.AF_INET6, ("::1", {port6}, 0, 0)))
            for family, addr in targets:
                s = socket.socket(family, socket.SOCK_STREAM)
                s.settimeout(3)
                try:
                    s.connect(addr)
                    s.sendall(rows)
                    reached.append(addr)
                except OSError:
                    pass
                finally:
                    s.close()
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.sendto(rows[:1024], ("127.0.0.1", {port_udp}))
            except OSError:
                pass
            if reached:
                succeeded()
            refused()
        """)
        time.sleep(0.5)  # a datagram in flight would have arrived by now
    assert got4 == [] and got == []
    assert_outcome(adversary, t, job, "failed", exit_code=3)


def test_network_by_dns_resolves_nothing(adversary: Adversary) -> None:
    t = adversary.main
    job = run(adversary, t, """
        import ipaddress, socket
        if not only_loopback():
            raise SystemExit(5)
        servers = []
        if os.path.exists("/etc/resolv.conf"):
            for line in open("/etc/resolv.conf"):
                parts = line.split()
                if parts[:1] == ["nameserver"]:
                    servers.append(parts[1] if len(parts) > 1 else "")

        def loopback(s):
            try:
                return ipaddress.ip_address(s.split("%")[0]).is_loopback
            except ValueError:
                return False

        if not all(loopback(s) for s in servers):
            raise SystemExit(7)  # names a real server: no lookup (network safety rule)
        try:
            socket.getaddrinfo("example.org", 80)
        except OSError:
            refused()
        succeeded()
    """)
    status = exit_status(t, job)
    assert status in (3, 7), job
    assert_outcome(adversary, t, job, "failed", exit_code=status)
    if status == 7:
        # Only lo exists (checked by the script), so no query could leave; but the lookup
        # itself was not attempted. See the report: the runner's resolv.conf is the host's.
        pytest.xfail("the job's /etc/resolv.conf names a non-loopback nameserver (Docker "
                     "copies the host's into network-none containers); the lookup was not "
                     "attempted, by the network safety rule")


def test_listing_interfaces_shows_only_loopback(adversary: Adversary) -> None:
    refused(adversary, adversary.main, """
        import socket
        names = sorted(os.listdir("/sys/class/net"))
        indexed = sorted(name for _, name in socket.if_nameindex())
        dev = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])
        if names == indexed == dev == ["lo"]:
            refused()
        succeeded()
    """)


# ---- processes, memory, CPU, time ---------------------------------------------------------

def test_fork_bomb_is_contained_and_the_next_job_runs(adversary: Adversary) -> None:
    t = adversary.tight
    job = run(adversary, t, f"""
        import time
        # 1.5 s: the pids cgroup refuses within moments, and the job must end well inside
        # its 5 s limit even where a loaded machine slows the interpreter's start.
        failures, made, t0 = 0, 0, time.monotonic()
        while failures < 50 and made < 5000 and time.monotonic() - t0 < 1.5:
            try:
                pid = os.fork()
            except OSError:  # EAGAIN: the pids cgroup is full
                failures += 1
                time.sleep(0.01)
                continue
            if pid == 0:  # every child forks on, for ever
                while True:
                    try:
                        os.fork()
                    except OSError:
                        time.sleep(0.05)
            made += 1
        procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
        if failures and procs <= {TIGHT_LIMITS.pids} + 2:
            refused()  # exiting ends the container: every forked process dies with it
        succeeded()  # no ceiling met within 1.5 s
    """)
    status = exit_status(t, job)
    if gvisor(adversary.runtime) and status != 3:
        # Under gVisor the job's processes are the sandbox's own, and the container's host
        # limits bound them all: whichever is met first ends the sandbox with the job. The
        # pids cgroup (containers.hardening.runtime_pids) refusing the sandbox's kernel, a Go
        # program, another thread makes it exit with status 2; the memory cgroup (the
        # sandbox holds every forked interpreter) kills it (137). Contained either way: the
        # host's pid table was never reached (it still forks), nothing of the job is left,
        # and the next job runs.
        if status == 2:
            assert_outcome(adversary, t, job, "failed", exit_code=2,
                           reason="exited with an error status")
        else:
            assert_outcome(adversary, t, job, "failed", exit_code=137, reason="out of memory")
        assert subprocess.run(["true"], check=False).returncode == 0
    else:
        assert_outcome(adversary, t, job, "failed", exit_code=3,
                       reason="exited with an error status")
    assert_cleaned_up(adversary, "tight", job["id"])
    assert_next_job_released(adversary, t)


def test_memory_bomb_is_killed_out_of_memory(adversary: Adversary) -> None:
    t = adversary.tight
    job = run(adversary, t, """
        hoard = []
        try:
            while len(hoard) < 64:  # 1 GiB of touched pages, 16 MiB at a time
                hoard.append(b"x" * (16 << 20))
        except MemoryError:
            refused()
        succeeded()
    """)
    assert_outcome(adversary, t, job, "failed", reason="out of memory")
    assert_next_job_released(adversary, t)


def test_cpu_spin_is_killed_at_the_timeout(adversary: Adversary) -> None:
    t = adversary.tight
    job = run(adversary, t, """
        import threading
        def spin():
            while True:
                pass
        for _ in range(3):
            threading.Thread(target=spin, daemon=True).start()
        spin()
    """)
    assert_outcome(adversary, t, job, "failed", reason="timed out")


def test_endless_sleep_is_killed_at_the_timeout(adversary: Adversary) -> None:
    t = adversary.tight
    job = run(adversary, t, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a polite stop would be ignored
        time.sleep(10 ** 6)
    """)
    assert_outcome(adversary, t, job, "failed", reason="timed out")


def test_tracing_the_init_fails_and_the_deadline_still_kills(adversary: Adversary) -> None:
    # PID 1 and the script's parent run as the job's uid: only their being non-dumpable
    # (containers/runner/init.py) keeps the job from ptrace-stopping them, which would hang
    # the container (and the in-container backstop) until the agent's kill.
    t = adversary.tight
    job = run(adversary, t, """
        import ctypes, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                ctypes.c_void_p]
        PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE, WALL = 16, 17, 0x4206, 0x40000000
        for pid in sorted({1, os.getppid()}):
            for request in (PTRACE_SEIZE, PTRACE_ATTACH):
                if libc.ptrace(request, pid, None, None) == 0:
                    if request == PTRACE_ATTACH:
                        os.waitpid(pid, WALL)  # its attach stop, so the detach lets it go
                    libc.ptrace(PTRACE_DETACH, pid, None, None)
                    succeeded()  # traced: exit 0 (a release is asked for), the test fails
        time.sleep(10 ** 6)  # refused: overrun, as any job may, until the deadline kill
    """)
    # Killed at the deadline like any other overrunning job: SIGKILL, status 137.
    assert_outcome(adversary, t, job, "failed", exit_code=137, reason="timed out")
    assert_cleaned_up(adversary, "tight", job["id"])


def test_mountinfo_shows_no_job_id_work_root_or_data_root(adversary: Adversary) -> None:
    # A bind mount's source path is in the job's mountinfo: binding from the agent's job
    # directory would hand the job its id, the work root, and (with a bad layout) data roots.
    s = adversary.stack
    secrets = sorted({str(s.work), str(s.work.resolve()), str(s.work / "jobs" / "main"),
                      *(str(p.root.resolve()) for p in s.providers.values()),
                      str(adversary.main.source.parent)})
    refused(adversary, adversary.main, f"""
        import re
        SECRETS = {secrets!r}
        JOB_ID = re.compile(r"job_[0-9a-f]{{16}}")  # controller job ids (authz.models.new_id)
        seen = ""
        for p in ("/proc/self/mountinfo", "/proc/1/mountinfo", "/proc/self/mounts"):
            try:
                seen += open(p).read()
            except OSError:
                pass
        if not seen:
            raise SystemExit(4)  # nothing read: the test would prove nothing
        if JOB_ID.search(seen) or any(x in seen for x in SECRETS):
            succeeded()
        refused()
    """)


# ---- disk ---------------------------------------------------------------------------------

def fill_script(directory: str, cap_mb: int, give_up_mb: int) -> str:
    """Write 1 MiB chunks under ``directory`` until refused; refused() if the refusal came
    before ``cap_mb`` (+1 MiB slack), exit 4 if it came later, succeeded() if never."""
    return f"""
        written = 0
        try:
            for i in range({give_up_mb} // 4):
                fd = os.open(f"{directory}/fill{{i}}.csv", os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for _ in range(4):
                        written += os.write(fd, b"x" * (1 << 20))
                finally:
                    os.close(fd)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                if written <= ({cap_mb} + 1) << 20:
                    refused()
                raise SystemExit(4)
            raise
        succeeded()
    """


def test_filling_out_is_capped_and_the_host_is_unharmed(adversary: Adversary) -> None:
    t = adversary.tight
    job = refused(adversary, t, fill_script("/out", TIGHT_LIMITS.out_mb, 256))
    assert job["outputs"] == []
    assert_cleaned_up(adversary, "tight", job["id"])  # the /out tmpfs is gone with the job
    assert_next_job_released(adversary, t)


def test_filling_tmp_is_capped(adversary: Adversary) -> None:
    refused(adversary, adversary.tight, fill_script("/tmp", TIGHT_LIMITS.tmpfs_mb, 256))


def test_filling_dev_shm_is_capped(adversary: Adversary) -> None:
    # shm_size is fixed at 16 MiB by containers/hardening.py
    refused(adversary, adversary.tight, fill_script("/dev/shm", 16, 256))


def test_thousands_of_small_files_in_tmp_are_capped(adversary: Adversary) -> None:
    refused(adversary, adversary.tight, """
        made = 0
        try:
            for made in range(100_000):
                with open(f"/tmp/f{made:06d}", "w") as f:
                    f.write("x")  # one page each: the tmpfs size caps the count
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EMFILE):
                refused()
            raise
        succeeded()
    """)


def test_a_thousand_small_files_in_out_are_capped_and_blocked(adversary: Adversary) -> None:
    # Planting the files is the attack on the agent's checks: exit 0 once the cap refused
    # more, so the agent has to look at about a thousand names.
    t = adversary.tight
    job = run(adversary, t, """
        made = 0
        try:
            for made in range(100_000):
                open(f"/out/f{made:06d}.csv", "w").close()
        except OSError as e:
            if e.errno == errno.ENOSPC and made > 500:
                succeeded()  # capped (inodes): leave the agent a thousand names
            raise
        raise SystemExit(4)  # 100,000 files and no cap
    """)
    assert_outcome(adversary, t, job, "blocked", exit_code=0, reason="entries in /out")
    assert_next_job_released(adversary, t)


# ---- console ------------------------------------------------------------------------------

def test_runaway_stdout_is_bounded_and_the_agent_survives(adversary: Adversary) -> None:
    t = adversary.main
    job_id = submit(adversary.stack, t.permit_id, t.dataset_id, PRELUDE + textwrap.dedent("""
        import time
        rows = open("/in/data.csv").read()
        sent, t0 = 0, time.monotonic()
        while sent < (64 << 20) and time.monotonic() - t0 < 8:
            sys.stdout.write(rows)
            sys.stderr.write(rows)
            sent += 2 * len(rows)
        sys.stdout.flush()
        refused()
    """))
    # While it runs, watch the engine's log file of the container on the host's disk.
    sizes: list[int] = []
    client = docker_client()
    docker_root = Path(client.info().get("DockerRootDir") or "/var/lib/docker")
    try:
        while adversary.stack.requester.get(f"/jobs/{job_id}")["state"] not in TERMINAL:
            for c in job_containers(client, job_id):
                log_dir = Path(c.attrs.get("LogPath") or "").parent
                if not c.attrs.get("LogPath"):  # the `local` driver leaves LogPath empty
                    log_dir = docker_root / "containers" / c.id / "local-logs"
                with contextlib.suppress(OSError):
                    sizes.append(sum(f.stat().st_size for f in log_dir.iterdir()))
            time.sleep(0.2)
    finally:
        client.close()
    job = wait_job(adversary.stack.requester, job_id)
    assert_outcome(adversary, t, job, "failed", exit_code=3, reason="exited with an error status")
    assert sizes, "never saw the container's log file"
    cap = hardening.log_driver_cap(MAIN_LIMITS.log_bytes)
    # Bounded, but at twice the configured size: with max-file=1 the `local` driver still
    # keeps the current file plus one rotated file (container.log, container.log.1).
    assert max(sizes) <= 2 * cap + 64 * 1024, (max(sizes), cap)  # one record of slack
    # The requester gets a bounded notice, not the megabytes written.
    assert len(job["log"].encode()) <= 4096, len(job["log"])
    assert "console output withheld" in job["log"], job["log"]
    assert_next_job_released(adversary, t)


def test_forged_final_traceback_carries_no_values(adversary: Adversary) -> None:
    # Unlike tests/docker's forged-traceback test, no real traceback follows the forged one.
    t = adversary.main
    job = run(adversary, t, """
        cost = open("/in/data.csv").readline().strip().split(",").index("cost")
        rows = open("/in/data.csv").read().splitlines()[1:9]
        cents = [round(float(r.split(",")[cost]) * 100) for r in rows]
        print("Traceback (most recent call last):", file=sys.stderr)
        for c in cents:
            print(f'  File "/job/script.py", line {c}, in <module>', file=sys.stderr)
        print("ValueError: x", file=sys.stderr)
        raise SystemExit(3)
    """)
    cents = {str(round(float(v) * 100)) for v in t.values if "." in v}
    leaked = sorted(c for c in cents if c in (job["log"] or ""))
    assert not leaked, f"the log carries {len(leaked)} input value(s), e.g. {leaked[:3]}"
    assert_outcome(adversary, t, job, "failed", exit_code=3)


# ---- state between jobs -------------------------------------------------------------------

def test_a_file_left_in_tmp_or_out_is_gone_for_the_next_job(adversary: Adversary) -> None:
    t = adversary.main
    marker = f"leftover-{time.time_ns()}"
    first = refused(adversary, t, f"""
        open("/tmp/{marker}.txt", "w").write("{marker}")
        open("/out/{marker}.csv", "w").write("n\\n{marker}\\n")
        open("/dev/shm/{marker}", "w").write("{marker}")
        refused()
    """)
    second = refused(adversary, t, f"""
        found = []
        for d in ("/tmp", "/out", "/dev/shm"):
            found += [os.path.join(d, n) for n in os.listdir(d)]
        found += [p for p in ("/tmp/{marker}.txt", "/out/{marker}.csv") if os.path.exists(p)]
        if found:
            succeeded()
        refused()
    """)
    assert first["id"] != second["id"]


# ---- the file system ----------------------------------------------------------------------

WRITES = {
    "root": """
        attempts = [
            lambda: open("/evil.py", "w").close(),
            lambda: os.mkdir("/evil"),
            lambda: os.symlink("/in", "/evil-link"),
            lambda: open("/etc/passwd", "a").close(),
            # bind-mounted by the engine from the host's disk (rw in /proc/mounts)
            lambda: open("/etc/hosts", "a").close(),
            lambda: open("/etc/resolv.conf", "a").close(),
            lambda: open("/etc/hostname", "a").close(),
            lambda: open("/job/script.py", "a").close(),
        ]
    """,
    "usr": """
        attempts = [
            lambda: open("/usr/bin/python3", "ab").close(),  # opened, never written
            lambda: open("/usr/lib/python3.11/sitecustomize.py", "w").close(),
            lambda: os.mkdir("/usr/local/evil"),
            lambda: os.chmod("/usr/bin/python3", 0o777),
            lambda: os.rename("/usr/bin/python3", "/usr/bin/python3.bak"),
        ]
    """,
    "input": """
        attempts = [
            lambda: open("/in/data.csv", "a").write("30,F,I21,1.00\\n"),
            lambda: open("/in/data.csv", "r+").close(),
            lambda: os.remove("/in/data.csv"),
            lambda: os.rename("/in/data.csv", "/in/moved.csv"),
            lambda: open("/in/new.csv", "w").close(),
            lambda: os.chmod("/in/data.csv", 0o666),
            lambda: os.truncate("/in/data.csv", 0),
        ]
    """,
}


@pytest.mark.parametrize("where", sorted(WRITES))
def test_writes_outside_scratch_and_out_are_refused(adversary: Adversary, where: str) -> None:
    t = adversary.main
    before = sha256(t.source.read_bytes())
    refused(adversary, t, textwrap.dedent(WRITES[where]) + textwrap.dedent("""
        if all(denied(a) for a in attempts):
            refused()
        succeeded()
    """))
    assert sha256(t.source.read_bytes()) == before


# ---- privileges ---------------------------------------------------------------------------

PRIVILEGE = {
    "su": """
        import shutil, subprocess
        tools = {shutil.which(n) for n in ("su", "sudo", "doas", "pkexec")} - {None}
        tools |= {p for p in ("/bin/su", "/usr/bin/su", "/sbin/su") if os.path.exists(p)}
        for tool in sorted(tools):
            try:
                r = subprocess.run([tool, "-c", "id -u"], stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if r.returncode == 0 and r.stdout.strip() == b"0":
                succeeded()
        refused()
    """,
    "unshare": """
        import ctypes, shutil, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
            0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
        for flags in (NEWUSER, NEWUSER | NEWNS, NEWNS, NEWNET, NEWPID, NEWUTS, NEWIPC):
            if libc.unshare(flags) == 0:
                succeeded()
        if shutil.which("unshare"):
            r = subprocess.run(["unshare", "-r", "id", "-u"], capture_output=True)
            if r.returncode == 0:
                succeeded()
        refused()
    """,
    "mount": """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
        os.mkdir("/tmp/m")
        tries = [
            (b"none", b"/tmp/m", b"tmpfs", 0),
            (b"/in", b"/tmp/m", None, MS_BIND),
            (None, b"/", None, MS_REMOUNT),
            (b"proc", b"/tmp/m", b"proc", 0),
        ]
        for src, dst, fstype, flags in tries:
            if libc.mount(src, dst, fstype, flags, None) == 0:
                succeeded()
        refused()
    """,
    "status": """
        import ctypes
        def status(pid):
            return dict(line.split(":\\t", 1) for line in open(f"/proc/{pid}/status")
                        if ":\\t" in line)
        for pid in ("self", "1"):
            s = {k: v.strip() for k, v in status(pid).items()}
            # gVisor's /proc/<pid>/status has no CapAmb and no NoNewPrivs line (its own
            # kernel's format): what is shown is checked, no_new_privs through prctl below.
            caps = [s[k] for k in ("CapEff", "CapPrm", "CapAmb") if k in s]
            if len(caps) < 2 or "Uid" not in s:
                raise SystemExit(4)  # nothing to judge by: the test would prove nothing
            if any(int(c, 16) for c in caps) or s["Uid"].split()[0] == "0":
                succeeded()
            if s.get("NoNewPrivs", "1") != "1":
                succeeded()
        PR_GET_NO_NEW_PRIVS = 39
        if ctypes.CDLL(None).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
            succeeded()
        refused()
    """,
}


#: Under gVisor only (its kernel checked first): be root in a new user and mount namespace,
#: then try what that root could do to anything outside the sandbox.
GVISOR_UNSHARE = """
    import ctypes
    if os.uname().release != "4.4.0":
        raise SystemExit(6)  # not gVisor's own kernel: the plain probe applies
    libc = ctypes.CDLL(None, use_errno=True)
    NEWNS, NEWUSER = 0x00020000, 0x10000000
    MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
    if libc.unshare(NEWUSER | NEWNS) != 0:
        refused()  # as on Linux with the engine's seccomp profile
    attempts = [
        # "root" here: try to make the read-only binds writable, then write through them
        lambda: os.open("/in/data.csv", os.O_WRONLY | os.O_APPEND),
        lambda: open("/job/script.py", "a").close(),
        lambda: open("/etc/passwd", "a").close(),
        lambda: os.chmod("/usr/bin/python3", 0o777),
        lambda: os.mkdir("/escape"),
    ]
    for target in (b"/in", b"/job", b"/"):
        libc.mount(None, target, None, MS_REMOUNT | MS_BIND, None)  # whatever it answers
    if all(denied(a) for a in attempts):
        refused()
    succeeded()
"""


@pytest.mark.parametrize("attempt", sorted(PRIVILEGE))
def test_privilege_escalation_fails(adversary: Adversary, attempt: str) -> None:
    t = adversary.main
    before = sha256(t.source.read_bytes())
    if attempt == "unshare" and gvisor(adversary.runtime):
        # gVisor's kernel gives an unprivileged process its own user namespace, as Linux does
        # (only the engine's seccomp profile refuses it under runc, and it is not applied to
        # gVisor's kernel). Being root there is being root over gVisor's own objects: judged
        # by the effect outside the sandbox, nothing it could reach may change.
        refused(adversary, t, GVISOR_UNSHARE)
    else:
        refused(adversary, t, PRIVILEGE[attempt])
    assert sha256(t.source.read_bytes()) == before


KERNEL_WRITES = {
    # Each path is only OPENED for writing: that is where the kernel says no.
    "proc-sys": """
        paths = ["/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
                 "/proc/sys/kernel/core_pattern", "/proc/sys/net/ipv4/ip_forward"]
        dirs = []
    """,
    "sysrq-trigger": """
        paths = ["/proc/sysrq-trigger"]
        dirs = []
    """,
    "cgroup": """
        root = "/sys/fs/cgroup"
        paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                 if f in ("pids.max", "memory.limit_in_bytes", "memory.max", "cpu.max",
                          "cgroup.procs", "tasks", "release_agent", "notify_on_release",
                          "cpu.cfs_quota_us")]
        dirs = [root] + [os.path.join(root, d) for d in os.listdir(root)]
        if not paths:
            raise SystemExit(4)  # nothing found to try: the test would prove nothing
    """,
}


#: Under gVisor only (its kernel checked first): loosen every cgroup limit the job can see and
#: move it to the root cgroup, then allocate four times the tight agent's memory limit.
GVISOR_CGROUP = """
    if os.uname().release != "4.4.0":
        raise SystemExit(6)  # not gVisor's own kernel: write nothing (safety rule below)
    root = "/sys/fs/cgroup"
    LOOSER = {"memory.limit_in_bytes": "-1", "memory.max": "max", "pids.max": "max",
              "cpu.max": "max", "cpu.cfs_quota_us": "-1"}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f in LOOSER:  # never release_agent or notify_on_release
                try:
                    with open(os.path.join(d, f), "w") as fh:
                        fh.write(LOOSER[f])
                except OSError:
                    pass
    for procs in (root, os.path.join(root, "memory"), os.path.join(root, "pids")):
        try:
            with open(os.path.join(procs, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass
    hoard = []
    try:
        while len(hoard) < 32:  # 512 MiB of touched pages, 16 MiB at a time
            hoard.append(b"x" * (16 << 20))
    except MemoryError:
        refused()
    succeeded()  # past the host's memory limit: the writes loosened it
"""


@pytest.mark.parametrize("where", sorted(KERNEL_WRITES))
def test_writes_to_kernel_interfaces_are_refused(adversary: Adversary, where: str) -> None:
    if where == "cgroup" and gvisor(adversary.runtime):
        # gVisor's /sys/fs/cgroup is its own emulation: opening (and writing) its files
        # succeeds and changes nothing on the host, so the open alone proves nothing here.
        # Judged by the effect on the host instead: after writing loosened limits and moving
        # itself to the root cgroup, the job still meets the host's memory limit.
        t = adversary.tight
        job = run(adversary, t, GVISOR_CGROUP)
        if exit_status(t, job) == 3:  # MemoryError inside: refused before the kill
            assert_outcome(adversary, t, job, "failed", exit_code=3)
        else:
            assert_outcome(adversary, t, job, "failed", reason="out of memory")
        return
    refused(adversary, adversary.main, textwrap.dedent(KERNEL_WRITES[where]) + textwrap.dedent("""
        for p in paths:
            try:
                fd = os.open(p, os.O_WRONLY)
            except OSError:
                continue
            os.close(fd)  # opened for writing: nothing written, but the hole is there
            succeeded()
        for d in dirs:
            try:
                os.mkdir(os.path.join(d, "escape"))
            except OSError:
                continue
            os.rmdir(os.path.join(d, "escape"))
            succeeded()
        refused()
    """))


def test_reading_kernel_memory_is_refused(adversary: Adversary) -> None:
    refused(adversary, adversary.main, """
        for p in ("/proc/kcore", "/dev/mem", "/dev/kmem", "/dev/port"):
            try:
                with open(p, "rb") as f:
                    data = f.read(64)
            except OSError:
                continue
            if data:  # /proc/kcore is masked by the engine: /dev/null reads nothing
                succeeded()
        refused()
    """)


def test_no_docker_socket_and_no_docker_host(adversary: Adversary) -> None:
    refused(adversary, adversary.main, """
        import stat
        if any(k.startswith(("DOCKER", "CONTAINERD")) for k in os.environ):
            succeeded()
        known = ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                 "/var/run/containerd/containerd.sock", "/run/podman/podman.sock"]
        if any(os.path.exists(p) for p in known):
            succeeded()
        for top in ("/run", "/var/run", "/var/lib", "/tmp", "/home", "/root", "/srv", "/mnt"):
            for d, _, fs in os.walk(top):
                for f in fs:
                    try:
                        if stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode):
                            succeeded()
                    except OSError:
                        pass
        refused()
    """)


def test_environment_of_pid_1_holds_no_secret(adversary: Adversary) -> None:
    hashes = sorted({hashlib.sha256(tok.encode()).hexdigest() for tok in adversary.tokens})
    lengths = sorted({len(tok.encode()) for tok in adversary.tokens})
    refused(adversary, adversary.main, f"""
        import hashlib, re
        HASHES, LENGTHS = set({hashes!r}), {lengths!r}
        SECRET = re.compile(rb"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|API_?KEY|AUTH|BEARER",
                            re.I)
        blobs = [b"\\0".join(f"{{k}}={{v}}".encode() for k, v in os.environ.items())]
        for pid in ["1", "self"] + [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                blobs.append(open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError:
                pass  # unreadable is fine too
        for blob in blobs:
            if any(SECRET.search(var) for var in blob.split(b"\\0")):
                succeeded()
            for n in LENGTHS:  # every window of a token's length, hashed
                for i in range(len(blob) - n + 1):
                    if hashlib.sha256(blob[i:i + n]).hexdigest() in HASHES:
                        succeeded()
        refused()
    """)


def test_another_jobs_files_are_out_of_reach(adversary: Adversary) -> None:
    adv, victim, t = adversary, adversary.victim, adversary.main
    a_id = submit(adv.stack, victim.permit_id, victim.dataset_id, "import time\n"
                  "time.sleep(12)\n" + BENIGN)
    deadline = time.monotonic() + 60
    while adv.stack.requester.get(f"/jobs/{a_id}")["state"] != "running":
        assert time.monotonic() < deadline, "the victim job never started"
        time.sleep(0.1)
    a_dir = adv.job_dir("main", a_id)
    a_input = a_dir / "in" / "data.csv"
    assert a_input.exists()  # the victim's projected input is on the host right now
    guesses = [str(a_input), str(a_dir), str(a_dir / "work" / "out"), str(victim.source),
               str(victim.source.parent), str(adv.stack.work)]
    b = run(adv, t, f"""
        GUESSES = {guesses!r}
        for g in GUESSES:
            if os.path.exists(g) or not denied(lambda: os.listdir(g) if os.path.isdir(g)
                                               else open(g).close()):
                succeeded()
        # Every process we can see, through its root and cwd: only our own namespace.
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            for link in ("root", "cwd"):
                base = f"/proc/{{pid}}/{{link}}"
                try:
                    names = os.listdir(os.path.join(base, "in"))
                except OSError:
                    continue
                if names != ["data.csv"]:
                    succeeded()
        # Any other data file anywhere in the tree we were given.
        for d, subdirs, fs in os.walk("/"):
            subdirs[:] = [s for s in subdirs if os.path.join(d, s) not in ("/proc", "/sys")]
            if d != "/in" and ("data.csv" in fs or "victim.csv" in fs):
                succeeded()
        refused()
    """)
    # The victim was still running when the prowler finished: its files were there.
    assert adv.stack.requester.get(f"/jobs/{a_id}")["state"] not in TERMINAL
    assert_outcome(adv, t, b, "failed", exit_code=3)
    for text in (b["log"] or "", b["reason"] or "", str(b["outputs"])):
        assert not [v for v in victim.values if v in text]
    a = wait_job(adv.stack.requester, a_id)
    assert a["state"] == "released", a


# ---- links in /out ------------------------------------------------------------------------

def test_symlinks_out_of_out_are_blocked_never_followed(adversary: Adversary) -> None:
    t = adversary.main
    links = {"passwd.csv": "/etc/passwd", "data.csv": "/in/data.csv",
             "rel.csv": "../in/data.csv", "parent.csv": "..", "script.json": "/job/script.py",
             "indir": "/in"}
    job = run(adversary, t, BENIGN + textwrap.dedent(f"""
        for name, target in {links!r}.items():
            os.symlink(target, "/out/" + name)
        succeeded()  # planted: the agent's checks must block them, never follow them
    """))
    assert_outcome(adversary, t, job, "blocked", exit_code=0, reason="symbolic link")
    # A blocked run's outputs are reported by position only (names are script text).
    outputs = job["outputs"]
    assert [o["name"] for o in outputs] == [f"output-{i}" for i in range(1, len(links) + 2)]
    assert all(o["decision"] == "blocked" for o in outputs), outputs
    reasons = sorted(o["reasons"][0] for o in outputs)
    assert reasons == ["symbolic link: links are never followed"] * len(links) + [
        "withheld: another output of this run was blocked"], reasons
    # Never followed: nothing was read, whatever the link points at.
    assert {(o["bytes"], o["sha256"]) for o in outputs} == {(0, NOTHING_READ_SHA256)}


def test_hardlink_to_the_input_is_refused(adversary: Adversary) -> None:
    # /in is another mount than /out: link() fails (EXDEV; EPERM with protected_hardlinks).
    refused(adversary, adversary.main, """
        results = []
        for src in ("/in/data.csv", "/job/script.py"):
            try:
                os.link(src, "/out/" + os.path.basename(src) + ".csv")
                results.append("linked")
            except OSError as e:
                results.append(e.errno)
        if all(r in (errno.EXDEV, errno.EPERM, errno.EACCES) for r in results):
            refused()
        if "linked" in results:
            succeeded()
        raise SystemExit(4)
    """)


def test_hardlink_inside_out_is_blocked(adversary: Adversary) -> None:
    t = adversary.main
    job = run(adversary, t, BENIGN + textwrap.dedent("""
        os.link("/out/total.csv", "/out/again.csv")
        succeeded()  # planted: two names for one file must block the run
    """))
    assert_outcome(adversary, t, job, "blocked", exit_code=0, reason="hard link")
    by_name = {o["name"]: o for o in job["outputs"]}
    assert set(by_name) == {"output-1", "output-2"}  # by position: names are script text
    for o in by_name.values():
        assert o["reasons"] == ["hard link: a file with other names is refused"], o
