"""What the controller stores is sealed: a raw read of the database finds no script,
log or output; reads fail closed on a wrong key, a tampered or a moved value; rotation
rewraps and every value still opens."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import LargeBinary, make_url, select, type_coerce, update

from authz.models import Job, JobOutput
from compute.errors import SealingError
from compute.sealing import create_key_file, new_entry
from sandbox import create_app, db
from sandbox.cli import main
from sandbox.keys_cli import usage
from tests import pgcluster
from tests.api.helpers import permit_for
from tests.conftest import Actor

SCRIPT_MARK = "script_marker_7f3a91"
OUTPUT_MARK = b"output_marker_c0ffee"
LOG_MARK = "log_marker_5eed42"


def _config(database_url: str, tmp_path: Path, **over: Any) -> dict[str, Any]:
    return {"TESTING": True, "DATABASE_URL": database_url, "START_CHECKPOINTER": False,
            "LOG_KEY_FILE": str(tmp_path / "log.key"), "SCHEMA_CHECK_WAIT_S": 0.0,
            "AGENT_POLL_WAIT_S": 0.0, "SEALING_KEY_FILE": str(tmp_path / "sealing.key"),
            **over}


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Flask]:
    create_key_file(tmp_path / "sealing.key")
    app = create_app(_config(database_url, tmp_path))
    yield app
    db.dispose(app)


def run_job(requester: Actor, provider: Actor, agent: Actor) -> str:
    ds, permit_id = permit_for(requester, provider, agent)
    script = f"print('{SCRIPT_MARK}')\n"
    r = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                 "script": script})
    assert r.status_code == 201, r.json
    job_id: str = r.json["id"]
    agent.post("/agent/tasks/next")
    content = b"n\n" + OUTPUT_MARK + b"\n"
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
        "input_sha256": "a" * 64, "runner_image": "img", "log": LOG_MARK,
        "outputs": [{"name": "table.csv", "sha256": hashlib.sha256(content).hexdigest(),
                     "bytes": len(content), "decision": "released", "reasons": [],
                     "content_b64": base64.b64encode(content).decode()}]})
    assert r.status_code == 200, r.json
    assert requester.get(f"/jobs/{job_id}/outputs/table.csv").data == content
    return job_id


def raw_database(url: str) -> bytes:
    """Every byte the database keeps: the SQLite file and its WAL, or a full pg_dump."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        assert u.database
        base = Path(u.database)
        return b"".join(p.read_bytes() for p in (base, base.with_name(base.name + "-wal"))
                        if p.exists())
    out = subprocess.run([str(pgcluster.PG_BIN / "pg_dump"), "-h", str(u.query["host"]),
                          "-U", "postgres", "--data-only", str(u.database)],
                         check=True, capture_output=True)
    return out.stdout


def test_a_raw_read_of_the_database_finds_no_script_log_or_output(
        app: Flask, database_url: str, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    run_job(requester, provider, agent)
    raw = raw_database(database_url)
    assert len(raw) > 10_000  # the read saw the data
    for mark in (SCRIPT_MARK.encode(), OUTPUT_MARK, LOG_MARK.encode()):
        assert mark not in raw
    # The log key file holds no key in the clear either.
    assert b"PRIVATE+KEY" not in Path(app.config["LOG_KEY_FILE"]).read_bytes()


def test_a_value_moved_to_another_row_or_tampered_fails_closed(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    a, b = run_job(requester, provider, agent), run_job(requester, provider, agent)
    engine = db.services(app).engine
    raw = type_coerce(Job.__table__.c.script, LargeBinary)
    with engine.begin() as conn:
        blob = conn.execute(select(raw).where(Job.id == a)).scalar_one()
        conn.execute(update(Job).where(Job.id == b)
                     .values(script=type_coerce(blob, LargeBinary)))
    with db.services(app).sessions() as s, pytest.raises(SealingError, match="another row"):
        s.get(Job, b)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == a)
                     .values(script=type_coerce(bytes(tampered), LargeBinary)))
    with db.services(app).sessions() as s, pytest.raises(SealingError, match="tampered"):
        s.get(Job, a)
    # Through the API: an error that names no value, not the data.
    r = requester.get(f"/jobs/{a}")
    assert r.status_code == 500 and r.json["error"] == "sealing_failed"


def test_wrong_key_is_a_clear_error(app: Flask, database_url: str, tmp_path: Path,
                                    make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    job_id = run_job(requester, provider, make_agent(provider))
    other = create_app(_config(database_url, tmp_path, SEALING_KEY=new_entry(),
                               LOG_KEY_FILE=str(tmp_path / "other-log.key")))
    try:
        with db.services(other).sessions() as s, pytest.raises(
                SealingError, match="which SANDBOX_SEALING_KEY does not hold"):
            s.get(Job, job_id)
    finally:
        db.dispose(other)


def test_rotation_rewraps_and_every_value_still_opens(
        app: Flask, database_url: str, tmp_path: Path, make_party: Any, make_agent: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    job_id = run_job(requester, provider, make_agent(provider))
    engine = db.services(app).engine
    before = usage(engine)
    (first,) = set(before["jobs.script"])
    assert before["job_outputs.content"][first] == 1
    for name, value in {"SANDBOX_DATABASE_URL": database_url, "SANDBOX_INSTANCE": str(tmp_path),
                        "SANDBOX_SEALING_KEY_FILE": str(tmp_path / "sealing.key"),
                        "SANDBOX_LOG_KEY_FILE": app.config["LOG_KEY_FILE"]}.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    r = runner.invoke(main, ["keys", "rotate"])
    assert r.exit_code == 0, r.output
    after = usage(engine)
    (second,) = {k for counts in after.values() for k in counts}
    assert second != first
    # The app still running, with its keyring loaded before the rotation, reads them all.
    assert requester.get(f"/jobs/{job_id}/outputs/table.csv").data.endswith(OUTPUT_MARK +
                                                                             b"\n")
    r = runner.invoke(main, ["keys", "retire"])
    assert r.exit_code == 0 and first in r.output, r.output
    assert first not in (tmp_path / "sealing.key").read_text()
    fresh = create_app(_config(database_url, tmp_path))
    try:
        with db.services(fresh).sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None and SCRIPT_MARK.encode() in job.script
            assert job.log == LOG_MARK
            out = s.scalars(select(JobOutput).where(JobOutput.job_id == job_id)).one()
            assert out.content is not None and OUTPUT_MARK in out.content
        assert db.services(fresh).signer.vkey() == db.services(app).signer.vkey()
    finally:
        db.dispose(fresh)
