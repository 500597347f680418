"""Which OCI runtime the agent's jobs run under: gVisor whenever the engine has it."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from click.testing import CliRunner

from containers.engine import EngineFacts, choose_runtime, engine_facts
from containers.runspec import ExecutorError
from sandbox.cli import main

pytestmark = pytest.mark.docker


def facts(*runtimes: str) -> EngineFacts:
    return EngineFacts(server_version="20.10", api_version="1.41", cgroup_version="1",
                       seccomp=True, apparmor=False, userns=False, live_restore=True,
                       runtimes=runtimes, security_options=())


def test_auto_is_gvisor_whenever_the_engine_has_it() -> None:
    assert choose_runtime(facts("runc", "runsc")) == "runsc"
    assert choose_runtime(facts("runc", "runsc"), "auto") == "runsc"
    assert choose_runtime(facts("runc")) == "runc"


def test_runc_opts_out_and_an_unregistered_runtime_is_refused() -> None:
    assert choose_runtime(facts("runc", "runsc"), "runc") == "runc"
    with pytest.raises(ExecutorError, match=r"'runsc' is not registered.*make engine"):
        choose_runtime(facts("runc"), "runsc")
    with pytest.raises(ExecutorError, match="'kata' is not registered"):
        choose_runtime(facts("runc", "runsc"), "kata")


def test_this_engine_has_gvisor(client: docker.DockerClient) -> None:
    # `make engine` registers it; the agent's default then runs every job under it.
    assert choose_runtime(engine_facts(client)) == "runsc"


def test_the_agent_refuses_to_start_with_a_runtime_the_engine_lacks(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "--url", "http://127.0.0.1:9", "--token", "agt_x.y", "agent",
        "--data-root", str(tmp_path), "--work-root", str(tmp_path / "work"),
        "--runtime", "no-such-runtime"])
    assert result.exit_code == 1, result.output
    assert "runtime 'no-such-runtime' is not registered with the engine" in result.output
    assert not (tmp_path / "work").exists()  # refused before anything was made
