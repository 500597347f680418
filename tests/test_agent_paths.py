"""The agent does not trust the controller with its file system (no Docker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.wire import AgentIdentity, DatasetTask, RunTask, SchemaVerdict
from compute.errors import InvalidInput
from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.jobdir import check_task


def task(job_id: str = "job_ok", code: str = "DS-1") -> RunTask:
    # Unvalidated on purpose: the agent's own path rules must hold whatever the wire allows.
    return RunTask.model_construct(job_id=job_id, datasets=(
        DatasetTask.model_construct(code=code, provider_id="pty_a"),))


def identity(*providers: str) -> AgentIdentity:
    return AgentIdentity(id="agt_x", name="agent", providers=providers)


@pytest.mark.parametrize("bad", [task(job_id="../escaped"), task(job_id="a/b"),
                                 task(job_id=".."), task(code="../x"), task(code="a/b")])
def test_path_like_ids_are_refused_before_any_write(tmp_path: Path, bad: Any) -> None:
    work = tmp_path / "work"
    with pytest.raises(InvalidInput):
        check_task(bad, work)
    assert not any(tmp_path.rglob("*"))


def test_a_valid_task_stays_in_the_work_root(tmp_path: Path) -> None:
    assert check_task(task(), tmp_path) == (tmp_path / "job_ok").resolve()


def test_locations_resolve_only_under_the_owning_providers_roots(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y", data_roots=[],
                      work_root=tmp_path / "w", image="img",
                      provider_roots={"pty_a": [a], "pty_b": [b]})
    agent = Agent(cfg, executor=None)  # type: ignore[arg-type]  # paths only
    assert agent.roots("pty_a") == [a]
    with pytest.raises(InvalidInput):
        agent.roots("pty_c")


def test_an_agent_for_several_providers_needs_per_provider_roots(tmp_path: Path) -> None:
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                      data_roots=[tmp_path], work_root=tmp_path / "w", image="img")
    agent = Agent(cfg, executor=None)  # type: ignore[arg-type]  # configuration only
    agent.controller.me = lambda: identity("pty_a", "pty_b")  # type: ignore[method-assign]
    with pytest.raises(InvalidInput):
        agent.check_config()
    agent.controller.me = lambda: identity("pty_a")  # type: ignore[method-assign]
    agent.check_config()


class _Verdicts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, SchemaVerdict]] = []

    def schema_verdict(self, dataset_id: str, verdict: SchemaVerdict) -> None:
        self.sent.append((dataset_id, verdict))


def _dataset(location: str) -> DatasetTask:
    return DatasetTask(id="ds_1", code="DS-1", provider_id="pty_a", format="csv",
                       location=location, fields=())


@pytest.mark.parametrize("location", ["data\x00.csv", "missing.csv"])
def test_every_schema_check_ends_in_a_verdict(tmp_path: Path, location: str) -> None:
    """A location the agent cannot use is rejected with a verdict, never left checking."""
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                      data_roots=[tmp_path], work_root=tmp_path / "w", image="img")
    agent = Agent(cfg, executor=None)  # type: ignore[arg-type]  # no job runs
    verdicts = _Verdicts()
    agent.controller = verdicts  # type: ignore[assignment]
    agent.check_schema(_dataset(location))
    [(ds_id, verdict)] = verdicts.sent
    assert ds_id == "ds_1" and not verdict.ok and verdict.error is not None
    assert verdict.error.field == "location"


def test_an_unexpected_error_in_a_schema_check_is_a_verdict_without_its_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> int:
        raise RuntimeError("value 4711 from row 3")  # what a parser might quote

    monkeypatch.setattr("containers.datasets.schema_check", boom)
    (tmp_path / "d.csv").write_text("a\n1\n")
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                      data_roots=[tmp_path], work_root=tmp_path / "w", image="img")
    agent = Agent(cfg, executor=None)  # type: ignore[arg-type]  # no job runs
    verdicts = _Verdicts()
    agent.controller = verdicts  # type: ignore[assignment]
    agent.check_schema(_dataset("d.csv"))
    [(_, verdict)] = verdicts.sent
    assert not verdict.ok and verdict.error is not None
    assert "4711" not in verdict.error.rule and "RuntimeError" in verdict.error.rule


def test_the_agent_announces_itself_and_warns_about_missing_roots(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import types

    present = tmp_path / "data"
    present.mkdir()
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y", data_roots=[],
                      work_root=tmp_path / "w", image="img", slots=2,
                      provider_roots={"pty_a": [present, tmp_path / "gone"],
                                      "pty_z": [present]})
    agent = Agent(cfg, executor=types.SimpleNamespace(runtime="runc"))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="data-sandbox.agent"):
        agent.announce(identity("pty_a", "pty_b"))
        agent.announce(identity("pty_a", "pty_b"))  # once only
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    infos = [m for lvl, m in said if lvl == "INFO"]
    warnings = [m for lvl, m in said if lvl == "WARNING"]
    assert infos[0] == "agent agt_x (agent) serving provider(s): pty_a, pty_b"
    assert any("runc runtime, 2 slot(s)" in m for m in infos)
    assert any(f"data roots of pty_a: {present}, {tmp_path / 'gone'}" in m for m in infos)
    assert warnings == [
        f"data root {tmp_path / 'gone'} of pty_a does not exist: its datasets will fail "
        "their schema checks and runs",
        "no data root for pty_b: give one with --data-root pty_b=PATH",
        "--data-root given for pty_z, which this agent does not serve"]


def test_a_refused_token_stops_the_agent_with_a_clear_message(
        app: Any, make_party: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from sandbox.embedded import EmbeddedStack

    stack = EmbeddedStack(app).start()
    try:
        for token in ("agt_nobody.nothing", make_party("provider").token):
            cfg = AgentConfig(controller_url=stack.url, token=token, data_roots=[tmp_path],
                              work_root=tmp_path / "w", image="img")
            agent = Agent(cfg, executor=None)  # type: ignore[arg-type]  # never reached
            caplog.clear()
            assert agent.serve(threading.Event()) is False  # at once: no retry loop
            assert any("the controller refused this agent's token" in r.getMessage()
                       for r in caplog.records)
    finally:
        stack.stop()
