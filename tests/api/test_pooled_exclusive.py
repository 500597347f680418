"""A requester's pooled (joint, PSI) permit shares no dataset with their other permits
(authz/exclusive.py; red team R9: a joint total less the requester's statistics-route
totals of the other providers is one provider's own)."""

from __future__ import annotations

from typing import Any

import pytest

from authz import exclusive
from tests.api.helpers import approval, register
from tests.conftest import Actor


def hospitals(make_party: Any, admin: Actor, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        p = make_party("provider")
        r = admin.post("/agents", {"name": f"x{i}", "providers": [p.id]})
        agent = Actor(admin.client, r.json["id"], r.json["token"], "agent")
        out.append({"provider": p, "ds": register(p, agent)})
    return out


def ask(requester: Actor, kind: str, hs: list[dict[str, Any]]) -> Any:
    return requester.post("/requests", {
        "purpose": "Cost statistics for a pricing review.", "use_kind": kind,
        "business_system": "pricing", "items": [{"dataset_id": h["ds"]["id"],
                                                 "columns": ["age", "cost"]} for h in hs]})


def grant(requester: Actor, kind: str, hs: list[dict[str, Any]]) -> str:
    r = ask(requester, kind, hs)
    assert r.status_code == 201, r.json
    for h in hs:
        got = h["provider"].post(f"/requests/{r.json['id']}/items/{h['ds']['id']}/approve",
                                 approval())
        assert got.status_code == 200, got.json
    permit: str = got.json["permit_id"]
    return permit


def refused(r: Any) -> None:
    assert r.status_code == 409, r.json
    assert r.json["error"] == "policy_violation"
    assert "pooled" in r.json["message"]


def test_a_joint_request_over_a_dataset_of_a_statistics_permit_is_refused(
        make_party: Any, admin: Actor) -> None:
    hs = hospitals(make_party, admin, 3)
    requester = make_party("requester")
    grant(requester, "statistics", [hs[1]])  # B's own figures (R9-1)
    before = len(requester.get("/requests").json["requests"])
    refused(ask(requester, "joint_statistics", hs))
    assert len(requester.get("/requests").json["requests"]) == before  # nothing half-made
    # Another requester, with no permit on B, may pool the three.
    grant(make_party("requester"), "joint_statistics", hs)


def test_a_statistics_request_under_a_joint_permit_is_refused(make_party: Any,
                                                              admin: Actor) -> None:
    hs = hospitals(make_party, admin, 4)
    requester = make_party("requester")
    grant(requester, "joint_statistics", hs[:3])
    refused(ask(requester, "statistics", [hs[2]]))
    refused(ask(requester, "joint_statistics", hs))  # A+B+C+D less A+B+C is D (R9-1b)
    refused(ask(requester, "verification", hs[:2]))
    # The same pool again is one pool; a dataset outside it is free.
    grant(requester, "joint_statistics", hs[:3])
    grant(requester, "statistics", [hs[3]])


def test_a_psi_request_over_the_registers_statistics_permit_is_refused(
        make_party: Any, admin: Actor) -> None:
    hs = hospitals(make_party, admin, 2)
    requester = make_party("requester")
    grant(requester, "statistics", [hs[1]])  # the register's own table (R9-2)
    refused(ask(requester, "verification", hs))


def test_a_pending_request_counts(make_party: Any, admin: Actor) -> None:
    hs = hospitals(make_party, admin, 3)
    requester = make_party("requester")
    assert ask(requester, "statistics", [hs[0]]).status_code == 201  # not yet decided
    refused(ask(requester, "joint_statistics", hs))


def test_a_permit_revoked_unused_no_longer_counts(make_party: Any, admin: Actor) -> None:
    hs = hospitals(make_party, admin, 3)
    requester = make_party("requester")
    permit = grant(requester, "statistics", [hs[0]])
    r = hs[0]["provider"].post(f"/permits/{permit}/revoke", {"reason": "asked for by mistake"})
    assert r.status_code == 200, r.json
    grant(requester, "joint_statistics", hs)


def test_a_job_under_permits_that_clash_is_refused(make_party: Any, admin: Actor,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Permits issued before the rule (or at once from two requests): the job is refused."""
    hs = hospitals(make_party, admin, 3)
    requester = make_party("requester")
    with monkeypatch.context() as m:
        m.setattr(exclusive, "check_request", lambda ctx, request: None)
        grant(requester, "joint_statistics", hs)
        permit = grant(requester, "statistics", [hs[0]])
    r = requester.post("/jobs", {"permit_id": permit, "dataset_ids": [hs[0]["ds"]["id"]],
                                 "statistics": {"analyses": [{
                                     "kind": "magnitude", "dims": [], "value": "cost",
                                     "statistics": ["sum"]}]}})
    refused(r)
