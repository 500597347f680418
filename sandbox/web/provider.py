"""Provider pages: the inbox of requests to decide, datasets, usage, permits and revocation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import select
from werkzeug.wrappers.response import Response as BaseResponse

from authz import access, catalog, permits, script_approval
from authz import usage as usage_report
from authz.models import Dataset, Party, Permit
from authz.people import PersonRole
from authz.states import Decision, ScriptRelease
from compute.errors import InvalidInput, SandboxError
from sandbox import auth, db
from sandbox.web import charts, fragments
from sandbox.web.labels import state_label
from sandbox.web.requester import party_names
from sandbox.web.session import page

bp = Blueprint("provider", __name__, url_prefix="/provider")
FIELD_ROWS = 6  # empty rows the register form starts with (a script adds more)
USAGE_ROWS = 50  # rows of a page of the usage table (the latest jobs first)


def _pending() -> list[dict[str, Any]]:
    p = auth.party()
    out = []
    for req in access.visible_requests(db.ctx(), p):
        for it in req.items:
            if it.provider_id == p.id and it.decision == Decision.PENDING:
                out.append({"request": req, "item": it,
                            "dataset": db.session().get(Dataset, it.dataset_id)})
    return out


def _inbox(error: dict[str, Any] | None = None, status: int = 200) -> tuple[str, int]:
    rows = _pending()
    # New scripts waiting for this provider's approval, with their full code to read.
    scripts = [script_approval.script_of(db.ctx(), auth.party(), j.id) | {"job": j}
               for j in script_approval.pending(db.ctx(), auth.party())]
    names = party_names({r["request"].requester_id for r in rows}
                        | {s["job"].requester_id for s in scripts})
    return render_template("web/provider/inbox.html", rows=rows, names=names, error=error,
                           scripts=scripts, releases=list(ScriptRelease),
                           done=request.args.get("done")), status


@bp.get("/inbox")
@page("provider")
def inbox() -> tuple[str, int]:
    return _inbox()


def _int(name: str, default: int) -> int:
    raw = request.form.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(name, "must be a whole number")
    return int(raw)


@bp.post("/inbox/<request_id>/<dataset_id>/approve")
@page("provider", need=PersonRole.APPROVER)
def approve(request_id: str, dataset_id: str) -> tuple[str, int] | BaseResponse:
    f = request.form
    try:
        days = _int("days", 30)
        if not 1 <= days <= 3650:
            raise InvalidInput("days", "must be between 1 and 3650")
        body: dict[str, Any] = {
            "columns": f.getlist("columns"),
            "expires_at": (db.ctx().now() + timedelta(days=days)).isoformat(),
            "max_runs": _int("max_runs", 10), "min_cell_count": _int("min_cell_count", 10),
            "risk_assessment": f.get("risk_assessment", ""),
            "script_release": f.get("script_release", ScriptRelease.REVIEW.value)}
        if f.get("epsilon_budget", "").strip():
            try:
                body["epsilon_budget"] = float(f["epsilon_budget"])
            except ValueError:
                raise InvalidInput("epsilon_budget", "must be a number") from None
        access.approve(db.ctx(), auth.party(), request_id, dataset_id, body)
    except SandboxError as e:
        db.session().rollback()
        return _inbox(e.to_json(), 400)
    db.commit()
    return redirect(url_for("web.provider.inbox", done=request_id))


@bp.post("/inbox/<request_id>/<dataset_id>/deny")
@page("provider", need=PersonRole.APPROVER)
def deny(request_id: str, dataset_id: str) -> tuple[str, int] | BaseResponse:
    try:
        access.deny(db.ctx(), auth.party(), request_id, dataset_id,
                    {"reason": request.form.get("reason", "")})
    except SandboxError as e:
        db.session().rollback()
        return _inbox(e.to_json(), 400)
    db.commit()
    return redirect(url_for("web.provider.inbox", done=request_id))


@bp.post("/scripts/<job_id>/approve")
@page("provider", need=PersonRole.APPROVER)
def approve_script(job_id: str) -> tuple[str, int] | BaseResponse:
    try:
        script_approval.approve(db.ctx(), auth.party(), job_id)
    except SandboxError as e:
        db.session().rollback()
        return _inbox(e.to_json(), e.http_status)
    db.commit()
    db.work_signal().notify()  # the job is queued: an agent may take it now
    return redirect(url_for("web.provider.inbox", done=job_id))


@bp.post("/scripts/<job_id>/refuse")
@page("provider", need=PersonRole.APPROVER)
def refuse_script(job_id: str) -> tuple[str, int] | BaseResponse:
    try:
        script_approval.refuse(db.ctx(), auth.party(), job_id,
                               {"reason": request.form.get("reason", "")})
    except SandboxError as e:
        db.session().rollback()
        return _inbox(e.to_json(), e.http_status)
    db.commit()
    return redirect(url_for("web.provider.inbox", done=job_id))


def _own_datasets() -> list[Dataset]:
    p = auth.party()
    return [d for d in catalog.list_visible(db.ctx(), p) if d.provider_id == p.id]


@bp.get("/datasets")
@page("provider")
def datasets() -> str:
    return render_template("web/provider/datasets.html", datasets=_own_datasets(),
                           registered=request.args.get("registered"))


def _fields_from_form() -> list[dict[str, str]]:
    f = request.form
    rows = zip(f.getlist("field_name"), f.getlist("field_type"),
               f.getlist("field_sensitivity"), f.getlist("field_description"), strict=False)
    return [{"name": n.strip(), "type": t, "sensitivity": s, "description": d}
            for n, t, s, d in rows if n.strip()]


@bp.route("/datasets/new", methods=["GET", "POST"])
@page("provider", need=PersonRole.DATASET_STEWARD)
def register() -> tuple[str, int] | BaseResponse:
    f = request.form
    fields = _fields_from_form() if request.method == "POST" else []
    if request.method == "POST":
        body = {k: f.get(k, "") for k in ("code", "name", "category", "summary", "format",
                                           "openness", "sharing", "update_cycle",
                                           "publish_date", "location")}
        body["fields"] = fields  # type: ignore[assignment]
        try:
            ds = catalog.register(db.ctx(), auth.party(), body)
        except SandboxError as e:
            db.session().rollback()
            return _register_form(fields, e.to_json(), 400)
        db.commit()
        # The provider's agent checks the file; the list shows the verdict when it lands.
        db.work_signal().notify()
        return redirect(url_for("web.provider.datasets", registered=ds.id))
    return _register_form(fields, None, 200)


def _register_form(fields: list[dict[str, str]], error: dict[str, Any] | None,
                   status: int) -> tuple[str, int]:
    rows = fields + [{"name": "", "type": "string", "sensitivity": "internal",
                      "description": ""}] * max(1, FIELD_ROWS - len(fields))
    return render_template("web/provider/register.html", rows=rows, error=error,
                           form=request.form, types=catalog.FIELD_TYPES,
                           levels=catalog.SENSITIVITY, openness=catalog.OPENNESS), status


class UsageRow(NamedTuple):
    """One row of the usage table: everything it shows, the state in the reader's words
    (so its markup can be kept, sandbox.web.fragments). A tuple: made and hashed for
    every row of every request, at C speed."""

    submitted_at: str
    requester_name: str | None
    purpose: str
    dataset_ids: tuple[str, ...]
    state: str
    state_label: str
    rows_read: int | None
    script_sha256: str


def _usage_rows(found: list[dict[str, Any]]) -> list[Markup]:
    labels: dict[str, str] = {}  # each state translated once
    rows = []
    for r in reversed(found):
        state = str(r["state"])
        if state not in labels:
            labels[state] = state_label(state)
        rows.append(UsageRow(r["submitted_at"], r["requester_name"], r["purpose"],
                             tuple(r["dataset_ids"]), state, labels[state], r["rows_read"],
                             r["script_sha256"]))
    return fragments.render_each("web/provider/_usage_row.html", "usage_row", rows)


def _chart(chart: charts.Chart, title: str, element_id: str) -> Markup:
    return fragments.render("web/provider/_chart.html", "bar_chart", chart, title, element_id)


#: Providers whose charts' series a process keeps (each a few hundred numbers and names).
KEPT_SERIES = 1024


def _series(provider: Party) -> usage_report.Series:
    """The charts' series, kept per (provider, rollup version) for this app: read again
    only after a job changed the provider's rollup. The version is read first, so what
    is kept under it is never older than it."""
    kept: dict[tuple[str, int], usage_report.Series] = current_app.extensions.setdefault(
        "sandbox_usage_series", {})
    key = (provider.id, usage_report.rollup_version(db.ctx(), provider.id))
    found = kept.get(key)
    if found is None:
        found = usage_report.series(db.ctx(), provider)
        if len(kept) >= KEPT_SERIES:
            kept.clear()
        kept[key] = found
    return found


@bp.get("/usage")
@page("provider")
def usage() -> str:
    # The charts count every job (in the database); the table is a page of the latest,
    # with a link to the page before it: the rows read do not grow with the number of jobs.
    # A row's and a chart's markup is kept for the same content (sandbox.web.fragments).
    before = request.args.get("before") or None
    found = usage_report.rows(db.ctx(), auth.party(), USAGE_ROWS, before)
    counted = _series(auth.party())
    by_day = charts.bars(counted.per_day, charts.DAYS_LABEL)
    by_requester = charts.bars([(name, n) for _, name, n in counted.per_requester],
                               charts.REQUESTER_LABEL)
    return render_template(
        "web/provider/usage.html", rows=fragments.join(_usage_rows(found.rows)),
        shown=len(found.rows), older=found.next_before, paged=before is not None,
        total=counted.total,
        by_day=_chart(by_day, _("Jobs per day"), "c-day"),
        by_requester=_chart(by_requester, _("Jobs per requester"), "c-req"))


def _covering() -> list[Permit]:
    p = auth.party()
    return [x for x in db.session().scalars(select(Permit).order_by(Permit.created_at))
            if p.id in permits.permit_providers(db.ctx(), x)]


@bp.get("/permits", endpoint="permits")
@page("provider")
def permits_page() -> str:
    rows = [access.permit_json(x) for x in reversed(_covering())]
    return render_template("web/provider/permits.html", rows=rows,
                           names=party_names({r["requester_id"] for r in rows}),
                           error=None)



@bp.post("/permits/<permit_id>/revoke")
@page("provider", need=PersonRole.APPROVER)
def revoke(permit_id: str) -> tuple[str, int] | BaseResponse:
    try:
        access.revoke(db.ctx(), auth.party(), permit_id,
                      {"reason": request.form.get("reason", "")})
    except SandboxError as e:
        db.session().rollback()
        rows = [access.permit_json(x) for x in reversed(_covering())]
        return render_template("web/provider/permits.html", rows=rows, error=e.to_json(),
                               names=party_names({r["requester_id"] for r in rows})), 400
    db.commit()
    return redirect(url_for("web.provider.permits"))
