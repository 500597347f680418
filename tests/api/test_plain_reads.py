"""The cheaper read path (docs/performance.md, "CPU per read"): what it keeps and checks.

- A person's token on a plain read (``GET /me``, ``/jobs``, ``/jobs/<id>``,
  ``/ledger/entries``) is checked with plain columns on every request: deactivating the
  person or the party, rotating the token or its expiry counts at the next request.
- The job list read as plain rows, and one job (``GET /jobs/<id>``), are the same JSON as
  the ORM rows give, for requester and provider, with reviews and justifications; a
  sealed value copied from another row still fails closed; one party never sees
  another's jobs.
- Kept ledger pages: a new entry shows at once, a page kept for one auditor is not
  served to a caller the endpoint refuses.
- Opened sealed values: kept per engine, within a byte budget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from authz import job_list, jobs
from authz.models import Party, Person
from authz.sealed import OPENED_ATTR, Opened
from compute.errors import SealingError
from compute.sealing import Keyring, new_entry, parse_keyring, seal
from ledger.api_payloads import PageCache
from sandbox import db
from tests.api.helpers import permit_for
from tests.api.test_read_path import released_job
from tests.api.test_release_review import TABLE, Review
from tests.api.test_statistics_jobs import DP_SPEC, SPEC
from tests.conftest import Actor, accredit

READS = ("/me", "/jobs", "/ledger/entries?start=0&end=5")


def _world(make_party: Any, make_agent: Any, make_person: Any) -> tuple[Actor, Actor, str]:
    """An analyst with one released job, and an auditor: (analyst, auditor, job id)."""
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    analyst = make_person(requester, "analyst")
    ds, permit_id = permit_for(analyst, provider, agent, people=(analyst.id,))
    job_id = released_job(analyst, agent, permit_id, ds["id"], 1)
    return analyst, make_person(make_party("regulator"), "auditor"), job_id


def _reads_ok(analyst: Actor, auditor: Actor, job_id: str) -> None:
    assert analyst.get("/me").status_code == 200
    assert analyst.get("/jobs").status_code == 200
    assert analyst.get(f"/jobs/{job_id}").status_code == 200
    assert auditor.get("/ledger/entries?start=0&end=5").status_code == 200


def _refused(who: Actor, *paths: str) -> None:
    for path in paths:
        r = who.get(path)
        assert r.status_code == 401, (path, r.status_code, r.json)


def test_a_deactivated_person_or_party_is_refused_at_the_next_read(
        admin: Actor, make_party: Any, make_agent: Any, make_person: Any) -> None:
    analyst, auditor, job_id = _world(make_party, make_agent, make_person)
    _reads_ok(analyst, auditor, job_id)
    assert admin.post(f"/people/{analyst.id}/deactivate").status_code == 200
    _refused(analyst, "/me", "/jobs", f"/jobs/{job_id}")
    reg_party = auditor.get("/me").json["id"]
    assert admin.post(f"/parties/{reg_party}/deactivate").status_code == 200
    _refused(auditor, "/me", "/ledger/entries?start=0&end=5")


def test_a_rotated_or_expired_token_is_refused_at_the_next_read(
        app: Flask, make_party: Any, make_agent: Any, make_person: Any) -> None:
    analyst, auditor, job_id = _world(make_party, make_agent, make_person)
    _reads_ok(analyst, auditor, job_id)
    old = analyst.token
    r = analyst.post("/me/rotate-token", {"token_days": 1})
    assert r.status_code == 200
    analyst.token = old
    _refused(analyst, "/me", "/jobs", f"/jobs/{job_id}")
    analyst.token = r.json["token"]
    assert analyst.get("/jobs").status_code == 200
    with app.app_context():
        s = db.services().sessions()
        row = s.get(Person, analyst.id)
        assert row is not None
        row.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        s.commit()
        s.close()
    for path in ("/me", "/jobs", f"/jobs/{job_id}"):
        r = analyst.get(path)
        assert r.status_code == 401 and "expired" in r.json["message"], path


def test_roles_are_still_checked_on_plain_reads(make_party: Any, make_agent: Any,
                                                make_person: Any) -> None:
    analyst, auditor, job_id = _world(make_party, make_agent, make_person)
    assert analyst.get("/ledger/entries?start=0&end=5").status_code == 403
    assert auditor.get("/jobs").status_code == 403
    assert auditor.get(f"/jobs/{job_id}").status_code == 403


def test_me_answers_the_same_for_a_person_whatever_the_path(
        app: Flask, admin: Actor, make_party: Any, make_person: Any) -> None:
    person = make_person(make_party("requester"), "analyst")
    accredit(admin, person.id, days=30)  # a second one, expiring first
    got = person.get("/me").json
    with app.app_context():
        s = db.services().sessions()
        row, party = s.get(Person, person.id), s.get(Party, got["id"])
        assert row is not None and party is not None
        from authz.people import person_json

        assert got == {"id": party.id, "name": party.name, "role": party.role,
                       "code": party.code, "person": person_json(row)}
        s.close()
    assert len(got["person"]["accreditations"]) == 2
    # A party's own token answers through the rows, as before.
    party = make_party("provider")
    assert party.get("/me").json["person"] is None


def test_one_requester_never_lists_or_reads_anothers_jobs(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    a, _, job_a = _world(make_party, make_agent, make_person)
    b, _, job_b = _world(make_party, make_agent, make_person)
    assert [j["id"] for j in a.get("/jobs").json["jobs"]] == [job_a]
    assert [j["id"] for j in b.get("/jobs").json["jobs"]] == [job_b]
    assert a.get(f"/jobs/{job_b}").status_code == 404
    assert a.get("/jobs/no-such-job").status_code == 404
    assert b.get(f"/jobs/{job_b}").json["id"] == job_b


def _same_as_orm(app: Flask, party_id: str) -> list[dict[str, Any]]:
    with app.test_request_context("/"):
        ctx = db.ctx()
        party = ctx.session.get(Party, party_id)
        assert party is not None
        plain = job_list.list_json(ctx, party)
        orm = [jobs.to_json(j, party) for j in jobs.list_visible(ctx, party)]
        assert plain == orm
        # One job (GET /jobs/<id>) read the same way is the ORM row's JSON too.
        for j in orm:
            assert job_list.job_json(ctx, party, j["id"]) == jobs.to_json(
                jobs.get_visible(ctx, party, j["id"]), party)
        return plain


def test_the_plain_job_list_is_the_orm_lists_json(app: Flask, make_party: Any,
                                                  make_agent: Any, make_person: Any) -> None:
    review = Review(make_party, make_agent, make_person)
    held = review.held_job(("t.csv", TABLE), ("u.csv", TABLE))
    decided = review.held_job(("t.csv", TABLE))
    assert review.analyst.post(f"/jobs/{decided}/outputs/output-1/justification",
                               {"justification": "Bands of ten or more."}).status_code == 200
    assert review.decide(review.checkers[0], decided, "output-1").status_code == 200
    listed = _same_as_orm(app, review.requester.id)
    assert [j["id"] for j in listed] == [held, decided]
    assert listed[1]["outputs"][0]["justification"] == "Bands of ten or more."
    assert listed[1]["outputs"][0]["reviews"][0]["comment"]
    assert len(listed[0]["outputs"]) == 2
    provider_view = _same_as_orm(app, review.provider.id)
    assert "exit_code" in provider_view[0] and "log" not in provider_view[0]
    # Through the API, as the requester's analyst sees it.
    assert review.analyst.get("/jobs").json["jobs"] == listed


def test_statistics_jobs_noised_or_not_list_as_the_orm_shows_them(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, epsilon_budget=1.0)
    r = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                 "statistics": DP_SPEC})
    assert r.status_code == 201, r.json
    other, plain_permit = permit_for(requester, provider, agent)
    assert requester.post("/jobs", {"permit_id": plain_permit, "dataset_ids": [other["id"]],
                                    "statistics": SPEC}).status_code == 201
    listed = _same_as_orm(app, requester.id)
    assert [j["dp"] is not None for j in listed] == [True, False]
    assert listed[0]["dp"]["epsilon"] == 0.4
    assert _same_as_orm(app, provider.id)[0]["dp"] == listed[0]["dp"]


def test_a_sealed_value_copied_from_another_row_fails_closed_in_the_plain_list(
        app: Flask, make_party: Any, make_agent: Any, make_person: Any) -> None:
    review = Review(make_party, make_agent, make_person)
    first = review.held_job(("t.csv", TABLE))
    second = review.held_job(("t.csv", TABLE))
    with app.app_context():
        s = db.services().sessions()
        s.execute(text("UPDATE jobs SET script = (SELECT script FROM jobs WHERE id = :a) "
                       "WHERE id = :b"), {"a": first, "b": second})
        s.commit()
        s.close()
    with app.test_request_context("/"):
        ctx = db.ctx()
        party = ctx.session.get(Party, review.requester.id)
        assert party is not None
        with pytest.raises(SealingError, match="another row"):
            job_list.listed_jobs(ctx, party)
        with pytest.raises(SealingError, match="another row"):
            job_list.job_json(ctx, party, second)
        assert job_list.job_json(ctx, party, first)["id"] == first


def test_a_new_ledger_entry_shows_at_once_through_kept_pages(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    analyst, auditor, _ = _world(make_party, make_agent, make_person)
    first = auditor.get("/ledger/entries?start=0&end=1000").json
    size = first["tree_size"]
    assert first["end"] == size and len(first["entries"]) == size
    assert auditor.get("/ledger/entries?start=0&end=1000").json == first  # kept or not
    # Something new on the ledger: the same range now reaches it.
    assert analyst.post("/me/rotate-token").status_code == 200
    later = auditor.get("/ledger/entries?start=0&end=1000").json
    assert later["tree_size"] > size and later["end"] == later["tree_size"]
    assert later["entries"][:size] == first["entries"]


def test_a_kept_page_is_served_only_to_callers_the_endpoint_admits(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    analyst, auditor, _ = _world(make_party, make_agent, make_person)
    assert auditor.get("/ledger/entries?start=0&end=3").status_code == 200
    assert analyst.get("/ledger/entries?start=0&end=3").status_code == 403
    assert Actor(analyst.client, "x", "psn_nobody.secret", "requester").get(
        "/ledger/entries?start=0&end=3").status_code == 401


def test_the_page_cache_keeps_whole_pages_within_its_bound() -> None:
    pages = PageCache(max_entries=5)
    page = tuple({"index": i, "data": "x"} for i in range(3))
    pages.put(0, 3, page)
    assert pages.get(0, 3) == page
    pages.put(0, 4, page)  # rows missing: not kept
    assert pages.get(0, 4) is None
    pages.put(3, 6, page)  # 6 entries past the bound: the oldest page goes
    assert pages.get(0, 3) is None and pages.get(3, 6) == page
    assert pages.kept == 3


def test_opened_values_are_kept_within_a_byte_budget() -> None:
    keys = Keyring(parse_keyring(new_entry(), "test"), "test")
    opened = Opened(budget=400, max_blob=300)
    blobs = [seal(keys, ("jobs", "log", str(i)), b"y" * 50) for i in range(4)]
    for i, blob in enumerate(blobs):
        assert opened.open(keys, blob) == (("jobs", "log", str(i)), b"y" * 50)
        assert opened.open(keys, blob) == (("jobs", "log", str(i)), b"y" * 50)  # kept
    assert 0 < opened.used <= 400
    big = seal(keys, ("jobs", "log", "big"), b"z" * 400)
    assert opened.open(keys, big)[1] == b"z" * 400  # larger than max_blob: not kept
    assert opened.used <= 400
    # A tampered envelope is never served from what was kept: it is another key, and fails.
    with pytest.raises(SealingError):
        opened.open(keys, blobs[-1][:-1] + bytes([blobs[-1][-1] ^ 1]))


def test_each_engine_opens_with_its_own_keyring(app: Flask) -> None:
    svc = db.services(app)
    engines = {f.kw["bind"] for f in (svc.sessions, svc.readers)}
    kept = {id(getattr(e.dialect, OPENED_ATTR)) for e in engines}
    assert len(kept) == len(engines)  # nothing opened under one keyring serves another
