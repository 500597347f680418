"""The operator's page: parties, people, agents and their health, the job queue and the
checkpoint's age."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from sqlalchemy import func, select

from authz import agent_health, people
from authz.models import Agent, Job, Party
from authz.parties import agent_provider_ids
from sandbox import db
from sandbox.web import ledger_view as lv
from sandbox.web.session import page

bp = Blueprint("operator", __name__, url_prefix="/operator")


@bp.get("/")
@page("admin")
def overview() -> str:
    s = db.session()
    parties = list(s.scalars(select(Party).order_by(Party.role, Party.name)))
    staff = {p.id: people.people_of(db.ctx(), p.id) for p in parties}
    agents = [(a, sorted(agent_provider_ids(a))) for a in
              s.scalars(select(Agent).order_by(Agent.name))]
    queue: dict[str, int] = {str(state): int(n) for state, n in s.execute(
        select(Job.state, func.count()).group_by(Job.state)).all()}
    cfg = current_app.config
    now = db.ctx().now()
    seen = {a.id: agent_health.seen_ago(a.last_seen_at, now) for a, _ in agents}
    return render_template("web/operator/overview.html", parties=parties, staff=staff,
                           agents=agents, queue=queue, seen=seen,
                           busy=agent_health.busy_slots(db.ctx()),
                           stale_s=int(cfg["AGENT_POLL_WAIT_S"]) * 3 + 60,
                           names={p.id: p.name for p in parties},
                           status=lv.checkpoint_status(s, now),
                           witnesses=len(cfg["WITNESSES"]), quorum=cfg["WITNESS_QUORUM"])
