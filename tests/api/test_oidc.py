"""OIDC sign-in against a real OpenID Connect provider on 127.0.0.1 (tests/api/oidc_provider).

Every step crosses real HTTP between the controller and the provider: discovery, the
token endpoint with PKCE and client authentication, the JWKS, an RS256-signed ID token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from authz import identities
from authz.context import Ctx
from authz.models import OidcIdentity, OidcLogin
from compute.errors import Conflict
from sandbox import create_app, db, oidc
from tests.api import oidc_provider
from tests.api.oidc_provider import Provider, User
from tests.api.test_people import ledger
from tests.conftest import Actor

REDIRECT = "http://localhost/api/v1/oidc/callback"  # the test client's own host
DOMAIN = "example.org"


@pytest.fixture
def idp() -> Iterator[Provider]:
    with oidc_provider.running(REDIRECT) as provider:
        yield provider


@pytest.fixture
def app(database_url: str, tmp_path: Path, idp: Provider) -> Iterator[Flask]:
    """The controller with OIDC sign-in configured for the test provider."""
    app = create_app({
        "TESTING": True, "DATABASE_URL": database_url,
        "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False,
        "SCHEMA_CHECK_WAIT_S": 0.0, "AGENT_POLL_WAIT_S": 0.0,
        "OIDC_ISSUER": idp.issuer, "OIDC_CLIENT_ID": oidc_provider.CLIENT_ID,
        "OIDC_CLIENT_SECRET": oidc_provider.CLIENT_SECRET, "OIDC_REDIRECT_URL": REDIRECT,
        "OIDC_EMAIL_DOMAINS": [DOMAIN],
    })
    yield app
    db.dispose(app)


def add_person(admin: Actor, party: Actor, email: str, *roles: str) -> str:
    r = admin.post(f"/parties/{party.id}/people",
                   {"name": "A. Person", "email": email, "roles": list(roles) or ["analyst"]})
    assert r.status_code == 201, r.json
    return str(r.json["id"])


def rows(app: Flask, model: Any) -> int:
    with db.services(app).sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def start(client: FlaskClient, query: str = "") -> str:
    """GET /oidc/login: the provider's authorization URL the browser is sent to."""
    r = client.get("/api/v1/oidc/login" + query)
    assert r.status_code == 302, r.json
    location = r.headers["Location"]
    assert location.startswith("http://127.0.0.1:")
    return str(location)


def at_provider(authorize_url: str) -> dict[str, str]:
    """The browser at the provider (signed in there, consenting): the callback's query."""
    r = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(back.query).items()}


def callback(client: FlaskClient, query: dict[str, str]) -> Any:
    return client.get("/api/v1/oidc/callback?" + urlencode(query))


def sign_in(client: FlaskClient, query: str = "") -> Any:
    return callback(client, at_provider(start(client, query)))


def test_a_person_signs_in_through_the_provider_and_gets_a_personal_token(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient) -> None:
    requester, regulator = make_party("requester"), make_party("regulator")
    person_id = add_person(admin, requester, "alice@example.org")
    idp.user = User("sub-alice", "Alice@Example.org")

    authorize = start(client, "?token_days=7")
    query = parse_qs(urlsplit(authorize).query)
    # The code flow with PKCE (S256), a state and a nonce.
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["state"] and query["nonce"] and query["code_challenge"]
    assert set(query["scope"][0].split()) == {"openid", "email"}
    r = callback(client, at_provider(authorize))
    assert r.status_code == 200, r.json
    assert r.json["person"]["id"] == person_id and r.json["method"] == "oidc"
    assert r.json["expires_at"] is not None
    assert r.headers["Cache-Control"] == "no-store"
    me = Actor(client, person_id, r.json["token"], "requester")
    assert me.get(f"/people/{person_id}").status_code == 200

    entries = ledger(regulator)
    signed = [e for e in entries if e["kind"] == "person.signed_in"]
    assert [(e["actor"], e["body"]["method"]) for e in signed] == [(person_id, "oidc")]
    linked = [e for e in entries if e["kind"] == "person.oidc_linked"]
    assert [e["body"]["issuer"] for e in linked] == [idp.issuer]
    # The ledger holds neither the email nor the subject at the provider.
    assert "example.org" not in json.dumps(entries) and "sub-alice" not in json.dumps(entries)


def test_a_second_sign_in_uses_the_stored_link_even_when_the_email_changed(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient, app: Flask) -> None:
    requester = make_party("requester")
    person_id = add_person(admin, requester, "bob@example.org")
    idp.user = User("sub-bob", "bob@example.org")
    first = sign_in(client)
    assert first.status_code == 200, first.json
    # At the provider, Bob's email changes to one nobody here has, not yet verified.
    idp.user = User("sub-bob", "robert@elsewhere.test", email_verified=False)
    second = sign_in(client)
    assert second.status_code == 200, second.json
    assert second.json["person"]["id"] == person_id
    # The first token stopped working: one personal token at a time, as with passwords.
    assert Actor(client, person_id, first.json["token"], "requester").get(
        f"/people/{person_id}").status_code == 401
    with db.services(app).sessions() as s:
        links = s.scalars(select(OidcIdentity)).all()
        assert [(x.subject, x.person_id) for x in links] == [("sub-bob", person_id)]
    # Another account at the provider claiming Bob's verified email does not take him over.
    idp.user = User("sub-mallory", "bob@example.org")
    third = sign_in(client)
    assert third.status_code == 401 and "already linked" in third.json["message"]


@pytest.mark.parametrize(("user", "words"), [
    (User("sub-u", "carol@example.org", email_verified=False), "not verified"),
    (User("sub-n", "nobody@example.org"), "no person here"),
    (User("sub-d", "dave@other-domain.test"), "not trusted for emails of your domain"),
    (User("sub-e", None), "no email"),
])
def test_no_person_is_matched_without_a_verified_email_of_an_existing_person_in_a_trusted_domain(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient, app: Flask,
        user: User, words: str) -> None:
    requester = make_party("requester")
    add_person(admin, requester, "carol@example.org")
    add_person(admin, requester, "dave@other-domain.test")
    idp.user = user
    r = sign_in(client)
    assert r.status_code == 401 and words in r.json["message"], r.json
    assert "token" not in r.json
    assert rows(app, OidcIdentity) == 0  # nothing linked, nobody created
    assert len(admin.get(f"/parties/{requester.id}/people").json["people"]) == 2


def test_a_deactivated_person_cannot_sign_in_linked_or_not(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient) -> None:
    requester = make_party("requester")
    linked = add_person(admin, requester, "erin@example.org")
    idp.user = User("sub-erin", "erin@example.org")
    assert sign_in(client).status_code == 200
    unlinked = add_person(admin, requester, "frank@example.org")
    for person_id in (linked, unlinked):
        assert admin.post(f"/people/{person_id}/deactivate").status_code == 200
    for user in (User("sub-erin", "erin@example.org"), User("sub-frank", "frank@example.org")):
        idp.user = user
        r = sign_in(client)
        assert r.status_code == 401 and "deactivated" in r.json["message"], r.json


@pytest.mark.parametrize("override", [
    {"nonce": "a-nonce-this-sign-in-never-sent"},
    {"aud": ["another-client"]},
    {"iss": "http://127.0.0.1:1"},
    {"exp": 1_000_000_000, "iat": 999_999_000},
])
def test_an_id_token_with_a_wrong_nonce_audience_issuer_or_expiry_is_refused(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient,
        override: dict[str, Any]) -> None:
    add_person(admin, make_party("requester"), "gina@example.org")
    idp.user = User("sub-gina", "gina@example.org")
    idp.id_token_overrides = override
    r = sign_in(client)
    assert r.status_code == 401 and "did not verify" in r.json["message"], r.json
    idp.id_token_overrides = {}
    assert sign_in(client).status_code == 200  # the same person, a well-formed token


def test_an_id_token_signed_with_a_key_outside_the_providers_jwks_is_refused(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient) -> None:
    add_person(admin, make_party("requester"), "hana@example.org")
    idp.user = User("sub-hana", "hana@example.org")
    # The same key id as the published key, another key: the signature must fail.
    idp.signing_key = RSAKey.generate_key(2048, parameters={"kid": "test-1"}, private=True)
    r = sign_in(client)
    assert r.status_code == 401 and "did not verify" in r.json["message"], r.json


def test_a_wrong_replayed_or_foreign_browser_state_is_refused(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient,
        app: Flask) -> None:
    add_person(admin, make_party("requester"), "ivan@example.org")
    idp.user = User("sub-ivan", "ivan@example.org")
    query = at_provider(start(client))
    wrong = callback(client, {**query, "state": "not-the-state-we-sent"})
    assert wrong.status_code == 401 and "unknown, used or expired" in wrong.json["message"]
    # The callback URL opened in another browser (an attacker's code, the victim's browser).
    other = app.test_client()
    foreign = callback(other, query)
    assert foreign.status_code == 401 and "browser that started it" in foreign.json["message"]
    # Refused before the provider was asked anything, and without writing: the browser
    # that started the sign-in still finishes it, once.
    assert idp.token_requests == 0
    ok = callback(client, query)
    assert ok.status_code == 200, ok.json
    replay = callback(client, query)
    assert replay.status_code == 401 and "unknown, used or expired" in replay.json["message"]
    assert rows(app, OidcLogin) == 0  # nothing left half-started


def test_the_provider_refusing_the_sign_in_is_reported_without_echoing_its_text(
        idp: Provider, client: FlaskClient) -> None:
    authorize = start(client)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    r = callback(client, {"state": state, "error": "access_denied"})
    assert r.status_code == 401 and "(access_denied)" in r.json["message"]
    r = callback(client, {"state": parse_qs(urlsplit(start(client)).query)["state"][0],
                          "error": "<script>alert(1)</script>"})
    assert r.status_code == 401 and "<script>" not in r.json["message"]


def test_the_operator_unlinks_a_person_so_their_next_sign_in_links_again(
        admin: Actor, make_party: Any, idp: Provider, client: FlaskClient) -> None:
    person_id = add_person(admin, make_party("requester"), "jo@example.org")
    idp.user = User("sub-jo-old", "jo@example.org")
    assert sign_in(client).status_code == 200
    idp.user = User("sub-jo-new", "jo@example.org")
    assert sign_in(client).status_code == 401
    r = admin.post(f"/people/{person_id}/oidc/unlink")
    assert r.status_code == 200 and r.json["unlinked"] == 1
    assert sign_in(client).status_code == 200


def test_token_days_is_checked(idp: Provider, client: FlaskClient) -> None:
    for bad in ("0", "366", "x", "-1"):
        r: Any = client.get(f"/api/v1/oidc/login?token_days={bad}")
        assert r.status_code == 400 and r.json["field"] == "token_days"


def test_without_configuration_oidc_sign_in_is_off(database_url: str, tmp_path: Path) -> None:
    plain = create_app({"TESTING": True, "DATABASE_URL": database_url,
                        "LOG_KEY_FILE": str(tmp_path / "log.key"),
                        "START_CHECKPOINTER": False})
    try:
        for path in ("/api/v1/oidc/login", "/api/v1/oidc/callback?state=x&code=y"):
            r: Any = plain.test_client().get(path)
            assert r.status_code == 404 and "not configured" in r.json["message"]
    finally:
        db.dispose(plain)


def test_sign_ins_under_way_are_bounded(idp: Provider, client: FlaskClient,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "MAX_PENDING", 2)
    start(client)
    start(client)
    r: Any = client.get("/api/v1/oidc/login")
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"


def test_an_unreachable_provider_is_a_502_saying_so(database_url: str, tmp_path: Path) -> None:
    down = create_app({"TESTING": True, "DATABASE_URL": database_url,
                       "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False,
                       # Nothing listens on port 1 of the loopback address.
                       "OIDC_ISSUER": "http://127.0.0.1:1", "OIDC_CLIENT_ID": "c",
                       "OIDC_CLIENT_SECRET": "s", "OIDC_REDIRECT_URL": REDIRECT,
                       "OIDC_EMAIL_DOMAINS": [DOMAIN]})
    try:
        r: Any = down.test_client().get("/api/v1/oidc/login")
        assert r.status_code == 502 and r.json["error"] == "identity_provider_error"
        assert "discovery document could not be read" in r.json["message"]
    finally:
        db.dispose(down)


def test_two_first_sign_ins_finishing_at_once_leave_one_link(
        admin: Actor, make_party: Any, app: Flask, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serialises writing transactions: the race cannot happen there")
    person_id = add_person(admin, make_party("requester"), "kim@example.org")
    claims = identities.Claims("https://idp.example.org", "sub-kim", "kim@example.org", True)
    svc = db.services(app)
    first = identities._first_sign_in

    def racing(ctx: Ctx, c: identities.Claims, domains: Any) -> Any:
        found = first(ctx, c, domains)
        # The other sign-in links the same account between this one's lookup and insert.
        with svc.sessions() as other:
            other.add(OidcIdentity(issuer=c.issuer, subject=c.subject, person_id=person_id))
            other.commit()
        return found

    monkeypatch.setattr(identities, "_first_sign_in", racing)
    with svc.sessions() as s:
        with pytest.raises(Conflict, match="sign in again"):
            identities.identify_oidc(Ctx(s, svc.log), claims, [DOMAIN])
        s.rollback()
    assert rows(app, OidcIdentity) == 1
