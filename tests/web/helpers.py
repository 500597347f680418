"""Signing people in to the web UI through Flask's test client, and reading its forms."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PASSWORD, Actor, accredit

CSRF_RX = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RX.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Browser:
    """One person's cookie jar on the app (a test client of their own)."""

    def __init__(self, client: FlaskClient, email: str) -> None:
        self.client, self.email = client, email
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> Any:
        r = self.client.get(path, **kw)
        text = r.get_data(as_text=True)
        if 'name="csrf_token"' in text:
            self.csrf = csrf_of(text)
        return r

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True,
             **kw: Any) -> Any:
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.csrf)
        return self.client.post(path, data=body, **kw)

    def sign_in(self, password: str = PASSWORD, **extra: str) -> Any:
        self.get("/sign-in")
        return self.post("/sign-in", {"email": self.email, "password": password, **extra})


def web_person(app: Flask, admin: Actor, party: Actor, *roles: str) -> Browser:
    """A person of ``party`` with ``roles``, signed in to the web UI."""
    email = f"{uuid.uuid4().hex[:10]}@example.org"
    r = admin.post(f"/parties/{party.id}/people", {
        "name": "Web Person", "email": email, "roles": list(roles), "password": PASSWORD})
    assert r.status_code == 201, r.json
    accredit(admin, r.json["id"])
    b = Browser(app.test_client(), email)
    s = b.sign_in()
    assert s.status_code == 302, s.get_data(as_text=True)
    b.person_id = r.json["id"]  # type: ignore[attr-defined]
    return b
