"""The agent's schema check holds a file to its fields' declared categories and range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compute.errors import InvalidInput
from containers.datasets import schema_check

FIELDS: list[dict[str, Any]] = [
    {"name": "sex", "type": "string", "sensitivity": "internal", "categories": ["F", "M"]},
    {"name": "age", "type": "integer", "sensitivity": "internal", "range": [0, 99]},
    {"name": "day", "type": "date", "sensitivity": "internal",
     "range": ["2025-01-01", "2025-12-31"]},
]


def test_a_file_within_its_declarations_passes(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("sex,age,day\nF,40,2025-03-01\nM,,2025-12-31\n,99,\n")
    assert schema_check(tmp_path / "d.csv", "csv", FIELDS) == 3


@pytest.mark.parametrize(("row", "field"), [
    ("X,40,2025-03-01", "fields[sex].categories"),
    ("F,140,2025-03-01", "fields[age].range"),
    ("F,40,2024-12-31", "fields[day].range"),
])
def test_a_value_outside_its_declarations_is_refused_without_the_value(
        tmp_path: Path, row: str, field: str) -> None:
    (tmp_path / "d.csv").write_text(f"sex,age,day\n{row}\n")
    with pytest.raises(InvalidInput) as e:
        schema_check(tmp_path / "d.csv", "csv", FIELDS)
    assert e.value.field == field
    assert not any(v in e.value.rule for v in row.split(","))  # no value of the file


def test_a_file_without_a_header_row_is_refused_without_its_first_record(
        tmp_path: Path) -> None:
    """Its first record is read as the header: the error counts undeclared columns and
    names none of them (the controller keeps the text)."""
    (tmp_path / "d.csv").write_text("F,47,2025-03-01\nM,52,2025-04-01\n")
    with pytest.raises(InvalidInput) as e:
        schema_check(tmp_path / "d.csv", "csv", FIELDS)
    assert e.value.field == "fields"
    assert not any(v in e.value.rule for v in ("47", "2025-03-01"))
    (tmp_path / "d.csv").write_text("sex,age,day,nhs_number\nF,47,2025-03-01,123\n")
    with pytest.raises(InvalidInput) as e:
        schema_check(tmp_path / "d.csv", "csv", FIELDS)
    assert e.value.rule == "file has 1 undeclared column(s), the first at position 4"
