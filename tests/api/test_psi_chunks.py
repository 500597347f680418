"""A PSI message larger than one request travels in chunks: the agent's own client
(containers/controller_client.py) over real HTTP to the controller app, and the relay's
rules for chunks (authz/psi_relay.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from authz.wire import PSI_CHUNK_BYTES, RunTask
from containers.controller_client import ControllerClient
from tests.api.test_psi_jobs import submit, world
from tests.conftest import Actor


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def lease(w: dict[str, Any], name: str) -> RunTask:
    return RunTask.model_validate(
        w["sides"][name]["agent"].post("/agent/tasks/next").json["task"])


def test_a_message_of_several_chunks_arrives_whole_over_http(
        served: str, make_party: Any, admin: Actor) -> None:
    w = world(make_party, admin)
    joint = submit(w)
    assert joint.status_code == 201, joint.json
    tax, social = lease(w, "tax"), lease(w, "social")
    sender = ControllerClient(served, w["sides"]["tax"]["agent"].token, 30.0)
    reader = ControllerClient(served, w["sides"]["social"]["agent"].token, 30.0)
    data = os.urandom(2 * PSI_CHUNK_BYTES + 1000)  # three chunks, the last one short
    assert reader.psi_get(social.job_id, "request") is None
    sender.psi_post(tax.job_id, "request", data)
    assert reader.psi_get(social.job_id, "request") == data
    # Recorded once, as one message: its whole size and digest.
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    sent = [e["body"] for e in entries if e["kind"] == "psi.message"]
    assert [(p["message"], p["bytes"], p["sha256"]) for p in sent] == [
        ("request", len(data), hashlib.sha256(data).hexdigest())]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_chunk_rules(make_party: Any, admin: Actor) -> None:
    w = world(make_party, admin)
    assert submit(w).status_code == 201
    tax, social = lease(w, "tax"), lease(w, "social")
    agent, peer = w["sides"]["tax"]["agent"], w["sides"]["social"]["agent"]
    url = f"/agent/jobs/{tax.job_id}/psi/request"
    peer_url = f"/agent/jobs/{social.job_id}/psi/request"

    def post(body: dict[str, Any]) -> Any:
        return agent.post(url, body)

    for body, field in (({"data_b64": b64(b"a"), "chunk": 2, "chunks": 2}, "chunk"),
                        ({"data_b64": b64(b"a"), "chunks": 0}, "chunks"),
                        ({"data_b64": b64(b"a"), "chunks": 65}, "chunks"),
                        ({"data_b64": b64(b"a"), "chunk": -1, "chunks": 2}, "chunk"),
                        ({"data_b64": "", "chunks": 2}, "data_b64"),
                        ({"data_b64": "!!", "chunks": 2}, "data_b64"),
                        ({"data_b64": b64(b"a"), "chunks": 2, "extra": 1}, "extra")):
        r = post(body)
        assert r.status_code == 400 and r.json["field"] == field, (body, r.json)
    over = b64(bytes(PSI_CHUNK_BYTES + 1))
    r = post({"data_b64": over, "chunks": 2})
    assert r.status_code == 400 and r.json["field"] == "data_b64"
    assert post({"data_b64": b64(b"second"), "chunk": 1, "chunks": 3}).status_code == 200
    # The same chunk again is a retry; other content for it, or another count, is refused.
    assert post({"data_b64": b64(b"second"), "chunk": 1, "chunks": 3}).status_code == 200
    assert post({"data_b64": b64(b"other"), "chunk": 1, "chunks": 3}).status_code == 409
    assert post({"data_b64": b64(b"first"), "chunk": 0, "chunks": 2}).status_code == 409
    assert peer.get(peer_url).json == {"ready": False, "chunks": None, "data_b64": None}
    assert post({"data_b64": b64(b"first"), "chunk": 0, "chunks": 3}).status_code == 200
    assert peer.get(peer_url).json["ready"] is False  # two of three chunks
    assert post({"data_b64": b64(b"third"), "chunk": 2, "chunks": 3}).status_code == 200
    got = [peer.get(f"{peer_url}?chunk={i}").json for i in range(3)]
    assert [g["chunks"] for g in got] == [3, 3, 3]
    assert b"".join(base64.b64decode(g["data_b64"]) for g in got) == b"firstsecondthird"
    for bad in ("3", "-1", "x", "٣"):
        r = peer.get(f"{peer_url}?chunk={bad}")
        assert r.status_code == 400 and r.json["field"] == "chunk", (bad, r.json)
    assert agent.get(url).status_code == 403  # the sender does not read its own message
