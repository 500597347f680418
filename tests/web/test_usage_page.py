"""The provider's usage dashboard: charts counted over every job, the table a page at a time."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Flask

from authz.models import Job
from authz.states import JobState
from sandbox import db
from sandbox.web.provider import USAGE_ROWS
from tests.api.helpers import permit_for
from tests.api.test_usage_report import T0, add_jobs
from tests.web.conftest import World

TIME_RX = re.compile(r'<tr><td><time datetime="([^"]+)"')
EARLIER_RX = re.compile(r'href="/provider/usage\?before=(job_[0-9a-f]+)"')


def test_the_dashboard_pages_its_table_and_charts_every_job(
        app: Flask, world: World, person: Any) -> None:
    _, permit_id = permit_for(world.requester, world.provider, world.agent)
    ids = add_jobs(app, permit_id, world.provider.id,
                   [(world.requester.id, T0 - timedelta(hours=i))
                    for i in range(USAGE_ROWS + 3)])
    approver = person(world.provider, "approver")
    first = approver.get("/provider/usage").get_data(as_text=True)
    # Newest first, the latest USAGE_ROWS; the charts count all of them (3 days, 1 requester).
    times = TIME_RX.findall(first)
    assert len(times) == USAGE_ROWS and times[0] == T0.isoformat()
    assert f"The latest {USAGE_ROWS} of {USAGE_ROWS + 3} jobs." in first
    assert first.count("<rect") == 4
    found = EARLIER_RX.search(first)
    assert found is not None and found.group(1) == ids[USAGE_ROWS - 1]
    second = approver.get(f"/provider/usage?before={found.group(1)}")
    assert second.status_code == 200
    text = second.get_data(as_text=True)
    older = TIME_RX.findall(text)
    assert len(older) == 3 and EARLIER_RX.search(text) is None
    assert older[-1] == (T0 - timedelta(hours=USAGE_ROWS + 2)).isoformat()
    # Another provider's people see none of it, not even through a cursor.
    other = person(world.other_provider, "approver")
    assert TIME_RX.search(other.get("/provider/usage").get_data(as_text=True)) is None
    assert other.get(f"/provider/usage?before={ids[0]}").status_code == 400


def test_a_kept_row_follows_its_job_and_the_reader_s_language(
        app: Flask, world: World, person: Any) -> None:
    # Rows are rendered once and kept (sandbox.web.fragments): keyed by what they show.
    _, permit_id = permit_for(world.requester, world.provider, world.agent)
    [job_id] = add_jobs(app, permit_id, world.provider.id, [(world.requester.id, T0)])
    approver = person(world.provider, "approver")
    assert 'state-released">released<' in approver.get("/provider/usage").get_data(
        as_text=True)
    zh = approver.get("/provider/usage", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert 'state-released">已发布<' in zh.get_data(as_text=True)
    with db.services(app).sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state, job.rows_read = JobState.BLOCKED, 11
        s.commit()
    text = approver.get("/provider/usage").get_data(as_text=True)
    assert 'state-blocked">blocked<' in text and "<td>11</td>" in text
    assert 'state-released"' not in text
    # The charts are kept per version of the rollup: a new job (another day) is counted.
    assert text.count("<rect") == 2  # one day, one requester
    add_jobs(app, permit_id, world.provider.id, [(world.requester.id, T0 - timedelta(days=2))])
    assert approver.get("/provider/usage").get_data(as_text=True).count("<rect") == 3
