"""What every table of the controller's state is built on: the declarative base, ids,
timestamps that always carry their zone, and states stored by name (import the models
themselves from :mod:`authz.models`)."""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import JSON, DateTime, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase


class AuthzBase(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    # Unguessable ids: object ids appear in URLs, and a guessable id would let a party
    # probe for the existence of another party's objects by timing or enumeration.
    return f"{prefix}_{secrets.token_hex(8)}"


E = TypeVar("E", bound=enum.StrEnum)


class StateText(TypeDecorator[E], Generic[E]):
    """A state stored as its plain name (VARCHAR(20)) and read back as its enum.

    Writing a name the enum does not have raises before the row is written (fail closed).
    """

    impl = String(20)
    cache_ok = True

    def __init__(self, states: type[E]) -> None:
        super().__init__()
        self.states = states

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(self.states(value).value)

    def process_result_value(self, value: Any, dialect: Any) -> E | None:
        return None if value is None else self.states(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on SQLite too (it stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a timezone")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
