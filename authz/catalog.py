"""The dataset catalog: core metadata (政务信息资源目录核心元数据) and schema checks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from authz import lifecycle
from authz import validate as v
from authz.context import Ctx
from authz.models import Dataset, Party, new_id
from authz.specs import DATASET_SPEC as DATASET_SPEC
from authz.specs import FIELD_SPEC as FIELD_SPEC
from authz.specs import FIELD_TYPES as FIELD_TYPES
from authz.specs import MAX_CATEGORIES as MAX_CATEGORIES
from authz.specs import OPENNESS as OPENNESS
from authz.specs import SENSITIVITY as SENSITIVITY
from authz.states import DatasetStatus
from authz.wire import SchemaVerdict
from compute.errors import Conflict, InvalidInput, NotFound

# Columns at these levels never appear in a released output.
HIGH_SENSITIVITY = frozenset({"restricted", "identifier"})
DECLARED = ("categories", "range", "missing_rate")


def level(sensitivity: str) -> int:
    return SENSITIVITY.index(sensitivity)


def _check_declared(i: int, field: dict[str, Any]) -> dict[str, Any]:
    """The field with its declared metadata checked against its type (absent keys dropped)."""
    where, kind = f"fields[{i}]", field["type"]
    if field["categories"] is not None:
        if kind != "string":
            raise InvalidInput(f"{where}.categories", "only a string field declares "
                               "categories; give an integer or number field a range")
        if field["sensitivity"] == "identifier":
            raise InvalidInput(f"{where}.categories", "an identifier's values are never "
                               "published: remove the categories (mock data makes "
                               "synthetic identifiers)")
    if field["range"] is not None:
        lo, hi = field["range"]
        want = str if kind == "date" else float
        if kind not in ("integer", "number", "date") or not (
                isinstance(lo, want) and isinstance(hi, want)):
            raise InvalidInput(f"{where}.range", "a range is [min, max]: numbers for an "
                               "integer or number field, YYYY-MM-DD dates for a date field")
        if lo > hi:
            raise InvalidInput(f"{where}.range", "min must not be above max")
    return {k: x for k, x in field.items() if k not in DECLARED or x is not None}


def register(ctx: Ctx, provider: Party, body: object) -> Dataset:
    data = v.parse(body, DATASET_SPEC)
    data["fields"] = [_check_declared(i, f) for i, f in enumerate(data["fields"])]
    names = [f["name"] for f in data["fields"]]
    if len(set(names)) != len(names):
        raise InvalidInput("fields", "field names must be unique")
    # A code names one dataset of one provider across its versions: registering it again
    # (after a rejection, or for a new edition of the file) makes the next version.
    versions = list(ctx.session.scalars(select(Dataset).where(Dataset.code == data["code"])))
    if any(d.provider_id != provider.id for d in versions):
        raise Conflict(f"dataset code {data['code']!r} belongs to another provider; "
                       "choose another code")
    if checking := [d for d in versions if d.status == DatasetStatus.CHECKING]:
        raise Conflict(f"version {checking[0].version} of {data['code']!r} is still being "
                       "checked by the provider's agent: register again once it is active "
                       "or rejected")
    version = max((d.version for d in versions), default=0) + 1
    ds = Dataset(id=new_id("ds"), provider_id=provider.id, registered_by=provider.id,
                 status=DatasetStatus.CHECKING, version=version, **data)
    ctx.session.add(ds)
    ctx.session.flush()
    ctx.record("dataset.registered", provider.id, {
        "dataset_id": ds.id, "code": ds.code, "version": ds.version, "name": ds.name,
        "provider_id": provider.id, "openness": ds.openness, "format": ds.format,
        "fields": [{"name": f["name"], "type": f["type"], "sensitivity": f["sensitivity"]}
                   for f in ds.fields],
    })
    return ds


def record_schema_check(ctx: Ctx, actor: str, ds: Dataset, verdict: SchemaVerdict) -> None:
    """Store the agent's verdict. A rejected dataset stays as a record but is inert."""
    ok, rows = verdict.ok, verdict.rows
    error = verdict.error.model_dump() if verdict.error is not None else None
    if ds.status != DatasetStatus.CHECKING:
        raise Conflict(f"dataset is {ds.status}, not awaiting a schema check")
    ds.status = DatasetStatus.ACTIVE if ok else DatasetStatus.REJECTED
    ds.rows = rows if ok else None
    ds.status_reason = None if ok else error
    ds.checked_at = ctx.now()
    kind = "dataset.activated" if ok else "dataset.rejected"
    # Rounded on the record like a run's data volume: the exact size is the provider's.
    ctx.record(kind, actor, {"dataset_id": ds.id, "rows": shown_rows(rows), "error": error})


def shown_rows(rows: int | None) -> int | None:
    """A dataset's size as anyone but its provider sees it: rounded as the job views round
    rows read (authz/jobs.py). Exact, it is the pooled total a requester subtracts the
    released rows from to count the records a check withdrew or a table suppressed (R7-2)."""
    return None if rows is None else lifecycle.rounded(rows, lifecycle.ROW_BASE)


def get_visible(ctx: Ctx, party: Party, dataset_id: str) -> Dataset:
    ds = ctx.session.get(Dataset, dataset_id)
    if ds is None or not visible(party, ds):
        raise NotFound("no such dataset")
    return ds


def visible(party: Party, ds: Dataset) -> bool:
    # Providers see their own datasets in every state; everyone sees active catalog entries.
    return ds.provider_id == party.id or ds.status == DatasetStatus.ACTIVE


def list_visible(ctx: Ctx, party: Party) -> list[Dataset]:
    rows = ctx.session.scalars(select(Dataset).order_by(Dataset.created_at, Dataset.id))
    return [d for d in rows if visible(party, d)]


def field_map(ds: Dataset) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in ds.fields}


def identifier_fields(ds: Dataset) -> list[str]:
    """The fields that say which records are one person's (persons are then the unit of
    the disclosure rules and of differential privacy)."""
    return [f["name"] for f in ds.fields if f["sensitivity"] == "identifier"]


def to_json(ds: Dataset, party: Party) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ds.id, "code": ds.code, "version": ds.version, "name": ds.name,
        "category": ds.category,
        "summary": ds.summary, "format": ds.format, "provider_id": ds.provider_id,
        "openness": ds.openness, "sharing": ds.sharing, "update_cycle": ds.update_cycle,
        "publish_date": ds.publish_date, "related_codes": ds.related_codes,
        "fields": ds.fields, "status": ds.status,
        "rows": ds.rows if ds.provider_id == party.id else shown_rows(ds.rows),
        "created_at": ds.created_at.isoformat(),
    }
    if ds.provider_id == party.id:
        # The location names a path inside the provider's domain: only its owner needs it.
        out["location"] = ds.location
        out["status_reason"] = ds.status_reason
    return out
