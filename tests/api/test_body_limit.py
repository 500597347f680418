"""MAX_CONTENT_LENGTH holds for every request, including views that never read their body."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.api.helpers import SCRIPT, permit_for
from tests.conftest import Actor

OVER = 40 << 20  # bytes; the default limit is 32 MiB


@pytest.fixture
def queued(make_party: Any, make_agent: Any) -> dict[str, Any]:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                   "script": SCRIPT}).json
    return {"provider": provider, "requester": requester, "agent": agent, "job": job}


def _post_big(actor: Actor, path: str) -> Any:
    return actor.client.post(f"/api/v1{path}", data=b"x" * OVER,
                             headers={"Authorization": f"Bearer {actor.token}"},
                             content_type="application/json")


def test_oversized_bodies_to_views_ignoring_them_are_413(queued: dict[str, Any],
                                                         admin: Actor) -> None:
    job_id = queued["job"]["id"]
    for actor, path in ((queued["agent"], "/agent/tasks/next"),
                        (queued["requester"], f"/jobs/{job_id}/cancel"),
                        (queued["agent"], f"/agent/jobs/{job_id}/started"),
                        (admin, f"/parties/{queued['requester'].id}/deactivate")):
        r = _post_big(actor, path)
        assert r.status_code == 413 and r.is_json, (path, r.status_code)
        assert r.json["error"] == "request_entity_too_large"
    # None of the views ran: the job is still queued, not leased, and the party active.
    assert queued["requester"].get(f"/jobs/{job_id}").json["state"] == "queued"
    assert queued["requester"].get("/me").status_code == 200


def test_oversized_body_is_413_before_authentication(client: Any) -> None:
    r = client.post("/api/v1/agent/tasks/next", data=b"x" * OVER)
    assert r.status_code == 413 and r.json["error"] == "request_entity_too_large"


@pytest.fixture
def server(app: Flask) -> Iterator[tuple[str, int]]:
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", srv.server_port
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def _chunked(addr: tuple[str, int], path: str, token: str, size: int,
             body: bytes | None = None) -> bytes:
    """POST ``size`` bytes with chunked transfer encoding (no length) and read the answer."""
    body = b"x" * size if body is None else body
    assert len(body) == size
    head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                      for i in range(0, size, 4096))
    with socket.create_connection(addr, timeout=60) as s:
        # One send, then the end of the request: the server reads what it wants and drains
        # the rest until the end, so the answer is never lost to a reset connection.
        s.sendall(head + chunks + b"0\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while data := s.recv(65536):
            out += data
    return out


def test_oversized_chunked_body_is_413(server: tuple[str, int], make_party: Any,
                                       make_agent: Any) -> None:
    agent = make_agent(make_party("provider"))
    for size in (64 * 1024 + 1, 80 * 1024):
        answer = _chunked(server, "/api/v1/agent/tasks/next", agent.token, size)
        assert answer.startswith(b"HTTP/1.1 413"), (size, answer[:200])
        assert b'"error":"request_entity_too_large"' in answer.replace(b" ", b"")
    # At the limit exactly, the body is accepted.
    answer = _chunked(server, "/api/v1/agent/tasks/next", agent.token, 64 * 1024)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_chunked_body_at_the_limit_reaches_the_view_whole(server: tuple[str, int],
                                                          admin: Actor) -> None:
    # Padded to the limit exactly: a view must see all of it, not a prefix cut at the limit.
    body = b'{"name": "whole", "role": "requester"}'
    answer = _chunked(server, "/api/v1/parties", admin.token, 64 * 1024,
                      body + b" " * (64 * 1024 - len(body)))
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    # One byte more is refused, not cut to a prefix that still parses.
    answer = _chunked(server, "/api/v1/parties", admin.token, 64 * 1024 + 1,
                      body + b" " * (64 * 1024 + 1 - len(body)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
