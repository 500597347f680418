"""C2SP tlog-checkpoint (v1.0.0) bodies, the log's signing key, checkpoint verification.

Standard library and ``cryptography`` only. The log key never lives in the database: it is
read from ``SANDBOX_LOG_KEY`` (an skey string) or the file ``SANDBOX_LOG_KEY_FILE``.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import KeyConfigError, MalformedNoteError, VerificationError
from ledger.note import (
    ALG_ED25519,
    NoteSigner,
    NoteVerifier,
    b64decode,
    generate_signer,
    parse_skey,
    parse_vkey,
    sign_note,
    verify_note,
)

ENV_KEY = "SANDBOX_LOG_KEY"
ENV_KEY_FILE = "SANDBOX_LOG_KEY_FILE"
# tlog-checkpoint "Note text" and tlog-witness "add-checkpoint": sizes are ASCII decimal
# without leading zeroes ("0" for zero). [0-9], not \d or str.isdigit(): those also take
# other scripts' digits (Arabic-Indic ٣, fullwidth ３), which int() then accepts.
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def body(self) -> str:
        """tlog-checkpoint "Note text": origin, decimal size, base64 root, extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(),
                 *self.extensions]
        return "\n".join(lines) + "\n"


def parse_size(text: str) -> int:
    """A tree size: ASCII decimal, no leading zeroes; MalformedNoteError otherwise."""
    if not _SIZE_RE.fullmatch(text):
        raise MalformedNoteError(f"size {text[:24]!r} is not ASCII decimal without leading "
                                 "zeroes")
    return int(text)


def parse_checkpoint_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise MalformedNoteError("checkpoint needs origin, size and root lines")
    origin, size, root, *ext = lines[:-1]
    if not origin:
        raise MalformedNoteError("checkpoint origin line is empty")
    tree_size = parse_size(size)
    raw = b64decode(root)
    if len(raw) != 32:
        raise MalformedNoteError("checkpoint root is not a 32-byte hash")
    if any(not e for e in ext):
        raise MalformedNoteError("empty checkpoint extension line")
    return Checkpoint(origin, tree_size, raw, tuple(ext))


def verify_checkpoint(
    note: str, log_key: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Parse a signed checkpoint and insist on the log's signature (and origin)."""
    body, _ = verify_note(note, log_key)
    cp = parse_checkpoint_body(body)
    if origin is not None and cp.origin != origin:
        raise VerificationError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    return cp


class CheckpointSigner:
    """The log's Ed25519 note key; its name is by convention the log origin."""

    def __init__(self, signer: NoteSigner) -> None:
        if signer.alg != ALG_ED25519:
            raise KeyConfigError("the log key must be an Ed25519 (0x01) note key")
        self._signer = signer

    @property
    def name(self) -> str:
        return self._signer.name

    @property
    def verifier(self) -> NoteVerifier:
        return self._signer.verifier

    def vkey(self) -> str:
        return self._signer.verifier.vkey()

    def sign(self, checkpoint: Checkpoint) -> str:
        return sign_note(checkpoint.body(), self._signer)

    @classmethod
    def from_skey(cls, skey: str) -> CheckpointSigner:
        return cls(parse_skey(skey))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CheckpointSigner:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyConfigError(f"cannot read log key {path}: {exc}") from exc
        return cls.from_skey(text)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CheckpointSigner:
        env = os.environ if env is None else env
        if env.get(ENV_KEY):
            return cls.from_skey(env[ENV_KEY])
        if env.get(ENV_KEY_FILE):
            return cls.from_file(env[ENV_KEY_FILE])
        raise KeyConfigError(f"set {ENV_KEY} or {ENV_KEY_FILE} to the log's signing key")


def generate_key_file(path: str | os.PathLike[str], name: str, alg: int = ALG_ED25519) -> str:
    """Write a new skey to ``path`` (mode 0600, refusing to overwrite); return its vkey."""
    signer = generate_signer(name, alg)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyConfigError(f"cannot create key file {path}: {exc}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(signer.skey() + "\n")
    return signer.verifier.vkey()


def load_vkey(text: str) -> NoteVerifier:
    return parse_vkey(text)
