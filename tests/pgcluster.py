"""A throwaway PostgreSQL 15 cluster on a Unix socket, for tests and benchmarks.

initdb refuses to run as root, so as root the cluster is owned by the ``postgres``
system user (created by Debian's postgresql package). Nothing listens on TCP.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").exists()


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def cluster(dbname: str = "sandbox") -> Iterator[str]:
    """Start a cluster, create ``dbname``, yield a SQLAlchemy URL, stop and delete it."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    subprocess.run(
        _as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                   "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    _start(root)
    try:
        subprocess.run(
            _as_owner([str(PG_BIN / "createdb"), "-h", str(sock), "-U", "postgres", dbname]),
            check=True, capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@/{dbname}?host={sock}"
    finally:
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _start(root: Path) -> None:
    sock = root / "sock"
    opts = f"-k {sock} -c listen_addresses='' -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-w", "-l",
                   str(root / "log"), "-o", opts, "start"]),
        check=True, capture_output=True,
    )
    for _ in range(50):
        r = subprocess.run(_as_owner([str(PG_BIN / "pg_isready"), "-h", str(sock)]),
                           capture_output=True)
        if r.returncode == 0:
            break
        time.sleep(0.1)


@contextmanager
def stopped(url: str, mode: str = "fast") -> Iterator[None]:
    """Stop the server of a :func:`cluster` (an outage), and start it again on exit.

    ``mode`` is pg_ctl's shutdown mode: ``fast`` ends sessions cleanly; ``immediate``
    aborts the server as a crash would (recovery from the WAL at the next start)."""
    root = Path(parse_qs(urlsplit(url).query)["host"][0]).parent
    subprocess.run(
        _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-w", "-m", mode,
                   "stop"]),
        check=True, capture_output=True,
    )
    try:
        yield
    finally:
        _start(root)
