from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger.checkpoint import CheckpointSigner
from ledger.db import make_engine, make_session_factory
from ledger.log import TransparencyLog
from ledger.note import generate_signer
from ledger.store import LedgerBase

ORIGIN = "sandbox.test/ledger"


@pytest.fixture(scope="session")
def signer() -> CheckpointSigner:
    return CheckpointSigner(generate_signer(ORIGIN))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    LedgerBase.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def tlog(signer: CheckpointSigner) -> TransparencyLog:
    return TransparencyLog(ORIGIN, signer)


def fill(factory: sessionmaker[Session], log: TransparencyLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with factory() as s:
            log.append(s, "test.event", f"party:{i % 3}", {"i": i, "note": "x" * (i % 5)})
            s.commit()
