"""Where the verifier gets log data from: the regulator API over HTTP, or anything else.

Standard library only. ``HttpSource`` talks to the controller's /api/v1/ledger endpoints
with a bearer token; tests and benchmarks plug in other ``LogSource`` implementations.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from ledger.errors import LedgerError, MalformedNoteError
from ledger.note import b64decode


class LogSource(Protocol):
    def checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]: ...

    def consistency(self, old: int, new: int) -> list[bytes]: ...


class FetchError(LedgerError):
    """The log could not be reached or answered with an error status."""


def decode_entries_page(payload: Any, start: int) -> list[bytes]:
    if not isinstance(payload, dict) or not isinstance(payload.get("entries"), list):
        raise MalformedNoteError("entries page is not an object with an entries list")
    out = []
    for i, item in enumerate(payload["entries"]):
        if not isinstance(item, dict) or item.get("index") != start + i \
                or not isinstance(item.get("data"), str):
            raise MalformedNoteError(f"entries page item {start + i} is malformed")
        out.append(b64decode(item["data"]))
    return out


def decode_proof(payload: Any) -> list[bytes]:
    if not isinstance(payload, dict) or not isinstance(payload.get("proof"), list) \
            or not all(isinstance(p, str) for p in payload["proof"]):
        raise MalformedNoteError("proof payload is not an object with a proof list")
    return [b64decode(p) for p in payload["proof"]]


class HttpSource:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = base_url.rstrip("/") + "/api/v1/ledger"
        self.token = token
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, int] | None = None) -> bytes:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        if not url.startswith(("http://", "https://")):
            raise FetchError(f"refusing non-HTTP URL {url}")
        req = urllib.request.Request(url)  # noqa: S310 - scheme checked above
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return bytes(resp.read())
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"GET {url}: {exc}") from exc

    def _json(self, path: str, params: dict[str, int]) -> Any:
        try:
            return json.loads(self._get(path, params))
        except ValueError as exc:
            raise MalformedNoteError(f"{path} did not return JSON") from exc

    def checkpoint(self) -> str:
        try:
            return self._get("/checkpoint").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("checkpoint is not UTF-8") from exc

    def entries(self, start: int, end: int) -> list[bytes]:
        return decode_entries_page(self._json("/entries", {"start": start, "end": end}), start)

    def consistency(self, old: int, new: int) -> list[bytes]:
        return decode_proof(self._json("/proof/consistency", {"old": old, "new": new}))
