"""Wake-ups across controller processes (sandbox.wakeup): a commit served by one process
ends the long polls another process holds, on both databases.

Two apps over one database stand for two workers: each has its own signals and its own
listener (a LISTEN connection, or a socket), exactly as two processes would. A wait that
is not woken ends at its timeout with the generation unchanged, which the tests tell apart
from a wake-up without timing anything."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from sandbox import create_app, db, wakeup
from sandbox.waiting import WorkSignal

WAIT_S = 20.0  # only reached when the wake-up is lost (the test then fails)


@pytest.fixture
def worker_b(app: Flask, database_url: str, tmp_path: Path) -> Iterator[Flask]:
    other = create_app({"TESTING": True, "DATABASE_URL": database_url,
                        "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False})
    yield other
    db.dispose(other)


def woken(signal: WorkSignal, seen: int) -> bool:
    signal.wait(WAIT_S, seen)
    return signal.generation() != seen


def test_a_commit_in_one_process_wakes_the_long_polls_of_another(
        app: Flask, worker_b: Flask) -> None:
    a, b = db.services(app), db.services(worker_b)
    for channel in (wakeup.Channel.WORK, wakeup.Channel.JOINT):
        waiting = b.signals.work if channel is wakeup.Channel.WORK else b.signals.joint
        other = b.signals.joint if channel is wakeup.Channel.WORK else b.signals.work
        seen, other_seen = waiting.generation(), other.generation()  # b listens from here
        assert b.signals.listening(WAIT_S)
        (a.signals.work if channel is wakeup.Channel.WORK else a.signals.joint).notify()
        assert woken(waiting, seen)
        assert other.generation() == other_seen  # channels stay apart


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_lost_listen_connection_is_reopened(app: Flask, worker_b: Flask) -> None:
    """The listener's backend is terminated (a restart, a failover): it reconnects, wakes
    every waiter once (what was sent meanwhile is lost), and hears later commits."""
    b = db.services(worker_b).signals.work
    seen = b.generation()
    assert db.services(worker_b).signals.listening(WAIT_S)
    db.services(app).signals.work.notify()
    assert woken(b, seen)
    with db.services(app).engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()")).scalar_one()
        conn.commit()
    assert killed >= 1
    assert woken(b, seen)  # the reconnection's own wake-up, once LISTEN is back
    assert db.services(worker_b).signals.listening(WAIT_S)
    seen = b.generation()
    db.services(app).signals.work.notify()
    assert woken(b, seen)  # a commit elsewhere is heard again


def test_a_socket_whose_process_is_gone_is_removed(tmp_path: Path) -> None:
    hub = wakeup.HostSockets(tmp_path / "wake")
    hub.listen(lambda _c: None)
    gone = tmp_path / "wake" / "1-dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(gone))
    s.close()  # its file stays, nobody reads it
    hub.publish(wakeup.Channel.WORK)
    assert not gone.exists()
    hub.close()
    assert not (tmp_path / "wake").exists()  # its own socket is gone too, and the directory


def test_a_directory_others_may_write_to_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "wake"
    shared.mkdir()
    os.chmod(shared, 0o777)
    hub = wakeup.HostSockets(shared)
    hub.listen(lambda _c: None)  # falls back to this process only
    assert list(shared.iterdir()) == []
    hub.publish(wakeup.Channel.WORK)  # and publishing does not fail
    hub.close()


def test_an_in_memory_database_wakes_this_process_only() -> None:
    from sqlalchemy import create_engine
    assert isinstance(wakeup.for_engine(create_engine("sqlite://")), wakeup.ThisProcessOnly)
