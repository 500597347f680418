"""Envelope encryption for what the controller keeps at rest (AES-256-GCM).

Each sealed value gets its own random 256-bit data key (DEK). The value is encrypted
under the DEK; the DEK is encrypted ("wrapped") under a key-encryption key (KEK) that
never touches the database. This is the envelope scheme of NIST SP 800-57 Part 1 §6.1.1
(key-wrapping keys) and of cloud KMSs (e.g. Google Cloud KMS, "Envelope encryption"),
with AES-GCM as specified in NIST SP 800-38D, via ``cryptography``'s ``AESGCM``:

- one fresh DEK per value, so each 96-bit random nonce is used once under its key
  (SP 800-38D §8.2.2 limits random nonces per key; one per key is far inside it);
- associated data binds both the wrapped DEK and the ciphertext to the value's place
  (table, column, row key): a blob copied to another row, column or table fails to open;
- rotating the KEK rewraps the 60-byte wrapped DEK only; the ciphertext is untouched.

Envelope layout (all lengths in bytes, integers big-endian)::

    b"SB1" | kek id (1-byte length + ASCII) | place (2-byte length + UTF-8 JSON list)
          | wrapped DEK (12 nonce + 32 key + 16 tag) | data nonce (12) | ciphertext + tag

The place is stored in the clear (it is already in the row) because opening needs it as
associated data; tampering with it breaks both tags.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from compute.errors import SealingError

MAGIC = b"SB1"
DOMAIN = b"data-sandbox/sealed/v1\x00"
KEY_BYTES, NONCE_BYTES, TAG_BYTES = 32, 12, 16
WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES
KEK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: A keyring entry: ``<kek id>:<base64 of 32 bytes>``; entries on lines or comma-separated.
ENTRY = re.compile(r"([a-z0-9][a-z0-9_-]{0,31}):([A-Za-z0-9+/_-]{43}=?)")

Place = tuple[str, ...]


def _ad(kek_id: str, place_bytes: bytes) -> bytes:
    return DOMAIN + kek_id.encode() + b"\x00" + place_bytes


def _place_bytes(place: Place) -> bytes:
    return json.dumps(list(place), separators=(",", ":"), ensure_ascii=False).encode()


def describe(place: Place) -> str:
    """``table.column`` for messages: the row key may be an id, but never a value."""
    return ".".join(place[:2])


@dataclass(frozen=True)
class Envelope:
    kek_id: str
    place: Place
    place_bytes: bytes
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        kid = self.kek_id.encode()
        return b"".join((MAGIC, bytes([len(kid)]), kid,
                         len(self.place_bytes).to_bytes(2, "big"), self.place_bytes,
                         self.wrapped, self.nonce, self.ciphertext))

    @classmethod
    def parse(cls, blob: bytes, where: str = "value") -> Envelope:
        try:
            if blob[:3] != MAGIC:
                raise ValueError
            n = blob[3]
            kek_id = blob[4:4 + n].decode("ascii")
            i = 4 + n
            m = int.from_bytes(blob[i:i + 2], "big")
            place_bytes = blob[i + 2:i + 2 + m]
            place = tuple(str(p) for p in json.loads(place_bytes))
            i += 2 + m
            wrapped = blob[i:i + WRAPPED_BYTES]
            nonce = blob[i + WRAPPED_BYTES:i + WRAPPED_BYTES + NONCE_BYTES]
            ciphertext = blob[i + WRAPPED_BYTES + NONCE_BYTES:]
            if (not KEK_ID.fullmatch(kek_id) or len(wrapped) != WRAPPED_BYTES
                    or len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES):
                raise ValueError
        except (ValueError, IndexError, TypeError, UnicodeDecodeError):
            raise SealingError(f"{where} is not a sealed value (stored in the clear, or "
                               "truncated)") from None
        return cls(kek_id, place, place_bytes, wrapped, nonce, ciphertext)


class Keyring:
    """Key-encryption keys by id; the last one given is current (new values use it).

    Older keys stay so that values wrapped under them still open until
    :func:`rewrap` has moved them to the current key.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]], source: str) -> None:
        if not keys:
            raise SealingError(f"{source} holds no key-encryption key")
        self.source = source
        self._keys: dict[str, bytes] = {}
        for kid, key in keys:
            if not KEK_ID.fullmatch(kid) or len(key) != KEY_BYTES:
                raise SealingError(f"{source}: key {kid!r} is not a 32-byte key with an id")
            if kid in self._keys:
                raise SealingError(f"{source}: key id {kid!r} appears twice")
            self._keys[kid] = key
        self.current_id = keys[-1][0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def key(self, kek_id: str, where: str) -> bytes:
        if kek_id not in self._keys:
            self.refresh(force=True)
        try:
            return self._keys[kek_id]
        except KeyError:
            raise SealingError(f"{where} is wrapped by key-encryption key {kek_id!r}, which "
                               f"{self.source} does not hold (wrong or incomplete key "
                               "file?)") from None

    def refresh(self, force: bool = False) -> None:
        """Pick up keys added since loading (a file keyring rereads a changed file)."""

    def current(self) -> tuple[str, bytes]:
        self.refresh()
        return self.current_id, self._keys[self.current_id]


def parse_keyring(text: str, source: str) -> list[tuple[str, bytes]]:
    """``id:base64`` entries separated by newlines or commas; ``#`` starts a comment."""
    out = []
    entries = [e.strip() for line in text.splitlines()
               for e in line.split("#", 1)[0].split(",")]
    for entry in entries:
        if not entry:
            continue
        m = ENTRY.fullmatch(entry)
        if m is None:
            raise SealingError(f"{source}: each entry must be <id>:<base64 of 32 bytes>")
        key = base64.urlsafe_b64decode(m.group(2).replace("+", "-").replace("/", "_")
                                       + "=" * (-len(m.group(2)) % 4))
        out.append((m.group(1), key))
    return out


def new_entry() -> str:
    """A fresh KEK as one keyring entry (random 8-hex-digit id)."""
    key = base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()
    return f"k{secrets.token_hex(4)}:{key}"


class FileKeyring(Keyring):
    """A keyring file (mode 0600 expected); reread when it changes on disk.

    The file is looked at when a value names a key id not loaded yet, and otherwise at
    most once a second before sealing: a rotation's new key is used for new values within
    a second, and the old key keeps opening what it wrapped until it is retired.
    """

    RECHECK_S = 1.0

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = time.monotonic()
        super().__init__(self._read(), source)

    def _read(self) -> list[tuple[str, bytes]]:
        try:
            st = self.path.stat()
            text = self.path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise SealingError(f"cannot read the key-encryption key file {self.path}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SealingError(f"key-encryption key file {self.path} is readable by others "
                               "(chmod 600)")
        self._stamp = (st.st_mtime_ns, st.st_size)
        return parse_keyring(text, str(self.path))

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.RECHECK_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except OSError:
            return  # keep what was loaded; a vanished file is reported by the next start
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            Keyring.__init__(self, self._read(), self.source)


def create_key_file(path: Path) -> bool:
    """Write a one-key keyring to ``path`` (0600) unless it exists; True if written.

    Written under a temporary name and linked into place, so a concurrent starter never
    reads a half-written file and exactly one of them creates it.
    """
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write("# key-encryption keys, oldest first; the last one seals new values\n")
        fh.write(new_entry() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def append_key(path: Path) -> str:
    """Add a fresh KEK to the file as the new current key; return its id."""
    entry = new_entry()
    text = path.read_text(encoding="ascii")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text.rstrip("\n") + "\n" + entry + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return entry.split(":", 1)[0]


def remove_keys(path: Path, kek_ids: set[str]) -> None:
    """Drop these KEKs from the file (comments and the other keys stay)."""
    keep = []
    for line in path.read_text(encoding="ascii").splitlines():
        m = ENTRY.fullmatch(line.split("#", 1)[0].strip())
        if m is None or m.group(1) not in kek_ids:
            keep.append(line)
    if not any(ENTRY.fullmatch(ln.split("#", 1)[0].strip()) for ln in keep):
        raise SealingError("refusing to remove the last key-encryption key")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write("\n".join(keep) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def seal(keys: Keyring, place: Place, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under a new data key wrapped by the current KEK."""
    kek_id, kek = keys.current()
    place_bytes = _place_bytes(place)
    ad = _ad(kek_id, place_bytes)
    dek = AESGCM.generate_key(bit_length=256)
    wrap_nonce, data_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    wrapped = wrap_nonce + AESGCM(kek).encrypt(wrap_nonce, dek, ad)
    ciphertext = AESGCM(dek).encrypt(data_nonce, plaintext, DOMAIN + place_bytes)
    return Envelope(kek_id, place, place_bytes, wrapped, data_nonce, ciphertext).to_bytes()


def _unwrap(keys: Keyring, env: Envelope) -> bytes:
    where = describe(env.place)
    kek = keys.key(env.kek_id, where)
    try:
        return AESGCM(kek).decrypt(env.wrapped[:NONCE_BYTES], env.wrapped[NONCE_BYTES:],
                                   _ad(env.kek_id, env.place_bytes))
    except InvalidTag:
        raise SealingError(f"the data key of a value in {where} does not open under "
                           f"key-encryption key {env.kek_id!r}: wrong key for that id, or "
                           "the value was tampered with") from None


def open_sealed(keys: Keyring, blob: bytes, where: str = "value") -> tuple[Place, bytes]:
    """The place a value was sealed for, and its plaintext; SealingError if anything is off."""
    env = Envelope.parse(blob, where)
    dek = _unwrap(keys, env)
    try:
        plaintext = AESGCM(dek).decrypt(env.nonce, env.ciphertext, DOMAIN + env.place_bytes)
    except InvalidTag:
        raise SealingError(f"a value in {describe(env.place)} was tampered with (its "
                           "authentication tag does not verify)") from None
    return env.place, plaintext


def rewrap(keys: Keyring, blob: bytes, where: str = "value") -> bytes | None:
    """The same value with its data key wrapped by the current KEK; None if it already is.

    The data nonce and ciphertext are copied unchanged: only the 60-byte wrapped key and
    the key id change.
    """
    env = Envelope.parse(blob, where)
    kek_id, kek = keys.current()
    if env.kek_id == kek_id:
        return None
    dek = _unwrap(keys, env)
    nonce = os.urandom(NONCE_BYTES)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, dek, _ad(kek_id, env.place_bytes))
    return Envelope(kek_id, env.place, env.place_bytes, wrapped, env.nonce,
                    env.ciphertext).to_bytes()


def kek_id_of(blob: bytes, where: str = "value") -> str:
    return Envelope.parse(blob, where).kek_id


#: Text files sealed with the keyring (the log signing key) start with this line.
FILE_HEADER = "data-sandbox sealed file v1\n"


def seal_text_file(keys: Keyring, place: Place, text: str) -> str:
    return FILE_HEADER + base64.b64encode(seal(keys, place, text.encode())).decode() + "\n"


def is_sealed_text_file(text: str) -> bool:
    return text.startswith(FILE_HEADER)


def open_text_file(keys: Keyring, place: Place, text: str, where: str) -> str:
    try:
        blob = base64.b64decode(text[len(FILE_HEADER):].strip(), validate=True)
    except ValueError:
        raise SealingError(f"{where} is not a readable sealed file") from None
    found, plaintext = open_sealed(keys, blob, where)
    if found != place:
        raise SealingError(f"{where} was sealed for another place")
    return plaintext.decode()
