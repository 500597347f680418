"""Upgrading a database with rows seals them in place; downgrading opens them again."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from authz.models import Job, JobOutput, JointJob
from authz.sealed import attach
from compute.sealing import FileKeyring, create_key_file
from ledger.db import make_engine, make_session_factory
from sandbox.migrate import downgrade, upgrade

NOW = "2026-01-01 00:00:00.000000+00:00"


def _plain_rows(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("INSERT INTO jobs (id, permit_id, requester_id, provider_id, dataset_ids, "
                "kind, script, script_sha256, state, submitted_at, log) VALUES "
                "('job_1', 'pmt_1', 'pty_r', 'pty_p', '[]', 'script', ?, ?, 'released', ?, "
                "'log_marker_old')", (b"print('old_script_marker')", "0" * 64, NOW))
    con.execute("INSERT INTO job_outputs (job_id, name, sha256, size, decision, reasons, "
                "content) VALUES ('job_1', 't.csv', ?, 3, 'released', '[]', ?)",
                ("0" * 64, b"old_output_marker"))
    con.execute("INSERT INTO joint_jobs (id, permit_id, requester_id, spec, public_context, "
                "context_fingerprint, min_providers, state, submitted_at) VALUES "
                "('jnt_1', 'pmt_1', 'pty_r', ?, x'00', ?, 3, 'running', ?)",
                (json.dumps({"version": 1, "columns": ["age"]}), "0" * 64, NOW))
    con.commit()
    con.close()


def test_existing_rows_are_sealed_by_the_upgrade_and_opened_by_the_downgrade(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0006_script_release")
    _plain_rows(path)
    create_key_file(tmp_path / "sealing.key")
    keys = FileKeyring(tmp_path / "sealing.key", "test")
    upgrade(url, keys=keys)
    con = sqlite3.connect(path)
    raw = con.execute("SELECT script, log FROM jobs").fetchone()
    content = con.execute("SELECT content FROM job_outputs").fetchone()[0]
    spec = con.execute("SELECT spec FROM joint_jobs").fetchone()[0]
    con.close()
    for blob in (*raw, content, spec):
        assert isinstance(blob, bytes) and blob[:3] == b"SB1"
    assert b"old_script_marker" not in raw[0] and b"old_output_marker" not in content
    engine = make_engine(url)
    attach(engine, keys)
    with make_session_factory(engine)() as s:
        job = s.get(Job, "job_1")
        assert job is not None and job.script == b"print('old_script_marker')"
        assert job.log == "log_marker_old"
        out = s.scalars(select(JobOutput)).one()
        assert out.content == b"old_output_marker"
        joint = s.get(JointJob, "jnt_1")
        assert joint is not None and joint.spec == {"version": 1, "columns": ["age"]}
    engine.dispose()
    downgrade(url, "0006_script_release", keys=keys)
    con = sqlite3.connect(path)
    assert con.execute("SELECT log FROM jobs").fetchone()[0] in ("log_marker_old",
                                                                 b"log_marker_old")
    assert con.execute("SELECT content FROM job_outputs").fetchone()[0] == b"old_output_marker"
    con.close()


@pytest.mark.postgres
def test_postgres_rows_are_sealed_by_the_upgrade(pg_url: str, tmp_path: Path) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = pg_url.replace("/sandbox?", f"/{name}?")
    upgrade(url, "0006_script_release")
    engine = make_engine(url)
    with engine.begin() as c:
        for pid, role in (("pty_r", "requester"), ("pty_p", "provider")):
            c.execute(text("INSERT INTO parties (id, name, role, token_hash, created_at, "
                           "active) VALUES (:id, 'p', :role, :h, now(), true)"),
                      {"id": pid, "role": role, "h": "0" * 64})
        c.execute(text("INSERT INTO access_requests (id, requester_id, purpose, use_kind, "
                       "business_system, status, created_at) VALUES ('req_1', 'pty_r', 'p', "
                       "'statistics', 'b', 'approved', now())"))
        c.execute(text("INSERT INTO permits (id, request_id, requester_id, columns, "
                       "expires_at, max_runs, runs_used, min_cell_count, classification, "
                       "status, created_at) VALUES ('pmt_1', 'req_1', 'pty_r', '{}', now(), "
                       "1, 0, 10, 'internal', 'active', now())"))
        c.execute(text(
            "INSERT INTO jobs (id, permit_id, requester_id, provider_id, dataset_ids, kind, "
            "script, script_sha256, state, submitted_at, log) VALUES ('job_1', 'pmt_1', "
            "'pty_r', 'pty_p', '[]', 'script', :script, :sha, 'released', now(), "
            "'log_marker_old')"), {"script": b"print('old_script_marker')", "sha": "0" * 64})
        c.execute(text(
            "INSERT INTO job_outputs (job_id, name, sha256, size, decision, reasons, content) "
            "VALUES ('job_1', 't.csv', :sha, 3, 'released', '[]', :content)"),
            {"sha": "0" * 64, "content": b"old_output_marker"})
        c.execute(text(
            "INSERT INTO joint_jobs (id, permit_id, requester_id, spec, public_context, "
            "context_fingerprint, min_providers, state, submitted_at) VALUES ('jnt_1', "
            "'pmt_1', 'pty_r', :spec, '\\x00', :fp, 3, 'running', now())"),
            {"spec": json.dumps({"version": 1, "columns": ["age"]}), "fp": "0" * 64})
    engine.dispose()
    create_key_file(tmp_path / "sealing.key")
    keys = FileKeyring(tmp_path / "sealing.key", "test")
    upgrade(url, keys=keys)
    engine = make_engine(url)
    with engine.connect() as c:
        script, log = c.execute(text("SELECT script, log FROM jobs")).one()
        spec = c.execute(text("SELECT spec FROM joint_jobs")).scalar_one()
    assert bytes(script)[:3] == bytes(log)[:3] == bytes(spec)[:3] == b"SB1"
    attach(engine, keys)
    with make_session_factory(engine)() as s:
        job = s.get(Job, "job_1")
        assert job is not None and job.log == "log_marker_old"
        assert s.scalars(select(JobOutput)).one().content == b"old_output_marker"
        joint = s.get(JointJob, "jnt_1")
        assert joint is not None and joint.spec == {"version": 1, "columns": ["age"]}
    engine.dispose()
