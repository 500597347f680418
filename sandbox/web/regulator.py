"""Regulator pages: the ledger explorer, entry detail verified in the browser, the report."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import date
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers.response import Response as BaseResponse

from authz.states import OutputDecision
from compute.errors import InvalidInput
from ledger import api_payloads as payloads
from ledger.errors import EntryNotFoundError
from sandbox import db
from sandbox.web import charts, fragments, report_pdf
from sandbox.web import ledger_view as lv
from sandbox.web.requester import party_names
from sandbox.web.session import page

bp = Blueprint("regulator", __name__, url_prefix="/regulator")
#: Who reads the whole log: the same roles as the JSON ledger API (sandbox.api.ledger_api).
AUDITORS = ("regulator", "admin")
KIND_RX = re.compile(r"[a-z_.]{0,64}")
PARTY_RX = re.compile(r"[A-Za-z0-9_]{0,40}")
DATE_RX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
QUARTER_RX = re.compile(r"([0-9]{4})Q([1-4])")
#: A CSV cell starting with one of these may run as a formula in a spreadsheet (OWASP's
#: list; a tab or line break before "=" is still one to some programs): such a cell gets a
#: leading quote. Purposes and business systems are the analyst's own text.
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "\n")
KINDS = ("request.", "permit.", "job.", "run.", "dataset.", "party.", "person.", "joint.")


def _filters() -> lv.Filters:
    a = request.args
    kind, party = a.get("kind", "").strip(), a.get("party", "").strip()
    start, end = a.get("from", "").strip(), a.get("to", "").strip()
    if not KIND_RX.fullmatch(kind):
        raise InvalidInput("kind", "must be an event kind such as job.submitted or job.")
    if not PARTY_RX.fullmatch(party):
        raise InvalidInput("party", "must be a party or person id")
    for name, value in (("from", start), ("to", end)):
        if value and not DATE_RX.fullmatch(value):
            raise InvalidInput(name, "must be a date YYYY-MM-DD")
    return lv.Filters(kind, party, start, end)


@bp.get("/ledger")
@page(*AUDITORS)
def ledger() -> str:
    f = _filters()
    raw = request.args.get("before", "")
    if raw and not (raw.isascii() and raw.isdigit()):
        raise InvalidInput("before", "must be an entry index")
    result = lv.page(db.log(), db.session(), f, int(raw) if raw else None)
    actors = [str(e["actor"]) for e in result.entries]
    status = lv.checkpoint_status(db.session(), db.ctx().now())
    names = party_names({a for a in actors if a.startswith("pty_")})
    # One URL built, the others by appending the index (url_for per row costs more
    # than the row's own markup).
    base = url_for("web.regulator.entry", index=0)[:-1]
    # Each row is rendered once and kept (an entry never changes; a party's name
    # neither): the newest page is shown again and again.
    rows = fragments.join(fragments.render_each(
        "web/regulator/_entry_row.html", "entry_row",
        [lv.row(data, names.get(actor, actor), base)
         for data, actor in zip(result.raw, actors, strict=True)]))
    return render_template("web/regulator/ledger.html", page=result, filters=f,
                           rows=rows, kinds=KINDS, status=status)


@bp.get("/ledger/<int:index>")
@page(*AUDITORS)
def entry(index: int) -> str:
    data = db.log().entries(db.session(), index, index + 1)
    if not data:
        raise EntryNotFoundError(f"no entry {index}")
    e = lv.read_entry(data[0])
    return render_template("web/regulator/entry.html", entry=e, rows=lv.flatten(e["body"]),
                           status=lv.checkpoint_status(db.session(), db.ctx().now()),
                           server_vkey=db.services().signer.vkey())


@bp.get("/ledger/<int:index>/receipt.json")
@page(*AUDITORS)
def entry_receipt(index: int) -> dict[str, Any]:
    """What the browser verifies: the entry, its inclusion proof and the signed checkpoint
    (the same payload as ``GET /api/v1/ledger/receipt/<index>``)."""
    return payloads.receipt_payload(db.log(), db.session(), index)


@bp.get("/ledger/consistency.json")
@page(*AUDITORS)
def consistency() -> dict[str, Any]:
    """A consistency proof between two tree sizes (as ``GET /api/v1/ledger/proof/
    consistency``), for the browser's check against the checkpoint it saved."""
    sizes = []
    for name in ("old", "new"):
        raw = request.args.get(name, "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
            raise InvalidInput(name, "must be a tree size")
        sizes.append(int(raw))
    return payloads.consistency_payload(db.log(), db.session(), sizes[0], sizes[1])


def _quarter() -> tuple[str, str, str]:
    raw = request.args.get("quarter", "")
    if not raw:
        today = db.ctx().now().date()
        raw = f"{today.year}Q{(today.month - 1) // 3 + 1}"
    m = QUARTER_RX.fullmatch(raw)
    if not m:
        raise InvalidInput("quarter", "must look like 2026Q4")
    year, q = int(m.group(1)), int(m.group(2))
    start = date(year, 3 * q - 2, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return raw, start.isoformat(), end.isoformat()


REPORT_COLUMNS = ("index", "time", "job", "state", "user", "authorizing_operator",
                  "datasets", "purpose", "business_system", "rows", "code_sha256",
                  "released_outputs")


def _report_rows(start: str, end: str) -> list[dict[str, Any]]:
    rows = []
    for e in lv.in_period(db.log(), db.session(), start, end, "run.finished"):
        b = e["body"]
        audit = b.get("audit", {})
        rows.append({
            "index": e["index"], "time": e["ts"], "job": b.get("job_id", ""),
            "state": b.get("state", ""), "user": audit.get("user", ""),
            "authorizing_operator": audit.get("authorizing_operator", ""),
            "datasets": " ".join(b.get("dataset_ids", [])), "purpose": b.get("purpose", ""),
            "business_system": audit.get("business_system", ""),
            "rows": audit.get("data_volume", {}).get("rows", ""),
            "code_sha256": b.get("script_sha256", ""),
            "released_outputs": " ".join(o["name"] for o in b.get("outputs", [])
                                         if o.get("decision") == OutputDecision.RELEASED)})
    return rows


def _per_user(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return Counter(str(r["user"]) for r in rows).most_common(charts.MAX_BARS)


def _per_dataset(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return Counter(d for r in rows for d in str(r["datasets"]).split()).most_common(
        charts.MAX_BARS)


@bp.get("/report")
@page(*AUDITORS)
def report() -> str:
    quarter, start, end = _quarter()
    rows = _report_rows(start, end)
    users, datasets = _per_user(rows), _per_dataset(rows)
    return render_template("web/regulator/report.html", quarter=quarter, start=start,
                           end=end, rows=rows, columns=REPORT_COLUMNS,
                           by_user=charts.bars(users, "user"),
                           by_dataset=charts.bars(datasets, "dataset"))


@bp.get("/report.csv")
@page(*AUDITORS)
def report_csv() -> BaseResponse:
    quarter, start, end = _quarter()
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\r\n")
    w.writeheader()
    for row in _report_rows(start, end):
        w.writerow({k: ("'" + v if isinstance(v, str) and v.startswith(FORMULA_LEADS)
                        else v) for k, v in row.items()})
    # The BOM makes spreadsheet programs read the Chinese text as UTF-8.
    return Response("\ufeff" + out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="ledger-report-{quarter}.csv"'})


@bp.get("/report.pdf")
@page(*AUDITORS)
def report_pdf_export() -> BaseResponse:
    """The report as PDF, in the reader's language: the same rows as the CSV, and the
    runs per user and per dataset as charts and tables."""
    quarter, start, end = _quarter()
    rows = _report_rows(start, end)
    words = report_pdf.Words(
        title=f'{_("Quarterly report")} {quarter}',
        period=_("Runs from %(start)s to %(end)s (UTC): who used which datasets, for what, "
                 "how many rows, which code, what was released.", start=start, end=end),
        runs_per_user=_("Runs per user"), runs_per_dataset=_("Runs per dataset"),
        count=_("Runs"), none=_("No run in this quarter."))
    body = report_pdf.render(words, REPORT_COLUMNS, rows, _per_user(rows), _per_dataset(rows))
    return Response(body, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="ledger-report-{quarter}.pdf"'})
