"""Where the controller's key-encryption keys come from, and the sealed log key file.

``SANDBOX_SEALING_KEY`` (the keyring itself) wins over ``SANDBOX_SEALING_KEY_FILE``. With
neither, the embedded default keeps ``sealing.key`` (0600) beside the SQLite database, or
beside the log key file for another database (both by default in the instance
directory), and creates it on first start. A
deployment provisions the file and keeps it out of the database's backups: whoever holds
both can read everything sealed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from compute.errors import SealingError
from compute.sealing import (
    FileKeyring,
    Keyring,
    create_key_file,
    is_sealed_text_file,
    open_text_file,
    parse_keyring,
    seal_text_file,
)
from ledger.checkpoint import CheckpointSigner
from ledger.errors import KeyConfigError
from ledger.note import generate_signer
from sandbox.settings import SettingsError

LOG_KEY_PLACE = ("file", "log-key")
DEFAULT_NAME = "sealing.key"


def default_key_file(config: Mapping[str, Any], instance: str | os.PathLike[str]) -> Path:
    """Beside the SQLite database; otherwise beside the log key file (by default both are
    in the instance directory), so every process sharing a database and a log key also
    shares the keyring without further settings."""
    url = make_url(config["DATABASE_URL"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:"):
        beside = Path(url.database).absolute().with_name(DEFAULT_NAME)
        # A directory that does not exist holds no database yet (the controller answers
        # 503): never create it for the key, which would let SQLite create an empty one.
        if beside.parent.is_dir():
            return beside
    log_key = config.get("LOG_KEY_FILE")
    if log_key and Path(log_key).absolute().parent.is_dir():
        return Path(log_key).absolute().with_name(DEFAULT_NAME)
    return Path(instance) / DEFAULT_NAME


def key_file(config: Mapping[str, Any], instance: str | os.PathLike[str]) -> tuple[Path, bool]:
    """The keyring file and whether it was named by a setting (not the default)."""
    named = config.get("SEALING_KEY_FILE")
    if named:
        return Path(named), True
    return default_key_file(config, instance), False


def load_keyring(config: Mapping[str, Any], instance: str | os.PathLike[str]) -> Keyring:
    """The keyring for an app's config; SettingsError names the variable when it is unusable."""
    if config.get("SEALING_KEY"):
        try:
            return Keyring(parse_keyring(config["SEALING_KEY"], "SANDBOX_SEALING_KEY"),
                           "SANDBOX_SEALING_KEY")
        except SealingError:
            raise SettingsError("SANDBOX_SEALING_KEY", "must be one or more <id>:<base64 of "
                                "32 bytes> entries") from None
    path, named = key_file(config, instance)
    if not named:
        create_key_file(path)
    try:
        return FileKeyring(path, "SANDBOX_SEALING_KEY_FILE" if named else str(path))
    except SealingError as e:
        raise SettingsError("SANDBOX_SEALING_KEY_FILE", str(e)) from None


def load_signer(key_file: Path, origin: str, keys: Keyring,
                skey: str | None = None) -> CheckpointSigner:
    """The log key from the environment or its file, never from the database.

    The embedded default creates the file on first start, sealed with the keyring. A
    provisioned file may hold the key in the clear (`sandbox keys seal-log-key` seals it).
    """
    if skey:
        return CheckpointSigner.from_skey(skey)
    if os.environ.get("SANDBOX_LOG_KEY"):
        return CheckpointSigner.from_env()
    if not key_file.exists():
        write_sealed_log_key(key_file, keys, generate_signer(origin).skey())
    try:
        text = key_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"cannot read log key {key_file}: {exc}") from exc
    if is_sealed_text_file(text):
        text = open_text_file(keys, LOG_KEY_PLACE, text, f"log key file {key_file}")
    return CheckpointSigner.from_skey(text)


def write_sealed_log_key(path: Path, keys: Keyring, skey: str, *, replace: bool = False) -> None:
    """Write the skey sealed (0600); refuse to overwrite unless ``replace`` (atomic then)."""
    body = seal_text_file(keys, LOG_KEY_PLACE, skey.strip() + "\n")
    target = path.with_name(f".{path.name}.new") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyConfigError(f"cannot create key file {target}: {exc}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    if replace:
        os.replace(target, path)


def read_log_key_file(path: Path, keys: Keyring) -> tuple[str, bool]:
    """The skey in the file, and whether it was sealed."""
    text = path.read_text(encoding="ascii")
    if is_sealed_text_file(text):
        return open_text_file(keys, LOG_KEY_PLACE, text, f"log key file {path}"), True
    return text.strip(), False
