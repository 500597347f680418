"""A thin HTTP client for the controller's API, used by the CLI, the demo and the SDK."""

from __future__ import annotations

import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from authz.wire import RUN_OVER

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


class Client:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        for scheme in ("http://", "https://"):
            self.http.mount(scheme, HTTPAdapter(max_retries=READ_RETRY))
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def _do(self, method: str, path: str, **kw: Any) -> requests.Response:
        r = self.http.request(method, f"{self.url}/api/v1{path}", timeout=self.timeout_s, **kw)
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            raise ApiError(r.status_code, body)
        return r

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
            job: dict[str, Any] = self.get(f"/jobs/{job_id}")
            if job["state"] in RUN_OVER:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s}s")
            time.sleep(poll_s)
