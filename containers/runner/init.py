"""PID 1 of every job container: untraceable by the job, the deadline's backstop, the reaper.

Run by the runner image's interpreter as ``python3 -I -B -c <this file's text> LIMIT CMD...``
(``containers.hardening.init_command``); never imported. Not part of the image, so changing
it needs no image rebuild.

Why not the engine's init (tini, ``--init``): it runs as the job's uid and stays dumpable, so
the job may ``ptrace`` it (same uid, no Yama on many hosts) and stop it; tini has no option
that changes that. This init makes itself non-dumpable first (``prctl(PR_SET_DUMPABLE, 0)``):
the kernel then refuses ``PTRACE_ATTACH``/``PTRACE_SEIZE`` and the ``/proc/1`` files that
need ptrace access (``environ``, ``mem``, ``fd``, ``root``) to any process without
``CAP_SYS_PTRACE``, and a job has no capability at all (ptrace(2), "Ptrace access mode
checking", step 5; prctl(2), PR_SET_DUMPABLE). The flag is the process's own: the job's
``execve`` makes the job dumpable again, the init stays as it is. gVisor implements the same
rule, and its Yama ``ptrace_scope`` 1 also refuses tracing a non-descendant.

It also carries the deadline backstop (formerly coreutils ``timeout`` between init and the
job, itself traceable and stoppable by the job): ``LIMIT`` seconds after the command
started, every process of the container is killed (``kill(-1, SIGKILL)`` spares only PID 1)
and the container exits 137, whether or not an agent is watching.

``LIMIT`` is decimal seconds, or ``-`` for a warm container: then the init waits for the
file ``/job/go`` and reads the limit from it; the agent writes it there (into the stage the
read-only /job comes from) when it binds the container to a job (``containers.warm``).
Polled, not a FIFO: gVisor refuses to open a host FIFO through a bind mount (EPERM), while a
new file in a bound directory shows under both runtimes. Anything but a short decimal ends
the container with status 2 before any job code runs.

Exit status: the command's (128 + signal when a signal ended it), 137 at the backstop, 125
if the init could not make itself untraceable (fail closed: the command never runs).

Signals: none are handled but SIGCHLD (waited for synchronously). A PID 1 ignores signals
without a handler that come from inside its pid namespace, so the job can neither stop nor
interrupt it; SIGKILL from the engine (the agent's kill at the deadline) ends it as before.
"""

import ctypes
import os
import signal
import sys
import time

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
GO = "/job/go"
#: How often a warm container looks for its time limit: a bound job waits at most this long.
POLL_S = 0.005


def untraceable() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    set_ok: int = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    dumpable: int = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    return set_ok == 0 and dumpable == 0


def read_limit(arg: str) -> int:
    if arg == "-":  # a warm container: wait until the agent gives the time limit
        while True:
            try:
                fd = os.open(GO, os.O_RDONLY | os.O_NOFOLLOW)
                break
            except FileNotFoundError:
                time.sleep(POLL_S)
        try:
            arg = os.read(fd, 16).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    if not arg.isdigit() or len(arg) > 9:
        raise SystemExit(2)
    return int(arg)


def run(limit: int, argv: list[str]) -> int:
    # SIGCHLD stays blocked in the init and is waited for with a timeout (no handler the job
    # could trigger); the child gets an empty mask and default dispositions back: the
    # interpreter ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    deadline = time.monotonic() + limit
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execv(argv[0], argv)  # noqa: S606 - the executor's fixed command, no shell
        finally:
            os._exit(127)
    while True:
        while True:  # reap every child that ended, the command's included
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 127  # cannot happen while the command lives: it is our child
            if done == 0:
                break
            if done == pid:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(-1, signal.SIGKILL)  # everything in the container but this init
            return 137
        signal.sigtimedwait({signal.SIGCHLD}, left)


def main() -> int:
    # Default dispositions for the init itself: a PID 1 without a handler ignores what the
    # job sends it (the interpreter installs one for SIGINT).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if not untraceable():
        sys.stderr.write("init: cannot make the container's init untraceable; not running\n")
        return 125
    if len(sys.argv) < 3:
        return 2
    return run(read_limit(sys.argv[1]), sys.argv[2:])


if __name__ == "__main__":
    os._exit(main())
