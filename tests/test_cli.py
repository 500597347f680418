"""The `sandbox` command over a real controller on loopback (no Docker needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from flask import Flask

from sandbox.cli import main
from sandbox.embedded import EmbeddedStack
from tests.conftest import Actor


def test_cli_drives_the_api(app: Flask, admin: Actor, tmp_path: Path) -> None:
    stack = EmbeddedStack(app).start()
    try:
        runner = CliRunner()
        base = ["--url", stack.url, "--token", admin.token]
        r = runner.invoke(main, [*base, "party-create", "--name", "Hospital", "--role",
                                 "provider", "--code", "H1"])
        assert r.exit_code == 0, r.output
        provider: dict[str, Any] = json.loads(r.output)
        key = tmp_path / "agent.key"
        r = runner.invoke(main, ["agent-key", str(key)])
        assert r.exit_code == 0 and len(r.output.strip()) == 64
        assert key.stat().st_mode & 0o777 == 0o600
        r = runner.invoke(main, [*base, "agent-create", "--name", "a", "--provider",
                                 provider["id"], "--public-key", r.output.strip()])
        assert r.exit_code == 0, r.output
        r = runner.invoke(main, [*base, "party-create", "--name", "x", "--role", "wizard"])
        assert r.exit_code == 1 and json.loads(r.output)["field"] == "role"
        r = runner.invoke(main, ["--url", stack.url, "--token", provider["token"], "me"])
        assert json.loads(r.output)["role"] == "provider"
    finally:
        stack.stop()
