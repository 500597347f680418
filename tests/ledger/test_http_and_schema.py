from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session, sessionmaker

from ledger import api_payloads as api
from ledger.checkpoint import CheckpointSigner
from ledger.checkpointer import sign_checkpoint
from ledger.db import make_engine
from ledger.log import TransparencyLog
from ledger.store import LedgerBase
from ledger.verify_cli import main
from tests.ledger.helpers import fill_realistic

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "regulator-secret"


def serve_payloads(log: TransparencyLog, factory: sessionmaker[Session]) -> ThreadingHTTPServer:
    """A stand-in for the controller's regulator endpoints, built on our payloads."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, b"unauthorized", "text/plain")
                return
            url = urllib.parse.urlparse(self.path)
            q = {k: int(v[0]) for k, v in urllib.parse.parse_qs(url.query).items()}
            with factory() as s:
                if url.path.endswith("/checkpoint"):
                    self._send(200, api.checkpoint_text(log, s).encode(), "text/plain")
                    return
                if url.path.endswith("/entries"):
                    body = api.entries_page(log, s, q["start"], q["end"])
                else:
                    body = api.consistency_payload(log, s, q["old"], q["new"])
            self._send(200, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def http_log(factory: sessionmaker[Session], tlog: TransparencyLog) -> Iterator[str]:
    fill_realistic(factory, tlog, 2500)
    with factory() as s:
        sign_checkpoint(tlog, s)
        s.commit()
    server = serve_payloads(tlog, factory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cli_over_http(http_log: str, signer: CheckpointSigner, tmp_path: Path,
                       factory: sessionmaker[Session], tlog: TransparencyLog,
                       capsys: pytest.CaptureFixture[str]) -> None:
    key = signer.vkey()
    state = tmp_path / "state"
    assert main(["audit", "--url", http_log, "--token", TOKEN, "--log-key", key,
                 "--state", str(state)]) == 0
    assert "audited 2500 entries" in capsys.readouterr().out
    fill_realistic(factory, tlog, 10)
    with factory() as s:
        sign_checkpoint(tlog, s)
        s.commit()
    assert main(["checkpoint", "--url", http_log, "--token", TOKEN, "--log-key", key,
                 "--state", str(state)]) == 0
    assert "size 2510" in capsys.readouterr().out
    assert main(["checkpoint", "--url", http_log, "--token", "wrong", "--log-key", key,
                 "--state", str(state)]) == 2
    assert main(["audit", "--url", "http://127.0.0.1:9", "--log-key", key]) == 2


def test_cli_module_runs_standalone(tmp_path: Path, signer: CheckpointSigner,
                                    factory: sessionmaker[Session], tlog: TransparencyLog) -> None:
    fill_realistic(factory, tlog, 3)
    with factory() as s:
        sign_checkpoint(tlog, s)
        s.commit()
        receipt = api.receipt_payload(tlog, s, 1)
    r = tmp_path / "r.json"
    r.write_text(json.dumps(receipt))
    out = subprocess.run([sys.executable, "-m", "ledger.verify_cli", "receipt", str(r),
                          "--log-key", signer.vkey()], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "OK: receipt verified: entry 1" in out.stdout


def test_verifier_side_needs_no_sqlalchemy() -> None:
    code = ("import sys, ledger.verify_cli, ledger.receipt, ledger.merkle, ledger.audit, "
            "ledger.witness, ledger.cosignature; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'flask')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_migration_matches_models(tmp_path: Path) -> None:
    path = ROOT / "sandbox/migrations/versions/0001_ledger.py"
    spec = importlib.util.spec_from_file_location("mig_0001_ledger", path)
    assert spec is not None and spec.loader is not None
    mig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mig)
    assert (mig.revision, mig.down_revision) == ("0001_ledger", None)
    eng = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with eng.begin() as conn:
        ctx = MigrationContext.configure(conn)
        with Operations.context(ctx):
            mig.upgrade()
        assert compare_metadata(MigrationContext.configure(conn), LedgerBase.metadata) == []
        with Operations.context(ctx):
            mig.downgrade()
    eng.dispose()
