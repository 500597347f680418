"""What a hostile script sees from inside the job container.

One probe script runs once (module fixture) and reports facts as JSON; each test checks one.
The probe SENDS NOTHING on any network: it lists interfaces from /sys/class/net, and only if
``lo`` is the sole interface does it try to open sockets (raw/packet, which need
capabilities), never connecting or sending.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from containers.executor import DockerExecutor, RunSpec
from tests.docker.runtimes import gvisor

pytestmark = pytest.mark.docker

PROBE = r'''
import errno, json, os, socket, stat, subprocess

facts = {}
def attempt(name, fn):
    try:
        fn()
        facts[name] = "ok"
    except OSError as e:
        facts[name] = errno.errorcode.get(e.errno, str(e.errno))

status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
facts["uid"], facts["gid"] = os.getuid(), os.getgid()
facts["CapEff"] = status["CapEff"].strip()
facts["CapBnd"] = status["CapBnd"].strip()
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
# prctl(PR_GET_NO_NEW_PRIVS): gVisor's /proc/self/status has no NoNewPrivs line
facts["NoNewPrivs"] = str(libc.prctl(39, 0, 0, 0, 0))
facts["Seccomp"] = status.get("Seccomp", "").strip()
facts["kernel"] = os.uname().release
facts["ifaces"] = sorted(os.listdir("/sys/class/net"))
if facts["ifaces"] == ["lo"]:  # only then is it safe to even create a socket
    attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close())
    attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
    # The test listens on the HOST's loopback and on a host abstract unix socket; from the
    # job's own network namespace both must be unreachable (loopback traffic only).
    def tcp():
        with socket.create_connection(("127.0.0.1", int(os.environ["PROBE_PORT"])), 2):
            pass
    def abstract():
        with socket.socket(socket.AF_UNIX) as u:
            u.settimeout(2)
            u.connect("\0" + os.environ["PROBE_ABSTRACT"])
    attempt("host_loopback", tcp)
    attempt("host_abstract", abstract)
def write(p, mode="a"):
    with open(p, mode) as f:
        f.write("x")
attempt("write_in", lambda: write("/in/data.csv"))
attempt("create_in", lambda: write("/in/new.csv", "w"))
attempt("write_etc", lambda: write("/etc/passwd"))
attempt("write_usr", lambda: write("/usr/lib/python3/evil.py", "w"))
attempt("write_root", lambda: write("/evil", "w"))
attempt("write_script", lambda: write("/job/script.py"))
attempt("write_tmp", lambda: write("/tmp/scratch", "w"))
attempt("write_out", lambda: write("/out/x", "w"))
open("/tmp/sh", "wb").write(open("/bin/sh", "rb").read()); os.chmod("/tmp/sh", 0o755)
attempt("exec_tmp", lambda: subprocess.run(["/tmp/sh", "-c", "true"], check=True))
attempt("mknod", lambda: os.mknod("/tmp/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)))
def read_mem():  # a node for physical memory (1, 1), made here or not: never readable
    if not os.path.exists("/tmp/mem"):
        os.mknod("/tmp/mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
    with open("/tmp/mem", "rb") as f:
        f.read(16)
attempt("read_mem", read_mem)
attempt("chroot", lambda: os.chroot("/tmp"))
attempt("setuid0", lambda: os.setuid(0))
def unshare_userns():  # a new user namespace would hand the job "root" inside it
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
attempt("unshare_userns", unshare_userns)
facts["docker_sock"] = any(os.path.exists(p) for p in
                           ("/var/run/docker.sock", "/run/docker.sock"))
facts["setuid_files"] = [os.path.join(d, f) for top in ("/usr", "/bin", "/sbin")
                         for d, _, fs in os.walk(top) for f in fs
                         if not os.path.islink(os.path.join(d, f))
                         and os.stat(os.path.join(d, f)).st_mode & 0o6000]
facts["su"] = any(os.path.exists(p) for p in ("/bin/su", "/usr/bin/su", "/bin/mount"))
facts["pid1"] = open("/proc/1/cmdline").read().split("\0")[0]
facts["procs"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
facts["hostname"] = socket.gethostname()
facts["mounts"] = {l.split()[1]: l.split()[3] for l in open("/proc/self/mounts")}
facts["mountinfo"] = open("/proc/self/mountinfo").read()
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def trace(request, pid):
    if libc.ptrace(request, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("seize_init", lambda: trace(0x4206, 1))  # PTRACE_SEIZE: never stops the tracee
attempt("attach_init", lambda: trace(16, 1))  # PTRACE_ATTACH
print(json.dumps(facts))
'''


@pytest.fixture(scope="module")
def facts(client: Any, runner_image: Any, runtime: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.containers.conftest import TEST_LABEL, TEST_PREFIX

    base = tmp_path_factory.mktemp("probe")
    (base / "in").mkdir()
    (base / "in" / "data.csv").write_text("a\n1\n")
    # world-writable on the host: only the read-only mount can stop the job's writes
    (base / "in").chmod(0o777)
    (base / "in" / "data.csv").chmod(0o666)
    (base / "script.py").write_text(PROBE)
    (base / "script.py").chmod(0o666)
    ex = DockerExecutor(client, label_prefix=TEST_PREFIX, runtime=runtime,
                        extra_labels={TEST_LABEL: "1"})
    abstract_name = f"data-sandbox-test-{uuid.uuid4().hex[:8]}"
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        unix.bind("\0" + abstract_name)
        unix.listen()
        spec = RunSpec(job_id="probe", image=runner_image.tag, script_path=base / "script.py",
                       input_dir=base / "in", work_dir=base / "work",
                       env={"PROBE_PORT": str(tcp.getsockname()[1]),
                            "PROBE_ABSTRACT": abstract_name})
        try:
            r = ex.run(spec)
        finally:
            ex.cleanup("probe")
    assert r.exit_code == 0, r.stderr.decode()
    yield {**json.loads(r.stdout), "_input": (base / "in" / "data.csv").read_text(),
           "_base": str(base)}


def test_runs_as_non_root_without_capabilities(facts: dict[str, Any], runtime: str) -> None:
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert int(facts["CapEff"], 16) == 0 and int(facts["CapBnd"], 16) == 0
    assert facts["NoNewPrivs"] == "1"
    assert facts["setuid0"] == "EPERM" and facts["chroot"] == "EPERM"
    if gvisor(runtime):
        # gVisor lets a process make a device node in its own tmpfs; the node leads to
        # gVisor's few emulated devices, never to the host's: memory stays unreadable.
        assert facts["mknod"] in ("EPERM", "ok")
    else:
        assert facts["mknod"] == "EPERM"
    assert facts["read_mem"] != "ok"


def test_seccomp_filter_is_active_when_the_engine_has_it(
    facts: dict[str, Any], client: Any, runtime: str
) -> None:
    if gvisor(runtime):
        # The job's system calls go to gVisor's kernel, not the host's: that is the barrier
        # (runsc filters the sandbox's own host calls with its seccomp profile). The engine's
        # profile is not applied inside, so a user namespace there is gVisor's, and harmless.
        assert facts["kernel"] == "4.4.0" and facts["Seccomp"] == "0", facts["kernel"]
        return
    sec = client.info().get("SecurityOptions") or []
    if any(s.startswith("name=seccomp") for s in sec):
        assert facts["Seccomp"] == "2"  # filter mode: the engine's default profile
        # the kernel here allows unprivileged user namespaces; only the profile stops them
        assert facts["unshare_userns"] == "EPERM"
    else:
        pytest.skip("engine built without seccomp: documented in docs/executor.md")


def test_only_loopback_exists(facts: dict[str, Any]) -> None:
    assert facts["ifaces"] == ["lo"]
    assert facts["raw_socket"] == "EPERM" and facts["packet_socket"] == "EPERM"


def test_host_loopback_and_abstract_sockets_are_unreachable(facts: dict[str, Any]) -> None:
    assert facts["host_loopback"] == "ECONNREFUSED"
    assert facts["host_abstract"] == "ECONNREFUSED"


def test_input_is_read_only_and_unchanged(facts: dict[str, Any]) -> None:
    assert (facts["write_in"], facts["create_in"]) == ("EROFS", "EROFS")
    assert facts["_input"] == "a\n1\n"
    assert facts["write_script"] == "EROFS"


def test_root_fs_is_read_only(facts: dict[str, Any]) -> None:
    for k in ("write_etc", "write_usr", "write_root"):
        assert facts[k] in {"EROFS", "EACCES"}, k
    assert facts["mounts"]["/"].startswith("ro")


def test_scratch_is_writable_but_not_executable(facts: dict[str, Any], runtime: str) -> None:
    assert facts["write_tmp"] == "ok" and facts["write_out"] == "ok"
    assert facts["exec_tmp"] == "EACCES"
    if gvisor(runtime):
        # gVisor lists only what its own mounts enforce: /tmp noexec (above); /out is a 9p
        # view of the host tmpfs (nosuid,nodev,noexec on the host, where the agent reads it)
        # and setuid cannot matter with no_new_privs and no capability.
        assert "noexec" in facts["mounts"]["/tmp"].split(",")
        return
    for m in ("/tmp", "/out"):
        assert {"nosuid", "nodev", "noexec"} <= set(facts["mounts"][m].split(",")), m


def test_no_engine_socket_no_setuid_no_su(facts: dict[str, Any]) -> None:
    assert not facts["docker_sock"]
    assert facts["setuid_files"] == [] and not facts["su"]


def test_init_cannot_be_traced_by_the_job(facts: dict[str, Any]) -> None:
    # Same uid, no capability: only the init's non-dumpable flag refuses (and under gVisor
    # also its Yama scope). A traced init could be stopped, and the container hung with it.
    assert facts["seize_init"] == "EPERM" and facts["attach_init"] == "EPERM"


def test_mountinfo_shows_no_host_path_of_the_job(facts: dict[str, Any]) -> None:
    # The binds come from a stage with a random name, not from the caller's directories
    # (here they hold the job id "probe" in their path).
    info = facts["mountinfo"]
    assert facts["_base"] not in info and "probe" not in info, info


def test_private_pid_namespace_with_init(facts: dict[str, Any]) -> None:
    # Our init (containers/runner/init.py), run by the image's interpreter
    assert facts["pid1"] == "/usr/bin/python3"
    assert len(facts["procs"]) <= 3  # init, python (and the probe's own children, gone)
    assert facts["hostname"] == "job"
