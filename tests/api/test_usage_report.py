"""The provider's usage report: series counted by the database equal a count over the jobs,
and the report pages by keyset (``GET /usage?limit=&before=``), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete

from authz import usage
from authz.context import Ctx
from authz.models import Job, Party, UsageDay
from authz.states import JobState
from sandbox import db
from sandbox.migrate import downgrade, upgrade
from tests.api.helpers import permit_for

#: Around midnight UTC, so a day counted in the server's local time would be wrong.
T0 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def add_jobs(app: Flask, permit_id: str, provider_id: str,
             jobs: list[tuple[str, datetime]]) -> list[str]:
    """Jobs of ``(requester id, submitted_at)`` written straight to the database (the
    report reads what is stored; submitting each through the API would cost seconds)."""
    ids = []
    with db.services(app).sessions() as s:
        for requester_id, at in jobs:
            job = Job(id=f"job_{uuid.uuid4().hex[:16]}", permit_id=permit_id,
                      requester_id=requester_id, provider_id=provider_id,
                      dataset_ids=["ds_x"], script=b"print(1)", script_sha256="0" * 64,
                      state=JobState.RELEASED, submitted_at=at, rows_read=7)
            s.add(job)
            ids.append(job.id)
        s.commit()
    return ids


def spread(requesters: list[str], n: int) -> list[tuple[str, datetime]]:
    """``n`` jobs over more than usage.MAX_BARS days with gaps, several a day, some at
    the same instant (ties the keyset must order by id)."""
    out = []
    for i in range(n):
        at = T0 - timedelta(days=(i * 7) % 45, minutes=(i * 13) % 50)
        out.append((requesters[(i * i) % len(requesters)], at))
    out.append((requesters[0], out[-1][1]))
    return out


def _report(app: Flask, provider_id: str) -> tuple[usage.Series, list[dict[str, Any]]]:
    with db.services(app).sessions() as s:
        ctx = Ctx(s, db.services(app).log)
        party = s.get(Party, provider_id)
        assert party is not None
        return usage.series(ctx, party), usage.rows(ctx, party).rows


def test_series_equal_a_count_over_the_jobs(app: Flask, make_party: Any, make_agent: Any
                                             ) -> None:
    provider, other = make_party("provider"), make_party("provider")
    requesters = [make_party("requester") for _ in range(3)]
    _, permit_id = permit_for(requesters[0], provider, make_agent(provider))
    add_jobs(app, permit_id, provider.id, spread([r.id for r in requesters], 90))
    # Another provider's jobs count for it only.
    add_jobs(app, permit_id, other.id, [(requesters[1].id, T0 + timedelta(days=2))] * 4)

    series, every = _report(app, provider.id)
    assert len(every) == 91 == series.total
    days = Counter(datetime.fromisoformat(r["submitted_at"]).astimezone(UTC).date().isoformat()
                   for r in every)
    assert len(days) > usage.MAX_BARS
    assert series.per_day == sorted(days.items())[-usage.MAX_BARS:]
    who = Counter(str(r["requester_id"]) for r in every)
    names = {r.id: _name(app, r.id) for r in requesters}
    assert series.per_requester == [(r, names[r], n) for r, n in sorted(
        who.items(), key=lambda x: (-x[1], x[0]))]
    assert _report(app, other.id)[0].total == 4
    assert _report(app, requesters[0].id)[0] == usage.Series([], [], 0)


def _name(app: Flask, party_id: str) -> str:
    with db.services(app).sessions() as s:
        party = s.get(Party, party_id)
        assert party is not None
        return party.name


def test_pages_follow_the_keyset_back_to_the_first_job(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    _, permit_id = permit_for(requester, provider, make_agent(provider))
    add_jobs(app, permit_id, provider.id, spread([requester.id], 11))
    every = provider.get("/usage").json
    assert every["next_before"] is None and len(every["usage"]) == 12
    assert [r["submitted_at"] for r in every["usage"]] == sorted(
        r["submitted_at"] for r in every["usage"])
    pages: list[list[dict[str, object]]] = []
    before = ""
    while True:
        got = provider.get(f"/usage?limit=5{before}")
        assert got.status_code == 200, got.json
        pages.insert(0, got.json["usage"])
        if got.json["next_before"] is None:
            break
        assert got.json["next_before"] == got.json["usage"][0]["job_id"]
        before = f"&before={got.json['next_before']}"
    assert [len(p) for p in pages] == [2, 5, 5]
    assert [r for p in pages for r in p] == every["usage"]
    # Exactly one page: no cursor to an empty page.
    assert provider.get("/usage?limit=12").json["next_before"] is None


def test_bad_page_requests_are_refused_without_saying_whose_job(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, other = make_party("provider"), make_party("provider")
    requester = make_party("requester")
    _, permit_id = permit_for(requester, provider, make_agent(provider))
    mine = add_jobs(app, permit_id, provider.id, [(requester.id, T0)])[0]
    for query, field in (("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
                         (f"limit=5&before={mine}", "before"),
                         ("limit=5&before=job_nonexistent", "before")):
        r = other.get(f"/usage?{query}")
        assert r.status_code == 400 and r.json["field"] == field, (query, r.json)
    assert other.get("/usage?limit=5").json == {"usage": [], "next_before": None}
    for_me = provider.get(f"/usage?limit=5&before={mine}").json
    assert for_me == {"usage": [], "next_before": None}
    assert requester.get("/usage").status_code == 403


def test_the_rollup_is_counted_from_the_jobs_by_the_migration_and_by_rebuild(
        app: Flask, database_url: str, make_party: Any, make_agent: Any) -> None:
    """Jobs made before the rollup existed are counted when the migration creates it, by
    their day in UTC (T0 is near midnight), as the ORM counts new ones."""
    provider = make_party("provider")
    requesters = [make_party("requester") for _ in range(2)]
    _, permit_id = permit_for(requesters[0], provider, make_agent(provider))
    add_jobs(app, permit_id, provider.id, spread([r.id for r in requesters], 40))
    counted = _report(app, provider.id)[0]
    assert counted.total == 41
    db.dispose(app)
    downgrade(database_url, "0015_web_review")  # no rollup
    upgrade(database_url)
    assert _report(app, provider.id)[0] == counted
    with db.services(app).sessions() as s:
        s.execute(delete(UsageDay))
        s.commit()
        assert _report(app, provider.id)[0].total == 0
        usage.rebuild_rollup(s)
        s.commit()
    assert _report(app, provider.id)[0] == counted


def test_later_jobs_under_the_same_keys_add_to_the_rollup(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    first, second = make_party("requester"), make_party("requester")
    _, permit_id = permit_for(first, provider, make_agent(provider))
    add_jobs(app, permit_id, provider.id, [(first.id, T0)] * 3)
    add_jobs(app, permit_id, provider.id, [(second.id, T0), *[(first.id, T0)] * 2])
    series = _report(app, provider.id)[0]
    assert series.total == 6
    assert [(r, n) for r, _, n in series.per_requester] == [(first.id, 5), (second.id, 1)]
    assert series.per_day == [(T0.date().isoformat(), 6)]
