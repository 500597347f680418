"""The `sandbox` command over a real controller on loopback (no Docker needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from flask import Flask

from sandbox.cli import main
from sandbox.embedded import EmbeddedStack
from tests.api.test_release_review import TABLE, Review
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


def test_cli_people_and_release_review(app: Flask, admin: Actor, make_party: Any,
                                       make_agent: Any, make_person: Any) -> None:
    """Sign-in, accreditation and a review decision through the `sandbox` command."""
    stack = EmbeddedStack(app).start()
    try:
        runner = CliRunner()
        review = Review(make_party, make_agent, make_person)
        job_id = review.held_job(("t.csv", TABLE))
        party = make_party("provider")
        base = ["--url", stack.url, "--token", admin.token]
        r = runner.invoke(main, [*base, "person-create", party.id, "--name", "Zhao Min",
                                 "--email", "zhao@example.org", "--role", "output_checker"],
                          input="a long enough password\na long enough password\n")
        assert r.exit_code == 0, r.output
        made = json.loads(r.output[r.output.index("{"):])
        for args in (["person-verify", made["id"], "--method", "in person"],
                     ["person-accredit", made["id"], "--kind", "output checking"]):
            assert runner.invoke(main, [*base, *args]).exit_code == 0
        r = runner.invoke(main, ["--url", stack.url, "login", "--email", "zhao@example.org"],
                          input="a long enough password\n")
        assert r.exit_code == 0, r.output
        signed = json.loads(r.output[r.output.index("{"):])
        assert signed["person"]["id"] == made["id"]
        # The checker of the job's provider decides through the CLI.
        checker = ["--url", stack.url, "--token", review.checkers[0].token]
        r = runner.invoke(main, [*checker, "review", job_id])
        assert json.loads(r.output)["outputs"][0]["content"] == TABLE.decode()
        r = runner.invoke(main, [*checker, "review-decide", job_id, "t.csv", "--decision",
                                 "approve", "--comment", "two bands, both above k"])
        assert r.exit_code == 0, r.output
        # A person of another provider gets the API's refusal, and exit status 1.
        other = ["--url", stack.url, "--token", signed["token"]]
        r = runner.invoke(main, [*other, "review-decide", job_id, "t.csv", "--decision",
                                 "approve", "--comment", "not mine to decide"])
        assert r.exit_code == 1 and json.loads(r.output)["error"] == "not_found"
        assert review.analyst.get(f"/jobs/{job_id}").json["state"] == "released"
    finally:
        stack.stop()
