"""The OCI runtimes the Docker suites run under: runc and gVisor's runsc, both, every run.

Each suite parametrizes its session-scoped engine fixture (executor, stack, cluster) with
:data:`RUNTIMES`, so ``make test`` runs every Docker, adversarial and resilience test once
per runtime, one runtime after the other. ``SANDBOX_TEST_RUNTIMES=runc`` (comma-separated)
narrows a developer's quick run; a runtime the engine lacks fails the run (``make engine``
registers runsc), it is never skipped.
"""

from __future__ import annotations

import os

import docker
import pytest

RUNTIMES = [r for r in os.environ.get("SANDBOX_TEST_RUNTIMES", "runc,runsc").split(",") if r]


def require_runtime(client: docker.DockerClient, runtime: str) -> str:
    """``runtime``, failing the test run when the engine does not have it registered."""
    if runtime not in (client.info().get("Runtimes") or {}):
        pytest.fail(f"the engine has no {runtime!r} runtime: run `make engine`")
    return runtime


def gvisor(runtime: str) -> bool:
    """Whether jobs run on gVisor's kernel (expectations differ where the sandbox does)."""
    return runtime == "runsc"
