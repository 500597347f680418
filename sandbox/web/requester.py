"""Requester pages: catalog, dataset, access request, requests and permits, jobs, results."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from sqlalchemy import bindparam, select
from werkzeug.wrappers.response import Response as BaseResponse

from authz import access, catalog, job_list, jobs, output_names
from authz.models import Party, Permit
from authz.states import TERMINAL, JobState, OutputDecision, PermitStatus
from compute import mockdata
from compute.errors import InvalidInput, NotFound, SandboxError
from sandbox import auth, db, downloads, release
from sandbox.web import charts
from sandbox.web.session import current, page

bp = Blueprint("requester", __name__, url_prefix="/requester")
#: The steps a job page shows, in order (a job ends in one of TERMINAL after them).
STEPS = (JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING, JobState.CHECKING)
MAX_TABLE_ROWS = 200


_PARTIES = Party.__table__
_NAMES = select(_PARTIES.c.id, _PARTIES.c.name).where(
    _PARTIES.c.id.in_(bindparam("ids", expanding=True)))


def party_names(ids: set[str]) -> dict[str, str]:
    """The names of these parties (plain columns through the request's connection)."""
    if not ids:
        return {}
    rows = db.session().connection().execute(_NAMES, {"ids": sorted(ids)})
    return {pid: name for pid, name in rows}


@bp.get("/catalog", endpoint="catalog")
@page("requester", "provider", "regulator", "admin")
def catalog_page() -> str:
    p = auth.party()
    every = catalog.list_visible(db.ctx(), p)
    f = {k: request.args.get(k, "").strip() for k in
         ("q", "category", "provider", "openness", "field")}
    shown = [d for d in every if _matches(d, f)]
    names = party_names({d.provider_id for d in every})
    return render_template("web/requester/catalog.html", datasets=shown, names=names,
                           filters=f, categories=sorted({d.category for d in every}),
                           providers=sorted({d.provider_id for d in every},
                                            key=lambda i: names.get(i, i)),
                           openness=catalog.OPENNESS)



def _matches(d: Any, f: dict[str, str]) -> bool:
    q = f["q"].lower()
    if q and not any(q in str(x).lower() for x in (d.name, d.code, d.summary, d.category)):
        return False
    if f["category"] and d.category != f["category"]:
        return False
    if f["provider"] and d.provider_id != f["provider"]:
        return False
    if f["openness"] and d.openness != f["openness"]:
        return False
    field = f["field"].lower()
    return not field or any(field in fl["name"].lower() for fl in d.fields)


@bp.get("/datasets/<dataset_id>")
@page("requester", "provider", "regulator", "admin")
def dataset(dataset_id: str) -> str:
    p = auth.party()
    ds = catalog.get_visible(db.ctx(), p, dataset_id)
    return render_template("web/requester/dataset.html", ds=catalog.to_json(ds, p),
                           provider=party_names({ds.provider_id}).get(ds.provider_id, ""),
                           can_request=p.role == "requester" and ds.openness != "not_open",
                           mock_rows=mockdata.DEFAULT_ROWS)


@bp.get("/datasets/<dataset_id>/mock-data.csv")
@page("requester", "provider", "regulator", "admin")
def mock_data(dataset_id: str) -> Response:
    """The API's mock data (``GET /api/v1/datasets/<id>/mock-data``, default rows and
    seed): made from the declared fields only, never from the dataset's file."""
    ds = catalog.get_visible(db.ctx(), auth.party(), dataset_id)
    body = mockdata.to_csv(mockdata.generate(ds.fields, mockdata.DEFAULT_ROWS, 0))
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{ds.code}-v{ds.version}-mock.csv"'})


@bp.route("/requests/new", methods=["GET", "POST"])
@page("requester")
def new_request() -> str | tuple[str, int] | BaseResponse:
    p = auth.party()
    ds = catalog.get_visible(db.ctx(), p, request.values.get("dataset_id", ""))
    form = request.form
    if request.method == "POST":
        body = {"purpose": form.get("purpose", ""), "use_kind": form.get("use_kind", ""),
                "business_system": form.get("business_system", ""),
                "items": [{"dataset_id": ds.id, "columns": form.getlist("columns")}]}
        try:
            req = access.create_request(db.ctx(), p, body)
        except SandboxError as e:
            db.session().rollback()
            return render_template("web/requester/new_request.html", ds=ds, form=form,
                                   use_kinds=access.USE_KINDS, error=e.to_json()), 400
        db.commit()
        return redirect(url_for("web.requester.requests", created=req.id))
    return render_template("web/requester/new_request.html", ds=ds, form=form,
                           use_kinds=access.USE_KINDS, error=None)


@bp.get("/requests")
@page("requester")
def requests() -> str:
    p = auth.party()
    rows = [access.request_json(r, db.ctx()) for r in access.visible_requests(db.ctx(), p)]
    rows.reverse()
    permit_ids = [r["permit_id"] for r in rows if r["permit_id"]]
    permits = [access.permit_json(x) for x in db.session().scalars(
        select(Permit).where(Permit.id.in_(permit_ids), Permit.requester_id == p.id))]
    return render_template("web/requester/requests.html", rows=rows, permits=permits,
                           created=request.args.get("created"),
                           names=party_names({i["provider_id"] for r in rows
                                              for i in r["items"]}))


def _my_permits(p: Party) -> list[Permit]:
    return list(db.session().scalars(select(Permit).where(
        Permit.requester_id == p.id, Permit.status == PermitStatus.ACTIVE)
        .order_by(Permit.created_at)))


@bp.route("/jobs/new", methods=["GET", "POST"])
@page("requester")
def new_job() -> str | tuple[str, int] | BaseResponse:
    p = auth.party()
    permits = _my_permits(p)
    form = request.form
    if request.method == "POST":
        body: dict[str, Any] = {"permit_id": form.get("permit_id", ""),
                                "dataset_ids": form.getlist("dataset_ids")}
        try:
            if form.get("kind") == "statistics":
                try:
                    body["statistics"] = json.loads(form.get("statistics", ""))
                except ValueError:
                    raise InvalidInput("statistics", "must be a JSON object") from None
            else:
                body["script"] = form.get("script", "").replace("\r\n", "\n")
            job = jobs.submit(db.ctx(), p, body)
        except SandboxError as e:
            db.session().rollback()
            return render_template("web/requester/new_job.html", permits=permits, form=form,
                                   error=e.to_json()), 400
        db.commit()
        db.work_signal().notify()
        return redirect(url_for("web.requester.job", job_id=job.id))
    return render_template("web/requester/new_job.html", permits=permits, form=form,
                           error=None)


@bp.get("/jobs", endpoint="jobs")
@page("requester")
def jobs_page() -> str:
    # The session's checked party (live, active: checked on this request) and the API's
    # plain rows (authz/job_list.py): the same JSON as GET /api/v1/jobs, newest first.
    signed = current()
    assert signed is not None  # page() redirected a request without a session
    rows = list(reversed(job_list.list_json(db.ctx(), signed.party)))
    return render_template("web/requester/jobs.html", rows=rows)



@bp.get("/jobs/<job_id>")
@page("requester")
def job(job_id: str) -> str:
    p = auth.party()
    j = jobs.get_visible(db.ctx(), p, job_id)
    data = jobs.to_json(j, p)
    tables: dict[str, Any] = {}
    withheld: str | None = None
    if j.state == JobState.RELEASED and j.ledger_index is not None:
        try:
            release.require_witnessed(j.ledger_index)
        except release.AwaitingWitnesses as e:
            withheld = str(e)
        else:
            for o in j.outputs:
                if o.decision == OutputDecision.RELEASED and o.content is not None:
                    # Shown by the kind the checks verified: released, it is no secret
                    # (an output released by review keeps its positional name).
                    tables[o.name] = _table(output_names.checked_kind(o), o.content)
    return render_template("web/requester/job.html", job=data, steps=STEPS,
                           terminal=j.state in TERMINAL, tables=tables, withheld=withheld,
                           code=j.script.decode("utf-8", "replace"), kind=j.kind)


def _table(kind: output_names.OutputKind | None, content: bytes) -> dict[str, Any]:
    """A released output as rows to show: CSV as a table, JSON as indented text; anything
    else (a PNG chart) only as its download, never in the page."""
    if kind not in (output_names.OutputKind.CSV, output_names.OutputKind.JSON):
        return {}
    text = content.decode("utf-8", errors="replace")
    if kind == output_names.OutputKind.CSV:
        rows = list(csv.reader(io.StringIO(text)))
        header, body = (rows[0] if rows else []), rows[1:MAX_TABLE_ROWS + 1]
        return {"header": header, "rows": body, "chart": charts.table_chart(header, body),
                "cut": max(0, len(rows) - 1 - MAX_TABLE_ROWS)}
    try:
        return {"text": json.dumps(json.loads(text), indent=2, ensure_ascii=False)}
    except ValueError:
        return {"text": text}


@bp.post("/jobs/<job_id>/cancel")
@page("requester")
def cancel(job_id: str) -> BaseResponse:
    jobs.cancel(db.ctx(), auth.party(), job_id)
    db.commit()
    return redirect(url_for("web.requester.job", job_id=job_id))


@bp.get("/jobs/<job_id>/receipt")
@page("requester")
def receipt(job_id: str) -> Response:
    """The same receipt as ``GET /api/v1/jobs/<id>/receipt``, as a file to keep."""
    p = auth.party()
    j = jobs.get_visible(db.ctx(), p, job_id)
    if j.ledger_index is None or j.requester_id != p.id:
        raise NotFound("this job has no run entry")
    body = json.dumps(release.witnessed_receipt(j.ledger_index), indent=2)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="receipt-{j.id}.json"'})


@bp.get("/jobs/<job_id>/outputs/<name>")
@page("requester")
def output(job_id: str, name: str) -> Response:
    p = auth.party()
    out = jobs.released_output(db.ctx(), p, job_id, name)
    j = jobs.get_visible(db.ctx(), p, job_id)
    if j.ledger_index is None:
        abort(404)
    release.require_witnessed(j.ledger_index)
    # The API's response (GET /api/v1/jobs/<id>/outputs/<name>): the same file.
    return downloads.output_file(out)
