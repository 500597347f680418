"""A reason a script's output cannot be released without a human (re-derivation)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One reason an output cannot be released without a human: no data in it."""

    rule: str
    message: str
    column: int | None = None  # 1-based position in the output's header
    row: int | None = None  # 1-based position among the output's data rows

    def text(self) -> str:
        where = " ".join(p for p in (f"column {self.column}" if self.column else "",
                                     f"row {self.row}" if self.row else "") if p)
        return f"{self.rule}: {self.message}" + (f" ({where})" if where else "")
