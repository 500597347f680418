"""C2SP signed-note (v1.0.0): Ed25519 note keys, signing and verification.

Standard library and ``cryptography`` only. Implements:
- key IDs: SHA-256(name || 0x0A || type || pubkey)[:4] (signed-note "Signatures");
- verifier keys ``name+hexid+base64(type||pubkey)`` and signer keys
  ``PRIVATE+KEY+name+hexid+base64(type||seed)`` (signed-note "Verifier keys");
- note format: text, blank line, lines ``— name base64(keyid||sig)`` (signed-note "Format").
Type 0x01 is a plain Ed25519 note signature; type 0x04 is a C2SP tlog-cosignature key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ledger.errors import KeyConfigError, MalformedNoteError, VerificationError

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
SIG_PREFIX = "\u2014 "
_NAME_RE = re.compile(r"^[^\s+]+$")


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise KeyConfigError(f"key name {name!r} must be non-empty, without spaces or '+'")


def key_id(name: str, alg: int, pub: bytes) -> bytes:
    """signed-note: SHA-256(name || "\\n" || alg || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + pub).digest()[:4]


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedNoteError(f"bad base64: {exc}") from exc


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    alg: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    def vkey(self) -> str:
        blob = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    name: str
    alg: int
    seed: bytes

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def verifier(self) -> NoteVerifier:
        pub = self._key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return NoteVerifier(self.name, self.alg, pub)

    def skey(self) -> str:
        v = self.verifier
        blob = base64.b64encode(bytes([self.alg]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{v.key_id.hex()}+{blob}"

    def raw_sign(self, message: bytes) -> bytes:
        return self._key().sign(message)


def generate_signer(name: str, alg: int = ALG_ED25519) -> NoteSigner:
    _check_name(name)
    seed = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return NoteSigner(name, alg, seed)


def _key_material(kind: str, name: str, blob: str) -> tuple[int, bytes]:
    """A ``kind`` (verifier or signer) key's algorithm byte and 32 key bytes, from the
    name and base64 parts of its text form."""
    _check_name(name)
    try:
        raw = b64decode(blob)
    except MalformedNoteError as exc:
        raise KeyConfigError(str(exc)) from exc
    if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise KeyConfigError(f"{kind} key is not an Ed25519 (0x01/0x04) key")
    return raw[0], raw[1:]


def parse_vkey(text: str) -> NoteVerifier:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise KeyConfigError("verifier key must be name+keyid+base64")
    name, hexid, blob = parts
    alg, key = _key_material("verifier", name, blob)
    v = NoteVerifier(name, alg, key)
    if v.key_id.hex() != hexid.lower():
        raise KeyConfigError("verifier key id does not match its name and key")
    return v


def parse_skey(text: str) -> NoteSigner:
    # maxsplit: the base64 key data may itself contain "+".
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise KeyConfigError("signer key must be PRIVATE+KEY+name+keyid+base64")
    name, hexid, blob = parts[2:]
    alg, key = _key_material("signer", name, blob)
    s = NoteSigner(name, alg, key)
    if s.verifier.key_id.hex() != hexid.lower():
        raise KeyConfigError("signer key id does not match its name and key")
    return s


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # after the key id

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{SIG_PREFIX}{self.name} {blob}\n"


def split_note(text: str) -> tuple[str, list[NoteSignature]]:
    """signed-note "Format": body ending in newline, a blank line, signature lines."""
    if "\r" in text or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise MalformedNoteError("note contains control characters")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise MalformedNoteError("note has no signature block")
    body, block = text[:cut + 1], text[cut + 2:]
    sigs: list[NoteSignature] = []
    for line in block.splitlines():
        if not line.startswith(SIG_PREFIX):
            raise MalformedNoteError("signature line does not start with an em dash")
        fields = line[len(SIG_PREFIX):].split(" ")
        if len(fields) != 2 or not fields[0]:
            raise MalformedNoteError("signature line must be '— name base64'")
        raw = b64decode(fields[1])
        if len(raw) < 5:
            raise MalformedNoteError("signature too short")
        sigs.append(NoteSignature(fields[0], raw[:4], raw[4:]))
    if not sigs:
        raise MalformedNoteError("note has no signatures")
    return body, sigs


def sign_note(body: str, signer: NoteSigner) -> str:
    """A new note with one Ed25519 (type 0x01) signature over ``body``."""
    if not body.endswith("\n") or "\n\n" in body:
        raise MalformedNoteError("note body must end in a newline and hold no blank line")
    sig = NoteSignature(signer.name, signer.verifier.key_id, signer.raw_sign(body.encode()))
    return body + "\n" + sig.line()


def verify_note(text: str, verifier: NoteVerifier) -> tuple[str, list[NoteSignature]]:
    """Check the note carries a valid 0x01 signature by ``verifier``; return body and sigs.

    signed-note "Signatures": lines from other keys (name or key ID differ) are ignored;
    a line whose name and key ID match ``verifier`` must verify, else the whole note is
    rejected, even if another line by the same key verifies (the spec's SHOULD, taken as
    a MUST: tlog-witness requires it of witnesses).
    """
    body, sigs = split_note(text)
    kid = verifier.key_id
    message = body.encode()
    found = False
    for s in sigs:
        if s.name != verifier.name or s.key_id != kid:
            continue
        if not verifier.verify(message, s.signature):
            raise VerificationError(f"a signature by {verifier.name} on the note fails to "
                                    "verify")
        found = True
    if not found:
        raise VerificationError(f"no valid signature by {verifier.name} on the note")
    return body, sigs
