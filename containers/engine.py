"""Connection to the local Docker engine.

One function, :func:`docker_client`, so every caller gets the same settings: the client is
built from the environment (``DOCKER_HOST`` etc., default the local unix socket), negotiates
the API version with the daemon (the engine here is Debian's 20.10, API 1.41; the SDK would
otherwise ask for a newer one), and uses a bounded per-request timeout so a wedged daemon
turns into a :class:`RetryableExecutorError` instead of a hung agent.

Also what the engine's answers mean: its failures as executor errors (:func:`engine_call`),
its timestamps (:func:`parse_engine_time`), and a container's log read with a bound
(:func:`read_log`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
import docker.errors
import requests.exceptions

from containers.runspec import ExecutorError, RetryableExecutorError

#: Seconds one API request may take. Long enough for an image import of a few hundred MB on
#: a slow disk, short enough that a daemon that stopped answering is noticed.
DEFAULT_TIMEOUT_S = 120


def docker_client(timeout_s: int = DEFAULT_TIMEOUT_S) -> docker.DockerClient:
    """A client for the local engine, verified to answer (``ping``).

    Raises :class:`RetryableExecutorError` when no engine answers: the caller may retry once
    the operator (or ``make engine``) has started one.
    """
    try:
        client = docker.from_env(version="auto", timeout=timeout_s)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise RetryableExecutorError(
            f"the Docker engine does not answer ({e.__class__.__name__}: {e}); "
            "start it with `make engine` (scripts/ensure-system.sh)"
        ) from e
    return client


@dataclass(frozen=True)
class EngineFacts:
    """What the running engine offers, recorded so the executor can fail or warn knowingly."""

    server_version: str
    api_version: str
    cgroup_version: str
    seccomp: bool
    apparmor: bool
    userns: bool
    live_restore: bool
    runtimes: tuple[str, ...]
    security_options: tuple[str, ...]


def engine_facts(client: docker.DockerClient) -> EngineFacts:
    """Summarise ``docker info`` (security options, runtimes, cgroup version)."""
    try:
        info = client.info()
        version = client.version()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise RetryableExecutorError(f"docker info failed: {e}") from e
    sec = tuple(str(s) for s in (info.get("SecurityOptions") or []))
    return EngineFacts(
        server_version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        cgroup_version=str(info.get("CgroupVersion", "1")),
        seccomp=any(s.startswith("name=seccomp") for s in sec),
        apparmor=any(s.startswith("name=apparmor") for s in sec),
        userns=any(s.startswith("name=userns") for s in sec),
        live_restore=bool(info.get("LiveRestoreEnabled", False)),
        runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
        security_options=sec,
    )


#: The OCI runtime the agent asks for by default: gVisor when the engine has it, else runc.
AUTO_RUNTIME = "auto"
PREFERRED_RUNTIME = "runsc"


def choose_runtime(facts: EngineFacts, requested: str = AUTO_RUNTIME) -> str:
    """The runtime jobs run under: ``auto`` is gVisor (``runsc``) whenever the engine has it
    registered (``make engine`` does that), else ``runc``; any other name must be registered
    with the engine, or the agent does not start (fail closed, never a silent fallback)."""
    if requested == AUTO_RUNTIME:
        return PREFERRED_RUNTIME if PREFERRED_RUNTIME in facts.runtimes else "runc"
    if requested not in facts.runtimes:
        hint = " (`make engine` installs and registers runsc)" if requested == "runsc" else ""
        raise ExecutorError(
            f"runtime {requested!r} is not registered with the engine{hint}; "
            f"it has: {', '.join(facts.runtimes) or 'none'}")
    return requested


@contextlib.contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Map engine failures: transient ones to RetryableExecutorError, others to ExecutorError."""
    try:
        yield
    except docker.errors.APIError as e:
        if e.is_server_error():
            raise RetryableExecutorError(f"{what}: engine error: {e.explanation or e}") from e
        raise ExecutorError(f"{what}: {e.explanation or e}") from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise RetryableExecutorError(f"{what}: the engine did not answer: {e}") from e


def parse_engine_time(s: str | None) -> datetime | None:
    """The engine's RFC 3339 timestamps (nanoseconds, or the zero time for "never")."""
    if not s or s.startswith("0001-01-01"):
        return None
    s = s.rstrip("Z")
    head, _, frac = s.partition(".")
    frac = (frac + "000000")[:6]  # the engine gives nanoseconds; datetime keeps micro
    return datetime.fromisoformat(f"{head}.{frac}").replace(tzinfo=UTC)


def read_log(api: docker.APIClient, container_id: str, *, stderr: bool, limit: int
             ) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of a container's stdout (or ``stderr``) as the engine kept
    it, and whether it kept more.

    The job controls what it prints: the log is streamed and reading stops once more than
    ``limit`` bytes came in, so memory holds at most ``limit`` plus one frame (the engine
    splits log lines at 16 KiB) whatever the log driver kept. The SDK strips the frame
    headers of the stream it was asked for, so stdout and stderr are read one after the
    other, never mixed.
    """
    stream = api.logs(container_id, stdout=not stderr, stderr=stderr, stream=True,
                      follow=False, timestamps=False, tail="all")
    kept = bytearray()
    try:
        for chunk in stream:
            kept += chunk
            if len(kept) > limit:
                break  # truncated: what follows is never read
    finally:
        stream.close()  # closes the connection when the rest was left unread
    return bytes(kept[:limit]), len(kept) > limit
