"""compute.sealing: envelopes open only with the right key, in the right place, untouched."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from compute.errors import SealingError
from compute.sealing import (
    FileKeyring,
    Keyring,
    append_key,
    create_key_file,
    kek_id_of,
    new_entry,
    open_sealed,
    parse_keyring,
    remove_keys,
    rewrap,
    seal,
)

PLACE = ("jobs", "script", "job_1")


def ring(*entries: str) -> Keyring:
    return Keyring(parse_keyring(",".join(entries), "test keyring"), "test keyring")


def test_round_trip_and_no_plaintext_in_the_envelope() -> None:
    keys = ring(new_entry())
    blob = seal(keys, PLACE, b"SELECT secret_marker_1234")
    assert b"secret_marker_1234" not in blob
    assert open_sealed(keys, blob) == (PLACE, b"SELECT secret_marker_1234")
    # A fresh data key and nonce each time: equal plaintexts do not give equal blobs.
    assert seal(keys, PLACE, b"x") != seal(keys, PLACE, b"x")


def test_every_tampered_byte_fails_closed() -> None:
    keys = ring(new_entry())
    blob = seal(keys, PLACE, b"some output")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(SealingError):
            open_sealed(keys, bytes(bad))
    with pytest.raises(SealingError, match="not a sealed value"):
        open_sealed(keys, b"plain text stored in the clear")


def test_wrong_kek_is_a_clear_error() -> None:
    right = new_entry()
    kid = right.split(":")[0]
    blob = seal(ring(right), PLACE, b"x")
    wrong_same_id = f"{kid}:{new_entry().split(':')[1]}"
    with pytest.raises(SealingError, match=f"does not open under key-encryption key '{kid}'"):
        open_sealed(ring(wrong_same_id), blob)
    with pytest.raises(SealingError, match=f"wrapped by key-encryption key '{kid}', which "
                                           "test keyring does not hold"):
        open_sealed(ring(new_entry()), blob)


def test_rewrap_changes_only_the_wrapped_key() -> None:
    old = new_entry()
    blob = seal(ring(old), PLACE, b"payload" * 100)
    both = ring(old, new_entry())
    new = rewrap(both, blob)
    assert new is not None and kek_id_of(new) == both.current_id
    # The data nonce and ciphertext (everything after the wrapped key) are unchanged.
    assert new[-(12 + 700 + 16):] == blob[-(12 + 700 + 16):]
    assert open_sealed(both, new)[1] == b"payload" * 100
    assert rewrap(both, new) is None  # already under the current key
    only_new = Keyring([(both.current_id, both.key(both.current_id, "t"))], "new only")
    assert open_sealed(only_new, new)[1] == b"payload" * 100
    with pytest.raises(SealingError):
        open_sealed(only_new, blob)


def test_key_file_is_private_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    assert create_key_file(path) and not create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    running = FileKeyring(path, "file")  # a process loaded before the rotation
    first = running.current_id
    blob = seal(running, PLACE, b"x")
    second = append_key(path)
    keys = FileKeyring(path, "file")
    assert keys.current()[0] == second
    rewrapped = rewrap(keys, blob) or b""
    # The running process opens a value under a key it had not loaded yet...
    assert open_sealed(running, rewrapped)[1] == b"x"
    # ...and seals with the new key once it looks at the file again.
    running.refresh(force=True)
    assert kek_id_of(seal(running, PLACE, b"y")) == second
    remove_keys(path, {first})
    assert FileKeyring(path, "file").ids == (second,)
    with pytest.raises(SealingError, match="last"):
        remove_keys(path, {second})
    os.chmod(path, 0o644)
    with pytest.raises(SealingError, match="readable by others"):
        FileKeyring(path, "file")
