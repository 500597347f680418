"""The dataset catalog: core metadata (政务信息资源目录核心元数据) and schema checks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from authz import validate as v
from authz.context import Ctx
from authz.models import Dataset, Party, new_id
from authz.states import DatasetStatus
from authz.wire import SchemaVerdict
from compute.errors import Conflict, InvalidInput, NotFound

FIELD_TYPES = ("integer", "number", "string", "date", "boolean")
# Ordered from least to most sensitive: a fused job's classification is the highest level
# among its inputs (数据融合的密级取决于密级要求最高的数据项).
SENSITIVITY = ("public", "internal", "sensitive", "restricted", "identifier")
# Columns at these levels never appear in a released output.
HIGH_SENSITIVITY = frozenset({"restricted", "identifier"})
OPENNESS = ("unconditional", "conditional", "not_open")

FIELD_SPEC = [
    v.Field("name", v.text(64, pattern=v.NAME_RX)),
    v.Field("type", v.choice(*FIELD_TYPES)),
    v.Field("sensitivity", v.choice(*SENSITIVITY)),
    v.Field("description", v.text(500, min_len=0), required=False, default=""),
]

DATASET_SPEC = [
    v.Field("code", v.text(64, pattern=v.CODE_RX)),
    v.Field("name", v.text(200, single_line=True)),
    v.Field("category", v.text(100, single_line=True)),
    v.Field("summary", v.text(2000)),
    v.Field("format", v.choice("csv", "parquet")),
    v.Field("openness", v.choice(*OPENNESS)),
    v.Field("sharing", v.choice("unconditional", "conditional", "none"), required=False,
            default="conditional"),
    v.Field("update_cycle", v.choice("realtime", "daily", "weekly", "monthly", "quarterly",
                                     "yearly", "irregular")),
    v.Field("publish_date", v.iso_date),
    v.Field("related_codes", v.list_of(v.text(64, pattern=v.CODE_RX), max_items=50),
            required=False, default=[]),
    v.Field("fields", v.list_of(v.obj(FIELD_SPEC), min_items=1, max_items=1000)),
    v.Field("location", v.text(1000, single_line=True)),
]


def level(sensitivity: str) -> int:
    return SENSITIVITY.index(sensitivity)


def register(ctx: Ctx, provider: Party, body: object) -> Dataset:
    data = v.parse(body, DATASET_SPEC)
    names = [f["name"] for f in data["fields"]]
    if len(set(names)) != len(names):
        raise InvalidInput("fields", "field names must be unique")
    if ctx.session.scalar(select(Dataset).where(Dataset.code == data["code"])):
        raise Conflict(f"dataset code {data['code']!r} is already registered")
    ds = Dataset(id=new_id("ds"), provider_id=provider.id, registered_by=provider.id,
                 status=DatasetStatus.CHECKING, **data)
    ctx.session.add(ds)
    ctx.session.flush()
    ctx.record("dataset.registered", provider.id, {
        "dataset_id": ds.id, "code": ds.code, "name": ds.name, "provider_id": provider.id,
        "openness": ds.openness, "format": ds.format,
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
    ctx.record(kind, actor, {"dataset_id": ds.id, "rows": rows, "error": error})


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


def to_json(ds: Dataset, party: Party) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ds.id, "code": ds.code, "name": ds.name, "category": ds.category,
        "summary": ds.summary, "format": ds.format, "provider_id": ds.provider_id,
        "openness": ds.openness, "sharing": ds.sharing, "update_cycle": ds.update_cycle,
        "publish_date": ds.publish_date, "related_codes": ds.related_codes,
        "fields": ds.fields, "status": ds.status, "rows": ds.rows,
        "created_at": ds.created_at.isoformat(),
    }
    if ds.provider_id == party.id:
        # The location names a path inside the provider's domain: only its owner needs it.
        out["location"] = ds.location
        out["status_reason"] = ds.status_reason
    return out
