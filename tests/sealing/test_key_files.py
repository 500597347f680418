"""Where the keyring lives by default, and the log key file sealed with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compute.errors import SealingError
from compute.sealing import FileKeyring, Keyring, create_key_file, new_entry, parse_keyring
from ledger.checkpoint import generate_key_file
from sandbox.cli import main
from sandbox.sealing_keys import default_key_file, load_keyring, load_signer
from sandbox.settings import SettingsError


def test_default_keyring_is_beside_the_sqlite_file_else_beside_the_log_key(
        tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    sqlite = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'x.db'}",
              "LOG_KEY_FILE": str(tmp_path / "log.key")}
    assert default_key_file(sqlite, tmp_path / "inst") == tmp_path / "db" / "sealing.key"
    pg = {"DATABASE_URL": "postgresql+psycopg://u@/d?host=/tmp",
          "LOG_KEY_FILE": str(tmp_path / "log.key")}
    assert default_key_file(pg, tmp_path / "inst") == tmp_path / "sealing.key"


def test_a_named_keyring_file_must_exist(tmp_path: Path) -> None:
    cfg = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "SEALING_KEY_FILE": str(tmp_path / "missing.key")}
    with pytest.raises(SettingsError, match="SANDBOX_SEALING_KEY_FILE"):
        load_keyring(cfg, tmp_path)
    with pytest.raises(SettingsError, match="SANDBOX_SEALING_KEY:"):
        load_keyring({**cfg, "SEALING_KEY": "not-a-key"}, tmp_path)


def test_log_key_file_is_created_sealed_and_a_clear_one_can_be_sealed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_key_file(tmp_path / "sealing.key")
    keys = FileKeyring(tmp_path / "sealing.key", "test")
    created = tmp_path / "log.key"
    signer = load_signer(created, "test.example/log", keys)
    assert b"PRIVATE+KEY" not in created.read_bytes()
    assert load_signer(created, "test.example/log", keys).vkey() == signer.vkey()
    other = Keyring(parse_keyring(new_entry(), "other"), "other")
    with pytest.raises(SealingError):
        load_signer(created, "test.example/log", other)

    clear = tmp_path / "clear.key"
    vkey = generate_key_file(clear, "test.example/log")
    assert load_signer(clear, "test.example/log", keys).vkey() == vkey  # still read
    for name, value in {"SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                        "SANDBOX_INSTANCE": str(tmp_path),
                        "SANDBOX_LOG_KEY_FILE": str(clear)}.items():
        monkeypatch.setenv(name, value)
    r = CliRunner().invoke(main, ["keys", "seal-log-key"])
    assert r.exit_code == 0, r.output
    assert b"PRIVATE+KEY" not in clear.read_bytes()
    assert load_signer(clear, "test.example/log", keys).vkey() == vkey


def test_settings_fail_closed_naming_the_variable_not_the_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.settings import load_settings

    monkeypatch.setenv("SANDBOX_INSTANCE", str(tmp_path))
    monkeypatch.setenv("SANDBOX_SEALING_KEY", "kx:secret-looking-value")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert e.value.variable == "SANDBOX_SEALING_KEY" and "secret-looking" not in str(e.value)
    monkeypatch.delenv("SANDBOX_SEALING_KEY")
    monkeypatch.setenv("SANDBOX_SEALING_KEY_FILE", str(tmp_path / "nowhere.key"))
    with pytest.raises(SettingsError, match="SANDBOX_SEALING_KEY_FILE: must name a readable"):
        load_settings()
    create_key_file(tmp_path / "k.key")
    monkeypatch.setenv("SANDBOX_SEALING_KEY_FILE", str(tmp_path / "k.key"))
    assert load_settings().sealing_key_file == tmp_path / "k.key"
