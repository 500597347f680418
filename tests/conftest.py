from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from authz import people
from ledger.db import make_engine
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.migrate import upgrade
from tests import pgcluster
from tests.contract_check import check_answer

# Suites that drive the Docker engine (or fixed host ports): run one after another on one
# worker when the suite is spread over processes (`make test` runs `pytest -n 2 --dist
# loadgroup`), because each cleans up its containers by label and they share the engine.
ENGINE_SUITES = ("adversarial", "containers", "docker", "redteam", "resilience")
ENGINE_FILES = ("ops/test_compose_stack.py", "ops/test_service_images.py")


# First: pytest-xdist reads the marks in its own hook of this name (tryfirst, so before it).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        rel = item.path.relative_to(root).as_posix()
        if rel.split("/", 1)[0] in ENGINE_SUITES or rel in ENGINE_FILES:
            item.add_marker(pytest.mark.xdist_group("engine"))
        elif item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """Argon2id at its cheapest for people made in this process: the suite makes hundreds
    of accounts, and at the production cost each costs a tenth of a second or more. The
    production parameters are asserted on their own (tests/api/test_people.py). Servers
    started as processes keep the production cost."""
    patch = pytest.MonkeyPatch()
    patch.setattr(people, "_hasher", PasswordHasher.from_parameters(CHEAPEST))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a throwaway PostgreSQL cluster shared by the session's postgres tests."""
    if not pgcluster.available():
        pytest.fail("PostgreSQL 15 binaries not found; run `make setup`")
    with pgcluster.cluster() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test: migrations run once per session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_url: str) -> str:
    """A migrated PostgreSQL database used as CREATE DATABASE … TEMPLATE for each test."""
    engine = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text("CREATE DATABASE sandbox_template"))
    engine.dispose()
    upgrade(pg_url.replace("/sandbox?", "/sandbox_template?"))
    return "sandbox_template"


def _fresh_pg(pg_url: str, template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    engine.dispose()
    return pg_url.replace("/sandbox?", f"/{name}?")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        db = tmp_path / "sandbox.db"
        shutil.copy(template, db)
        return f"sqlite:///{db}"
    return _fresh_pg(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_template"))


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "LOG_KEY_FILE": str(tmp_path / "log.key"),
        "START_CHECKPOINTER": False,
        "SCHEMA_CHECK_WAIT_S": 0.0,
        "AGENT_POLL_WAIT_S": 0.0,
    })
    yield app
    db.dispose(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Actor:
    """A party (or agent) calling the API through the test client with its own token."""

    def __init__(self, client: FlaskClient, id: str, token: str, role: str) -> None:
        self.client, self.id, self.token, self.role = client, id, token, role

    def _h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self._checked("GET", path, self.client.get(f"/api/v1{path}", headers=self._h(),
                                                          **kw))

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self._checked("POST", path, self.client.post(
            f"/api/v1{path}", headers=self._h(), json=body if body is not None else {}, **kw))

    def _checked(self, method: str, path: str, r: Any) -> Any:
        """Every answer is held to the OpenAPI contract (tests/contract_check.py)."""
        if r.is_json:
            check_answer(self.client.application, method, f"/api/v1{path}", r.status_code,
                         r.get_json(silent=True))
        return r


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> Actor:
    issued = create_first_admin(app, "operator")
    return Actor(client, issued.id, issued.token, "admin")


@pytest.fixture
def make_party(admin: Actor) -> Any:
    def make(role: str, name: str | None = None, code: str | None = None) -> Actor:
        body: dict[str, Any] = {"name": name or f"{role}-{uuid.uuid4().hex[:6]}", "role": role}
        if role == "provider":
            body["code"] = code or f"P{uuid.uuid4().hex[:8]}"
        r = admin.post("/parties", body)
        assert r.status_code == 201, r.json
        return Actor(admin.client, r.json["id"], r.json["token"], role)

    return make


@pytest.fixture
def make_agent(admin: Actor) -> Any:
    def make(*providers: Actor) -> Actor:
        r = admin.post("/agents", {"name": "agent", "providers": [p.id for p in providers]})
        assert r.status_code == 201, r.json
        return Actor(admin.client, r.json["id"], r.json["token"], "agent")

    return make


PASSWORD = "correct horse battery staple"


def accredit(admin: Actor, person_id: str, days: int = 365) -> None:
    """Identity verified and a current accreditation, as the operator records them."""
    r = admin.post(f"/people/{person_id}/identity", {"method": "passport seen in person"})
    assert r.status_code == 200, r.json
    now = datetime.now(UTC)
    r = admin.post(f"/people/{person_id}/accreditations", {
        "kind": "safe researcher training", "awarded_at": (now - timedelta(days=1)).isoformat(),
        "expires_at": (now + timedelta(days=days)).isoformat()})
    assert r.status_code == 201, r.json


@pytest.fixture
def make_person(admin: Actor) -> Any:
    """A person of ``party`` with ``roles``, signed in: an Actor carrying their own token."""
    def make(party: Actor, *roles: str, email: str | None = None) -> Actor:
        email = email or f"{uuid.uuid4().hex[:10]}@example.org"
        r = admin.post(f"/parties/{party.id}/people", {
            "name": "A. Person", "email": email, "roles": list(roles), "password": PASSWORD})
        assert r.status_code == 201, r.json
        accredit(admin, r.json["id"])
        s: Any = admin.client.post("/api/v1/sign-in",
                                   json={"email": email, "password": PASSWORD})
        assert s.status_code == 200, s.json
        return Actor(admin.client, r.json["id"], s.json["token"], party.role)

    return make
