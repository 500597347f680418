"""A thin HTTP client for the controller's API, used by the CLI, the demo and the SDK.

:meth:`Client.call` speaks the API's contract (``sandbox.api.operations``): it checks the
body with the spec the server parses it with before sending anything, builds the path from
the operation's route, and checks the answer against the operation's response schema.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any
from urllib.parse import quote

import requests
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from authz import validate as v
from authz import wire
from authz.wire import RUN_OVER
from compute.errors import InvalidInput
from sandbox.api.contract_schemas import COMPONENTS
from sandbox.api.operations import OPERATIONS, Operation, wire_components
from sandbox.api.routes import ROUTES

# Reads are retried on a dropped connection: the controller keeps connections alive, and
# one it closed (a restart, a worker recycled) must not fail the caller's next read.
# Writes are never retried here: a POST may have been applied before the connection went.
READ_RETRY = Retry(total=3, connect=3, read=2, status=0, other=1, backoff_factor=0.2,
                   allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


class RequestRefused(ApiError):
    """A body the server would refuse, refused here before anything was sent: the same
    ``{error, message, field, rule}`` and status the server would answer."""

    def __init__(self, operation: str, e: InvalidInput) -> None:
        self.operation = operation
        super().__init__(e.http_status, e.to_json())


class ContractError(Exception):
    """An answer that is not what the operation's contract says it answers (a controller
    of another version, or a bug): names the operation and the JSON path."""

    def __init__(self, operation: str, path: str, message: str) -> None:
        self.operation = operation
        self.path = path
        super().__init__(f"{operation}: the answer breaks the API contract at {path}: "
                         f"{message}")


def check_request(operation: str, body: object) -> None:
    """RequestRefused if the server would refuse ``body`` for ``operation`` by its spec."""
    op = OPERATIONS[operation]
    try:
        v.storable(body)  # as the server reads every body (sandbox.auth.body)
        if isinstance(op.body, list):
            v.parse(body, op.body)
        elif isinstance(op.body, type):
            wire.parse(op.body, body)
        elif isinstance(op.body, dict):
            error = best_match(_validator(operation, "body").iter_errors(body))
            if error is not None:
                raise InvalidInput(error.json_path.removeprefix("$.") or "body",
                                   error.message)
    except InvalidInput as e:
        raise RequestRefused(operation, e) from None


def check_answer(operation: str, answer: object) -> None:
    """ContractError if ``answer`` is not what ``operation`` answers on success."""
    error = best_match(_validator(operation, "response").iter_errors(answer))
    if error is not None:
        raise ContractError(operation, error.json_path, error.message)


@functools.cache
def _components() -> dict[str, Any]:
    return {"schemas": {**COMPONENTS, **wire_components()}}


@functools.cache
def _validator(operation: str, part: str) -> Draft202012Validator:
    op = OPERATIONS[operation]
    schema = op.response if part == "response" else op.body
    # The schemas refer to the document's components ("#/components/schemas/Job").
    return Draft202012Validator({"allOf": [schema], "components": _components()})


_FILENAME = re.compile(r'filename="([A-Za-z0-9._-]{1,255})"')


def served_file_name(disposition: str, name: str) -> str:
    """The file name in a Content-Disposition, kept only if it is a plain name (no path, no
    leading dot), else the output's own name made so: a controller never chooses where a
    file lands outside the directory asked for."""
    m = _FILENAME.search(disposition)
    for candidate in ((m.group(1),) if m else ()) + (name,):
        plain = re.sub(r"[^A-Za-z0-9._-]", "_", candidate).lstrip(".")
        if plain and plain not in (".", ".."):
            return plain
    return "output"


def _path(rule: str, params: dict[str, Any]) -> str:
    out, rest = "", rule
    while "<" in rest:
        head, _, tail = rest.partition("<")
        name, _, rest = tail.partition(">")
        name = name.split(":")[-1]  # "int:index" -> "index"
        if name not in params:
            raise TypeError(f"{rule} needs {name}")
        out += head + quote(str(params.pop(name)), safe="")
    if params:
        raise TypeError(f"{rule} has no {', '.join(sorted(params))}")
    return out + rest


class Client:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        for scheme in ("http://", "https://"):
            self.http.mount(scheme, HTTPAdapter(max_retries=READ_RETRY))
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def _send(self, method: str, path: str, **kw: Any) -> requests.Response:
        r = self.http.request(method, f"{self.url}{path}", timeout=self.timeout_s, **kw)
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            raise ApiError(r.status_code, body)
        return r

    def _do(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self._send(method, f"/api/v1{path}", **kw)

    def call(self, operation: str, body: Any | None = None, *, route: str | None = None,
             query: dict[str, Any] | None = None, **params: Any) -> Any:
        """Call ``operation`` (its id in ``sandbox.api.operations``, e.g. "jobs.submit")
        with its path parameters; the JSON answer, checked (text or bytes for operations
        that answer those). ``route`` picks one of an operation's routes (default: its
        first). RequestRefused for a body the server would refuse (nothing is sent);
        ContractError for an answer that breaks the contract."""
        op = OPERATIONS[operation]
        routes = ROUTES[operation]
        method, rule = (route or routes[0]).split(" ", 1)
        if route is not None and route not in routes:
            raise ValueError(f"{operation} is not served at {route}")
        path = _path(rule, dict(params))
        if method == "GET":
            r = self._send(method, path, params=query or {})
        else:
            sent = {} if body is None else body
            if op.body is not None:
                check_request(operation, sent)
            r = self._send(method, path, json=sent, params=query or {})
        return self._answer(operation, op, r)

    @staticmethod
    def _answer(operation: str, op: Operation, r: requests.Response) -> Any:
        if r.status_code not in (op.status, *op.also):
            raise ContractError(operation, "$", f"status {r.status_code} is not in the "
                                                f"contract")
        if op.media == "text/plain":
            return r.text
        if op.media != "application/json":
            return r.content
        try:
            answer = r.json()
        except ValueError:
            raise ContractError(operation, "$", "not JSON") from None
        check_answer(operation, answer)
        return answer

    def output_file(self, job_id: str, name: str) -> tuple[bytes, str]:
        """A released output's content and the file name the controller serves it under
        (the output's name with its checked kind's extension, e.g. ``output-0.csv``)."""
        path = _path(ROUTES["jobs.output"][0].split(" ", 1)[1],
                     {"job_id": job_id, "name": name})
        r = self._send("GET", path)
        return r.content, served_file_name(r.headers.get("Content-Disposition", ""), name)

    def get(self, path: str, **params: Any) -> Any:
        return self._do("GET", path, params=params).json()

    def post(self, path: str, body: Any | None = None) -> Any:
        return self._do("POST", path, json=body if body is not None else {}).json()

    def text(self, path: str, **params: Any) -> str:
        return self._do("GET", path, params=params).text

    def raw(self, path: str) -> bytes:
        return self._do("GET", path).content

    def wait_job(self, job_id: str, timeout_s: float = 120.0, poll_s: float = 0.1
                 ) -> dict[str, Any]:
        """Poll a job until its run is over (a final state, or its outputs awaiting review);
        TimeoutError past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.call("jobs.get_job", job_id=job_id)
            if job["state"] in RUN_OVER:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s}s")
            time.sleep(poll_s)
