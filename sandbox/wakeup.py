"""Wake-ups across controller processes for the long polls (sandbox.waiting.WorkSignal).

A commit wakes the long polls of its own process at once. The agents' and requesters'
long polls served by another worker, or by another controller replica, used to see the
same commit only at their next database probe (up to 0.25 s for a task: with 2 workers, a
joint job's 4 parts waited for the slowest of 4 such probes). A wake-up is a hint, never
state: the waiter still reads the database, and when a wake-up is lost (a channel down, a
full socket buffer) the probes that remain find the work as before.

- **PostgreSQL**: ``LISTEN``/``NOTIFY`` (one channel per signal), which also reaches
  replicas on other hosts. Each process listens on one dedicated connection, opened the
  first time one of its requests waits; a lost connection is reopened, and every waiter is
  woken then, since notifications sent meanwhile are gone.
- **SQLite** (one host by nature): a Unix datagram socket per process in a directory of the
  service user (mode 0700, owner checked: a directory another user made is not used), named
  by the database file. A send to a socket whose process is gone is refused, and the stale
  socket is removed.
- In-memory SQLite, or anything else: this process only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("data-sandbox.wakeup")


class Channel(StrEnum):
    WORK = "work"  # a task queued: agents' claims
    JOINT = "joint"  # a joint job's progress: mask keys, parts, the aggregate


Wake = Callable[[Channel], None]
#: PostgreSQL channel names (identifiers: quoted nowhere, so plain lower-case words).
PG_CHANNELS: Mapping[Channel, str] = {c: f"data_sandbox_{c.value}" for c in Channel}
RECONNECT_S = 1.0
LISTEN_TICK_S = 1.0  # how often a listener looks whether it was closed


class Wakeup(Protocol):
    def listen(self, wake: Wake) -> None:
        """Start delivering other processes' wake-ups to ``wake`` (idempotent)."""

    def publish(self, channel: Channel) -> None:
        """Wake the other processes' waiters on ``channel``; never raises."""

    def listening(self, timeout_s: float) -> bool:
        """Whether other processes' wake-ups reach this one now (waits up to ``timeout_s``
        for a listener being set up)."""

    def close(self) -> None: ...


class ThisProcessOnly:
    def listen(self, wake: Wake) -> None:
        pass

    def listening(self, timeout_s: float) -> bool:
        return False

    def publish(self, channel: Channel) -> None:
        pass

    def close(self) -> None:
        pass


class _Listener:
    """One daemon thread, started once, that stops when ``close`` is called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def _start(self, target: Callable[[], None], name: str) -> bool:
        with self._lock:
            if self._thread is not None or self._closed.is_set():
                return False
            self._thread = threading.Thread(target=target, name=name, daemon=True)
            self._thread.start()
            return True


class PostgresNotify(_Listener):
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        # psycopg's own URL form: SQLAlchemy's driver suffix dropped, password kept.
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._listening = threading.Event()  # LISTEN is in effect on the connection

    def listen(self, wake: Wake) -> None:
        self._start(lambda: self._run(wake), "data-sandbox-listen")

    def _run(self, wake: Wake) -> None:
        first = True
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True,
                                     connect_timeout=5) as conn:
                    for name in PG_CHANNELS.values():
                        conn.execute(f"LISTEN {name}")
                    self._listening.set()
                    if not first:  # what was sent while we were away is lost: look again
                        for channel in Channel:
                            wake(channel)
                    first = False
                    by_name = {v: k for k, v in PG_CHANNELS.items()}
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=LISTEN_TICK_S):
                            if (woken := by_name.get(note.channel)) is not None:
                                wake(woken)
            except psycopg.Error as e:
                self._listening.clear()
                if self._closed.is_set():
                    return
                log.warning("wake-up listener lost its connection: %s", type(e).__name__)
            self._closed.wait(RECONNECT_S)

    def listening(self, timeout_s: float) -> bool:
        return self._listening.wait(timeout_s)

    def publish(self, channel: Channel) -> None:
        try:
            # Autocommit: a notification of its own, not a write transaction.
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") \
                    as conn:
                conn.execute(text("SELECT pg_notify(:channel, '')"),
                             {"channel": PG_CHANNELS[channel]})
        except SQLAlchemyError as e:  # the commit stands; waiters find it by probing
            log.info("wake-up not sent: %s", type(e).__name__)

    def close(self) -> None:
        self._closed.set()


class HostSockets(_Listener):
    """Datagram sockets in ``directory``: one per listening process."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def listen(self, wake: Wake) -> None:
        with self._lock:
            if self._sock is not None or self._closed.is_set():
                return
            if not _private_directory(self.directory):
                self._closed.set()
                return
            path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.settimeout(LISTEN_TICK_S)
            self._sock, self._path = sock, path
        self._start(lambda: self._run(sock, wake), "data-sandbox-listen")

    def listening(self, timeout_s: float) -> bool:
        return self._sock is not None and not self._closed.is_set()  # bound in listen()

    def _run(self, sock: socket.socket, wake: Wake) -> None:
        names = {c.value.encode(): c for c in Channel}
        while not self._closed.is_set():
            try:
                data = sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if (channel := names.get(data)) is not None:
                wake(channel)

    def publish(self, channel: Channel) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        message = channel.value.encode()
        for entry in entries:
            if not entry.name.endswith(".sock") or Path(entry.path) == self._path:
                continue
            try:
                self._sender.sendto(message, entry.path)
            except ConnectionRefusedError:  # nobody reads it any more: its process is gone
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:  # a full buffer (that process is already woken), a race
                pass

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            if self._sock is not None:
                self._sock.close()
            if self._path is not None:
                with contextlib.suppress(OSError):
                    self._path.unlink()
                with contextlib.suppress(OSError):  # the last process out removes it
                    self.directory.rmdir()
        self._sender.close()


def _private_directory(path: Path) -> bool:
    """``path`` exists as a directory of this user that no one else may write to."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        log.warning("wake-ups only within this process: %s", type(e).__name__)
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("wake-ups only within this process: the socket directory is not private")
        return False
    return True


def socket_directory(database_file: Path) -> Path:
    """Short enough for a socket path (108 bytes) wherever the database lives."""
    digest = hashlib.sha256(str(database_file.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"data-sandbox-wake-{os.getuid()}-{digest}"


def for_engine(engine: Engine) -> Wakeup:
    url = make_url(engine.url)
    if url.get_backend_name() == "postgresql":
        return PostgresNotify(engine)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") \
            and not database.startswith("file:"):
        return HostSockets(socket_directory(Path(database)))
    return ThisProcessOnly()
