"""Schema migrations (Alembic), applied from code so that every entry point shares them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from compute.sealing import Keyring

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", keys: Keyring | None = None) -> None:
    """Upgrade; ``keys`` seal existing rows (default: the keyring the settings name)."""
    cfg = alembic_config(url)
    cfg.attributes["sealing_keys"] = keys
    cfg.attributes["sealing_keys_loader"] = lambda: _settings_keyring(url)
    command.upgrade(cfg, revision)


def downgrade(url: str, revision: str, keys: Keyring | None = None) -> None:
    cfg = alembic_config(url)
    cfg.attributes["sealing_keys"] = keys
    cfg.attributes["sealing_keys_loader"] = lambda: _settings_keyring(url)
    command.downgrade(cfg, revision)


def _settings_keyring(url: str) -> Keyring:
    # imported here: the settings are read only when rows need sealing
    from sandbox.sealing_keys import load_keyring
    from sandbox.settings import flask_config, load_settings

    s = load_settings()
    return load_keyring({**flask_config(s), "DATABASE_URL": url}, s.instance)

