"""The catalog. No endpoint here, or anywhere, returns raw rows."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from authz import catalog, incidents
from authz.models import Dataset
from authz.people import PersonRole
from authz.states import DatasetStatus
from compute import mockdata
from sandbox import auth, db
from sandbox.api.args import int_arg
from sandbox.waiting import wait_until

bp = Blueprint("catalog", __name__, url_prefix="/api/v1/datasets")


@bp.post("")
@auth.roles("provider", need=PersonRole.DATASET_STEWARD)
def register() -> tuple[dict[str, Any], int]:
    provider = auth.party()
    ds = catalog.register(db.ctx(), provider, auth.body())
    db.commit()
    db.work_signal().notify()
    # The provider's agent checks the file against the declared schema. Wait briefly for
    # its verdict so a mismatch is reported to the caller as a 4xx; the rejected dataset
    # stays on record, inert, and the agent's verdict is on the ledger.
    timeout = float(current_app.config["SCHEMA_CHECK_WAIT_S"])
    ds = wait_until(db.services().readers, lambda s: s.get(Dataset, ds.id),
                    lambda d: d.status != DatasetStatus.CHECKING, timeout)
    body = catalog.to_json(ds, provider)
    if ds.status == DatasetStatus.REJECTED:
        reason = ds.status_reason or {}
        return {"error": "invalid_input", "field": reason.get("field", "location"),
                "rule": reason.get("rule", "schema check failed"),
                "message": "the provider's agent rejected the dataset file", "dataset": body}, 422
    return body, (201 if ds.status == DatasetStatus.ACTIVE else 202)


@bp.get("")
@auth.roles("provider", "requester", "regulator", "admin")
def list_datasets() -> dict[str, Any]:
    p = auth.party()
    return {"datasets": [catalog.to_json(d, p) for d in catalog.list_visible(db.ctx(), p)]}


@bp.get("/<dataset_id>")
@auth.roles("provider", "requester", "regulator", "admin")
def get_dataset(dataset_id: str) -> dict[str, Any]:
    p = auth.party()
    return catalog.to_json(catalog.get_visible(db.ctx(), p, dataset_id), p)


@bp.get("/<dataset_id>/mock-data")
@auth.roles("provider", "requester", "regulator", "admin")
def mock_data(dataset_id: str) -> Response:
    """Mock data made from the dataset's declared fields only (never from its file), for
    developing a script: CSV, deterministic by ``seed``; ``rows`` rows (default 200)."""
    ds = catalog.get_visible(db.ctx(), auth.party(), dataset_id)
    rows = int_arg("rows", mockdata.DEFAULT_ROWS, 1, mockdata.MAX_ROWS)
    seed = int_arg("seed", 0, 0, 2**32 - 1)
    body = mockdata.to_csv(mockdata.generate(ds.fields, rows, seed))
    name = f"{ds.code}-v{ds.version}-mock-seed{seed}.csv"
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "X-Content-Type-Options": "nosniff"})


@bp.post("/<dataset_id>/suspend")
@auth.roles("provider", "admin", need=(PersonRole.APPROVER, PersonRole.DATASET_STEWARD,
                                       PersonRole.ADMIN))
def suspend(dataset_id: str) -> dict[str, Any]:
    """Incident control: out of service now; its open jobs are cancelled."""
    ds = incidents.suspend_dataset(db.ctx(), auth.party(), dataset_id, auth.body())
    db.commit()
    return catalog.to_json(ds, auth.party())


@bp.post("/<dataset_id>/reinstate")
@auth.roles("provider", "admin", need=(PersonRole.APPROVER, PersonRole.DATASET_STEWARD,
                                       PersonRole.ADMIN))
def reinstate(dataset_id: str) -> dict[str, Any]:
    ds = incidents.reinstate_dataset(db.ctx(), auth.party(), dataset_id)
    db.commit()
    return catalog.to_json(ds, auth.party())
