"""ledger-verify: the regulator's independent verifier. Standard library + cryptography.

  ledger-verify receipt FILE --log-key VKEY [--witness-key VKEY ... --min-cosignatures K]
  ledger-verify checkpoint --url URL --log-key VKEY --state FILE [--witness-key ... -k K]
  ledger-verify audit --url URL --log-key VKEY [--state FILE]

Exit status: 0 verified, 1 verification failed, 2 usage, key or network problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ledger.audit import AuditResult, audit_chunks, default_workers
from ledger.checkpoint import Checkpoint, verify_checkpoint
from ledger.cosignature import require_cosignatures
from ledger.errors import AuditError, KeyConfigError, LedgerError, VerificationError
from ledger.merkle import verify_consistency
from ledger.note import NoteVerifier, parse_vkey
from ledger.receipt import verify_receipt
from ledger.source import FetchError, HttpSource, LogSource

PAGE = 1000


def _read_key(value: str) -> NoteVerifier:
    """A vkey given inline or as a path to a file holding it."""
    if "+" not in value and Path(value).exists():
        value = Path(value).read_text(encoding="ascii")
    return parse_vkey(value)


def check_new_checkpoint(
    source: LogSource, log_key: NoteVerifier, trusted: str | None,
    witnesses: Sequence[NoteVerifier] = (), k: int = 0,
) -> tuple[Checkpoint, str]:
    """Fetch the latest checkpoint and prove it extends ``trusted`` (a stored note).

    Catches rollback (smaller tree), fork (same size, other root, or a failing consistency
    proof) and, with k witnesses, a split view shown only to this verifier.
    """
    note = source.checkpoint()
    new = verify_checkpoint(note, log_key)
    if k:
        require_cosignatures(note, witnesses, k)
    if trusted is None:
        return new, note
    old = verify_checkpoint(trusted, log_key, new.origin)
    if new.size < old.size:
        raise VerificationError(f"rollback: log now shows size {new.size} < trusted {old.size}")
    proof = source.consistency(old.size, new.size) if old.size not in (0, new.size) else []
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except VerificationError as exc:
        raise VerificationError(f"fork: checkpoint {new.size} does not extend trusted "
                                f"{old.size}: {exc}") from exc
    return new, note


def run_audit(source: LogSource, log_key: NoteVerifier, page: int = PAGE,
              checkpoint_note: str | None = None, workers: int = 1,
              chunk: int = 20 * PAGE) -> tuple[Checkpoint, AuditResult]:
    """Fetch every entry up to the signed checkpoint, check each, rebuild and match root."""
    note = checkpoint_note if checkpoint_note is not None else source.checkpoint()
    cp = verify_checkpoint(note, log_key)

    def chunks() -> Iterator[tuple[int, list[bytes]]]:
        start = 0
        while start < cp.size:
            batch: list[bytes] = []
            end = min(start + chunk, cp.size)
            while start + len(batch) < end:
                pos = start + len(batch)
                got = source.entries(pos, min(pos + page, end))
                if not got:
                    break
                batch.extend(got)
            if not batch:
                raise AuditError(start, f"log stops at {start} entries; checkpoint claims "
                                        f"{cp.size}")
            yield start, batch
            start += len(batch)

    result = audit_chunks(chunks(), workers)
    if result.size != cp.size:
        raise AuditError(result.size, f"log has {result.size} entries; checkpoint claims "
                                      f"{cp.size}")
    if result.root != cp.root:
        raise AuditError(-1, f"rebuilt root of {cp.size} entries does not match the signed "
                             "checkpoint")
    return cp, result


def save_state(path: Path, note: str) -> None:
    """Replace the state file atomically (write temp, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(note)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_state(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return path.read_text(encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger-verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("receipt", "checkpoint", "audit"):
        sp = sub.add_parser(name)
        if name == "receipt":
            sp.add_argument("file", type=Path)
        else:
            sp.add_argument("--url", required=True)
            sp.add_argument("--token", default=os.environ.get("SANDBOX_TOKEN"))
            sp.add_argument("--state", type=Path, required=name == "checkpoint")
            sp.add_argument("--workers", type=int, default=default_workers(),
                            help="processes checking entries during an audit")
        sp.add_argument("--log-key", required=True, help="log vkey, inline or a file path")
        sp.add_argument("--witness-key", action="append", default=[])
        sp.add_argument("--min-cosignatures", "-k", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None, source: LogSource | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        log_key = _read_key(args.log_key)
        witnesses = [_read_key(w) for w in args.witness_key]
    except (KeyConfigError, OSError) as exc:
        print(f"ERROR: bad key: {exc}", file=sys.stderr)
        return 2
    try:
        if args.cmd == "receipt":
            entry = verify_receipt(args.file.read_bytes(), log_key, witnesses,
                                   args.min_cosignatures)
            print(f"OK: receipt verified: entry {entry['index']} {entry['kind']} "
                  f"by {entry['actor']} at {entry['ts']}")
            print(json.dumps(entry, ensure_ascii=False, sort_keys=True))
            return 0
        src = source if source is not None else HttpSource(args.url, args.token)
        trusted = _load_state(args.state)
        cp, note = check_new_checkpoint(src, log_key, trusted, witnesses,
                                        args.min_cosignatures)
        if args.cmd == "audit":
            _, result = run_audit(src, log_key, checkpoint_note=note, workers=args.workers)
            kinds = ", ".join(f"{k}={v}" for k, v in sorted(result.kinds.items()))
            print(f"OK: audited {result.size} entries; root matches checkpoint ({kinds})")
        else:
            print(f"OK: checkpoint {cp.origin} size {cp.size} root {cp.root.hex()} extends "
                  f"the trusted state")
        if args.state is not None:
            save_state(args.state, note)
        return 0
    except AuditError as exc:
        where = f"first bad index {exc.index}" if exc.index >= 0 else "tree"
        print(f"FAIL ({where}): {exc}", file=sys.stderr)
        return 1
    except VerificationError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    except (FetchError, OSError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    except LedgerError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
