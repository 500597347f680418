"""Incident controls over an agent: its token rotated, its signing key replaced.

A replaced key still verifies the joint-statistics parts the agent reported while it was
current, and nothing reported after; every step lands in the ledger.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute.protocol import requester_keygen
from tests.api.test_joint import play_agents, submit, world
from tests.conftest import Actor


@pytest.fixture(scope="module")
def keys() -> Any:
    return requester_keygen()


def ledger_kinds(admin: Actor) -> list[str]:
    page = admin.get("/ledger/entries?start=0&end=1000").json
    return [base64.b64decode(e["data"]).decode() for e in page["entries"]]


def test_rotated_agent_token_replaces_the_old_one(admin: Actor, make_party: Any,
                                                   make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    assert agent.get("/agent/me").status_code == 200
    assert provider.post(f"/agents/{agent.id}/rotate-token").status_code == 403
    r = admin.post(f"/agents/{agent.id}/rotate-token")
    assert r.status_code == 200 and r.json["id"] == agent.id
    assert agent.get("/agent/me").status_code == 401
    fresh = Actor(admin.client, agent.id, r.json["token"], "agent")
    assert fresh.get("/agent/me").json["id"] == agent.id
    assert any("agent.token_rotated" in e and agent.id in e for e in ledger_kinds(admin))
    assert admin.post("/agents/agt_0000000000000000/rotate-token").status_code == 404


def test_replaced_key_verifies_what_it_signed_before_and_nothing_after(
        admin: Actor, make_party: Any, keys: Any) -> None:
    w = world(make_party, admin, 3)
    first = w["hospitals"][0]
    old_key = first["key"]
    joint_before = submit(w, keys).json["id"]
    assert all(r.status_code == 200 for r in play_agents(w["hospitals"]))
    new_key = Ed25519PrivateKey.generate()
    new_hex = new_key.public_key().public_bytes_raw().hex()
    r = admin.post(f"/agents/{first['agent'].id}/signing-key",
                   {"public_key": new_hex, "reason": "host reinstalled"})
    assert r.status_code == 200 and r.json["public_key"] == new_hex
    # What the old key signed while it was current still stands.
    done = w["requester"].get(f"/joint-jobs/{joint_before}").json
    assert done["state"] == "combined", done["reason"]

    # After the replacement, the old key signs nothing that verifies.
    first["key"] = new_key
    joint_after = submit(w, keys).json["id"]
    play_agents(w["hospitals"], forged={0: old_key})
    failed = w["requester"].get(f"/joint-jobs/{joint_after}").json
    assert failed["state"] == "failed" and "signature" in failed["reason"].lower()

    # With the new key it does.
    joint_new = submit(w, keys).json["id"]
    play_agents(w["hospitals"])
    assert w["requester"].get(f"/joint-jobs/{joint_new}").json["state"] == "combined"

    history = admin.get(f"/agents/{first['agent'].id}/signing-keys").json["keys"]
    assert [k["public_key"] for k in history][-1] == new_hex and len(history) == 2
    assert history[0]["retired_at"] == history[1]["valid_from"]
    assert history[0]["reason"] == "host reinstalled"
    assert any("agent.key_replaced" in e and new_hex in e for e in ledger_kinds(admin))
    # A key once used is never taken back.
    again = admin.post(f"/agents/{first['agent'].id}/signing-key",
                       {"public_key": history[0]["public_key"], "reason": "undo"})
    assert again.status_code == 409
