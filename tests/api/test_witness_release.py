"""With a witness quorum configured, results leave only under a cosigned checkpoint."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ledger.note import ALG_COSIGNATURE_V1, generate_signer, parse_vkey
from ledger.receipt import verify_receipt
from ledger.witness import Witness, make_server
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from tests.api.helpers import SCRIPT, permit_for
from tests.conftest import Actor

CONTENT = b"age_band,n\n0-17,12\n"


class RunningWitness:
    def __init__(self, name: str, log_vkey: str, state: Path) -> None:
        self.signer = generate_signer(name, ALG_COSIGNATURE_V1)
        self.server = make_server(Witness(self.signer, [parse_vkey(log_vkey)], state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def witnessed(database_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    probe = create_app({"DATABASE_URL": database_url, "LOG_KEY_FILE": str(tmp_path / "k"),
                        "START_CHECKPOINTER": False})
    vkey = probe.extensions["sandbox"].signer.vkey()
    db.dispose(probe)
    ws = [RunningWitness(f"witness.test/w{i}", vkey, tmp_path / f"w{i}.json") for i in range(2)]
    app: Flask = create_app({
        "TESTING": True, "DATABASE_URL": database_url, "LOG_KEY_FILE": str(tmp_path / "k"),
        "START_CHECKPOINTER": False, "SCHEMA_CHECK_WAIT_S": 0.0, "AGENT_POLL_WAIT_S": 0.0,
        "WITNESSES": [{"url": w.url, "vkey": w.signer.verifier.vkey()} for w in ws],
        "WITNESS_QUORUM": 2,
    })
    yield {"app": app, "witnesses": ws, "log_vkey": vkey}
    for w in ws:
        w.stop()
    db.dispose(app)


def released_job(client: Any, admin: Actor) -> tuple[Actor, str]:
    def party(role: str, code: str | None = None) -> Actor:
        body = {"name": role, "role": role, **({"code": code} if code else {})}
        r = admin.post("/parties", body)
        return Actor(client, r.json["id"], r.json["token"], role)

    provider, requester = party("provider", f"P{uuid.uuid4().hex[:8]}"), party("requester")
    r = admin.post("/agents", {"name": "a", "providers": [provider.id]})
    agent = Actor(client, r.json["id"], r.json["token"], "agent")
    ds, permit_id = permit_for(requester, provider, agent)
    job_id = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                      "script": SCRIPT}).json["id"]
    agent.post("/agent/tasks/next")
    r = agent.post(f"/agent/jobs/{job_id}/result", {
        "state": "released", "rows_read": 100, "bytes_read": 10, "input_sha256": "a" * 64,
        "runner_image": "img", "outputs": [{
            "name": "t.csv", "sha256": hashlib.sha256(CONTENT).hexdigest(),
            "bytes": len(CONTENT), "decision": "released",
            "content_b64": base64.b64encode(CONTENT).decode()}]})
    assert r.status_code == 200, r.json
    return requester, job_id


def test_release_waits_for_the_witness_quorum(witnessed: dict[str, Any]) -> None:
    app = witnessed["app"]
    client = app.test_client()
    issued = create_first_admin(app, "operator")
    admin = Actor(client, issued.id, issued.token, "admin")
    requester, job_id = released_job(client, admin)

    assert requester.get(f"/jobs/{job_id}/outputs/t.csv").data == CONTENT
    receipt = requester.get(f"/jobs/{job_id}/receipt").json
    keys = [w.signer.verifier.vkey() for w in witnessed["witnesses"]]
    entry = verify_receipt(receipt, witnessed["log_vkey"], keys, 2)
    assert entry["kind"] == "run.finished" and entry["body"]["job_id"] == job_id

    witnessed["witnesses"][1].stop()
    requester2, job2 = released_job(client, admin)
    r = requester2.get(f"/jobs/{job2}/outputs/t.csv")
    assert r.status_code == 503 and r.json["error"] == "awaiting_witnesses"
    # Withheld, not lost: the job is still released and its result still stored.
    assert requester2.get(f"/jobs/{job2}").json["state"] == "released"
