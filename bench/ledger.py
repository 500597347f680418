"""Ledger benchmarks. Prints one ``name=value`` per line (goals in docs/performance.md).

appends_per_s      durable appends to a SQLite file the way the controller makes them:
                   THREADS concurrent callers (request threads), each append in its own
                   session and its own committed transaction, as a request commits its
                   state change together with its ledger entry (authz.context)
appends_per_s_serial   the same appends from one caller
appends_per_s_batched  one caller, ``append_many`` of BATCH entries per committed transaction
                   (what one request that records several events pays per entry)
sequencer_appends_per_s  the same THREADS callers through the group-commit Sequencer
                   (ledger.sequencer; not on the controller's request path), the writer
                   waiting up to MAX_WAIT_S for the callers of its last batch; also
                   sequencer_batch_mean, and _nowait with the default max_wait_s=0
checkpoint_s       worst latency from a committed append to a stored signed checkpoint
audit_1m_s         full audit (schema, chain, time order, tree, root vs checkpoint) of
                   1,000,000 entries from an in-memory source (no HTTP, no database)
verify_us          one RFC 9162 inclusion proof verification in a 1M-leaf tree (best of 5
                   runs of 20,000, as timeit does: the least disturbed by other load)
pg_appends_per_s   the same appends on a throwaway PostgreSQL 15 (fsync off, as in tests);
                   also pg_appends_batch_mean, pg_appends_per_s_nowait, _serial, _batched
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger.audit import AuditResult, default_workers
from ledger.checkpoint import Checkpoint, CheckpointSigner
from ledger.checkpointer import Checkpointer
from ledger.db import make_engine, make_session_factory
from ledger.entry import canonical_json
from ledger.log import TransparencyLog
from ledger.merkle import leaf_hash, node_hash, root_hash, verify_inclusion
from ledger.note import generate_signer
from ledger.sequencer import Sequencer
from ledger.store import LedgerBase
from ledger.treemath import inclusion_ranges
from ledger.verify_cli import run_audit

ORIGIN = "bench.sandbox/ledger"
BATCH = 16
THREADS = 32
MAX_WAIT_S = 0.002
BODY = {"job_id": "job-1", "permit_id": "permit-1", "dataset_ids": ["d1", "d2"], "rows": 1200}


def fresh_log(url: str) -> tuple[Engine, sessionmaker[Session], TransparencyLog]:
    """Empty ledger tables with their head row made (outside any timed loop)."""
    eng = make_engine(url)
    LedgerBase.metadata.drop_all(eng)
    LedgerBase.metadata.create_all(eng)
    factory = make_session_factory(eng)
    log = TransparencyLog(ORIGIN)
    with factory() as s:  # create the head row outside the timed loop
        log.append(s, "bench.start", "system", {})
        s.commit()
    return eng, factory, log


def bench_appends(url: str, n: int, batch: int = 1) -> float:
    eng, factory, log = fresh_log(url)
    t = time.perf_counter()
    if batch == 1:
        for i in range(n):
            with factory() as s:
                log.append(s, "job.submitted", f"party:{i % 7}", BODY)
                s.commit()
    else:
        for i in range(0, n, batch):
            with factory() as s:
                log.append_many(s, [("job.submitted", f"party:{j % 7}", BODY)
                                    for j in range(i, i + batch)])
                s.commit()
        n = -(-n // batch) * batch
    rate = n / (time.perf_counter() - t)
    eng.dispose()
    return rate


def timed_callers(threads: int, calls: int, call: Callable[[int, int], object]) -> float:
    """Completed calls per second: ``threads`` callers released together, each making
    ``calls`` calls ``call(caller, i)``; a call counts once it returned (acknowledged)."""
    done = [0] * threads
    start = threading.Barrier(threads + 1)

    def caller(w: int) -> None:
        start.wait()
        for i in range(calls):
            call(w, i)
            done[w] += 1

    workers = [threading.Thread(target=caller, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t = time.perf_counter()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - t)


def bench_request_path(url: str, n: int, threads: int = THREADS) -> float:
    """Acknowledged appends/s from ``threads`` callers, one session and commit per append."""
    eng, factory, log = fresh_log(url)

    def append(w: int, i: int) -> None:
        with factory() as s:
            log.append(s, "job.submitted", f"party:{(w + i) % 7}", BODY)
            s.commit()

    rate = timed_callers(threads, n // threads, append)
    eng.dispose()
    return rate


def bench_sequencer(url: str, n: int, max_wait_s: float = MAX_WAIT_S,
                    threads: int = THREADS) -> tuple[float, float]:
    """(acknowledged appends/s, mean entries per commit): ``threads`` callers of one Sequencer."""
    eng = make_engine(url)
    LedgerBase.metadata.drop_all(eng)
    LedgerBase.metadata.create_all(eng)
    log = TransparencyLog(ORIGIN)
    with Sequencer(make_session_factory(eng), log, max_wait_s=max_wait_s) as seq:
        seq.append("bench.start", "system", {})  # head row and connection, outside the timing
        before = seq.stats()
        rate = timed_callers(threads, n // threads, lambda w, i: seq.append(
            "job.submitted", f"party:{(w + i) % 7}", BODY))
        after = seq.stats()
    eng.dispose()
    return rate, (after.units - before.units) / max(1, after.batches - before.batches)


def bench_checkpoint(url: str, trials: int = 5) -> float:
    eng = make_engine(url)
    LedgerBase.metadata.create_all(eng)
    factory = make_session_factory(eng)
    log = TransparencyLog(ORIGIN, CheckpointSigner(generate_signer(ORIGIN)))
    cp = Checkpointer(factory, log, interval_s=0.2)
    cp.start()
    worst = 0.0
    try:
        for _ in range(trials):
            t = time.perf_counter()
            with factory() as s:
                idx = log.append(s, "job.submitted", "party:1", BODY).index
                s.commit()
            while True:
                with factory() as s:
                    latest = log.latest_checkpoint(s)
                if latest and latest[0] > idx:
                    break
                time.sleep(0.005)
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.05)
    finally:
        cp.stop()
        eng.dispose()
    return worst


def synth_entries(n: int) -> list[bytes]:
    """Canonical v1 entries built from a template: the fast bulk path for the audit bench."""
    body = canonical_json(BODY).decode()
    run = canonical_json({
        "job_id": "job-1", "permit_id": "permit-1", "state": "released",
        "audit": {"authorizing_system": "authz", "authorizing_operator": "provider:h1",
                  "business_system": "insurer", "user": "user:alice",
                  "access_method": "sandbox-job", "access_time": "2025-03-01T10:00:00Z",
                  "data_volume": {"rows": 1200, "bytes": 48000}},
        "script_sha256": "a" * 64, "runner_image": "runner:1", "input_sha256": "b" * 64,
        "outputs": [{"name": "m.csv", "sha256": "c" * 64, "bytes": 300,
                     "decision": "released"}], "reasons": []}).decode()
    out, prev = [], "0" * 64
    for i in range(n):
        kind, b = ("run.finished", run) if i % 8 == 7 else ("job.submitted", body)
        ts = f"2025-03-01T10:{(i // 60_000_000) % 60:02d}:{(i // 1_000_000) % 60:02d}." \
             f"{i % 1_000_000:06d}Z"
        data = (f'{{"actor":"party:{i % 7}","body":{b},"index":{i},"kind":"{kind}",'
                f'"prev":"{prev}","ts":"{ts}","v":1}}').encode()
        out.append(data)
        prev = leaf_hash(data).hex()
    return out


class MemorySource:
    def __init__(self, entries: list[bytes], note: str) -> None:
        self._entries, self._note = entries, note

    def checkpoint(self) -> str:
        return self._note

    def entries(self, start: int, end: int) -> list[bytes]:
        return self._entries[start:end]

    def consistency(self, old: int, new: int) -> list[bytes]:
        raise NotImplementedError


def bench_audit(n: int) -> tuple[float, AuditResult]:
    entries = synth_entries(n)
    signer = CheckpointSigner(generate_signer(ORIGIN))
    # The checkpoint's root comes from the plain RFC 9162 implementation, not the auditor.
    note = signer.sign(Checkpoint(ORIGIN, n, root_hash(entries)))
    t = time.perf_counter()
    _, result = run_audit(MemorySource(entries, note), signer.verifier,
                          workers=default_workers())
    return time.perf_counter() - t, result


def bench_verify(size: int = 1_000_000, rounds: int = 20000, pure: bool = False) -> float:
    """µs per verify_inclusion; ``pure``: without the C accelerator (verify_us_pure)."""
    import hashlib

    from ledger import merkle

    index = size - 12345
    lh = leaf_hash(b"x")
    proof = [hashlib.sha256(bytes([i])).digest() for i in range(len(inclusion_ranges(index, size)))]
    # Root from the proof itself so verification succeeds (the path arithmetic is what costs).
    fn, sn, r = index, size - 1, lh
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    saved = merkle.accel
    if pure:
        merkle.accel = None  # what LEDGER_PURE_PYTHON=1 does at import
    try:
        verify_inclusion(lh, index, size, proof, r)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(rounds):
                verify_inclusion(lh, index, size, proof, r)
            best = min(best, time.perf_counter() - t)
    finally:
        merkle.accel = saved
    return best / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=2000)
    ap.add_argument("--audit-n", type=int, default=1_000_000)
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rate = bench_request_path(f"sqlite:///{d}/r.db", args.appends)
        print(f"appends_per_s={rate:.0f}", flush=True)
        print(f"appends_per_s_serial={bench_appends(f'sqlite:///{d}/a.db', args.appends):.0f}",
              flush=True)
        if hasattr(TransparencyLog, "append_many"):
            rate = bench_appends(f"sqlite:///{d}/b.db", args.appends, BATCH)
            print(f"appends_per_s_batched={rate:.0f}", flush=True)
        for suffix, wait in (("", MAX_WAIT_S), ("_nowait", 0.0)):
            rate, mean = bench_sequencer(f"sqlite:///{d}/s{suffix}.db", args.appends, wait)
            print(f"sequencer_appends_per_s{suffix}={rate:.0f}", flush=True)
            print(f"sequencer_batch_mean{suffix}={mean:.1f}", flush=True)
        print(f"checkpoint_s={bench_checkpoint(f'sqlite:///{d}/c.db'):.3f}", flush=True)
    secs, result = bench_audit(args.audit_n)
    assert result.size == args.audit_n
    print(f"audit_{args.audit_n // 1_000_000 or args.audit_n}"
          f"{'m' if args.audit_n >= 1_000_000 else ''}_s={secs:.2f}", flush=True)
    print(f"audit_workers={default_workers()}", flush=True)
    from ledger.merkle import ACCELERATED

    print(f"merkle_accel={'yes' if ACCELERATED else 'no'}", flush=True)
    print(f"verify_us={bench_verify():.2f}", flush=True)
    print(f"verify_us_pure={bench_verify(pure=True):.2f}", flush=True)
    if not args.no_pg:
        from tests import pgcluster

        if pgcluster.available():
            with pgcluster.cluster() as url:
                print(f"pg_appends_per_s={bench_request_path(url, args.appends):.0f}",
                      flush=True)
                rate, mean = bench_sequencer(url, args.appends, MAX_WAIT_S)
                print(f"pg_sequencer_appends_per_s={rate:.0f}", flush=True)
                print(f"pg_sequencer_batch_mean={mean:.1f}", flush=True)
                print(f"pg_appends_per_s_serial={bench_appends(url, args.appends):.0f}",
                      flush=True)
                if hasattr(TransparencyLog, "append_many"):
                    rate = bench_appends(url, args.appends, BATCH)
                    print(f"pg_appends_per_s_batched={rate:.0f}", flush=True)
        else:
            print("pg_appends_per_s=unavailable")


if __name__ == "__main__":
    main()
