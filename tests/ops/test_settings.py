"""Settings: one typed object from the environment; bad values stop the start by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox import create_app, db
from sandbox.cli import main
from sandbox.settings import (
    Settings,
    SettingsError,
    default_workers,
    flask_config,
    load_settings,
    masked,
    usable_cpus,
)
from tests.ops.harness import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SANDBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SANDBOX_INSTANCE", str(tmp_path / "instance"))


def test_defaults_fill_every_setting(tmp_path: Path) -> None:
    s = load_settings()
    assert (s.workers, s.threads, s.port, s.host) == (None, 8, 8080, "127.0.0.1")
    assert s.serving_shape() == (default_workers(), 8)
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'instance' / 'sandbox.db'}"
    cfg = flask_config(s)
    assert cfg["MAX_CONTENT_LENGTH"] == 32 * 1024 * 1024
    assert cfg["WITNESSES"] == [] and cfg["WITNESS_QUORUM"] == 0
    assert cfg["JOINT_MIN_PROVIDERS"] == 3 and cfg["METRICS_TOKEN"] is None
    # Every setting is in the table operators read.
    doc = (ROOT / "docs" / "operations.md").read_text()
    missing = [n for n in masked(s) if f"`{n}`" not in doc]
    assert not missing, missing


def test_workers_fit_the_machine_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert usable_cpus() >= 1
    # One worker per CPU, 2 to 8.
    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 64)] == [2, 2, 3, 4, 8, 8]
    monkeypatch.setattr("sandbox.settings.usable_cpus", lambda: 4)
    s = load_settings()
    assert s.serving_shape() == (4, 8)
    # `serve`'s options win over the settings, the settings over the machine.
    assert s.serving_shape(workers=2) == (2, 8)
    assert s.serving_shape(threads=16) == (4, 16)
    monkeypatch.setenv("SANDBOX_WORKERS", "3")
    monkeypatch.setenv("SANDBOX_THREADS", "5")
    assert load_settings().serving_shape() == (3, 5)
    assert load_settings().serving_shape(2, 4) == (2, 4)


def test_values_are_parsed_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_WORKERS", "4")
    monkeypatch.setenv("SANDBOX_AGENT_POLL_WAIT_S", "2.5")
    monkeypatch.setenv("SANDBOX_LOG_LEVEL", "debug")
    monkeypatch.setenv("SANDBOX_WITNESSES", json.dumps([{"url": "http://127.0.0.1:9",
                                                         "vkey": "w+1+AA"}]))
    monkeypatch.setenv("SANDBOX_WITNESS_QUORUM", "1")
    monkeypatch.setenv("SANDBOX_TLS_CERT_FILE", "")  # empty is unset
    s = load_settings()
    assert s.workers == 4 and s.agent_poll_wait_s == 2.5 and s.log_level == "DEBUG"
    assert flask_config(s)["WITNESSES"] == [{"url": "http://127.0.0.1:9", "vkey": "w+1+AA"}]
    assert s.tls_cert_file is None


def test_a_relative_instance_is_taken_from_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOX_INSTANCE", "var")
    assert load_settings().instance == tmp_path / "var"


@pytest.mark.parametrize(("variable", "value", "rule"), [
    ("SANDBOX_WORKERS", "0", "greater than or equal to 1"),
    ("SANDBOX_PORT", "http", "valid integer"),
    ("SANDBOX_THREADS", "1e9", "valid integer"),
    ("SANDBOX_AGENT_POLL_WAIT_S", "nan", "finite"),
    ("SANDBOX_MAX_BODY_BYTES", "12", "greater than or equal to 1024"),
    ("SANDBOX_LOG_LEVEL", "loud", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("SANDBOX_HSTS", "sometimes", "'auto', 'always' or 'off'"),
    ("SANDBOX_WITNESSES", "[{\"url\": \"http://w\"", "JSON list"),
    ("SANDBOX_WITNESSES", "[{\"url\": \"ftp://w\", \"vkey\": \"k\"}]", "[0].url"),
    ("SANDBOX_WITNESS_QUORUM", "1", "between 0 and the number of SANDBOX_WITNESSES"),
    ("SANDBOX_JOINT_MIN_PROVIDERS", "1", "greater than or equal to 2"),
    ("SANDBOX_DATABASE_URL", "mysql://u:hunter2@db/x", "sqlite:// or postgresql://"),
    ("SANDBOX_DATABASE_URL", "not a url hunter2", "database URL"),
    ("SANDBOX_METRICS_TOKEN", "hunter2", "32-256 characters"),
    ("SANDBOX_TLS_CERT_FILE", "/nonexistent/hunter2.pem", "SANDBOX_TLS_KEY_FILE"),
    ("SANDBOX_READY_CHECKPOINT_MAX_AGE_S", "1", None),
])
def test_a_bad_value_names_the_variable_and_the_rule_never_the_value(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, rule: str | None) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "SANDBOX_READY_CHECKPOINT_MAX_AGE_S":
        monkeypatch.setenv("SANDBOX_CHECKPOINT_INTERVAL_S", "2")
        rule = "longer than SANDBOX_CHECKPOINT_INTERVAL_S"
    with pytest.raises(SettingsError) as e:
        load_settings()
    if variable == "SANDBOX_TLS_CERT_FILE":
        assert e.value.variable == "SANDBOX_TLS_KEY_FILE"
    else:
        assert e.value.variable == variable
    assert str(e.value).startswith(e.value.variable + ": ")
    assert rule is not None and rule in str(e.value)
    assert "hunter2" not in str(e.value)
    assert isinstance(e.value, ValueError)  # what create_app raised for bad config before


def test_tls_files_must_be_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    monkeypatch.setenv("SANDBOX_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("SANDBOX_TLS_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="SANDBOX_TLS_KEY_FILE: must name a readable file"):
        load_settings()


def test_create_app_fails_closed_on_a_bad_environment(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("SANDBOX_JOINT_MIN_PROVIDERS", "x")
    with pytest.raises(SettingsError, match="SANDBOX_JOINT_MIN_PROVIDERS"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
                    "LOG_KEY_FILE": str(tmp_path / "k"), "START_CHECKPOINTER": False})


def test_test_config_still_overrides_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("SANDBOX_AGENT_POLL_WAIT_S", "7")
    monkeypatch.setenv("SANDBOX_SYSTEM_NAME", "from the environment")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
                      "LOG_KEY_FILE": str(tmp_path / "k"), "START_CHECKPOINTER": False,
                      "AGENT_POLL_WAIT_S": 0.0})
    try:
        assert app.config["AGENT_POLL_WAIT_S"] == 0.0
        assert app.config["AUTHORIZING_SYSTEM"] == "from the environment"
    finally:
        db.dispose(app)


def test_sandbox_config_prints_settings_with_secrets_masked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_DATABASE_URL", "postgresql+psycopg://ops:hunter2@db:5432/sb")
    monkeypatch.setenv("SANDBOX_METRICS_TOKEN", "m" * 40)
    monkeypatch.setenv("SANDBOX_LOG_KEY", "PRIVATE+KEY+hunter3")
    monkeypatch.setenv("SANDBOX_WORKRES", "4")  # misspelt
    r = CliRunner().invoke(main, ["config"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["SANDBOX_DATABASE_URL"] == "postgresql+psycopg://ops:***@db:5432/sb"
    assert shown["SANDBOX_METRICS_TOKEN"] == "***" and shown["SANDBOX_LOG_KEY"] == "***"
    assert "hunter2" not in r.output and "hunter3" not in r.output and "m" * 40 not in r.output
    assert shown["ignored_variables"] == ["SANDBOX_WORKRES"]
    # What `serve` would run, not "unset".
    assert shown["SANDBOX_WORKERS"] == default_workers()
    assert shown["SANDBOX_THREADS"] == 8
    assert set(shown) - {"ignored_variables"} == {f"SANDBOX_{n.upper()}"
                                                  for n in Settings.model_fields}


def test_sandbox_config_exits_2_naming_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_PORT", "99999")
    r = CliRunner().invoke(main, ["config"])
    assert r.exit_code == 2
    assert "SANDBOX_PORT: Input should be less than or equal to 65535" in r.output


def test_serve_stops_at_start_on_a_bad_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update({"PYTHONPATH": str(ROOT), "SANDBOX_INSTANCE": str(tmp_path),
                "SANDBOX_WITNESS_QUORUM": "2"})
    p = subprocess.run([sys.executable, "-m", "sandbox.cli", "serve", "--port", "1"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "SANDBOX_WITNESS_QUORUM: must be between 0" in p.stderr
