"""Text no database can store alike (NUL, unpaired surrogates) is a 400 on every backend.

PostgreSQL refuses NUL in text and nothing encodes an unpaired surrogate as UTF-8, while
SQLite would store NUL as given: each case runs on both databases (``database_url``) and
must give the same 400 naming the field, then accept the same body without the character
(nothing was half-written and the connection still serves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from authz.validate import CONTROL_RULE, UNSTORABLE_RULE, storable
from compute.errors import InvalidInput
from tests.api.helpers import SCRIPT, dataset_body, permit_for, request_access
from tests.api.test_joint import SPEC
from tests.conftest import Actor

BAD = ("\x00", "\ud800", "\udfff")


@pytest.mark.parametrize("bad", BAD, ids=["nul", "surrogate-high", "surrogate-low"])
@pytest.mark.parametrize("text", ["A" * 200_000, "é" * 200_000], ids=["ascii", "latin"])
def test_unstorable_character_is_found_in_long_ascii_and_other_text(text: str, bad: str
                                                                     ) -> None:
    """The ASCII fast path (a NUL scan) and the general one refuse the same characters,
    wherever they sit in a long value (a joint part's report carries 1.2 MB of base64)."""
    assert storable({"outputs": [{"content_b64": text}]})
    for at in (0, len(text) // 2, len(text)):
        with pytest.raises(InvalidInput) as e:
            storable({"outputs": [{"content_b64": text[:at] + bad + text[at:]}]})
        assert (e.value.field, e.value.rule) == ("outputs[0].content_b64", UNSTORABLE_RULE)


@dataclass
class World:
    admin: Actor
    provider: Actor
    requester: Actor
    agent: Actor
    ds: dict[str, Any]
    permit_id: str


@pytest.fixture
def world(admin: Actor, make_party: Any, make_agent: Any) -> World:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    return World(admin, provider, requester, agent, ds, permit_id)


# Each case sends one request with ``x`` inside one field; ``x == ""`` is the valid body.
Case = Callable[[World, str], Any]


def _party(w: World, x: str) -> Any:
    return w.admin.post("/parties", {"name": f"ab{x}", "role": "requester"})


def _agent(w: World, x: str) -> Any:
    return w.admin.post("/agents", {"name": f"agent{x}", "providers": [w.provider.id]})


def _dataset(field: str) -> Case:
    def call(w: World, x: str) -> Any:
        body = dataset_body()
        body[field] = body[field][:3] + x + body[field][3:]
        return w.provider.post("/datasets", body)

    return call


def _business_system(w: World, x: str) -> Any:
    return w.requester.post("/requests", {
        "purpose": "Average treatment cost by age band.", "use_kind": "statistics",
        "business_system": f"pricing{x}",
        "items": [{"dataset_id": w.ds["id"], "columns": ["age"]}]})


def _revoke_reason(w: World, x: str) -> Any:
    return w.provider.post(f"/permits/{w.permit_id}/revoke", {"reason": f"no longer{x} needed"})


def _job_permit(w: World, x: str) -> Any:
    return w.requester.post("/jobs", {"permit_id": f"{w.permit_id}{x}",
                                      "dataset_ids": [w.ds["id"]], "script": SCRIPT})


def _job_script(w: World, x: str) -> Any:
    return w.requester.post("/jobs", {"permit_id": w.permit_id, "dataset_ids": [w.ds["id"]],
                                      "script": f"{SCRIPT}# {x}\n"})


def _joint_permit(w: World, x: str) -> Any:
    # A statistics permit: the valid body gets past validation to the policy check (409).
    return w.requester.post("/joint-jobs", {
        "permit_id": f"{w.permit_id}{x}", "dataset_ids": [w.ds["id"]], "spec": SPEC,
        "public_context_b64": "AAAA", "context_fingerprint": "0" * 64})


def _joint_spec(w: World, x: str) -> Any:
    # ``spec`` is passed through unparsed by the body spec: the whole-body check covers it.
    return w.requester.post("/joint-jobs", {
        "permit_id": w.permit_id, "dataset_ids": [w.ds["id"]],
        "spec": {**SPEC, "columns": ["age", f"cost{x}"]},
        "public_context_b64": "AAAA", "context_fingerprint": "0" * 64})


def _request_item(w: World, x: str) -> Any:
    return w.requester.post("/requests", {
        "purpose": "Average treatment cost by age band.", "use_kind": "statistics",
        "business_system": "pricing",
        "items": [{"dataset_id": f"{w.ds['id']}{x}", "columns": ["age"]}]})


def _deny_reason(w: World, x: str) -> Any:
    req = request_access(w.requester, w.ds)
    return w.provider.post(f"/requests/{req['id']}/items/{w.ds['id']}/deny",
                           {"reason": f"not for{x} pricing"})


CASES: dict[str, tuple[Case, str, int]] = {
    # name: (call, field named by the 400, status of the valid body)
    "parties.name": (_party, "name", 201),
    "agents.name": (_agent, "name", 201),
    "datasets.name": (_dataset("name"), "name", 202),
    "datasets.category": (_dataset("category"), "category", 202),
    "datasets.summary": (_dataset("summary"), "summary", 202),
    "datasets.location": (_dataset("location"), "location", 202),
    "requests.business_system": (_business_system, "business_system", 201),
    "requests.items.dataset_id": (_request_item, "items[0].dataset_id", 201),
    "requests.deny.reason": (_deny_reason, "reason", 200),
    "permits.revoke.reason": (_revoke_reason, "reason", 200),
    "jobs.permit_id": (_job_permit, "permit_id", 201),
    "jobs.script": (_job_script, "script", 201),
    "joint-jobs.permit_id": (_joint_permit, "permit_id", 409),
    "joint-jobs.spec": (_joint_spec, "spec.columns[1]", 409),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unstorable_text_is_400_on_both_databases(world: World, case: str) -> None:
    call, field, ok_status = CASES[case]
    for x in BAD:
        r = call(world, x)
        assert r.status_code == 400, (case, repr(x), r.status_code, r.json)
        assert r.json["error"] == "invalid_input" and r.json["field"] == field, r.json
        assert r.json["rule"] in (UNSTORABLE_RULE, CONTROL_RULE)
    r = call(world, "")
    assert r.status_code == ok_status, (case, r.json)


def test_unstorable_key_names_the_enclosing_object(world: World) -> None:
    r = world.admin.post("/parties", {"name": "x", "role": "requester", "n\x00": 1})
    assert r.status_code == 400 and r.json["field"] == "body"
    assert "\x00" not in r.get_data(as_text=True) and "\\u0000" not in r.get_data(as_text=True)
    r = world.requester.post("/requests", {
        "purpose": "Average treatment cost by age band.", "use_kind": "statistics",
        "business_system": "pricing", "items": [{"dataset_id": "x", "\ud800": 1}]})
    assert r.status_code == 400 and r.json["field"] == "items[0]"


def test_raw_surrogate_bytes_are_400(world: World) -> None:
    # Python's JSON decoder reads UTF-8 with "surrogatepass": CESU bytes give a surrogate.
    r: Any = world.admin.client.post("/api/v1/parties",
                                     data=b'{"name": "ab\xed\xa0\x80", "role": "requester"}',
                                     content_type="application/json",
                                     headers={"Authorization": f"Bearer {world.admin.token}"})
    assert r.status_code == 400 and r.json["field"] == "name"


def test_deeply_nested_unstorable_text_is_400(world: World) -> None:
    depth = 500
    body = '{"name": "x", "role": "requester", "code": ' + "[" * depth + '"\\u0000"' \
        + "]" * depth + "}"
    r: Any = world.admin.client.post("/api/v1/parties", data=body,
                                     content_type="application/json",
                                     headers={"Authorization": f"Bearer {world.admin.token}"})
    assert r.status_code == 400 and r.json["field"] == "code" + "[0]" * depth


def test_single_line_fields_refuse_control_characters(world: World) -> None:
    for x in ("\t", "\n", "\r", "\x1b", "\x7f"):
        r = _party(world, x)
        assert r.status_code == 400 and r.json["rule"] == CONTROL_RULE, r.json
        r = _dataset("location")(world, x)
        assert r.status_code == 400 and r.json["field"] == "location", r.json
    # Multi-line text keeps its line breaks and tabs.
    r = world.provider.post("/datasets", dataset_body(summary="One row\nper episode.\tYes."))
    assert r.status_code == 202, r.json
    assert world.provider.get(f"/datasets/{r.json['id']}").json["summary"] == \
        "One row\nper episode.\tYes."
    r = world.requester.post("/jobs", {"permit_id": world.permit_id,
                                       "dataset_ids": [world.ds["id"]],
                                       "script": "x = 1\f\nif x:\n\tprint(x)\n"})
    assert r.status_code == 201, r.json


@pytest.mark.parametrize("path", ["/jobs/%00", "/jobs/a%00b", "/jobs/%09",
                                  "/requests/%00", "/permits/%1b"])
def test_control_characters_in_path_ids_are_400(world: World, path: str) -> None:
    name = {"jobs": "job_id", "requests": "request_id", "permits": "permit_id"}[
        path.split("/")[1]]
    r = world.requester.get(path)
    assert r.status_code == 400 and r.json["field"] == name, r.json
    assert r.json["rule"] == CONTROL_RULE
    # A well-formed unknown id is the usual 404, the same on both databases.
    r = world.requester.get(f"/{path.split('/')[1]}/x_0000000000000000")
    assert r.status_code == 404


def test_nul_in_url_id_of_a_post_is_400(world: World) -> None:
    r = world.requester.post("/jobs/%00/cancel")
    assert r.status_code == 400 and r.json["field"] == "job_id"
    r = world.admin.post("/parties/%00/deactivate")
    assert r.status_code == 400 and r.json["field"] == "party_id"


def test_control_characters_in_query_are_400(world: World) -> None:
    r = world.agent.post("/agent/tasks/next?wait=0%00")
    assert r.status_code == 400 and r.json["field"] == "wait"
    regulator = world.admin
    r = regulator.get("/ledger/proof/inclusion?size=1&hash=%00")
    assert r.status_code == 400 and r.json["field"] == "hash"


def test_malformed_bearer_token_is_401(client: FlaskClient, world: World) -> None:
    for token in (f"{world.admin.id}\x00.secret", "pty_\x01.x", "pty_a.b c"):
        r: Any = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json["error"] == "unauthenticated"
