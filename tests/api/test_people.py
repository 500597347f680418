"""People within parties: accounts, roles, sign-in, TOTP, personal tokens, the ledger."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from flask import Flask

from authz.models import Person
from sandbox import db
from tests.api.helpers import approval, register, request_access
from tests.conftest import PASSWORD, Actor, accredit


def test_passwords_are_hashed_with_rfc_9106_s_second_recommended_argon2id_profile() -> None:
    # The suite swaps in a cheap hasher (tests/conftest.py); the product's own must not be.
    from argon2 import Type
    from argon2.profiles import RFC_9106_LOW_MEMORY

    from authz import people
    params = people._DUMMY_HASH.split("$")
    assert params[1] == "argon2id"
    assert params[3] == (f"m={RFC_9106_LOW_MEMORY.memory_cost},t={RFC_9106_LOW_MEMORY.time_cost},"
                         f"p={RFC_9106_LOW_MEMORY.parallelism}")
    assert RFC_9106_LOW_MEMORY.type is Type.ID


def ledger(reader: Actor) -> list[dict[str, Any]]:
    r = reader.get("/ledger/entries?start=0&end=100000")
    assert r.status_code == 200, r.json
    return [json.loads(base64.b64decode(e["data"])) for e in r.json["entries"]]


def sign_in(client: Any, **body: Any) -> Any:
    """POST /sign-in with the test password unless another is given."""
    return client.post("/api/v1/sign-in", json={"password": PASSWORD, **body})


def test_an_approval_by_a_person_names_the_person_and_their_party(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    regulator = make_party("regulator")
    approver = make_person(provider, "approver")
    analyst = make_person(requester, "analyst")
    ds = register(provider, make_agent(provider))
    req = request_access(analyst, ds)
    r = approver.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval())
    assert r.status_code == 200, r.json
    assert r.json["items"][0]["decided_by"] == approver.id
    entries = ledger(regulator)
    created = next(e for e in entries if e["kind"] == "request.created")
    assert created["actor"] == analyst.id and created["body"]["acting_for"] == requester.id
    decided = next(e for e in entries if e["kind"] == "request.approved")
    assert decided["actor"] == approver.id and decided["body"]["acting_for"] == provider.id
    # The append-only ledger names people by id only: no name, no email.
    text = json.dumps(entries)
    assert "A. Person" not in text and "@example.org" not in text


def test_a_person_acts_only_within_their_roles(make_party: Any, make_agent: Any,
                                               make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    checker = make_person(provider, "output_checker")
    steward = make_person(provider, "dataset_steward")
    agent = make_agent(provider)
    ds = register(steward, agent)  # a steward registers
    req = request_access(requester, ds)
    r = checker.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval())
    assert r.status_code == 403 and "approver" in r.json["message"]
    r = steward.post(f"/requests/{req['id']}/items/{ds['id']}/deny", {"reason": "no"})
    assert r.status_code == 403
    # Reading is open to every person of the party.
    assert checker.get(f"/requests/{req['id']}").status_code == 200
    # Nobody raises their own roles, and a non-operator person creates nobody.
    r = checker.post(f"/people/{checker.id}/roles", {"roles": ["approver"]})
    assert r.status_code == 403
    r = checker.post(f"/parties/{provider.id}/people", {
        "name": "X", "email": "x@example.org", "roles": ["approver"]})
    assert r.status_code == 403


def test_roles_must_fit_the_party(admin: Actor, make_party: Any) -> None:
    requester = make_party("requester")
    r = admin.post(f"/parties/{requester.id}/people", {
        "name": "B", "email": "b@example.org", "roles": ["analyst", "approver"]})
    assert r.status_code == 400 and r.json["field"] == "roles[1]"
    r = admin.post(f"/parties/{requester.id}/people", {
        "name": "B", "email": "b@example.org", "roles": ["analyst"], "password": "short"})
    assert r.status_code == 400 and r.json["field"] == "password"


def test_a_service_account_manages_its_own_people_only(make_party: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    body = {"name": "C", "email": "c@example.org", "roles": ["approver"]}
    assert b.post(f"/parties/{a.id}/people", body).status_code == 404
    r = a.post(f"/parties/{a.id}/people", body)
    assert r.status_code == 201, r.json
    assert b.get(f"/people/{r.json['id']}").status_code == 404
    assert b.get(f"/parties/{a.id}/people").json["people"] == []
    assert [p["id"] for p in a.get(f"/parties/{a.id}/people").json["people"]] == [r.json["id"]]
    # Emails are unique whatever their case.
    again = a.post(f"/parties/{a.id}/people", {**body, "email": "C@Example.org"})
    assert again.status_code == 409


def test_sign_in_failures_look_alike(admin: Actor, make_party: Any, make_person: Any) -> None:
    person = make_person(make_party("requester"), "analyst", email="d@example.org")
    wrong = sign_in(admin.client, email="d@example.org", password="wrong password here")
    nobody = sign_in(admin.client, email="nobody@example.org")
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json["message"] == nobody.json["message"]
    # Signing in again issues a new token; the old one stops working.
    again = sign_in(admin.client, email="D@example.org")
    assert again.status_code == 200
    token = again.json["token"]
    assert person.get("/me").status_code == 401
    me = Actor(admin.client, person.id, token, "requester").get("/me")
    assert me.json["person"]["id"] == person.id and me.json["role"] == "requester"


def test_totp_is_required_once_enrolled_and_a_code_works_once(
        admin: Actor, make_party: Any, make_person: Any) -> None:
    person = make_person(make_party("regulator"), "auditor", email="e@example.org")
    uri = person.post("/me/totp").json["otpauth_uri"]
    secret = pyotp.parse_uri(uri).secret
    totp, now = pyotp.TOTP(secret), datetime.now(UTC)
    valid = {totp.at(now + timedelta(seconds=d)) for d in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
    assert person.post("/me/totp/confirm", {"totp": wrong}).status_code == 400
    assert person.post("/me/totp/confirm", {"totp": totp.now()}).status_code == 200
    assert sign_in(admin.client, email="e@example.org").status_code == 401
    fresh = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    assert sign_in(admin.client, email="e@example.org", totp=fresh).status_code == 200
    # The same code again is a replay.
    assert sign_in(admin.client, email="e@example.org", totp=fresh).status_code == 401


def test_expired_deactivated_and_orphaned_tokens_fail(app: Flask, admin: Actor,
                                                      make_party: Any,
                                                      make_person: Any) -> None:
    party = make_party("requester")
    person = make_person(party, "analyst")
    r = person.post("/me/rotate-token", {"token_days": 1})
    assert r.status_code == 200 and r.json["expires_at"]
    person.token = r.json["token"]
    assert person.get("/me").status_code == 200
    with app.app_context():
        s = db.services().sessions()
        row = s.get(Person, person.id)
        assert row is not None
        row.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        s.commit()
        s.close()
    r = person.get("/me")
    assert r.status_code == 401 and "expired" in r.json["message"]
    other = make_person(party, "analyst")
    assert admin.post(f"/people/{other.id}/deactivate").status_code == 200
    assert other.get("/me").status_code == 401
    third = make_person(party, "analyst")
    assert admin.post(f"/parties/{party.id}/deactivate").status_code == 200
    assert third.get("/me").status_code == 401


def test_a_person_changes_their_own_password(admin: Actor, make_party: Any,
                                             make_person: Any) -> None:
    person = make_person(make_party("requester"), "analyst", email="f@example.org")
    r = person.post("/me/password", {"current": "not it at all", "new": "another long secret"})
    assert r.status_code == 401
    r = person.post("/me/password", {"current": PASSWORD, "new": "another long secret"})
    assert r.status_code == 200
    assert sign_in(admin.client, email="f@example.org").status_code == 401
    assert sign_in(admin.client, email="f@example.org",
                   password="another long secret").status_code == 200


def test_a_lapsed_or_missing_accreditation_is_refused_and_says_why(
        app: Flask, admin: Actor, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    ds = register(provider, make_agent(provider))
    r = admin.post(f"/parties/{requester.id}/people", {
        "name": "G", "email": "g@example.org", "roles": ["analyst"], "password": PASSWORD})
    person = Actor(admin.client, r.json["id"],
                   sign_in(admin.client, email="g@example.org").json["token"], "requester")
    body = {"purpose": "Average cost by age band.", "use_kind": "statistics",
            "business_system": "pricing", "items": [{"dataset_id": ds["id"],
                                                     "columns": ["age"]}]}
    r = person.post("/requests", body)
    assert r.status_code == 403 and "identity is not verified" in r.json["message"]
    accredit(admin, person.id, days=1)
    with app.app_context():
        s = db.services().sessions()
        row = s.get(Person, person.id)
        assert row is not None
        row.accreditations[0].expires_at = datetime.now(UTC) - timedelta(days=2)
        s.commit()
        s.close()
    r = person.post("/requests", body)
    assert r.status_code == 403 and "accreditation lapsed on" in r.json["message"]
    assert "POST /people/" in r.json["message"]  # what to do next
    accredit(admin, person.id)
    assert person.post("/requests", body).status_code == 201


def test_only_the_people_a_permit_names_use_it(make_party: Any, make_agent: Any,
                                               make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    ds = register(provider, make_agent(provider))
    asker, named, other = (make_person(requester, "analyst") for _ in range(3))
    r = asker.post("/requests", {
        "purpose": "Average cost by age band.", "use_kind": "statistics",
        "business_system": "pricing", "people": [named.id],
        "items": [{"dataset_id": ds["id"], "columns": ["age"]}]})
    assert r.status_code == 201 and r.json["people"] == [asker.id, named.id], r.json
    r = provider.post(f"/requests/{r.json['id']}/items/{ds['id']}/approve", approval())
    permit_id = r.json["permit_id"]
    job = {"permit_id": permit_id, "dataset_ids": [ds["id"]], "script": "print(1)\n"}
    assert named.post("/jobs", job).status_code == 201
    r = other.post("/jobs", job)
    assert r.status_code == 403 and "not named on permit" in r.json["message"]
    r = requester.post("/jobs", job)  # the service account neither
    assert r.status_code == 403 and "sign in as one of them" in r.json["message"]
    # Naming someone who is not an analyst of the organisation is refused.
    r = asker.post("/requests", {
        "purpose": "Average cost by age band.", "use_kind": "statistics",
        "business_system": "pricing", "people": [make_person(provider, "approver").id],
        "items": [{"dataset_id": ds["id"], "columns": ["age"]}]})
    assert r.status_code == 400 and r.json["field"] == "people[0]"


def test_project_details_are_public_without_personal_data(
        app: Flask, make_party: Any, make_agent: Any, make_person: Any, client: Any) -> None:
    provider = make_party("provider", name="County Hospital")
    requester = make_party("requester", name="Harbor Insurance")
    analyst = make_person(requester, "analyst")
    ds = register(provider, make_agent(provider))
    req = request_access(analyst, ds)
    provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval())
    projects = client.get("/api/v1/public/projects").json["projects"]
    assert [(p["organisation"], p["datasets"][0]["provider"]) for p in projects] == [
        ("Harbor Insurance", "County Hospital")]
    text = json.dumps(projects)
    assert analyst.id not in text and "@example.org" not in text and "columns" not in text
    app.config["PUBLISH_PROJECTS"] = False
    assert client.get("/api/v1/public/projects").status_code == 404
