from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Actor


def test_missing_token_is_401(client: Any) -> None:
    r = client.get("/api/v1/datasets")
    assert r.status_code == 401
    assert r.json["error"] == "unauthenticated"


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer pty_0000.wrong", "Basic abc",
                                    "Bearer " + "x" * 300])
def test_bad_tokens_are_401(client: Any, admin: Actor, header: str) -> None:
    r = client.get("/api/v1/me", headers={"Authorization": header})
    assert r.status_code == 401


def test_wrong_secret_for_real_id_is_401(admin: Actor) -> None:
    forged = Actor(admin.client, admin.id, admin.id + ".not-the-secret", "admin")
    assert forged.get("/me").status_code == 401


def test_token_is_stored_only_as_hash(app: Any, admin: Actor) -> None:
    from authz.models import Party

    with app.extensions["sandbox"].sessions() as s:
        row = s.get(Party, admin.id)
        assert row is not None
        secret = admin.token.split(".", 1)[1]
        assert secret not in row.token_hash and len(row.token_hash) == 64


def test_role_is_enforced(make_party: Any) -> None:
    requester = make_party("requester")
    r = requester.post("/parties", {"name": "x", "role": "admin"})
    assert r.status_code == 403
    assert r.json["error"] == "forbidden"


def test_agent_token_cannot_use_party_api(make_party: Any, make_agent: Any) -> None:
    agent = make_agent(make_party("provider"))
    assert agent.get("/datasets").status_code == 403
    assert agent.post("/agent/tasks/next").status_code == 200


def test_party_token_cannot_use_agent_api(make_party: Any) -> None:
    provider = make_party("provider")
    assert provider.post("/agent/tasks/next").status_code == 403


def test_provider_needs_code(admin: Actor) -> None:
    r = admin.post("/parties", {"name": "Hospital", "role": "provider"})
    assert r.status_code == 400
    assert r.json["field"] == "code"


def test_rotated_token_replaces_the_old(make_party: Any) -> None:
    requester = make_party("requester")
    r = requester.post("/me/rotate-token")
    assert r.status_code == 200
    assert requester.get("/me").status_code == 401
    fresh = Actor(requester.client, requester.id, r.json["token"], "requester")
    assert fresh.get("/me").json["id"] == requester.id


def test_deactivated_party_is_locked_out(admin: Actor, make_party: Any) -> None:
    requester = make_party("requester")
    assert admin.post(f"/parties/{requester.id}/deactivate").json["active"] is False
    assert requester.get("/me").status_code == 401
    assert admin.post(f"/parties/{admin.id}/deactivate").status_code == 409
    assert requester.post(f"/parties/{admin.id}/deactivate").status_code == 401


def test_deactivated_agent_is_locked_out(admin: Actor, make_party: Any,
                                         make_agent: Any) -> None:
    agent = make_agent(make_party("provider"))
    assert agent.post("/agent/tasks/next").status_code == 200
    assert admin.post(f"/agents/{agent.id}/deactivate").json["active"] is False
    assert agent.post("/agent/tasks/next").status_code == 401


def test_agent_learns_which_providers_it_serves(make_party: Any, make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    assert agent.get("/agent/me").json["providers"] == sorted([a.id, b.id])
