"""A restarted agent takes back the claims its previous life left unsettled (no Docker)."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.claims import ClaimBook


def test_a_claim_is_written_down_until_settled(tmp_path: Path) -> None:
    book = ClaimBook(tmp_path)
    key = book.take()
    assert (tmp_path / ".claims" / key).exists()
    assert stat.S_IMODE((tmp_path / ".claims" / key).stat().st_mode) == 0o600
    assert book.take() != key  # in use: never handed out twice
    book.settle(key)
    assert not (tmp_path / ".claims" / key).exists()


def test_a_new_life_takes_the_unsettled_claims_first(tmp_path: Path) -> None:
    old = ClaimBook(tmp_path)
    lost, settled = old.take(), old.take()
    old.settle(settled)
    (tmp_path / ".claims" / "not-a-claim").write_text("")
    new = ClaimBook(tmp_path)
    assert new.take() == lost
    fresh = new.take()
    assert fresh not in (lost, settled) and (tmp_path / ".claims" / fresh).exists()


class _Controller:
    """Answers every claim with one task, and records the keys the agent claimed with."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    def next_task(self, wait_s: float, status: Any = None, claim_key: str | None = None
                  ) -> object:
        self.keys.append(claim_key)
        return SimpleNamespace(statistics={}, psi=None, joint=None)  # a statistics task


def _agent(tmp_path: Path, controller: _Controller, run_job: Any) -> Agent:
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                      data_roots=[tmp_path], work_root=tmp_path / "work", image="img",
                      warm_start=False)
    agent = Agent(cfg, SimpleNamespace(runtime="runc"))  # type: ignore[arg-type]  # no container runs here
    agent.controller = controller  # type: ignore[assignment]
    agent.run_job = run_job  # type: ignore[method-assign]
    return agent


def test_an_agent_killed_while_handling_a_claim_claims_with_its_key_again(
        tmp_path: Path) -> None:
    controller = _Controller()

    def killed(*_: Any) -> None:
        raise KeyboardInterrupt  # the process dies here: nothing after this line runs

    with pytest.raises(KeyboardInterrupt):
        _agent(tmp_path, controller, killed).run_once()
    handled: list[object] = []
    restarted = _agent(tmp_path, controller, lambda task, slot: handled.append(task))
    assert restarted.run_once()
    # The controller answers the same key with the job still dispatched to it.
    assert controller.keys[1] == controller.keys[0] and len(handled) == 1
    assert not list((tmp_path / "work" / ".claims").iterdir())  # handled: settled
    restarted.run_once()
    assert controller.keys[2] != controller.keys[0]  # a new claim, a new key
